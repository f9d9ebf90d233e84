//! Property tests: arbitrary input through every parser a CheckRequest reaches (host, path,
//! method, bearer, cookie, token header, context_extensions, token decoding) and arbitrary
//! CheckRequests through `check`. Nothing panics, and no identity appears without the token.

use crate::common;

use std::collections::HashMap;

use cognito_authz::authz::Authorizer;
use cognito_authz::config::Config;
use cognito_authz::credential::{
    find_credential, is_preflight, parse_bearer, strip_cookie, Credential, Keys,
};
use cognito_authz::identity::IDENTITY_HEADERS;
use cognito_authz::jwks::KeyStore;
use cognito_authz::metrics::Metrics;
use cognito_authz::policy::{host_name, RouteConfig};
use cognito_authz::testkit::{access_claims, jwks, now, TestKey};
use cognito_authz::verify::{decode, unverified_payload};
use common::{check_request, CLIENT, ISS, POOL};
use envoy_types::ext_authz::v3::pb::HttpResponse;
use proptest::prelude::*;

const ROUTES: &str = r#"
[[routes]]
path = "/healthz"
mode = "public"
[[routes]]
prefix = "/home"
mode = "optional"
[[routes]]
path_separated_prefix = "/admin"
host = "admin.example"
mode = "required"
groups_any = ["admins"]
[identity]
token_cookie = "jwt"
token_header = "x-access-token"
[identity.claim_headers]
"custom:tenant" = "x-tenant-id"
"#;

fn config() -> Config {
    let env: HashMap<String, String> = [
        ("AWS_COGNITO_USER_POOL_ID", POOL),
        ("AWS_COGNITO_USER_POOL_CLIENT_ID", CLIENT),
        ("COGNITO_JWKS_URI", "http://127.0.0.1:9/jwks.json"),
        ("COGNITO_JWKS_MIN_REFETCH_SECONDS", "3600"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    Config::from_toml(|k| env.get(k).cloned(), ROUTES).unwrap()
}

fn authorizer() -> Authorizer {
    let config = config();
    let keys = KeyStore::new(&config.pools, &config.jwks).unwrap();
    keys.preload(0, jwks(&[TestKey::shared(0)]).to_string().as_bytes())
        .unwrap();
    Authorizer::new(
        config.verifier(keys),
        config.routes.clone(),
        64,
        Metrics::new(),
    )
}

/// The one valid token of the run (minted once: a token minted a second later differs).
fn valid_token() -> &'static str {
    static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TOKEN.get_or_init(|| TestKey::shared(0).token(&access_claims(ISS, CLIENT, now())))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Any text, weighted towards the bytes parsers split on.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), "[\\[\\]:;=,. \"a-zA-Z0-9_/%?#\t-]{0,40}",]
}

/// A valid token, or one of its damaged variants, or junk.
fn credential(valid: String) -> impl Strategy<Value = String> {
    let tail = valid.clone();
    prop_oneof![
        Just(valid.clone()),
        text(),
        (0..valid.len()).prop_map(move |cut| tail[..cut].to_string()),
        Just(format!("{valid}x")),
    ]
}

const HEADER_NAMES: [&str; 12] = [
    "authorization",
    "cookie",
    "x-access-token",
    "origin",
    "access-control-request-method",
    "x-request-id",
    "x-cognito-sub",
    "x-cognito-groups",
    "x_cognito_sub",
    "x-cognito-anything",
    "x-tenant-id",
    "host",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn host_parsing_never_panics_and_returns_a_prefix(host in text()) {
        if let Some(name) = host_name(&host) {
            prop_assert!(host.starts_with(name));
            prop_assert!(!name.is_empty());
        }
    }

    /// Host rules: a host that parses matches whatever its case, port or trailing dot; one that
    /// does not parse gets the `required` fallback, never a rule that ignores the host.
    #[test]
    fn hosts_match_in_any_spelling_and_unparsable_ones_get_the_fallback(
        host in prop_oneof![text(), "[a-zA-Z0-9-]{1,12}(\\.[a-zA-Z0-9-]{1,12}){0,3}"],
        upper in any::<bool>(),
        dot in any::<bool>(),
        port in proptest::option::of(any::<u16>()),
    ) {
        let routes: RouteConfig = config().routes;
        let rule = |h: &str| routes.requirements("GET", h, "/healthz", &HashMap::new()).unwrap().rule.clone();
        match host_name(&host) {
            None => prop_assert_eq!(rule(&host), "default"),
            Some(name) if !name.starts_with('[') => {
                let mut spelled = if upper { name.to_ascii_uppercase() } else { name.to_string() };
                if dot {
                    spelled.push('.');
                }
                if let Some(port) = port {
                    spelled.push_str(&format!(":{port}"));
                }
                prop_assert_eq!(host_name(&spelled).map(str::to_ascii_lowercase), Some(name.to_ascii_lowercase()));
                prop_assert_eq!(rule(&spelled), rule(name));
                // The host rule: admin.example in any spelling.
                let admin = |h: &str| routes.requirements("GET", h, "/admin/x", &HashMap::new()).unwrap().groups_any.clone();
                let wanted = name.eq_ignore_ascii_case("admin.example");
                prop_assert_eq!(!admin(&spelled).is_empty(), wanted);
            }
            Some(_) => {}
        }
    }

    #[test]
    fn credential_parsing_never_panics(value in text(), name in text()) {
        // With the key wanted or not, the same credential.
        prop_assert_eq!(parse_bearer(&value, Keys::Wanted), parse_bearer(&value, Keys::Unneeded));
        if let Credential::Token(token) = parse_bearer(&value, Keys::Wanted) {
            // The key is the token's own, from memory or hashed now.
            prop_assert_eq!(token.key(), cognito_authz::cache::token_key(token.as_str()));
            let token = token.as_str();
            prop_assert!(value.contains(token));
            prop_assert!(!token.contains(' '));
        }
        let headers = HashMap::from([("cookie".to_string(), value.clone())]);
        let named = Some(name.as_str());
        prop_assert_eq!(
            find_credential(&headers, named, named, Keys::Wanted),
            find_credential(&headers, named, named, Keys::Unneeded)
        );
        if let Some(rest) = strip_cookie(&value, &name) {
            let gone = rest
                .split(';')
                .filter_map(|pair| pair.split_once('='))
                .all(|(k, _)| k.trim() != name);
            prop_assert!(gone, "{rest:?} still holds {name:?}");
        }
        let _ = is_preflight(&name, &headers);
    }

    #[test]
    fn token_decoding_never_panics(token in text(), max in 0usize..64) {
        let _ = decode(&token, max * 64, &mut Vec::new());
        let _ = unverified_payload(&token);
        let dotted = format!("{token}.{token}.{token}");
        let _ = decode(&dotted, 16 * 1024, &mut Vec::new());
    }

    #[test]
    fn route_matching_never_panics(
        method in text(),
        host in text(),
        path in text(),
        extensions in proptest::collection::hash_map(
            prop_oneof![Just("cognito_authz.mode".to_string()), Just("cognito_authz.groups_any".to_string()),
                        Just("cognito_authz.allow_preflight".to_string()), text()],
            text(),
            0..4,
        ),
    ) {
        let routes: RouteConfig = config().routes;
        let _ = routes.requirements(&method, &host, &path, &extensions);
    }
}

/// Method, host, path, headers and context_extensions of one CheckRequest.
type Pairs = Vec<(String, String)>;
type CheckParts = (String, String, String, Pairs, Pairs);

fn arbitrary_check() -> impl Strategy<Value = CheckParts> {
    let valid = valid_token().to_string();
    let bearer = format!("Bearer {valid}");
    (
        prop_oneof![Just("GET".to_string()), Just("OPTIONS".to_string()), text()],
        prop_oneof![
            Just("admin.example".to_string()),
            Just("[::1".to_string()),
            text()
        ],
        prop_oneof![
            Just("/healthz".to_string()),
            Just("/home".to_string()),
            Just("/admin/x".to_string()),
            Just("/api".to_string()),
            text()
        ],
        proptest::collection::vec(
            (
                proptest::sample::select(HEADER_NAMES.to_vec()).prop_map(str::to_string),
                prop_oneof![
                    credential(bearer),
                    credential(valid.clone()),
                    credential(format!("jwt={valid}")),
                    text()
                ],
            ),
            0..6,
        ),
        proptest::collection::vec(
            (
                prop_oneof![
                    Just("cognito_authz.mode".to_string()),
                    Just("cognito_authz.allow_preflight".to_string()),
                    Just("cognito_authz.deny_invalid".to_string()),
                    text()
                ],
                prop_oneof![
                    Just("optional".to_string()),
                    Just("public".to_string()),
                    text()
                ],
            ),
            0..3,
        ),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 768, ..ProptestConfig::default() })]

    #[test]
    fn any_check_request_gets_an_answer_and_identity_only_from_the_token(
        (method, host, path, headers, extensions) in arbitrary_check()
    ) {
        let authorizer = authorizer();
        let valid = valid_token();
        let sub = access_claims(ISS, CLIENT, now())["sub"].as_str().unwrap().to_string();
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let extensions: Vec<(&str, &str)> = extensions.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut request = check_request(&method, &path, &headers, &extensions);
        request.attributes.as_mut().unwrap().request.as_mut().unwrap().http.as_mut().unwrap().host = host;
        let carries_token = headers.iter().any(|(_, v)| v.contains(valid));

        let response = runtime().block_on(authorizer.check(&request));
        let Ok(response) = response else {
            // Only a context_extensions value Envoy itself got wrong is a gRPC error.
            prop_assert!(!extensions.is_empty());
            return Ok(());
        };
        if let Some(HttpResponse::OkResponse(ok)) = &response.http_response {
            let set: HashMap<&str, &str> = ok
                .headers
                .iter()
                .filter_map(|h| h.header.as_ref())
                .map(|h| (h.key.as_str(), h.value.as_str()))
                .collect();
            // The mapped header outside our prefix is invisible to us: set or removed always.
            prop_assert!(
                set.contains_key("x-tenant-id")
                    || ok.headers_to_remove.iter().any(|r| r == "x-tenant-id")
            );
            if let Some(seen) = set.get("x-cognito-sub") {
                prop_assert!(carries_token, "identity without the token");
                prop_assert_eq!(*seen, sub.as_str());
            }
            for (name, _) in &headers {
                let managed = name.starts_with("x-cognito-") || IDENTITY_HEADERS.contains(name);
                if managed && !set.contains_key(name) {
                    prop_assert!(ok.headers_to_remove.iter().any(|r| r == name), "{name} survives");
                }
            }
        }
    }
}
