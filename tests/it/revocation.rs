//! Sign-out means sign-out, with real components: the Cognito emulator's GlobalSignOut and
//! AdminUserGlobalSignOut (GetUser then refuses the tokens), Envoy 1.40 with the shipped config
//! (the `/api/` routes ask for revocation checks), several cognito-authz processes sharing a
//! Debian `redis-server`, and a counting pass-through in front of the emulator's API.
//!
//! Needs `scripts/setup-venv`, `cargo build --workspace` and `redis-server` (the README's test
//! command installs all three); without them it fails, naming what is missing.

use crate::common;

use std::process::Command;
use std::time::{Duration, Instant};

use cruddur_demo::stack::{Layout, Options, Ports, Stack, REVOCATION_TTL_SECS};
use cruddur_demo::walkthrough::get;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;

pub(crate) fn layout(name: &str) -> Layout {
    common::stack_layout(name)
}

const TTL: Duration = Duration::from_millis(REVOCATION_TTL_SECS * 1000 + 300);

pub(crate) async fn user(stack: &Stack, email: &str) {
    let cognito = stack.cognito();
    cognito
        .sign_up(
            email,
            "Revocation-Passw0rd",
            "Rev",
            email.split('@').next().unwrap(),
        )
        .await
        .unwrap();
    cognito.confirm_sign_up(email, "1").await.unwrap();
}

pub(crate) async fn sign_in(stack: &Stack, email: &str) -> String {
    stack
        .cognito()
        .sign_in(email, "Revocation-Passw0rd")
        .await
        .unwrap()
        .access
}

/// Check on one replica, on a route that asks Cognito (as Envoy's `/api/` routes do).
pub(crate) async fn check(port: u16, token: &str) -> (bool, String) {
    let auth = format!("Bearer {token}");
    let channel = common::channel(std::net::SocketAddr::from(([127, 0, 0, 1], port))).await;
    let response = AuthorizationClient::new(channel)
        .check(common::check_request(
            "GET",
            "/api/echo",
            &[("authorization", &auth)],
            &[
                ("cognito_authz.mode", "required"),
                ("cognito_authz.revocation", "cognito"),
            ],
        ))
        .await
        .expect("Check answers")
        .into_inner();
    match common::answer(&response) {
        common::Answer::Allowed { .. } => (true, "allowed".into()),
        common::Answer::Denied { body, .. } => {
            (false, body["reason"].as_str().unwrap_or("").into())
        }
    }
}

/// Polls `port` until the token is denied as revoked; returns how long that took.
pub(crate) async fn until_revoked(port: u16, token: &str, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let (allowed, reason) = check(port, token).await;
        if !allowed {
            assert_eq!(reason, "revoked");
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "replica on {port} still allows the revoked token after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `cognito-authz revoke --token -` (the token on stdin) through a replica's admin API, with
/// the stack's secret.
pub(crate) fn revoke_cli_output(
    stack: &Stack,
    admin_port: u16,
    token: &str,
) -> std::process::Output {
    use std::io::Write as _;
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_cognito-authz"))
        .args([
            "revoke",
            "--admin",
            &format!("http://127.0.0.1:{admin_port}"),
            "--token",
            "-",
            "--admin-token-file",
        ])
        .arg(stack.admin_token_file().unwrap())
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
}

pub(crate) fn revoke_cli(stack: &Stack, admin_port: u16, token: &str) {
    let out = revoke_cli_output(stack, admin_port, token);
    assert!(
        out.status.success(),
        "cognito-authz revoke failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["recorded"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_sign_out_is_honoured_once_per_ttl_for_every_session() {
    let stack = Stack::start(layout("revocation"), Ports::ephemeral().unwrap())
        .await
        .unwrap_or_else(|e| panic!("the stack did not start: {e}"));
    user(&stack, "rev@example.com").await;
    let first = sign_in(&stack, "rev@example.com").await;
    let second = sign_in(&stack, "rev@example.com").await;

    // One GetUser per token per TTL.
    let calls = stack.get_user_calls();
    for _ in 0..5 {
        assert_eq!(
            get(&stack, "/api/echo", Some(&first), &[])
                .await
                .status
                .as_u16(),
            200
        );
    }
    assert_eq!(stack.get_user_calls(), calls + 1, "five requests, one call");
    // The home feed does not ask.
    assert_eq!(
        get(&stack, "/api/activities/home", Some(&second), &[])
            .await
            .status
            .as_u16(),
        200
    );
    assert_eq!(stack.get_user_calls(), calls + 1);

    stack
        .cognito()
        .admin_global_sign_out("rev@example.com")
        .await
        .unwrap();
    tokio::time::sleep(TTL).await;
    for token in [&first, &second] {
        let seen = get(&stack, "/api/echo", Some(token), &[]).await;
        assert_eq!(seen.status.as_u16(), 401, "{}", seen.body);
        assert_eq!(seen.body["reason"], "revoked");
        assert!(seen.challenge.unwrap().contains("error=\"invalid_token\""));
    }
    // The refusal is kept for the TTL: asking again makes no call. (The emulator answers a
    // signed-out token with "Invalid token", where AWS says "Access Token has been revoked":
    // only AWS's answer ends the whole session, which tests/revocation_check.rs covers with
    // AWS's exact shapes. So here each token is refused on its own.)
    let calls = stack.get_user_calls();
    assert_eq!(
        get(&stack, "/api/echo", Some(&first), &[])
            .await
            .status
            .as_u16(),
        401
    );
    assert_eq!(stack.get_user_calls(), calls, "no call within the TTL");

    // A new sign-in works again.
    let fresh = sign_in(&stack, "rev@example.com").await;
    assert_eq!(
        get(&stack, "/api/echo", Some(&fresh), &[])
            .await
            .status
            .as_u16(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_revocations_and_cognito_verdicts_through_redis() {
    let options = Options {
        replicas: 3,
        redis: true,
        ..Options::default()
    };
    let mut stack = Stack::start_options(layout("replicas"), Ports::ephemeral().unwrap(), options)
        .await
        .unwrap_or_else(|e| panic!("the stack did not start: {e}"));
    let replicas = stack.replicas.clone();
    user(&stack, "shared@example.com").await;
    // Every replica subscribes before the test relies on sharing.
    for r in &replicas {
        wait_redis(r.admin, true).await;
    }

    // Three replicas checking one token at once: one GetUser between them.
    let token = sign_in(&stack, "shared@example.com").await;
    let calls = stack.get_user_calls();
    let checks: Vec<_> = replicas
        .iter()
        .map(|r| {
            let (port, token) = (r.grpc, token.clone());
            tokio::spawn(async move { check(port, &token).await })
        })
        .collect();
    for c in checks {
        assert_eq!(c.await.unwrap(), (true, "allowed".to_string()));
    }
    assert_eq!(
        stack.get_user_calls(),
        calls + 1,
        "one call across three replicas"
    );

    // Revoked through one replica, refused by every one within a second.
    revoke_cli(&stack, replicas[0].admin, &token);
    for r in &replicas[1..] {
        let took = until_revoked(r.grpc, &token, Duration::from_secs(1)).await;
        assert!(took < Duration::from_secs(1), "{took:?}");
    }

    // Redis killed under load through Envoy: a valid token keeps working from local state.
    let live = sign_in(&stack, "shared@example.com").await;
    assert_eq!(
        get(&stack, "/api/echo", Some(&live), &[])
            .await
            .status
            .as_u16(),
        200
    );
    let load = {
        let (url, live) = (stack.url("/api/echo"), live.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let deadline = Instant::now() + Duration::from_millis(2500);
            let mut statuses = Vec::new();
            while Instant::now() < deadline {
                if let Ok(r) = http.get(&url).bearer_auth(&live).send().await {
                    statuses.push(r.status().as_u16());
                }
            }
            statuses
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    stack.kill_redis().unwrap();
    let statuses = load.await.unwrap();
    assert!(statuses.len() > 20, "{} requests", statuses.len());
    assert!(
        statuses.iter().all(|s| *s == 200),
        "a valid token was refused while Redis was down: {:?}",
        statuses.iter().filter(|s| **s != 200).collect::<Vec<_>>()
    );
    for r in &replicas {
        wait_redis(r.admin, false).await;
        let (_, metrics) = common::http_get(
            std::net::SocketAddr::from(([127, 0, 0, 1], r.admin)),
            "/metrics",
        )
        .await;
        assert!(metrics.contains("cognito_authz_redis_up 0"), "{metrics}");
    }

    // A revocation made while Redis is down is no success: recorded here, refused here, not
    // yet shared (the command exits 1 and says so), then published when Redis returns.
    let pending = sign_in(&stack, "shared@example.com").await;
    let out = revoke_cli_output(&stack, replicas[0].admin, &pending);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (answer["recorded"].as_bool(), answer["shared"].as_bool()),
        (Some(true), Some(false))
    );
    until_revoked(replicas[0].grpc, &pending, Duration::from_secs(1)).await;

    // Back up: the pending revocation reaches the other replicas, and revocations made now
    // reach every replica again.
    stack.start_redis().await.unwrap();
    for r in &replicas {
        wait_redis(r.admin, true).await;
    }
    for r in &replicas[1..] {
        let took = until_revoked(r.grpc, &pending, Duration::from_secs(1)).await;
        assert!(took < Duration::from_secs(1), "{took:?}");
    }
    revoke_cli(&stack, replicas[1].admin, &live);
    for r in [&replicas[0], &replicas[2]] {
        until_revoked(r.grpc, &live, Duration::from_secs(1)).await;
    }
    let seen = get(&stack, "/api/echo", Some(&live), &[]).await;
    assert_eq!(
        (seen.status.as_u16(), seen.body["reason"].as_str()),
        (401, Some("revoked"))
    );
}

/// Waits (up to 10 s) until a replica's `/readyz` reports Redis up (and the replica ready: the
/// revocations in Redis loaded), or Redis down.
pub(crate) async fn wait_redis(admin: u16, up: bool) {
    let want = if up {
        "ready\nredis: up"
    } else {
        "redis: down"
    };
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], admin));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = common::http_get(addr, "/readyz").await;
        // "not ready\nredis: up" contains the first; it is not what is wanted.
        if body.starts_with(want) || (!up && body.contains(want)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "replica {admin} never said {want:?}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_under_load_lets_nothing_through_undecided() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let options = Options {
        replicas: 2,
        redis: true,
        ..Options::default()
    };
    let mut stack =
        Stack::start_options(layout("replica-kill"), Ports::ephemeral().unwrap(), options)
            .await
            .unwrap_or_else(|e| panic!("the stack did not start: {e}"));
    user(&stack, "load@example.com").await;
    let token = sign_in(&stack, "load@example.com").await;
    let sub = cruddur_demo::walkthrough::payload(&token)["sub"]
        .as_str()
        .unwrap()
        .to_string();

    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|worker| {
            let (stop, url, token) = (Arc::clone(&stop), stack.url("/api/echo"), token.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut seen = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let with_token = worker % 2 == 0;
                    let mut request = http.get(&url).header("x-cognito-sub", "spoof");
                    if with_token {
                        request = request.bearer_auth(&token);
                    }
                    if let Ok(response) = request.send().await {
                        let status = response.status().as_u16();
                        let body: serde_json::Value = response.json().await.unwrap_or_default();
                        seen.push((with_token, status, body, Instant::now()));
                    }
                }
                seen
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let killed_at = Instant::now();
    stack.kill_replica(1).unwrap();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    stop.store(true, Ordering::Relaxed);
    let mut seen = Vec::new();
    for w in workers {
        seen.extend(w.await.unwrap());
    }

    let mut after_ok = 0;
    for (with_token, status, body, at) in &seen {
        match status {
            200 => {
                assert!(with_token, "a request without a token got 200: {body}");
                assert_eq!(
                    body["identity_headers"]["x-cognito-sub"],
                    sub.as_str(),
                    "{body}"
                );
                if *at > killed_at + Duration::from_secs(1) {
                    after_ok += 1;
                }
            }
            401 => assert!(!with_token, "a valid token was refused: {body}"),
            503 => {}
            other => panic!("unexpected status {other}: {body}"),
        }
    }
    assert!(seen.len() > 50, "{} requests", seen.len());
    assert!(
        after_ok > 10,
        "the surviving replica serves: {after_ok} allowed after the kill"
    );
}
