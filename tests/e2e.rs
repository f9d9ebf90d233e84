//! End to end with real parts on free loopback ports: Envoy 1.40, the Cognito emulator (moto),
//! cognito-authz and the demo app. The walkthrough's every step, expired tokens minted with the
//! emulator's key, grpcurl diagnostics, and authz down -> 503 with nothing reaching the app.
//!
//! Needs `scripts/setup-venv` and `cargo build --workspace` first (the README's test command
//! does both); without them it fails, naming what is missing.

use std::path::{Path, PathBuf};

use cruddur_demo::stack::{Layout, Ports, Stack};
use cruddur_demo::walkthrough::{self, get, payload};
use serde_json::Value;

fn layout(name: &str) -> Layout {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_cognito-authz"))
        .parent()
        .expect("binary folder")
        .to_path_buf();
    let work =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    Layout::new(root, &bin_dir, &work).unwrap_or_else(|e| panic!("{e}"))
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
