//! `Check` called directly for every branch: each mode, each denial, spoofed identity headers on
//! every path, groups and scopes, and Envoy's context_extensions overrides.

use crate::common;

use std::collections::HashMap;

use cognito_authz::authz::Authorizer;
use cognito_authz::config::Config;
use cognito_authz::credential::{parse_bearer, Credential, Keys};
use cognito_authz::identity::IDENTITY_HEADERS;
use cognito_authz::jwks::KeyStore;
use cognito_authz::metrics::Metrics;
use cognito_authz::testkit::{access_claims, id_claims, jwks, now, TestKey};
use common::{answer, check_request, Answer, CLIENT, ISS, POOL};
use serde_json::json;

const ROUTES: &str = r#"
[[routes]]
name = "health"
path = "/healthz"
mode = "public"

[[routes]]
name = "home"
prefix = "/api/activities/home"
mode = "optional"

[[routes]]
name = "strict-home"
prefix = "/api/strict-optional"
mode = "optional"
deny_invalid = true

[[routes]]
name = "admin"
prefix = "/api/admin"
mode = "required"
groups_any = ["admins"]

[[routes]]
name = "writer"
prefix = "/api/write"
mode = "required"
scopes_all = ["openid", "cruddur/write"]

[[routes]]
name = "profile"
prefix = "/api/profile"
mode = "required"
token_use = "id"

[[routes]]
name = "api"
prefix = "/api/"
mode = "required"

[identity.claim_headers]
"custom:tenant" = "x-tenant-id"
"#;

/// The app's variables for the test pool (keys refetch from a port where nothing listens), plus
/// `fixed` and `vars`.
fn test_env(fixed: &[(&str, &str)], vars: &[(&str, &str)]) -> HashMap<String, String> {
    [
        ("AWS_COGNITO_USER_POOL_ID", POOL),
        ("AWS_COGNITO_USER_POOL_CLIENT_ID", CLIENT),
        ("COGNITO_JWKS_URI", "http://127.0.0.1:9/jwks.json"),
    ]
    .iter()
    .chain(fixed)
    .chain(vars)
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn authorizer_with(extra_toml: &str, vars: &[(&str, &str)]) -> Authorizer {
    let env = test_env(&[("COGNITO_JWKS_MIN_REFETCH_SECONDS", "3600")], vars);
    let text = format!("{ROUTES}\n{extra_toml}");
    let config = Config::from_toml(|k| env.get(k).cloned(), &text).unwrap();
    let keys = KeyStore::new(&config.pools, &config.jwks).unwrap();
    keys.preload(0, jwks(&[TestKey::shared(0)]).to_string().as_bytes())
        .unwrap();
    let verifier = config.verifier(keys);
    Authorizer::new(verifier, config.routes.clone(), 1000, Metrics::new())
}

fn authorizer() -> Authorizer {
    authorizer_with("", &[("COGNITO_TOKEN_USE", "any")])
}

fn access_token(edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut claims = access_claims(ISS, CLIENT, now());
    edit(&mut claims);
    TestKey::shared(0).token(&claims)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn check(a: &Authorizer, path: &str, headers: &[(&str, &str)]) -> Answer {
    check_ext(a, path, headers, &[]).await
}

async fn check_ext(
    a: &Authorizer,
    path: &str,
    headers: &[(&str, &str)],
    ext: &[(&str, &str)],
) -> Answer {
    let response = a
        .check(&check_request("GET", path, headers, ext))
        .await
        .expect("an in-band answer");
    answer(&response)
}

const SPOOFED: [(&str, &str); 4] = [
    ("x-cognito-sub", "spoofed-admin"),
    ("x-cognito-groups", "admins"),
    ("x-cognito-pool", "made-up"),
    ("x-tenant-id", "other-tenant"),
];

fn with_spoofed<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    SPOOFED
        .iter()
        .copied()
        .chain(extra.iter().copied())
        .collect()
}

/// No identity header survives unless we set it: each spoofed one is set or removed, and the
/// mapped header outside our prefix (which Envoy does not show us) is set or removed always.
fn assert_no_spoof(set: &HashMap<String, String>, removed: &[String]) {
    for (name, value) in SPOOFED {
        if let Some(ours) = set.get(name) {
            assert_ne!(ours, value, "{name} carries the client's value");
        } else {
            assert!(removed.iter().any(|r| r == name), "{name} was not removed");
        }
    }
    assert!(
        set.contains_key("x-tenant-id") || removed.iter().any(|r| r == "x-tenant-id"),
        "x-tenant-id is neither set nor removed"
    );
}

/// Every managed header: the fixed identity headers and the mapped one.
fn managed() -> Vec<String> {
    IDENTITY_HEADERS
        .iter()
        .map(|h| h.to_string())
        .chain(["x-tenant-id".to_string()])
        .collect()
}

#[tokio::test]
async fn every_allow_removes_every_managed_header_it_does_not_set_whatever_the_request_shows() {
    let a = authorizer();
    // Nothing shown (Envoy Gateway sends no x-cognito-* to the check): all are removed anyway.
    match check(&a, "/healthz", &[]).await {
        Answer::Allowed { set, removed } => {
            assert!(set.is_empty());
            assert_eq!(removed, managed());
        }
        other => panic!("{other:?}"),
    }
    // A managed header the request shows changes nothing.
    for name in IDENTITY_HEADERS {
        match check(&a, "/healthz", &[(name, "spoof")]).await {
            Answer::Allowed { removed, .. } => assert_eq!(removed, managed(), "{name}"),
            other => panic!("{other:?}"),
        }
    }
    // A valid access token, no x-cognito-* shown: its headers are set, and every managed header
    // it does not set (groups, email, preferred username, the mapping) is removed.
    let auth = bearer(&access_token(|c| {
        c.as_object_mut().unwrap().remove("cognito:groups");
    }));
    match check(&a, "/api/messages", &[("authorization", &auth)]).await {
        Answer::Allowed { set, removed } => {
            assert!(set.contains_key("x-cognito-sub"));
            for name in [
                "x-cognito-groups",
                "x-cognito-email",
                "x-cognito-preferred-username",
                "x-tenant-id",
            ] {
                assert!(!set.contains_key(name), "{name} is set");
                assert!(removed.iter().any(|r| r == name), "{name}: {removed:?}");
            }
            for name in managed() {
                assert!(
                    set.contains_key(&name) != removed.contains(&name),
                    "{name} is set and removed, or neither: {set:?} {removed:?}"
                );
            }
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn public_routes_check_nothing_and_strip_identity() {
    let a = authorizer();
    let headers = with_spoofed(&[("authorization", "Bearer garbage")]);
    match check(&a, "/healthz", &headers).await {
        Answer::Allowed { set, removed } => {
            assert!(set.is_empty());
            assert_no_spoof(&set, &removed);
        }
        other => panic!("public route denied: {other:?}"),
    }
}

#[tokio::test]
async fn optional_routes_allow_anonymous_and_add_identity_for_valid_tokens() {
    let a = authorizer();
    match check(&a, "/api/activities/home", &with_spoofed(&[])).await {
        Answer::Allowed { set, removed } => {
            assert!(set.is_empty(), "anonymous gets no identity");
            assert_no_spoof(&set, &removed);
        }
        other => panic!("{other:?}"),
    }
    let token = access_token(|c| c["custom:tenant"] = json!("t-42"));
    let auth = bearer(&token);
    match check(
        &a,
        "/api/activities/home",
        &with_spoofed(&[("authorization", &auth)]),
    )
    .await
    {
        Answer::Allowed { set, removed } => {
            assert_eq!(set["x-cognito-sub"], "8f1e2d3c-0000-4000-8000-00000000abcd");
            assert_eq!(
                set["x-cognito-username"],
                "8f1e2d3c-0000-4000-8000-00000000abcd"
            );
            assert_eq!(set["x-cognito-client-id"], CLIENT);
            assert_eq!(set["x-cognito-token-use"], "access");
            assert_eq!(set["x-cognito-groups"], "admins,beta");
            assert_eq!(
                set["x-cognito-scope"],
                "aws.cognito.signin.user.admin openid"
            );
            assert_eq!(set["x-tenant-id"], "t-42");
            assert!(
                !set.contains_key("x-cognito-email"),
                "access tokens carry no email"
            );
            assert_no_spoof(&set, &removed);
            assert!(
                !removed.contains(&"authorization".to_string()),
                "forwarded by default"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_invalid_token_on_an_optional_route_is_anonymous_unless_the_rule_denies() {
    let a = authorizer();
    let expired = access_token(|c| c["exp"] = json!(now() - 3600));
    let auth = bearer(&expired);
    match check(
        &a,
        "/api/activities/home",
        &with_spoofed(&[("authorization", &auth)]),
    )
    .await
    {
        Answer::Allowed { set, removed } => {
            assert!(set.is_empty());
            assert_no_spoof(&set, &removed);
        }
        other => panic!("{other:?}"),
    }
    match check(&a, "/api/strict-optional", &[("authorization", &auth)]).await {
        Answer::Denied { status, body, .. } => {
            assert_eq!(status, 401);
            assert_eq!(body["reason"], "expired");
        }
        other => panic!("{other:?}"),
    }
    // Malformed credentials follow the same rule.
    assert!(matches!(
        check(
            &a,
            "/api/activities/home",
            &[("authorization", "Basic dXNlcjpwdw==")]
        )
        .await,
        Answer::Allowed { .. }
    ));
}

#[tokio::test]
async fn required_routes_deny_a_missing_token_with_a_bare_challenge() {
    let a = authorizer();
    for path in ["/api/messages", "/not-listed-anywhere"] {
        match check(&a, path, &with_spoofed(&[])).await {
            Answer::Denied {
                status,
                headers,
                body,
            } => {
                assert_eq!(status, 401, "{path}");
                assert_eq!(
                    headers["www-authenticate"],
                    "Bearer realm=\"cognito-authz\""
                );
                assert_eq!(headers["content-type"], "application/json");
                assert_eq!(body["reason"], "no_token");
            }
            other => panic!("{path}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn an_invalid_token_is_401_invalid_token_with_its_reason() {
    let a = authorizer();
    let cases = [
        (access_token(|c| c["exp"] = json!(now() - 3600)), "expired"),
        (
            access_token(|c| c["client_id"] = json!("other")),
            "wrong_client",
        ),
        ("a.b.c".to_string(), "malformed"),
        (
            access_token(|c| {
                c["iss"] = json!("https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Evil")
            }),
            "unknown_issuer",
        ),
    ];
    for (token, reason) in cases {
        let auth = bearer(&token);
        match check(&a, "/api/messages", &[("authorization", &auth)]).await {
            Answer::Denied {
                status,
                headers,
                body,
            } => {
                assert_eq!(status, 401, "{reason}");
                assert_eq!(body["error"], "invalid_token");
                assert_eq!(body["reason"], reason);
                let challenge = &headers["www-authenticate"];
                assert!(challenge.starts_with("Bearer realm=\"cognito-authz\", error=\"invalid_token\", error_description=\""), "{challenge}");
                assert!(
                    !challenge.contains(&token),
                    "the challenge never echoes the token"
                );
                assert!(!body.to_string().contains(&token));
            }
            other => panic!("{reason}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_malformed_credential_is_400_invalid_request() {
    let a = authorizer();
    let token = access_token(|_| {});
    let two = format!("Bearer {token},Bearer {token}");
    let spaced = format!("Bearer {token} extra");
    for value in [
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwdw==",
        two.as_str(),
        spaced.as_str(),
        "token-without-scheme",
    ] {
        match check(&a, "/api/messages", &[("authorization", value)]).await {
            Answer::Denied { status, body, .. } => {
                assert_eq!(status, 400, "{value:.40}");
                assert_eq!(body["error"], "invalid_request");
            }
            other => panic!("{value:.40}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn the_scheme_is_case_insensitive_and_the_query_string_is_ignored() {
    let a = authorizer();
    let token = access_token(|_| {});
    for scheme in ["bearer", "BEARER", "BeArEr"] {
        let auth = format!("{scheme} {token}");
        assert!(
            matches!(
                check(&a, "/api/messages", &[("authorization", &auth)]).await,
                Answer::Allowed { .. }
            ),
            "{scheme}"
        );
    }
    let path = format!("/api/messages?access_token={token}");
    assert!(matches!(
        check(&a, &path, &[]).await,
        Answer::Denied { status: 401, .. }
    ));
}

#[tokio::test]
async fn groups_and_scopes_are_403_insufficient_scope() {
    let a = authorizer();
    let member = bearer(&access_token(|_| {}));
    let outsider = bearer(&access_token(|c| c["cognito:groups"] = json!(["beta"])));
    let no_groups = bearer(&access_token(|c| {
        c.as_object_mut().unwrap().remove("cognito:groups");
    }));
    assert!(matches!(
        check(&a, "/api/admin/users", &[("authorization", &member)]).await,
        Answer::Allowed { .. }
    ));
    for auth in [&outsider, &no_groups] {
        match check(
            &a,
            "/api/admin/users",
            &with_spoofed(&[("authorization", auth)]),
        )
        .await
        {
            Answer::Denied {
                status,
                headers,
                body,
            } => {
                assert_eq!(status, 403);
                assert_eq!(body["reason"], "missing_group");
                assert!(headers["www-authenticate"].contains("error=\"insufficient_scope\""));
            }
            other => panic!("{other:?}"),
        }
    }
    let writer = bearer(&access_token(|c| {
        c["scope"] = json!("openid cruddur/write")
    }));
    assert!(matches!(
        check(&a, "/api/write", &[("authorization", &writer)]).await,
        Answer::Allowed { .. }
    ));
    match check(&a, "/api/write", &[("authorization", &member)]).await {
        Answer::Denied { status, body, .. } => {
            assert_eq!(
                (status, body["reason"].as_str()),
                (403, Some("missing_scope"))
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_route_can_narrow_the_token_use() {
    let a = authorizer();
    let access = bearer(&access_token(|_| {}));
    let id = bearer(&TestKey::shared(0).token(&id_claims(ISS, CLIENT, now())));
    match check(&a, "/api/profile", &[("authorization", &access)]).await {
        Answer::Denied { status, body, .. } => {
            assert_eq!(
                (status, body["reason"].as_str()),
                (401, Some("wrong_token_use"))
            );
        }
        other => panic!("{other:?}"),
    }
    match check(&a, "/api/profile", &[("authorization", &id)]).await {
        Answer::Allowed { set, .. } => {
            assert_eq!(set["x-cognito-token-use"], "id");
            assert_eq!(set["x-cognito-email"], "andrew@example.com");
            assert_eq!(set["x-cognito-preferred-username"], "andrewbrown");
        }
        other => panic!("{other:?}"),
    }
    // The pool default (access) refuses ID tokens everywhere.
    let strict = authorizer_with("", &[]);
    match check(&strict, "/api/messages", &[("authorization", &id)]).await {
        Answer::Denied { body, .. } => assert_eq!(body["reason"], "wrong_token_use"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn context_extensions_override_the_route() {
    let a = authorizer();
    assert!(matches!(
        check_ext(
            &a,
            "/api/messages",
            &[],
            &[("cognito_authz.mode", "public")]
        )
        .await,
        Answer::Allowed { .. }
    ));
    assert!(matches!(
        check_ext(&a, "/healthz", &[], &[("cognito_authz.mode", "required")]).await,
        Answer::Denied { status: 401, .. }
    ));
    let member = bearer(&access_token(|_| {}));
    match check_ext(
        &a,
        "/api/messages",
        &[("authorization", &member)],
        &[("cognito_authz.groups_any", "staff,ops")],
    )
    .await
    {
        Answer::Denied { status, .. } => assert_eq!(status, 403),
        other => panic!("{other:?}"),
    }
    // Made optional by Envoy, an unmatched route treats an expired token as anonymous.
    let expired = bearer(&access_token(|c| c["exp"] = json!(now() - 3600)));
    match check_ext(
        &a,
        "/not-in-any-rule",
        &with_spoofed(&[("authorization", &expired)]),
        &[("cognito_authz.mode", "optional")],
    )
    .await
    {
        Answer::Allowed { set, removed } => {
            assert!(set.is_empty());
            assert_no_spoof(&set, &removed);
        }
        other => panic!("{other:?}"),
    }
    // A value Envoy should never send is a gRPC error: Envoy then fails closed.
    let err = a
        .check(&check_request(
            "GET",
            "/api/messages",
            &[],
            &[("cognito_authz.mode", "open")],
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn a_check_request_without_http_attributes_is_a_grpc_error() {
    let a = authorizer();
    let err = a.check(&Default::default()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn keys_not_loaded_yet_is_503_with_retry_after() {
    let env = test_env(&[], &[]);
    let config = Config::from_toml(|k| env.get(k).cloned(), ROUTES).unwrap();
    let keys = KeyStore::new(&config.pools, &config.jwks).unwrap();
    let a = Authorizer::new(
        config.verifier(keys),
        config.routes.clone(),
        1000,
        Metrics::new(),
    );
    let auth = bearer(&access_token(|_| {}));
    match check(&a, "/api/messages", &[("authorization", &auth)]).await {
        Answer::Denied {
            status,
            headers,
            body,
        } => {
            assert_eq!(status, 503);
            assert_eq!(headers["retry-after"], "5");
            assert_eq!(body["reason"], "keys_unavailable");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn unsafe_claim_values_are_never_injected() {
    let a = authorizer();
    for evil in [
        "t\r\nx-cognito-sub: root",
        "tab\there",
        "nul\u{0}",
        &"x".repeat(9000),
    ] {
        let auth = bearer(&access_token(|c| c["custom:tenant"] = json!(evil)));
        match check(&a, "/api/messages", &[("authorization", &auth)]).await {
            Answer::Denied { status, body, .. } => {
                assert_eq!(
                    (status, body["reason"].as_str()),
                    (401, Some("unsafe_claim"))
                );
            }
            other => panic!("{evil:.20}: {other:?}"),
        }
    }
    // Commas inside group names are escaped so the list stays unambiguous; UTF-8 passes.
    let auth = bearer(&access_token(|c| {
        c["cognito:groups"] = json!(["a,b", "100%", "José"]);
    }));
    match check(&a, "/api/messages", &[("authorization", &auth)]).await {
        Answer::Allowed { set, .. } => assert_eq!(set["x-cognito-groups"], "a%2Cb,100%25,José"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn forward_token_false_removes_authorization() {
    let a = authorizer_with("[identity]\nforward_token = false\n", &[]);
    let auth = bearer(&access_token(|_| {}));
    match check(&a, "/api/messages", &[("authorization", &auth)]).await {
        Answer::Allowed { removed, .. } => assert!(removed.contains(&"authorization".to_string())),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn forward_token_false_keeps_a_cookie_token_from_the_upstream() {
    let a = authorizer_with(
        "[identity]\nforward_token = false\ntoken_cookie = \"access_token\"\n",
        &[],
    );
    let token = access_token(|_| {});
    let cookie = format!("theme=dark; access_token={token}; other=1");
    match check(&a, "/api/messages", &[("cookie", &cookie)]).await {
        Answer::Allowed { set, removed } => {
            assert_eq!(
                set.get("cookie").map(String::as_str),
                Some("theme=dark; other=1")
            );
            assert!(!removed.contains(&"cookie".to_string()));
        }
        other => panic!("{other:?}"),
    }
    let only = format!("access_token={token}");
    match check(&a, "/api/messages", &[("cookie", &only)]).await {
        Answer::Allowed { set, removed } => {
            assert!(!set.contains_key("cookie"));
            assert!(removed.contains(&"cookie".to_string()), "{removed:?}");
        }
        other => panic!("{other:?}"),
    }
    // A public route forwards no token either.
    match check(&a, "/healthz", &[("cookie", &cookie)]).await {
        Answer::Allowed { set, .. } => {
            assert_eq!(
                set.get("cookie").map(String::as_str),
                Some("theme=dark; other=1")
            )
        }
        other => panic!("{other:?}"),
    }
    // Cookies without the token are left alone.
    match check(&a, "/healthz", &[("cookie", "theme=dark")]).await {
        Answer::Allowed { set, removed } => {
            assert!(!set.contains_key("cookie") && !removed.contains(&"cookie".to_string()))
        }
        other => panic!("{other:?}"),
    }
}

async fn check_method(
    a: &Authorizer,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    ext: &[(&str, &str)],
) -> Answer {
    let response = a
        .check(&check_request(method, path, headers, ext))
        .await
        .expect("an in-band answer");
    answer(&response)
}

const PREFLIGHT: [(&str, &str); 3] = [
    ("origin", "http://localhost:3000"),
    ("access-control-request-method", "GET"),
    ("access-control-request-headers", "authorization"),
];

#[tokio::test]
async fn a_preflight_is_checked_by_default() {
    let a = authorizer();
    for path in ["/api/messages", "/unmatched"] {
        assert!(
            matches!(
                check_method(&a, "OPTIONS", path, &PREFLIGHT, &[]).await,
                Answer::Denied { status: 401, .. }
            ),
            "{path}"
        );
    }
}

#[tokio::test]
async fn with_the_switch_on_a_cors_preflight_passes_as_anonymous_on_every_route() {
    let a = authorizer_with("", &[("AUTHZ_ALLOW_PREFLIGHT", "true")]);
    for path in [
        "/api/messages",
        "/api/admin/users",
        "/api/write",
        "/unmatched",
    ] {
        let headers = with_spoofed(&PREFLIGHT);
        match check_method(&a, "OPTIONS", path, &headers, &[]).await {
            Answer::Allowed { set, removed } => {
                assert!(set.is_empty(), "{path}: {set:?}");
                assert_no_spoof(&set, &removed);
            }
            other => panic!("{path}: preflight denied: {other:?}"),
        }
    }
    // Nothing is verified: a garbage token on a preflight changes nothing.
    let mut headers = PREFLIGHT.to_vec();
    headers.push(("authorization", "Bearer garbage"));
    assert!(matches!(
        check_method(&a, "OPTIONS", "/api/messages", &headers, &[]).await,
        Answer::Allowed { .. }
    ));
}

#[tokio::test]
async fn an_options_request_that_is_no_preflight_gets_the_ordinary_decision() {
    // With preflights let through, where telling one apart is what keeps a token required: an
    // `OPTIONS` without both CORS headers, or a non-`OPTIONS` with them, is no preflight.
    let a = authorizer_with("", &[("AUTHZ_ALLOW_PREFLIGHT", "true")]);
    for headers in [
        vec![],
        vec![("origin", "http://localhost:3000")],
        vec![("access-control-request-method", "GET")],
    ] {
        assert!(
            matches!(
                check_method(&a, "OPTIONS", "/api/messages", &headers, &[]).await,
                Answer::Denied { status: 401, .. }
            ),
            "{headers:?}"
        );
    }
    // Only OPTIONS can be a preflight.
    assert!(matches!(
        check_method(&a, "GET", "/api/messages", &PREFLIGHT, &[]).await,
        Answer::Denied { status: 401, .. }
    ));
}

#[tokio::test]
async fn preflights_can_be_let_through_globally_or_per_route() {
    let strict = authorizer();
    assert!(matches!(
        check_method(&strict, "OPTIONS", "/api/messages", &PREFLIGHT, &[]).await,
        Answer::Denied { status: 401, .. }
    ));
    let a = authorizer_with("", &[("AUTHZ_ALLOW_PREFLIGHT", "true")]);
    assert!(matches!(
        check_method(
            &a,
            "OPTIONS",
            "/api/messages",
            &PREFLIGHT,
            &[("cognito_authz.allow_preflight", "false")]
        )
        .await,
        Answer::Denied { status: 401, .. }
    ));
    assert!(matches!(
        check_method(
            &strict,
            "OPTIONS",
            "/api/messages",
            &PREFLIGHT,
            &[("cognito_authz.allow_preflight", "true")]
        )
        .await,
        Answer::Allowed { .. }
    ));
}

#[tokio::test]
async fn a_malformed_host_is_refused_not_panicked() {
    let a = authorizer();
    let auth = bearer(&access_token(|_| {}));
    for host in ["[::1", "[", "a.example, b.example", "[::1]x", ""] {
        let mut request = check_request("GET", "/api/messages", &[("authorization", &auth)], &[]);
        request
            .attributes
            .as_mut()
            .and_then(|a| a.request.as_mut())
            .and_then(|r| r.http.as_mut())
            .unwrap()
            .host = host.to_string();
        let response = a.check(&request).await.expect("an in-band answer");
        // Refused: no rule can be chosen for it, and a fallback could be weaker than its own.
        match answer(&response) {
            Answer::Denied { status, body, .. } => {
                assert_eq!(status, 400, "{host:?}");
                assert_eq!(body["reason"], "bad_host", "{host:?}");
            }
            other => panic!("{host:?}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_configured_cookie_or_header_can_carry_the_token() {
    let a = authorizer_with(
        "[identity]\ntoken_cookie = \"access_token\"\ntoken_header = \"x-access-token\"\n",
        &[],
    );
    let token = access_token(|_| {});
    let cookie = format!("theme=dark; access_token={token}; other=1");
    assert!(matches!(
        check(&a, "/api/messages", &[("cookie", &cookie)]).await,
        Answer::Allowed { .. }
    ));
    assert!(matches!(
        check(&a, "/api/messages", &[("x-access-token", &token)]).await,
        Answer::Allowed { .. }
    ));
    assert!(matches!(
        check(
            &a,
            "/api/messages",
            &[("cookie", "access_token=not a token")]
        )
        .await,
        Answer::Denied { status: 400, .. }
    ));
    assert!(matches!(
        check(&a, "/api/messages", &[("cookie", "theme=dark")]).await,
        Answer::Denied { status: 401, .. }
    ));
}

#[tokio::test]
async fn every_decision_is_counted_by_reason() {
    let env = test_env(&[], &[]);
    let config = Config::from_toml(|k| env.get(k).cloned(), ROUTES).unwrap();
    let keys = KeyStore::new(&config.pools, &config.jwks).unwrap();
    keys.preload(0, jwks(&[TestKey::shared(0)]).to_string().as_bytes())
        .unwrap();
    let metrics = Metrics::new();
    let a = Authorizer::new(
        config.verifier(keys),
        config.routes.clone(),
        1000,
        metrics.clone(),
    );
    let auth = bearer(&access_token(|_| {}));
    check(&a, "/api/messages", &[("authorization", &auth)]).await;
    check(&a, "/api/messages", &[]).await;
    check(&a, "/healthz", &[]).await;
    let text = metrics.encode();
    for needle in [
        "decisions_total{decision=\"allow\",reason=\"valid\"} 1",
        "decisions_total{decision=\"deny\",reason=\"no_token\"} 1",
        "decisions_total{decision=\"allow_anonymous\",reason=\"public\"} 1",
        "check_duration_seconds_count 3",
    ] {
        assert!(text.contains(needle), "{needle} missing from\n{text}");
    }
}

#[test]
fn bearer_parsing_follows_rfc_6750() {
    assert_eq!(
        parse_bearer("Bearer abc.def-_~+/==", Keys::Wanted).token(),
        Some("abc.def-_~+/==")
    );
    assert_eq!(
        parse_bearer("bearer   abc", Keys::Wanted).token(),
        Some("abc")
    );
    for bad in [
        "Bearer",
        "Bearer a b",
        "Bearer a,b",
        "Token abc",
        "Bearer =abc",
        "Bearer a\"b",
    ] {
        assert_eq!(
            parse_bearer(bad, Keys::Wanted),
            Credential::Malformed,
            "{bad}"
        );
    }
}

#[tokio::test]
async fn dry_run_allows_everything_but_still_decides_counts_and_strips() {
    let env = test_env(
        &[
            ("COGNITO_JWKS_MIN_REFETCH_SECONDS", "3600"),
            ("AUTHZ_DRY_RUN", "true"),
        ],
        &[],
    );
    let config = Config::from_toml(|k| env.get(k).cloned(), ROUTES).unwrap();
    assert!(config.server.dry_run);
    let keys = KeyStore::new(&config.pools, &config.jwks).unwrap();
    keys.preload(0, jwks(&[TestKey::shared(0)]).to_string().as_bytes())
        .unwrap();
    let metrics = Metrics::new();
    let a = Authorizer::new(
        config.verifier(keys),
        config.routes.clone(),
        1000,
        metrics.clone(),
    );
    a.set_dry_run(config.server.dry_run);

    let expired = bearer(&access_token(|c| c["exp"] = json!(now() - 3600)));
    let response = a
        .check(&check_request(
            "GET",
            "/api/messages",
            &with_spoofed(&[("authorization", &expired)]),
            &[],
        ))
        .await
        .unwrap();
    let metadata = &response.dynamic_metadata.as_ref().unwrap().fields;
    let text = |k: &str| match &metadata[k].kind {
        Some(envoy_types::pb::google::protobuf::value::Kind::StringValue(s)) => s.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        (text("decision"), text("reason"), text("dry_run")),
        ("deny".into(), "expired".into(), "true".into())
    );
    match answer(&response) {
        Answer::Allowed { set, removed } => {
            assert!(set.is_empty(), "no identity for an invalid token");
            assert_no_spoof(&set, &removed);
        }
        other => panic!("dry run denied: {other:?}"),
    }
    match check(&a, "/api/admin/x", &[]).await {
        Answer::Allowed { set, .. } => assert!(set.is_empty()),
        other => panic!("{other:?}"),
    }
    let valid = bearer(&access_token(|_| {}));
    match check(
        &a,
        "/api/messages",
        &with_spoofed(&[("authorization", &valid)]),
    )
    .await
    {
        Answer::Allowed { set, removed } => {
            assert_eq!(set["x-cognito-sub"], "8f1e2d3c-0000-4000-8000-00000000abcd");
            assert_no_spoof(&set, &removed);
        }
        other => panic!("{other:?}"),
    }
    let counted = metrics.encode();
    for needle in [
        "decisions_total{decision=\"deny\",reason=\"expired\"} 1",
        "decisions_total{decision=\"deny\",reason=\"no_token\"} 1",
        "decisions_total{decision=\"allow\",reason=\"valid\"} 1",
    ] {
        assert!(counted.contains(needle), "{needle} missing from\n{counted}");
    }
    a.set_dry_run(false);
    assert!(matches!(
        check(&a, "/api/messages", &[("authorization", &expired)]).await,
        Answer::Denied { status: 401, .. }
    ));
}

/// What the dynamic module strips from every request before it decides: every identity header
/// and every mapped claim header of the running configuration, and nothing a client could use
/// to smuggle a name in (blank or made-up names).
#[test]
fn the_managed_headers_are_every_identity_header_and_every_mapped_claim_header() {
    let managed = authorizer().managed_headers();
    for header in IDENTITY_HEADERS {
        assert!(managed.iter().any(|m| m == header), "{header}: {managed:?}");
    }
    assert!(managed.iter().any(|m| m == "x-tenant-id"), "{managed:?}");
    assert!(
        managed
            .iter()
            .all(|m| !m.is_empty() && m == &m.to_ascii_lowercase()),
        "{managed:?}"
    );
    assert_eq!(managed.len(), IDENTITY_HEADERS.len() + 1, "{managed:?}");
}

/// A route that names the pools it accepts admits a valid token of those pools only: another
/// pool's valid token is refused there (401 `pool_not_allowed`: the token is not one this route
/// accepts) and still passes elsewhere.
#[tokio::test]
async fn a_route_accepts_only_the_pools_it_names() {
    let pools = [
        ("us-east-1_PoolA", "client-a"),
        ("us-east-1_PoolB", "client-b"),
    ];
    let mut text = String::new();
    for (id, client) in pools {
        text.push_str(&format!(
            "[[pools]]\nid = \"{id}\"\nclient_ids = [\"{client}\"]\njwks_uri = \"http://127.0.0.1:9/{id}.json\"\n\n"
        ));
    }
    text.push_str(
        "[[routes]]\nprefix = \"/a-only\"\nmode = \"required\"\npools = [\"us-east-1_PoolA\"]\n\n\
         [[routes]]\nprefix = \"/\"\nmode = \"required\"\n",
    );
    let env: HashMap<&str, &str> = [("COGNITO_JWKS_MIN_REFETCH_SECONDS", "3600")].into();
    let config = Config::from_toml(|k| env.get(k).map(|v| v.to_string()), &text).unwrap();
    let keys = KeyStore::new(&config.pools, &config.jwks).unwrap();
    for index in 0..pools.len() {
        keys.preload(index, jwks(&[TestKey::shared(0)]).to_string().as_bytes())
            .unwrap();
    }
    let a = Authorizer::new(
        config.verifier(keys),
        config.routes.clone(),
        1000,
        Metrics::new(),
    );
    let token = |(id, client): (&str, &str)| {
        let iss = format!("https://cognito-idp.us-east-1.amazonaws.com/{id}");
        bearer(&TestKey::shared(0).token(&access_claims(&iss, client, now())))
    };
    let (a_token, b_token) = (token(pools[0]), token(pools[1]));
    assert!(matches!(
        check(&a, "/a-only", &[("authorization", &a_token)]).await,
        Answer::Allowed { .. }
    ));
    match check(&a, "/a-only", &[("authorization", &b_token)]).await {
        Answer::Denied { status, body, .. } => {
            assert_eq!(
                (status, body["reason"].as_str()),
                (401, Some("pool_not_allowed"))
            );
        }
        allowed => panic!("another pool's token passed: {allowed:?}"),
    }
    assert!(matches!(
        check(&a, "/elsewhere", &[("authorization", &b_token)]).await,
        Answer::Allowed { .. }
    ));
}

/// While the revocations shared through Redis are still loading (a module just started: it has
/// no readiness to hold Envoy back, as a replica has), a valid token is not admitted, since it
/// may be revoked elsewhere: 503, to retry. Once loaded, it is.
#[tokio::test]
async fn a_valid_token_waits_while_the_shared_revocations_load() {
    let a = authorizer();
    let token = access_token(|_| {});
    let auth = bearer(&token);
    a.revocations().set_loading(true);
    match check(&a, "/api/things", &[("authorization", &auth)]).await {
        Answer::Denied { status, body, .. } => {
            assert_eq!(status, 503);
            assert_eq!(body["reason"], "revocation_unavailable");
        }
        Answer::Allowed { .. } => panic!("admitted before the shared revocations loaded"),
    }
    a.revocations().set_loading(false);
    assert!(matches!(
        check(&a, "/api/things", &[("authorization", &auth)]).await,
        Answer::Allowed { .. }
    ));
}
