//! End to end with real parts on free loopback ports: Envoy 1.40, the Cognito emulator (moto),
//! cognito-authz and the demo app. The walkthrough's every step, expired tokens minted with the
//! emulator's key, grpcurl diagnostics, and authz down -> 503 with nothing reaching the app.
//!
//! Needs `scripts/setup-venv` and `cargo build --workspace` first (the README's test command
//! does both); without them it fails, naming what is missing.

use crate::common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use cruddur_demo::stack::{Layout, Ports, Stack};
use cruddur_demo::walkthrough::{self, get, payload};
use serde_json::Value;

fn layout(name: &str) -> Layout {
    common::stack_layout(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_story_with_real_envoy_and_the_cognito_emulator() {
    let stack = Stack::start(layout("e2e"), Ports::ephemeral().unwrap())
        .await
        .unwrap_or_else(|e| panic!("the stack did not start: {e}"));

    // 1. The walkthrough, every step.
    let steps = walkthrough::run(&stack, |_| {}).await;
    let failed: Vec<String> = steps
        .iter()
        .filter(|s| !s.ok)
        .map(|s| format!("{}: {}", s.title, s.lines.join("; ")))
        .collect();
    assert!(
        steps.len() >= 12,
        "the walkthrough stopped early: {steps:?}"
    );
    assert!(
        failed.is_empty(),
        "walkthrough steps failed:\n{}",
        failed.join("\n")
    );

    // 2. Expired and not-yet-valid tokens, minted with the emulator's own key.
    let tokens = stack
        .cognito()
        .sign_in(walkthrough::EMAIL, "Cruddur-Bootcamp-2")
        .await
        .expect("the walkthrough's final password signs in");
    let fresh = get(&stack, "/api/echo", Some(&tokens.access), &[]).await;
    assert_eq!(fresh.status.as_u16(), 200, "{}", fresh.body);
    let expired = stack
        .resign(&tokens.access, &[("exp", -120), ("iat", -3720)])
        .unwrap();
    assert_eq!(
        payload(&expired)["client_id"],
        payload(&tokens.access)["client_id"]
    );
    let before = stack.app_requests().await.unwrap();
    let seen = get(&stack, "/api/echo", Some(&expired), &[]).await;
    assert_eq!(seen.status.as_u16(), 401);
    assert_eq!(seen.body["reason"], "expired");
    assert!(seen.challenge.unwrap().contains("error=\"invalid_token\""));
    let future = stack
        .resign(&tokens.access, &[("iat", 3600), ("exp", 7200)])
        .unwrap();
    let seen = get(&stack, "/api/echo", Some(&future), &[]).await;
    assert_eq!(
        (seen.status.as_u16(), seen.body["reason"].as_str()),
        (401, Some("not_yet_valid"))
    );
    // On the optional home feed an expired token is simply anonymous.
    let home = get(&stack, "/api/activities/home", Some(&expired), &[]).await;
    assert_eq!(home.status.as_u16(), 200);
    assert!(home.body["viewer"].is_null());
    assert_eq!(
        stack.app_requests().await.unwrap(),
        before + 1,
        "only the anonymous home feed reached the app"
    );

    // 2b. Hostile requests where Envoy's own handling matters; none reaches the app.
    let before = stack.app_requests().await.unwrap();
    let http = reqwest::Client::new();
    let two = http
        .get(stack.url("/api/echo"))
        .header("authorization", format!("Bearer {}", tokens.access))
        .header("authorization", format!("Bearer {}", tokens.access))
        .send()
        .await
        .unwrap();
    assert_eq!(two.status().as_u16(), 400, "two authorization headers");
    let query = http
        .get(stack.url(&format!("/api/echo?access_token={}", tokens.access)))
        .send()
        .await
        .unwrap();
    assert_eq!(
        query.status().as_u16(),
        401,
        "a token in the query string is ignored"
    );
    let parts: Vec<&str> = tokens.access.split('.').collect();
    let unsigned = format!(
        "{}.{}.c2ln",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","kid":"dummy"}"#),
        parts[1]
    );
    let none = get(&stack, "/api/echo", Some(&unsigned), &[]).await;
    assert_eq!(
        (none.status.as_u16(), none.body["reason"].as_str()),
        (401, Some("unsupported_alg"))
    );
    assert_eq!(
        stack.app_requests().await.unwrap(),
        before,
        "no hostile request reached the app"
    );
    let lowercase = http
        .get(stack.url("/api/echo"))
        .header("authorization", format!("bearer {}", tokens.access))
        .send()
        .await
        .unwrap();
    assert_eq!(
        lowercase.status().as_u16(),
        200,
        "the scheme is case-insensitive"
    );

    // 3. grpcurl against cognito-authz: reflection, Check, health, diagnostics.
    let addr = stack.authz_addr().to_string();
    let list = stack.grpcurl(&[&addr, "list"]).unwrap();
    for service in [
        "envoy.service.auth.v3.Authorization",
        "cognito_authz.diagnostics.v1.Diagnostics",
        "grpc.health.v1.Health",
    ] {
        assert!(list.contains(service), "{service} not listed:\n{list}");
    }
    let described = stack
        .grpcurl(&[&addr, "describe", "envoy.service.auth.v3.Authorization"])
        .unwrap();
    assert!(described.contains("rpc Check"), "{described}");

    let request = serde_json::json!({"attributes": {"request": {"http": {
        "method": "GET", "path": "/api/echo", "host": "app.local",
        "headers": {"authorization": format!("Bearer {}", tokens.access), "x-cognito-sub": "spoof"}
    }}}});
    let check = stack
        .grpcurl(&[
            "-d",
            &request.to_string(),
            &addr,
            "envoy.service.auth.v3.Authorization/Check",
        ])
        .unwrap();
    let check: Value = serde_json::from_str(&check).unwrap();
    let headers = check["okResponse"]["headers"]
        .as_array()
        .expect("an ok response");
    let sub = headers
        .iter()
        .find(|h| h["header"]["key"] == "x-cognito-sub")
        .expect("x-cognito-sub is set");
    assert_eq!(sub["header"]["value"], payload(&tokens.access)["sub"]);
    assert_eq!(sub["append"], false, "append is explicitly false");

    let health = stack
        .grpcurl(&[&addr, "grpc.health.v1.Health/Check"])
        .unwrap();
    assert!(
        health.contains("SERVING") && !health.contains("NOT_SERVING"),
        "{health}"
    );

    let verdict = stack
        .grpcurl(&[
            "-d",
            &serde_json::json!({"token": expired}).to_string(),
            &addr,
            "cognito_authz.diagnostics.v1.Diagnostics/VerifyToken",
        ])
        .unwrap();
    let verdict: Value = serde_json::from_str(&verdict).unwrap();
    assert_eq!(verdict["reason"], "expired");
    let keys = stack
        .grpcurl(&[&addr, "cognito_authz.diagnostics.v1.Diagnostics/KeyStatus"])
        .unwrap();
    let keys: Value = serde_json::from_str(&keys).unwrap();
    assert_eq!(keys["pools"][0]["poolId"], stack.pool.pool_id.as_str());
    assert_eq!(keys["pools"][0]["kids"], serde_json::json!(["dummy"]));

    // 4. cognito-authz down: Envoy answers 503 and nothing reaches the app, on required and
    // optional routes alike; back up, it serves again.
    let mut stack = stack;
    stack.kill_authz().unwrap();
    let before = stack.app_requests().await.unwrap();
    for (path, token) in [
        ("/api/echo", Some(tokens.access.as_str())),
        ("/api/activities/home", Some(tokens.access.as_str())),
        ("/api/activities/home", None),
        ("/api/admin/stats", Some(tokens.access.as_str())),
    ] {
        let seen = get(&stack, path, token, &[("x-cognito-sub", "spoof")]).await;
        assert_eq!(seen.status.as_u16(), 503, "{path} with authz down");
    }
    assert_eq!(
        stack.app_requests().await.unwrap(),
        before,
        "nothing reached the app"
    );
    stack.start_authz().await.unwrap();
    let seen = get(&stack, "/api/echo", Some(&tokens.access), &[]).await;
    assert_eq!(seen.status.as_u16(), 200, "recovered after restart");
}

/// Under load through Envoy, cognito-authz is killed and restarted: meanwhile requests get 503,
/// a request without a token never gets 200, every 200 carries the identity cognito-authz set,
/// and service resumes after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_cognito_authz_under_load_fails_closed_and_recovers() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let mut stack = Stack::start(layout("e2e-kill"), Ports::ephemeral().unwrap())
        .await
        .unwrap_or_else(|e| panic!("the stack did not start: {e}"));
    let cognito = stack.cognito();
    cognito
        .sign_up("load@example.com", "Load-Test-Passw0rd", "Load", "load")
        .await
        .unwrap();
    cognito
        .confirm_sign_up("load@example.com", "1")
        .await
        .unwrap();
    let tokens = cognito
        .sign_in("load@example.com", "Load-Test-Passw0rd")
        .await
        .unwrap();
    let sub = payload(&tokens.access)["sub"].as_str().unwrap().to_string();

    let stop = Arc::new(AtomicBool::new(false));
    let url = stack.url("/api/echo");
    let mut workers = Vec::new();
    for worker in 0..6 {
        let (stop, url, token) = (Arc::clone(&stop), url.clone(), tokens.access.clone());
        workers.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut seen: Vec<(bool, u16, Value)> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let with_token = worker % 2 == 0;
                let mut request = http.get(&url).header("x-cognito-sub", "spoof");
                if with_token {
                    request = request.bearer_auth(&token);
                }
                if let Ok(response) = request.send().await {
                    let status = response.status().as_u16();
                    let body = response.json().await.unwrap_or(Value::Null);
                    seen.push((with_token, status, body));
                }
            }
            seen
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    stack.kill_authz().unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    stack.start_authz().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);

    let mut counts = std::collections::BTreeMap::new();
    let mut last_with_token = Vec::new();
    for worker in workers {
        let seen = worker.await.unwrap();
        for (with_token, status, body) in &seen {
            *counts.entry((*with_token, *status)).or_insert(0u32) += 1;
            if *status == 200 {
                assert!(*with_token, "a request without a token got 200");
                assert_eq!(
                    body["identity_headers"]["x-cognito-sub"],
                    sub.as_str(),
                    "a 200 without cognito-authz's identity: {body}"
                );
            } else {
                assert!(
                    matches!(status, 401 | 503),
                    "unexpected status {status}: {body}"
                );
            }
        }
        if let Some(last) = seen.iter().rev().find(|(w, _, _)| *w) {
            last_with_token.push(last.1);
        }
    }
    assert!(
        counts.get(&(true, 503)).copied().unwrap_or(0) > 0,
        "the outage was seen: {counts:?}"
    );
    assert!(
        counts.get(&(true, 200)).copied().unwrap_or(0) > 0,
        "{counts:?}"
    );
    assert!(
        last_with_token.iter().all(|s| *s == 200),
        "service resumed after the restart: {last_with_token:?} ({counts:?})"
    );
}

/// SIGTERM under load through Envoy: cognito-authz exits 0 and drops no check it accepted;
/// Envoy's counters of connections closed with checks in flight and of streams reset by
/// cognito-authz stay at zero. Later requests fail closed (503).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_drops_no_accepted_check() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let mut stack = Stack::start(layout("e2e-term"), Ports::ephemeral().unwrap())
        .await
        .unwrap_or_else(|e| panic!("the stack did not start: {e}"));
    let cognito = stack.cognito();
    cognito
        .sign_up("term@example.com", "Term-Test-Passw0rd", "Term", "term")
        .await
        .unwrap();
    cognito
        .confirm_sign_up("term@example.com", "1")
        .await
        .unwrap();
    let token = cognito
        .sign_in("term@example.com", "Term-Test-Passw0rd")
        .await
        .unwrap()
        .access;

    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..6 {
        let (stop, url, token) = (Arc::clone(&stop), stack.url("/api/echo"), token.clone());
        workers.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut statuses = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                if let Ok(r) = http.get(&url).bearer_auth(&token).send().await {
                    statuses.push(r.status().as_u16());
                }
            }
            statuses
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    let code = stack.terminate_authz().unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut statuses = Vec::new();
    for worker in workers {
        statuses.extend(worker.await.unwrap());
    }
    assert_eq!(code, Some(0), "SIGTERM exits 0");
    assert!(
        statuses.iter().all(|s| matches!(s, 200 | 503)),
        "{statuses:?}"
    );
    assert!(statuses.contains(&200) && statuses.contains(&503));
    for counter in [
        "cluster.cognito_authz.upstream_cx_destroy_remote_with_active_rq",
        "cluster.cognito_authz.upstream_rq_rx_reset",
    ] {
        assert_eq!(stack.envoy_counter(counter).await.unwrap(), 0, "{counter}");
    }
    assert!(
        stack
            .envoy_counter("cluster.cognito_authz.upstream_rq_completed")
            .await
            .unwrap()
            > 0
    );
}
