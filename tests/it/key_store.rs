//! The key store against a real HTTP JWKS server on 127.0.0.1:0: start-up fetch, rotation,
//! the penalty window, outages and hostile IdP answers, counted at the server.

use crate::common;

use std::time::{Duration, Instant};

use cognito_authz::testkit::{access_claims, jwks, now, Behaviour, JwksServer, TestKey};
use cognito_authz::verify::Reason;
use common::{config_for, verifier_for, CLIENT, ISS};

fn token(key: &TestKey) -> String {
    key.token(&access_claims(ISS, CLIENT, now()))
}

#[tokio::test]
async fn keys_are_fetched_at_start_up_and_used_without_further_fetches() {
    let server = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let config = config_for(&server.url("/jwks.json"), &[]);
    let verifier = verifier_for(&config);
    assert!(verifier.keys().refresh_all().await);
    assert_eq!(server.hits(), 1);
    for _ in 0..20 {
        verifier.verify(&token(TestKey::shared(0))).await.unwrap();
    }
    assert_eq!(
        server.hits(),
        1,
        "verification never fetches for a known kid"
    );
    let status = &verifier.keys().status()[0];
    assert_eq!(status.kids, vec![TestKey::shared(0).kid.clone()]);
    assert!(status.last_success.is_some());
    assert_eq!(status.last_error, None);
}

#[tokio::test]
async fn a_rotated_key_is_accepted_after_exactly_one_refetch() {
    let server = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let config = config_for(&server.url("/jwks.json"), &[]);
    let verifier = verifier_for(&config);
    verifier.keys().refresh_all().await;

    server.set(Behaviour::Json(jwks(&[
        TestKey::shared(0),
        TestKey::shared(1),
    ])));
    let claims = verifier.verify(&token(TestKey::shared(1))).await.unwrap();
    assert_eq!(claims.client_id, CLIENT);
    assert_eq!(server.hits(), 2, "one start-up fetch, one refetch");
    verifier.verify(&token(TestKey::shared(1))).await.unwrap();
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn a_refetch_outlives_a_caller_that_gave_up() {
    // Envoy resets the stream after its timeout, dropping the Check future halfway through an
    // unknown-kid refetch. The fetch must finish anyway, or the rotated key stays unknown for a
    // whole penalty window.
    let server = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let config = config_for(
        &server.url("/jwks.json"),
        &[("COGNITO_JWKS_MIN_REFETCH_SECONDS", "3600")],
    );
    let verifier = verifier_for(&config);
    verifier.keys().refresh_all().await;
    server.set(Behaviour::Slow(
        Duration::from_millis(600),
        Box::new(Behaviour::Json(jwks(&[
            TestKey::shared(0),
            TestKey::shared(1),
        ]))),
    ));
    let rotated = token(TestKey::shared(1));
    let gave_up = tokio::time::timeout(Duration::from_millis(100), verifier.verify(&rotated)).await;
    assert!(gave_up.is_err(), "the caller's deadline passed first");

    let deadline = Instant::now() + Duration::from_secs(5);
    while !verifier.keys().has_key(0, &TestKey::shared(1).kid) {
        assert!(
            Instant::now() < deadline,
            "the abandoned refetch never landed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    verifier
        .verify(&rotated)
        .await
        .expect("the rotated key is in place");
    assert_eq!(server.hits(), 2, "one start-up fetch, one refetch");
}

#[tokio::test]
async fn callers_of_one_refetch_share_its_result() {
    let server = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let config = config_for(
        &server.url("/jwks.json"),
        &[("COGNITO_JWKS_MIN_REFETCH_SECONDS", "3600")],
    );
    let verifier = verifier_for(&config);
    verifier.keys().refresh_all().await;
    server.set(Behaviour::Slow(
        Duration::from_millis(300),
        Box::new(Behaviour::Json(jwks(&[
            TestKey::shared(0),
            TestKey::shared(1),
        ]))),
    ));
    let rotated = token(TestKey::shared(1));
    let mut waiters = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (verifier, rotated) = (verifier.clone(), rotated.clone());
        waiters.spawn(async move { verifier.verify(&rotated).await.map(|_| ()) });
    }
    while let Some(result) = waiters.join_next().await {
        result.unwrap().expect("every waiter sees the fetched key");
    }
    assert_eq!(server.hits(), 2, "eight waiters, one refetch");
}

#[tokio::test]
async fn a_flood_of_unknown_kids_costs_one_fetch_per_penalty_window() {
    let server = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let config = config_for(
        &server.url("/jwks.json"),
        &[("COGNITO_JWKS_MIN_REFETCH_SECONDS", "1")],
    );
    let verifier = verifier_for(&config);
    verifier.keys().refresh_all().await;
    assert_eq!(server.hits(), 1);

    let claims = access_claims(ISS, CLIENT, now());
    let key = TestKey::shared(0);
    let mut tasks = Vec::new();
    for i in 0..200 {
        let verifier = verifier.clone();
        let forged = key.token_with_header(
            &serde_json::json!({"kid": format!("random-{i}"), "alg": "RS256"}),
            &claims,
        );
        tasks.push(tokio::spawn(async move { verifier.verify(&forged).await }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap_err().reason, Reason::UnknownKid);
    }
    assert_eq!(server.hits(), 2, "200 concurrent unknown kids, one refetch");

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let forged = key.token_with_header(
        &serde_json::json!({"kid": "after-window", "alg": "RS256"}),
        &claims,
    );
    assert_eq!(
        verifier.verify(&forged).await.unwrap_err().reason,
        Reason::UnknownKid
    );
    assert_eq!(server.hits(), 3, "the next window allows one more");
}

#[tokio::test]
async fn an_outage_keeps_the_last_good_keys() {
    let server = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let config = config_for(&server.url("/jwks.json"), &[]);
    let verifier = verifier_for(&config);
    verifier.keys().refresh_all().await;

    for answer in [
        Behaviour::Status(500),
        Behaviour::Status(404),
        Behaviour::Raw("<html>maintenance</html>".into()),
        Behaviour::Json(serde_json::json!({"keys": []})),
        Behaviour::Json(
            serde_json::json!({"keys": [{"kty": "RSA", "kid": "x", "n": "@@", "e": "AQAB"}]}),
        ),
        Behaviour::Raw(format!("{{\"keys\": [\"{}\"]}}", "a".repeat(300 * 1024))),
    ] {
        server.set(answer.clone());
        assert!(
            !verifier.keys().refresh(0).await,
            "{answer:?} must not succeed"
        );
        let status = &verifier.keys().status()[0];
        assert!(status.last_error.is_some(), "{answer:?} is recorded");
        assert_eq!(
            status.kids,
            vec![TestKey::shared(0).kid.clone()],
            "{answer:?}"
        );
        verifier
            .verify(&token(TestKey::shared(0)))
            .await
            .expect("the last good key still verifies");
    }
    assert!(verifier.keys().all_loaded(), "readiness stays up");
    assert_eq!(verifier.keys().status()[0].fetches_failed, 6);

    server.set(Behaviour::Json(jwks(&[TestKey::shared(0)])));
    assert!(verifier.keys().refresh(0).await);
    assert_eq!(verifier.keys().status()[0].last_error, None);
}

#[tokio::test]
async fn a_removed_key_stops_verifying_after_the_next_refresh() {
    let server = JwksServer::start(Behaviour::Json(jwks(&[
        TestKey::shared(0),
        TestKey::shared(1),
    ])))
    .await;
    let config = config_for(&server.url("/jwks.json"), &[]);
    let verifier = verifier_for(&config);
    verifier.keys().refresh_all().await;
    verifier.verify(&token(TestKey::shared(1))).await.unwrap();

    server.set(Behaviour::Json(jwks(&[TestKey::shared(0)])));
    assert!(verifier.keys().refresh(0).await);
    assert_eq!(
        verifier
            .verify(&token(TestKey::shared(1)))
            .await
            .unwrap_err()
            .reason,
        Reason::UnknownKid
    );
}

#[tokio::test]
async fn a_pool_that_never_got_keys_retries_with_backoff_and_recovers() {
    let server = JwksServer::start(Behaviour::Status(503)).await;
    let config = config_for(&server.url("/jwks.json"), &[]);
    let verifier = verifier_for(&config);
    assert!(!verifier.keys().refresh_all().await);
    assert_eq!(
        verifier
            .verify(&token(TestKey::shared(0)))
            .await
            .unwrap_err()
            .reason,
        Reason::KeysUnavailable
    );
    let tasks = verifier.keys().spawn_refresh();
    // Backoff starts at 1 s and doubles: 1 s, 2 s, ...
    tokio::time::sleep(Duration::from_millis(3400)).await;
    let failed = verifier.keys().status()[0].fetches_failed;
    assert!(
        (3..=5).contains(&failed),
        "start-up fetch and retries at about 1 s and 3 s: {failed}"
    );
    server.set(Behaviour::Json(jwks(&[TestKey::shared(0)])));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !verifier.keys().all_loaded() {
        assert!(Instant::now() < deadline, "the store did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    verifier.verify(&token(TestKey::shared(0))).await.unwrap();
    for task in tasks {
        task.abort();
    }
}

#[tokio::test]
async fn a_slow_idp_is_cut_off_by_the_fetch_timeout() {
    let server = JwksServer::start(Behaviour::Slow(
        Duration::from_secs(30),
        Box::new(Behaviour::Json(jwks(&[TestKey::shared(0)]))),
    ))
    .await;
    let config = config_for(
        &server.url("/jwks.json"),
        &[("COGNITO_JWKS_TIMEOUT_MS", "300")],
    );
    let verifier = verifier_for(&config);
    let started = Instant::now();
    assert!(!verifier.keys().refresh_all().await);
    assert!(started.elapsed() < Duration::from_secs(3));
    let started = Instant::now();
    let outcome = verifier.verify(&token(TestKey::shared(0))).await;
    assert_eq!(outcome.unwrap_err().reason, Reason::KeysUnavailable);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "a request waits at most about one fetch timeout"
    );
    let error = verifier.keys().status()[0].last_error.clone().unwrap();
    assert!(error.contains("request failed"), "{error}");
}

#[tokio::test]
async fn an_unknown_issuer_never_causes_a_fetch() {
    let server = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let config = config_for(&server.url("/jwks.json"), &[]);
    let verifier = verifier_for(&config);
    verifier.keys().refresh_all().await;
    for i in 0..50 {
        let mut claims = access_claims(ISS, CLIENT, now());
        claims["iss"] = serde_json::json!(format!("{}/x{i}", server.url("")));
        let forged = TestKey::shared(2).token_with_header(
            &serde_json::json!({"kid": format!("k{i}"), "alg": "RS256", "jku": server.url("/evil")}),
            &claims,
        );
        assert_eq!(
            verifier.verify(&forged).await.unwrap_err().reason,
            Reason::UnknownIssuer
        );
    }
    assert_eq!(
        server.hits(),
        1,
        "only the start-up fetch reached the server"
    );
}
