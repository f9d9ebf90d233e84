//! The verified-token cache through Check: a hit skips verification, yet expiry, the signing
//! key's presence in the JWKS and the route's policy are checked on every request.

use crate::common;

use cognito_authz::authz::Authorizer;
use cognito_authz::clock::Clock;
use cognito_authz::config::Config;
use cognito_authz::jwks::KeyStore;
use cognito_authz::metrics::Metrics;
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

/// The module decides a check on Envoy's worker thread when it needs no wait
/// (`Authorizer::decide_now`), and finishes the others on its runtime (`decide_from`). Side by
/// side with `decide` on a twin authorizer, over every kind of request and in both cache
/// states, the outcome is the same, and each request's cache lookup is counted once.
#[tokio::test]
async fn a_decision_made_without_waiting_is_the_one_a_wait_would_make() {
    use cognito_authz::decision::{CheckInput, Now};
    use std::collections::HashMap;

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
    /// Method, host, path, headers.
    type Case<'a> = (&'a str, &'a str, &'a str, Vec<(&'a str, String)>);
    let get = |path: &'static str, headers: Vec<(&'static str, String)>| -> Case {
        ("GET", "app.example", path, headers)
    };
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
        get("/open", auth(&forged)),
        (
            "OPTIONS",
            "app.example",
            "/cors",
            vec![
                ("origin", "https://web.example".into()),
                ("access-control-request-method", "GET".into()),
            ],
        ),
        ("GET", "app.example:bad:port", "/api", auth(&valid)),
        get(
            "/api",
            vec![
                ("authorization", bearer(&valid)),
                ("x-cognito-sub", "forged".into()),
                ("x-request-id", "r-1".into()),
            ],
        ),
    ];
    let extensions = HashMap::new();
    // With the cache, and without (where every check is left to the wait).
    for (extra, least_now) in [(&[][..], 10), (&[("COGNITO_TOKEN_CACHE_SIZE", "0")][..], 0)] {
        let (now_first, now_metrics) = authorizer_for(&idp, extra, MIXED, Clock::system()).await;
        let (waited, waited_metrics) = authorizer_for(&idp, extra, MIXED, Clock::system()).await;
        let (mut decided_now, mut waits) = (0, 0);
        // Twice over: first with every token unseen, then with the valid ones cached.
        for pass in 0..2 {
            for (method, host, path, headers) in &cases {
                let headers: HashMap<String, String> = headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect();
                let input = CheckInput {
                    method,
                    host,
                    path,
                    headers: &headers,
                    extensions: &extensions,
                };
                let ours = match now_first.decide_now(&input) {
                    Now::Decided(outcome) => {
                        decided_now += 1;
                        outcome.unwrap()
                    }
                    Now::Wait(resume) => {
                        waits += 1;
                        now_first.decide_from(&input, resume).await.unwrap()
                    }
                };
                let theirs = waited.decide(&input).await.unwrap();
                let case = format!(
                    "{extra:?} pass {pass}: {method} {host}{path} {:?}",
                    headers.keys()
                );
                assert_eq!(ours.answer, theirs.answer, "{case}");
                assert_eq!(
                    format!("{:?}", ours.verdict),
                    format!("{:?}", theirs.verdict),
                    "{case}"
                );
                assert_eq!(
                    format!("{:?}", ours.metadata),
                    format!("{:?}", theirs.metadata),
                    "{case}"
                );
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
