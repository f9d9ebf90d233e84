//! Revocation checks against a local `GetUser` endpoint whose answers the test chooses: one
//! call per token per TTL, tokens `GetUser` cannot judge, Cognito unavailable (deny, or grace
//! with a recent verdict), a timeout, and what `VerifyToken` and `verify` report.

use crate::common;

use std::time::Duration;

use cognito_authz::clock::Clock;
use cognito_authz::generated::diagnostics::diagnostics_client::DiagnosticsClient;
use cognito_authz::generated::diagnostics::VerifyTokenRequest;
use cognito_authz::server::{self, GrpcAddr};
use cognito_authz::testkit::{access_claims, id_claims, jwks, now, Behaviour, JwksServer, TestKey};
use common::{channel, serve_config, Answer, CLIENT, ISS};

async fn start(
    get_user: &JwksServer,
    idp: &JwksServer,
    extra: &[(&str, &str)],
) -> (server::Running, std::net::SocketAddr) {
    let endpoint = get_user.url("/");
    let secret = admin_secret_file();
    let mut vars = vec![
        ("AUTHZ_ADMIN_TOKEN_FILE", secret.to_str().unwrap()),
        ("COGNITO_REVOCATION", "cognito"),
        ("COGNITO_IDP_ENDPOINT", endpoint.as_str()),
        ("COGNITO_TOKEN_USE", "any"),
        ("COGNITO_REVOCATION_TTL_SECONDS", "1"),
        ("COGNITO_REVOCATION_TIMEOUT_MS", "300"),
    ];
    vars.extend_from_slice(extra);
    // A manual clock: a verdict's TTL passes when the test says so, not on a second boundary.
    let clock = Clock::manual(now());
    let running = server::start_with_clock(serve_config(&idp.url("/j"), &vars, ""), clock)
        .await
        .unwrap();
    let GrpcAddr::Tcp(addr) = running.grpc_addr else {
        unreachable!()
    };
    // Ready once the pool has keys.
    for _ in 0..500 {
        if running.authorizer().verifier().keys().all_loaded() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        running.authorizer().verifier().keys().all_loaded(),
        "no keys after 5 s"
    );
    (running, addr)
}

/// Moves the server's clock past the 1 s verdict TTL.
fn past_the_ttl(running: &server::Running) {
    assert!(running.authorizer().clock().advance(2), "a manual clock");
}

/// The control API's secret for these tests.
const ADMIN_SECRET: &str = "revocation-check-test-secret";

/// The secret's file, written once per process: the tests run side by side, and rewriting it
/// (truncate, then write) let another test's server read it empty.
fn admin_secret_file() -> std::path::PathBuf {
    static FILE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        let path = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "revocation-check-admin-token-{}",
            std::process::id()
        ));
        std::fs::write(&path, ADMIN_SECRET).unwrap();
        path
    })
    .clone()
}

async fn check(addr: std::net::SocketAddr, token: &str) -> (u16, String) {
    match common::check_bearer(addr, token).await {
        Answer::Allowed { .. } => (200, "allowed".into()),
        Answer::Denied { status, body, .. } => {
            (status as u16, body["reason"].as_str().unwrap_or("").into())
        }
    }
}

/// `cognito-authz verify -` (the token on stdin) with revocation checks against `get_user`: what it printed
/// and its exit code.
async fn verify_cli(
    idp: &JwksServer,
    get_user: &JwksServer,
    token: &str,
) -> (serde_json::Value, Option<i32>) {
    let endpoint = get_user.url("/");
    let vars = common::env_for(
        &idp.url("/j"),
        &[
            ("COGNITO_REVOCATION", "cognito"),
            ("COGNITO_IDP_ENDPOINT", &endpoint),
        ],
    );
    let token = token.to_string();
    let out = tokio::task::spawn_blocking(move || {
        use std::io::Write as _;
        use std::process::Stdio;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cognito-authz"))
            .args(["verify", "-"])
            .env_clear()
            .envs(&vars)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(token.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    (
        serde_json::from_slice(&out.stdout).unwrap(),
        out.status.code(),
    )
}

fn access() -> String {
    TestKey::shared(0).token(&access_claims(ISS, CLIENT, now()))
}

#[tokio::test]
async fn one_call_per_token_per_ttl_and_unverifiable_tokens_refused() {
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let get_user = JwksServer::start(Behaviour::Json(serde_json::json!({"Username": "u"}))).await;
    let (running, addr) = start(&get_user, &idp, &[]).await;
    let token = access();
    for _ in 0..3 {
        assert_eq!(check(addr, &token).await, (200, "allowed".into()));
    }
    assert_eq!(get_user.hits(), 1, "three checks within the TTL, one call");
    past_the_ttl(&running);
    assert_eq!(check(addr, &token).await.0, 200);
    assert_eq!(get_user.hits(), 2, "a new call once the TTL passed");

    // An ID token, and an access token without the admin scope: GetUser cannot judge them.
    let id = TestKey::shared(0).token(&id_claims(ISS, CLIENT, now()));
    assert_eq!(
        check(addr, &id).await,
        (403, "revocation_unverifiable".into())
    );
    let mut narrow = access_claims(ISS, CLIENT, now());
    narrow["scope"] = "openid".into();
    let narrow = TestKey::shared(0).token(&narrow);
    assert_eq!(
        check(addr, &narrow).await,
        (403, "revocation_unverifiable".into())
    );
    assert_eq!(get_user.hits(), 2, "no call for them");
    running.stop().await.unwrap();

    let (running, addr) = start(
        &get_user,
        &idp,
        &[("COGNITO_REVOCATION_UNVERIFIABLE", "allow")],
    )
    .await;
    assert_eq!(check(addr, &id).await.0, 200, "allowed when configured so");
    running.stop().await.unwrap();
}

#[tokio::test]
async fn cognito_unavailable_fails_closed_unless_the_route_accepts_a_recent_verdict() {
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let get_user = JwksServer::start(Behaviour::Json(serde_json::json!({}))).await;
    for (mode, after_outage) in [
        ("deny", (503, "revocation_unavailable".to_string())),
        ("grace", (200, "allowed".to_string())),
    ] {
        get_user.set(Behaviour::Json(serde_json::json!({})));
        let (running, addr) = start(
            &get_user,
            &idp,
            &[("COGNITO_REVOCATION_ON_UNAVAILABLE", mode)],
        )
        .await;
        let token = access();
        assert_eq!(check(addr, &token).await.0, 200, "{mode}: a fresh verdict");
        past_the_ttl(&running);
        // Throttled, then a 5xx, then slower than the timeout: no verdict each time. (A
        // token's missing verdict is held for a second, so the outages are a second apart.)
        for (i, outage) in [
            Behaviour::Status(429),
            Behaviour::Status(500),
            Behaviour::Slow(
                Duration::from_secs(2),
                Box::new(Behaviour::Json(serde_json::json!({}))),
            ),
        ]
        .into_iter()
        .enumerate()
        {
            if i > 0 {
                tokio::time::sleep(cognito_authz::revocation_check::NO_VERDICT_HOLD).await;
            }
            get_user.set(outage);
            assert_eq!(check(addr, &token).await, after_outage, "{mode}");
        }
        // A token never confirmed has no verdict to fall back on, in either mode.
        let mut other = access_claims(ISS, CLIENT, now());
        other["jti"] = "another-token".into();
        let other = TestKey::shared(0).token(&other);
        get_user.set(Behaviour::Status(500));
        assert_eq!(
            check(addr, &other).await,
            (503, "revocation_unavailable".into()),
            "{mode}"
        );
        let (_, metrics) = common::http_get(running.admin_addr, "/metrics").await;
        for result in ["valid", "throttled", "bad_answer", "timeout"] {
            assert!(
                metrics.contains(&format!(
                    "cognito_authz_revocation_checks_total{{result=\"{result}\"}}"
                )),
                "{result} not counted:\n{metrics}"
            );
        }
        running.stop().await.unwrap();
    }
}

#[tokio::test]
async fn verify_token_reports_the_revocation_check() {
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let get_user = JwksServer::start(Behaviour::Json(serde_json::json!({}))).await;
    let (running, addr) = start(&get_user, &idp, &[]).await;
    let token = access();
    let mut diag = DiagnosticsClient::new(channel(addr).await);
    let verdict = diag
        .verify_token(VerifyTokenRequest {
            token: token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(verdict.valid && verdict.revocation_checked);
    assert_eq!(verdict.revocation, "valid");

    // Revoked explicitly through the admin API.
    let revoked = reqwest::Client::new()
        .post(format!("http://{}/revocations", running.admin_addr))
        .bearer_auth(ADMIN_SECRET)
        .body(r#"{"origin_jti": "0b8f0c7e-1111-4111-8111-111111111111"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status().as_u16(), 200);
    let verdict = diag
        .verify_token(VerifyTokenRequest {
            token: token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            verdict.valid,
            verdict.reason.as_str(),
            verdict.revocation.as_str()
        ),
        (false, "revoked", "revoked_explicitly")
    );
    assert_eq!(check(addr, &token).await, (401, "revoked".into()));
    // A malformed revocation is refused.
    let bad = reqwest::Client::new()
        .post(format!("http://{}/revocations", running.admin_addr))
        .bearer_auth(ADMIN_SECRET)
        .body(r#"{"jti": "a", "sub": "b"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    running.stop().await.unwrap();

    // The verify command asks Cognito too.
    let (printed, code) = verify_cli(&idp, &get_user, &token).await;
    assert_eq!(
        printed["revocation"],
        serde_json::json!({"checked": true, "answer": "valid"})
    );
    assert_eq!(code, Some(0));
}

#[tokio::test]
async fn concurrent_checks_share_one_call_and_the_pool_cap_holds() {
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let get_user = JwksServer::start(Behaviour::Slow(
        Duration::from_millis(200),
        Box::new(Behaviour::Json(serde_json::json!({}))),
    ))
    .await;
    let (running, addr) = start(
        &get_user,
        &idp,
        &[("COGNITO_REVOCATION_MAX_CONCURRENT", "1")],
    )
    .await;
    // Five requests for one token at once: one call between them.
    let token = access();
    let same: Vec<_> = (0..5)
        .map(|_| {
            let token = token.clone();
            tokio::spawn(async move { check(addr, &token).await })
        })
        .collect();
    for c in same {
        assert_eq!(c.await.unwrap(), (200, "allowed".to_string()));
    }
    assert_eq!(get_user.hits(), 1, "five concurrent checks, one call");

    // Ten different tokens at once, a cap of one call and a queue of eight: the first is
    // answered; the queued ones wait for a turn within the 300 ms budget and fail closed when
    // what is left of it cannot cover a 200 ms call; past the queue, refused at once (busy).
    let tokens: Vec<String> = (0..10)
        .map(|i| {
            let mut claims = access_claims(ISS, CLIENT, now());
            claims["jti"] = format!("t{i}").into();
            TestKey::shared(0).token(&claims)
        })
        .collect();
    let all: Vec<_> = tokens
        .into_iter()
        .map(|t| tokio::spawn(async move { check(addr, &t).await }))
        .collect();
    let mut answers = Vec::new();
    for c in all {
        answers.push(c.await.unwrap());
    }
    let allowed = answers.iter().filter(|a| a.0 == 200).count();
    assert_eq!(allowed, 1, "{answers:?}");
    assert!(
        answers
            .iter()
            .all(|a| a.0 == 200 || *a == (503, "revocation_unavailable".to_string())),
        "{answers:?}"
    );
    let (_, metrics) = common::http_get(running.admin_addr, "/metrics").await;
    let count = |result: &str| {
        metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix(&format!(
                    "cognito_authz_revocation_checks_total{{result=\"{result}\"}} "
                ))
            })
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert!(count("busy") >= 1, "{metrics}");
    assert!(count("timeout") >= 1, "{metrics}");
    assert_eq!(count("busy") + count("timeout"), 9, "{metrics}");
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_new_tokens_queues_instead_of_failing() {
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    // Cognito answers in time (10 ms a call); the default cap of 16 calls in flight.
    let get_user = JwksServer::start(Behaviour::Slow(
        Duration::from_millis(10),
        Box::new(Behaviour::Json(serde_json::json!({}))),
    ))
    .await;
    // A budget generous enough for a loaded test machine: what is tested is that the calls
    // past the cap wait their turn instead of failing at once (as they did: `busy`).
    let (running, addr) = start(
        &get_user,
        &idp,
        &[("COGNITO_REVOCATION_TIMEOUT_MS", "2000")],
    )
    .await;
    let checks: Vec<_> = (0..100)
        .map(|i| {
            let token = session_token(0, &format!("burst-{i}"));
            tokio::spawn(async move { check(addr, &token).await })
        })
        .collect();
    let mut refused = Vec::new();
    for c in checks {
        let answer = c.await.unwrap();
        if answer.0 != 200 {
            refused.push(answer);
        }
    }
    assert!(refused.is_empty(), "100 new tokens at once: {refused:?}");
    assert_eq!(get_user.hits(), 100, "one call each");
    running.stop().await.unwrap();
}

/// Cognito's `NotAuthorizedException` for `GetUser`, as AWS sends it.
fn not_authorized(message: &str) -> Behaviour {
    Behaviour::Answer(
        400,
        serde_json::json!({"__type": "NotAuthorizedException", "message": message}),
    )
}

/// An access token of the test session issued `age` seconds ago, valid for an hour, with its
/// own `jti`.
fn session_token(age: i64, jti: &str) -> String {
    let mut claims = access_claims(ISS, CLIENT, now() - age);
    claims["jti"] = jti.into();
    TestKey::shared(0).token(&claims)
}

#[tokio::test]
async fn a_late_token_is_expired_never_a_revocation() {
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    // A GetUser that answers as AWS does for an expired access token.
    let get_user = JwksServer::start(not_authorized("Access Token has expired")).await;
    let (running, addr) = start(&get_user, &idp, &[]).await;

    // Ten seconds past `exp`, inside the 30 s leeway: not sent to Cognito, refused as expired.
    let late = session_token(3610, "late");
    assert_eq!(check(addr, &late).await, (401, "expired".into()));
    assert_eq!(
        get_user.hits(),
        0,
        "a token past exp is never sent to GetUser"
    );

    // Cognito's clock ahead of ours: it says "expired" for a token we still hold valid. The
    // token is refused as expired; its session is not revoked.
    let skewed = session_token(3590, "skewed");
    assert_eq!(check(addr, &skewed).await, (401, "expired".into()));
    assert_eq!(get_user.hits(), 1);
    assert_eq!(
        running.authorizer().revocations().len(),
        0,
        "nothing revoked"
    );
    get_user.set(Behaviour::Json(serde_json::json!({})));
    let refreshed = session_token(0, "refreshed");
    assert_eq!(check(addr, &refreshed).await, (200, "allowed".into()));

    // Only "Access Token has been revoked" ends the sign-in session: the session's other
    // tokens are then refused without asking.
    get_user.set(not_authorized("Access Token has been revoked"));
    past_the_ttl(&running);
    assert_eq!(check(addr, &refreshed).await, (401, "revoked".into()));
    assert_eq!(running.authorizer().revocations().len(), 1, "the session");
    let hits = get_user.hits();
    let another = session_token(5, "another");
    assert_eq!(check(addr, &another).await, (401, "revoked".into()));
    assert_eq!(
        get_user.hits(),
        hits,
        "a known revoked session needs no call"
    );

    // Any other refusal ("Invalid Access Token") refuses that token only.
    let (running2, addr2) = start(&get_user, &idp, &[]).await;
    get_user.set(not_authorized("Invalid Access Token"));
    assert_eq!(
        check(addr2, &session_token(0, "one")).await,
        (401, "revoked".into())
    );
    assert_eq!(running2.authorizer().revocations().len(), 0);
    running.stop().await.unwrap();
    running2.stop().await.unwrap();
}

#[tokio::test]
async fn cognitos_verdicts_survive_a_reload() {
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let get_user = JwksServer::start(Behaviour::Json(serde_json::json!({}))).await;
    let endpoint = get_user.url("/");
    let vars = [
        ("COGNITO_REVOCATION", "cognito"),
        ("COGNITO_IDP_ENDPOINT", endpoint.as_str()),
        ("COGNITO_REVOCATION_TTL_SECONDS", "60"),
    ];
    let running = server::start(serve_config(&idp.url("/j"), &vars, ""))
        .await
        .unwrap();
    let GrpcAddr::Tcp(addr) = running.grpc_addr.clone() else {
        unreachable!()
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let token = access();
    assert_eq!(check(addr, &token).await, (200, "allowed".into()));
    assert_eq!(get_user.hits(), 1);
    running
        .reload(serve_config(&idp.url("/j"), &vars, ""))
        .await
        .unwrap();
    assert_eq!(check(addr, &token).await, (200, "allowed".into()));
    assert_eq!(get_user.hits(), 1, "the verdict was kept across the reload");
    running.stop().await.unwrap();
}

#[tokio::test]
async fn a_token_whose_revocation_status_is_unknown_is_not_valid() {
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let get_user = JwksServer::start(Behaviour::Status(503)).await;
    let (running, addr) = start(&get_user, &idp, &[]).await;
    let token = access();
    let verdict = DiagnosticsClient::new(channel(addr).await)
        .verify_token(VerifyTokenRequest {
            token: token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            verdict.valid,
            verdict.reason.as_str(),
            verdict.revocation.as_str()
        ),
        (false, "revocation_unavailable", "unavailable:bad_answer")
    );
    running.stop().await.unwrap();

    // The verify command says so with its own exit code: 3, neither valid (0) nor invalid (1).
    let (printed, code) = verify_cli(&idp, &get_user, &token).await;
    assert_eq!(printed["valid"], false);
    assert_eq!(printed["reason"], "revocation_unavailable");
    assert_eq!(code, Some(3));
}

#[tokio::test]
async fn a_failing_cognito_is_not_asked_once_per_request() {
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let get_user = JwksServer::start(Behaviour::Answer(
        400,
        serde_json::json!({"__type": "TooManyRequestsException", "message": "Rate exceeded"}),
    ))
    .await;
    let (running, addr) = start(&get_user, &idp, &[]).await;
    let token = access();
    for _ in 0..5 {
        assert_eq!(
            check(addr, &token).await,
            (503, "revocation_unavailable".into())
        );
    }
    assert_eq!(
        get_user.hits(),
        1,
        "five requests within a second, one call"
    );
    // A second later Cognito is asked again.
    get_user.set(Behaviour::Json(serde_json::json!({})));
    tokio::time::sleep(cognito_authz::revocation_check::NO_VERDICT_HOLD).await;
    assert_eq!(check(addr, &token).await, (200, "allowed".into()));
    assert_eq!(get_user.hits(), 2);
    running.stop().await.unwrap();
}

/// With the verified-token cache off the token's key is worked out only for the revocation
/// check: it is the same key, so a token's verdict is still asked once per TTL, found again for
/// the same token (by `VerifyToken` too), never for another, and a revocation refuses that
/// token.
#[tokio::test]
async fn with_the_token_cache_off_a_verdict_is_still_the_tokens_own() {
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let get_user = JwksServer::start(Behaviour::Json(serde_json::json!({"Username": "u"}))).await;
    let (running, addr) = start(&get_user, &idp, &[("COGNITO_TOKEN_CACHE_SIZE", "0")]).await;
    let token = session_token(0, "first");
    for _ in 0..3 {
        assert_eq!(check(addr, &token).await, (200, "allowed".into()));
    }
    assert_eq!(get_user.hits(), 1, "three checks within the TTL, one call");
    // `VerifyToken` keys the token as the cache does: it finds the verdict the checks stored.
    let verdict = DiagnosticsClient::new(channel(addr).await)
        .verify_token(VerifyTokenRequest {
            token: token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(verdict.revocation, "valid");
    assert_eq!(get_user.hits(), 1, "the verdict found under the same key");
    let other = session_token(1, "second");
    assert_eq!(check(addr, &other).await, (200, "allowed".into()));
    assert_eq!(get_user.hits(), 2, "another token, its own call");
    assert_eq!(running.authorizer().cache_len(), 0, "no token cached");

    get_user.set(not_authorized("Invalid Access Token"));
    past_the_ttl(&running);
    assert_eq!(check(addr, &token).await, (401, "revoked".into()));
    let hits = get_user.hits();
    assert_eq!(check(addr, &token).await, (401, "revoked".into()));
    assert_eq!(get_user.hits(), hits, "the refusal is the token's verdict");
    running.stop().await.unwrap();
}
