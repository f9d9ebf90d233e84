//! The verified-token cache through Check: a hit skips verification, yet expiry, the signing
//! key's presence in the JWKS and the route's policy are checked on every request.

use std::collections::HashMap;

use crate::common;

use cognito_authz::authz::Authorizer;
use cognito_authz::clock::Clock;
use cognito_authz::config::Config;
use cognito_authz::decision::{CheckInput, Now, Outcome};
use cognito_authz::jwks::KeyStore;
use cognito_authz::metrics::Metrics;
use cognito_authz::revocation::{Entry, Revocation};
use cognito_authz::testkit::{access_claims, jwks, now, Behaviour, JwksServer, TestKey};
use common::{answer, check_request, env_for, Answer, CLIENT, ISS};

const ROUTES: &str = r#"
[[routes]]
prefix = "/admin"
mode = "required"
groups_any = ["root"]
"#;

async fn setup(idp: &JwksServer, leeway: &str) -> (Authorizer, Metrics) {
    setup_with_clock(idp, leeway, Clock::system()).await
}

async fn setup_with_clock(idp: &JwksServer, leeway: &str, clock: Clock) -> (Authorizer, Metrics) {
    let leeway = [("COGNITO_CLOCK_LEEWAY_SECONDS", leeway)];
    authorizer_for(idp, &leeway, ROUTES, clock).await
}

/// An authorizer over `idp`'s keys with the environment `extra` and the routes `routes`.
async fn authorizer_for(
    idp: &JwksServer,
    extra: &[(&str, &str)],
    routes: &str,
    clock: Clock,
) -> (Authorizer, Metrics) {
    let vars = env_for(&idp.url("/jwks.json"), extra);
    let config = Config::from_toml(|k| vars.get(k).cloned(), routes).unwrap();
    let keys = KeyStore::new(&config.pools, &config.jwks).unwrap();
    assert!(keys.refresh_all().await);
    let metrics = Metrics::new();
    let authorizer = Authorizer::with_clock(
        config.verifier(keys),
        config.routes.clone(),
        config.token_cache_entries,
        metrics.clone(),
        clock,
    );
    (authorizer, metrics)
}

async fn check(a: &Authorizer, path: &str, token: &str) -> Answer {
    let auth = format!("Bearer {token}");
    answer(
        &a.check(&check_request(
            "GET",
            path,
            &[("authorization", &auth)],
            &[],
        ))
        .await
        .unwrap(),
    )
}

fn lookups(metrics: &Metrics, result: &str) -> u64 {
    let needle = format!("cognito_authz_token_cache_lookups_total{{result=\"{result}\"}} ");
    metrics
        .encode()
        .lines()
        .find_map(|l| l.strip_prefix(&needle).map(|n| n.trim().parse().unwrap()))
        .unwrap_or(0)
}

#[tokio::test]
async fn a_seen_token_is_a_hit_and_the_policy_still_runs() {
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let (a, metrics) = setup(&idp, "30").await;
    let token = TestKey::shared(0).token(&access_claims(ISS, CLIENT, now()));
    assert!(matches!(
        check(&a, "/api", &token).await,
        Answer::Allowed { .. }
    ));
    assert_eq!(
        (lookups(&metrics, "miss"), lookups(&metrics, "hit")),
        (1, 0)
    );
    match check(&a, "/api", &token).await {
        Answer::Allowed { set, .. } => {
            assert_eq!(set["x-cognito-sub"], "8f1e2d3c-0000-4000-8000-00000000abcd");
            assert_eq!(set["x-cognito-groups"], "admins,beta");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(lookups(&metrics, "hit"), 1);
    // The same cached token on a route it lacks the group for.
    match check(&a, "/admin/x", &token).await {
        Answer::Denied { status, .. } => assert_eq!(status, 403),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        lookups(&metrics, "hit"),
        2,
        "the 403 came from a hit: policy ran on it"
    );
    assert_eq!(a.cache_len(), 1);
}

#[tokio::test]
async fn a_cached_token_expires_on_time() {
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    // A manual clock: the token expires when the test moves it, not on a second boundary.
    let clock = Clock::manual(now());
    let (a, metrics) = setup_with_clock(&idp, "0", clock.clone()).await;
    let mut claims = access_claims(ISS, CLIENT, clock.now());
    claims["exp"] = serde_json::json!(clock.now() + 2);
    let token = TestKey::shared(0).token(&claims);
    assert!(matches!(
        check(&a, "/api", &token).await,
        Answer::Allowed { .. }
    ));
    assert!(matches!(
        check(&a, "/api", &token).await,
        Answer::Allowed { .. }
    ));
    assert_eq!(lookups(&metrics, "hit"), 1);
    assert!(clock.advance(1));
    assert_eq!(lookups(&metrics, "hit"), 1);
    assert!(
        matches!(check(&a, "/api", &token).await, Answer::Allowed { .. }),
        "a second before exp"
    );
    assert!(clock.advance(1));
    match check(&a, "/api", &token).await {
        Answer::Denied { status, body, .. } => {
            assert_eq!((status, body["reason"].as_str()), (401, Some("expired")));
        }
        other => panic!("a cached token outlived its exp: {other:?}"),
    }
    assert_eq!(lookups(&metrics, "stale"), 1);
}

#[tokio::test]
async fn a_key_removed_from_the_jwks_invalidates_its_cached_tokens_at_the_next_refresh() {
    let idp = JwksServer::start(Behaviour::Json(jwks(&[
        TestKey::shared(0),
        TestKey::shared(1),
    ])))
    .await;
    let (a, metrics) = setup(&idp, "30").await;
    let token = TestKey::shared(1).token(&access_claims(ISS, CLIENT, now()));
    assert!(matches!(
        check(&a, "/api", &token).await,
        Answer::Allowed { .. }
    ));
    assert!(matches!(
        check(&a, "/api", &token).await,
        Answer::Allowed { .. }
    ));
    assert_eq!(lookups(&metrics, "hit"), 1);

    idp.set(Behaviour::Json(jwks(&[TestKey::shared(0)])));
    assert!(a.verifier().keys().refresh(0).await);
    match check(&a, "/api", &token).await {
        Answer::Denied { status, body, .. } => {
            assert_eq!(
                (status, body["reason"].as_str()),
                (401, Some("unknown_kid"))
            );
        }
        other => panic!("a removed key's token was still accepted: {other:?}"),
    }
    assert_eq!(lookups(&metrics, "stale"), 1);
}

#[tokio::test]
async fn a_zero_size_cache_verifies_every_time() {
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let vars = env_for(&idp.url("/j"), &[("COGNITO_TOKEN_CACHE_SIZE", "0")]);
    let config = Config::from_lookup(|k| vars.get(k).cloned(), None).unwrap();
    assert_eq!(config.token_cache_entries, 0);
    let keys = KeyStore::new(&config.pools, &config.jwks).unwrap();
    keys.refresh_all().await;
    let a = Authorizer::new(
        config.verifier(keys),
        config.routes.clone(),
        0,
        Metrics::new(),
    );
    let token = TestKey::shared(0).token(&access_claims(ISS, CLIENT, now()));
    for _ in 0..3 {
        assert!(matches!(
            check(&a, "/api", &token).await,
            Answer::Allowed { .. }
        ));
    }
    assert!(a.cache_len() == 0);
}

/// Decides `input` both ways: `decide_now` on `now_first` (finished with `decide_from` if it
/// must wait), `decide` on its twin `waited`. The outcomes must be the same: the answer, the
/// verdict and every metadata field. Whether `now_first` decided it without a wait.
async fn same_either_way(
    now_first: &Authorizer,
    waited: &Authorizer,
    input: &CheckInput<'_>,
    case: &str,
) -> bool {
    let (ours, decided_now) = match now_first.decide_now(input) {
        Now::Decided(outcome) => (outcome, true),
        Now::Wait(resume) => (now_first.decide_from(input, resume).await, false),
    };
    let theirs = waited.decide(input).await;
    let (ours, theirs) = match (ours, theirs) {
        (Ok(ours), Ok(theirs)) => (ours, theirs),
        (Err(ours), Err(theirs)) => {
            assert_eq!(format!("{ours:?}"), format!("{theirs:?}"), "{case}");
            return decided_now;
        }
        (ours, theirs) => panic!("{case}: {ours:?} against {theirs:?}"),
    };
    assert_eq!(ours.answer, theirs.answer, "{case}");
    assert_eq!(
        format!("{:?}", ours.verdict),
        format!("{:?}", theirs.verdict),
        "{case}"
    );
    let fields = |o: &Outcome| -> Vec<(String, String)> {
        o.metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    assert_eq!(fields(&ours), fields(&theirs), "{case}");
    decided_now
}

/// `headers` as the decision core reads them.
fn header_map(headers: &[(&str, String)]) -> HashMap<String, String> {
    headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// The module decides a check on Envoy's worker thread when it needs no wait
/// (`Authorizer::decide_now`), and finishes the others on its runtime (`decide_from`). Side by
/// side with `decide` on a twin authorizer, over every kind of request (Envoy's route
/// overrides included), with the cache, without it, and in dry-run mode with full metadata,
/// the outcome is the same, and each request's cache lookup is counted once.
#[tokio::test]
async fn a_decision_made_without_waiting_is_the_one_a_wait_would_make() {
    const MIXED: &str = r#"
[[routes]]
prefix = "/admin"
mode = "required"
groups_any = ["root"]

[[routes]]
prefix = "/open"
mode = "public"

[[routes]]
prefix = "/maybe"
mode = "optional"

[[routes]]
prefix = "/strict"
mode = "optional"
deny_invalid = true

[[routes]]
prefix = "/checked"
mode = "required"
revocation = "cognito"

[[routes]]
prefix = "/cors"
mode = "required"
allow_preflight = true
"#;
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;

    let valid = TestKey::shared(0).token(&access_claims(ISS, CLIENT, now()));
    let mut claims = access_claims(ISS, CLIENT, now());
    claims["cognito:groups"] = serde_json::json!(["root"]);
    let root = TestKey::shared(0).token(&claims);
    let mut forged = valid.clone();
    forged.truncate(forged.len() - 4);
    forged.push_str("AAAA");
    let expired = TestKey::shared(0).token(&access_claims(ISS, CLIENT, now() - 7200));
    let bearer = |t: &str| format!("Bearer {t}");
    /// Method, host, path, headers, Envoy's `context_extensions`.
    type Case<'a> = (
        &'a str,
        &'a str,
        &'a str,
        Vec<(&'a str, String)>,
        Vec<(&'a str, &'a str)>,
    );
    let get = |path: &'static str, headers: Vec<(&'static str, String)>| -> Case {
        ("GET", "app.example", path, headers, vec![])
    };
    let overridden = |path: &'static str,
                      headers: Vec<(&'static str, String)>,
                      extensions: Vec<(&'static str, &'static str)>|
     -> Case { ("GET", "app.example", path, headers, extensions) };
    let auth = |token: &str| vec![("authorization", bearer(token))];
    let cases: Vec<Case> = vec![
        get("/api", auth(&valid)),
        get("/admin", auth(&valid)),
        get("/admin", auth(&root)),
        get("/api", auth(&forged)),
        get("/api", auth(&expired)),
        get("/api", vec![("authorization", "Bearer".into())]),
        get("/api", vec![]),
        get("/maybe", vec![]),
        get("/maybe", auth(&forged)),
        get("/maybe", auth(&valid)),
        get("/strict", auth(&forged)),
        get("/strict", vec![("authorization", "Bearer".into())]),
        get("/strict", auth(&valid)),
        get("/open", auth(&forged)),
        // A route that asks Cognito is never decided from the cache (no checker here: a wait
        // refuses it as unavailable), with the token cached or not.
        get("/checked", auth(&valid)),
        get("/checked", vec![]),
        (
            "OPTIONS",
            "app.example",
            "/cors",
            vec![
                ("origin", "https://web.example".into()),
                ("access-control-request-method", "GET".into()),
            ],
            vec![],
        ),
        ("GET", "app.example:bad:port", "/api", auth(&valid), vec![]),
        get(
            "/api",
            vec![
                ("authorization", bearer(&valid)),
                ("x-cognito-sub", "forged".into()),
                ("x-request-id", "r-1".into()),
            ],
        ),
        // Envoy's per-route overrides: they change the rule decide_now reads too.
        overridden(
            "/api",
            auth(&valid),
            vec![("cognito_authz.revocation", "cognito")],
        ),
        overridden(
            "/admin",
            vec![
                ("authorization", bearer(&forged)),
                ("x-cognito-sub", "forged".into()),
            ],
            vec![("cognito_authz.mode", "public")],
        ),
        overridden(
            "/api",
            auth(&valid),
            vec![
                ("cognito_authz.groups_any", "root"),
                ("cognito_authz.rule", "by-envoy"),
            ],
        ),
        overridden(
            "/api",
            auth(&valid),
            vec![
                ("cognito_authz.mode", "optional"),
                ("cognito_authz.scopes_all", "admin"),
            ],
        ),
        overridden(
            "/maybe",
            auth(&forged),
            vec![("cognito_authz.deny_invalid", "true")],
        ),
        overridden("/api", auth(&valid), vec![("cognito_authz.mode", "publik")]),
    ];
    // With the cache; without it (where every check is left to the wait); with it, in dry-run
    // mode with full metadata.
    let no_cache = [("COGNITO_TOKEN_CACHE_SIZE", "0")];
    for (extra, shadow, least_now) in [
        (&[][..], false, 14),
        (&no_cache[..], false, 0),
        (&[][..], true, 14),
    ] {
        let (now_first, now_metrics) = authorizer_for(&idp, extra, MIXED, Clock::system()).await;
        let (waited, waited_metrics) = authorizer_for(&idp, extra, MIXED, Clock::system()).await;
        for a in [&now_first, &waited] {
            a.set_dry_run(shadow);
            a.set_full_metadata(shadow);
        }
        let (mut decided_now, mut waits) = (0, 0);
        // Twice over: first with every token unseen, then with the valid ones cached.
        for pass in 0..2 {
            for (method, host, path, headers, extensions) in &cases {
                let headers = header_map(headers);
                let extensions: HashMap<String, String> = extensions
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                let input = CheckInput {
                    method,
                    host,
                    path,
                    headers: &headers,
                    extensions: &extensions,
                };
                let case = format!(
                    "{extra:?} dry-run {shadow} pass {pass}: {method} {host}{path} {:?} {extensions:?}",
                    headers.keys()
                );
                if same_either_way(&now_first, &waited, &input, &case).await {
                    decided_now += 1;
                } else {
                    waits += 1;
                }
            }
        }
        // Both ways were taken (with the cache): the cached and tokenless cases at once, the
        // tokens to verify later.
        assert!(
            decided_now >= least_now && waits >= 4,
            "{extra:?}: {decided_now} now, {waits} waited"
        );
        for result in ["hit", "miss", "stale"] {
            assert_eq!(
                lookups(&now_metrics, result),
                lookups(&waited_metrics, result),
                "{extra:?}: {result}"
            );
        }
        assert_eq!(
            lookups(&now_metrics, "hit") >= 3,
            least_now > 0,
            "{extra:?}"
        );
    }
}

/// What the cache holds is judged again on every request, as the wait judges what it
/// verifies: an identity decided from the cache without a wait is refused while the shared
/// revocations load and once its user is revoked; one whose key left the JWKS or whose token
/// expired is dropped (counted stale, once) and the token verified again. Side by side with
/// `decide` on a twin authorizer on the same clock, each outcome is the same.
#[tokio::test]
async fn a_cached_identity_is_judged_again_as_a_wait_would_judge_it() {
    const ROUTES: &str = "[[routes]]\nprefix = \"/maybe\"\nmode = \"optional\"\n";
    let idp = JwksServer::start(Behaviour::Json(jwks(&[
        TestKey::shared(0),
        TestKey::shared(1),
    ])))
    .await;
    let clock = Clock::manual(now());
    let leeway = [("COGNITO_CLOCK_LEEWAY_SECONDS", "0")];
    let (now_first, now_metrics) = authorizer_for(&idp, &leeway, ROUTES, clock.clone()).await;
    let (waited, waited_metrics) = authorizer_for(&idp, &leeway, ROUTES, clock.clone()).await;
    let both = [&now_first, &waited];

    let at = clock.now();
    // Issued a little earlier: a user's sign-out at `at` revokes them.
    let lasting = TestKey::shared(0).token(&access_claims(ISS, CLIENT, at - 10));
    let mut claims = access_claims(ISS, CLIENT, at - 10);
    claims["exp"] = serde_json::json!(at + 2);
    claims["jti"] = serde_json::json!("short-lived");
    let brief = TestKey::shared(0).token(&claims);
    claims["exp"] = serde_json::json!(at + 3600);
    claims["jti"] = serde_json::json!("second-key");
    let rotated = TestKey::shared(1).token(&claims);

    let none = HashMap::new();
    // Each request on the required fallback, then on the optional route; whether each was
    // decided without a wait is what `expect_now` says.
    let compare = |token: &String, step: &'static str, expect_now: [bool; 2]| {
        let headers = header_map(&[("authorization", format!("Bearer {token}"))]);
        let (now_first, waited, none) = (&now_first, &waited, &none);
        async move {
            for (path, expect_now) in ["/api", "/maybe"].into_iter().zip(expect_now) {
                let input = CheckInput {
                    method: "GET",
                    host: "app.example",
                    path,
                    headers: &headers,
                    extensions: none,
                };
                let case = format!("{step}: {path}");
                let decided_now = same_either_way(now_first, waited, &input, &case).await;
                assert_eq!(decided_now, expect_now, "{case}");
            }
        }
    };
    // Verified, then from the cache.
    for token in [&lasting, &brief, &rotated] {
        compare(token, "unseen", [false, true]).await;
    }

    // The revocations shared through Redis are loading: nothing is admitted, cached or not.
    for a in both {
        a.revocations().set_loading(true);
    }
    compare(&lasting, "loading", [true, true]).await;
    for a in both {
        a.revocations().set_loading(false);
    }

    // The second key leaves the JWKS: its cached token is stale, verified again and refused.
    idp.set(Behaviour::Json(jwks(&[TestKey::shared(0)])));
    for a in both {
        assert!(a.verifier().keys().refresh(0).await);
    }
    compare(&rotated, "key gone", [false, false]).await;

    // The short-lived token expires: stale, verified again, refused.
    assert!(clock.advance(2));
    compare(&brief, "expired", [false, false]).await;

    // Its user signs out everywhere: every token issued before now is revoked, the cached
    // one too.
    let entry = Entry {
        revocation: Revocation::Sub {
            sub: "8f1e2d3c-0000-4000-8000-00000000abcd".into(),
            before: at,
        },
        expires: at + 7200,
    };
    for a in both {
        a.revocations().insert(&entry).unwrap();
    }
    compare(&lasting, "revoked", [true, true]).await;

    for result in ["hit", "miss", "stale"] {
        assert_eq!(
            lookups(&now_metrics, result),
            lookups(&waited_metrics, result),
            "{result}"
        );
    }
    // Each stale entry counted once (on the first request after it went stale).
    assert_eq!(lookups(&now_metrics, "stale"), 2);
}

/// A configuration reloaded between `decide_now` and `decide_from` decides the check under the
/// new routes, and its verified token lands in the new cache.
#[tokio::test]
async fn a_reload_between_the_two_halves_decides_under_the_new_routes() {
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let (a, metrics) = authorizer_for(&idp, &[], "", Clock::system()).await;
    let token = TestKey::shared(0).token(&access_claims(ISS, CLIENT, now()));
    let headers = header_map(&[("authorization", format!("Bearer {token}"))]);
    let none = HashMap::new();
    let input = CheckInput {
        method: "GET",
        host: "app.example",
        path: "/api",
        headers: &headers,
        extensions: &none,
    };
    let Now::Wait(resume) = a.decide_now(&input) else {
        panic!("an unseen token was decided without a wait");
    };
    let vars = env_for(&idp.url("/jwks.json"), &[]);
    let config =
        Config::from_toml(|k| vars.get(k).cloned(), &ROUTES.replace("/admin", "/")).unwrap();
    a.replace(
        a.verifier(),
        config.routes.clone(),
        config.token_cache_entries,
    );
    let outcome = a.decide_from(&input, resume).await.unwrap();
    assert_eq!(outcome.verdict.reason, "missing_group");
    assert_eq!(a.cache_len(), 1, "verified into the new cache");
    let Now::Decided(Ok(again)) = a.decide_now(&input) else {
        panic!("the token the new cache holds was not decided from it");
    };
    assert_eq!(again.verdict.reason, "missing_group");
    assert_eq!(
        (lookups(&metrics, "miss"), lookups(&metrics, "hit")),
        (1, 1)
    );
}
