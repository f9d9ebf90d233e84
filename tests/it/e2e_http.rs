//! End to end over Envoy's HTTP ext_authz protocol: the shipped `envoy/envoy.http.yaml` in
//! front of the demo app, cognito-authz on `AUTHZ_HTTP_ADDR` with `envoy/cognito-authz.toml`,
//! and the Cognito emulator. The walkthrough, the spoofing checks, a hostile subset, and the
//! fail-closed cases (authz hung, authz dead) — judged by what the client got and what the
//! upstream received.

use crate::common;

use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use cruddur_demo::stack::{Layout, Ports, Protocol, Stack};
use cruddur_demo::walkthrough::{self, get, payload};

fn layout(name: &str) -> Layout {
    common::stack_layout(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_story_over_the_http_protocol() {
    let mut stack = Stack::start_with(
        layout("e2e-http"),
        Ports::ephemeral().unwrap(),
        Protocol::Http,
    )
    .await
    .unwrap_or_else(|e| panic!("the stack did not start: {e}"));

    // 1. The walkthrough, every step, as over gRPC.
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

    let tokens = stack
        .cognito()
        .sign_in(walkthrough::EMAIL, "Cruddur-Bootcamp-2")
        .await
        .expect("the walkthrough's final password signs in");
    let sub = payload(&tokens.access)["sub"].as_str().unwrap().to_string();

    // 2. Spoofing: the upstream sees our identity or none, never the client's.
    let seen = get(
        &stack,
        "/api/echo",
        Some(&tokens.access),
        &[("x-cognito-sub", "spoof"), ("x-cognito-extra", "spoof")],
    )
    .await;
    assert_eq!(seen.status.as_u16(), 200, "{}", seen.body);
    let last = stack.app_last_request().await.unwrap();
    assert_eq!(last["headers"]["x-cognito-sub"], sub.as_str());
    assert!(last["headers"].get("x-cognito-extra").is_none(), "{last}");
    let anonymous = get(
        &stack,
        "/api/activities/home",
        None,
        &[("x-cognito-sub", "spoof"), ("x-cognito-groups", "admins")],
    )
    .await;
    assert_eq!(anonymous.status.as_u16(), 200);
    assert!(anonymous.body["viewer"].is_null(), "{}", anonymous.body);
    let last = stack.app_last_request().await.unwrap();
    let identity: Vec<&String> = last["headers"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| k.starts_with("x-cognito-"))
        .collect();
    assert!(identity.is_empty(), "{identity:?}");

    // 3. Hostile requests: none reaches the app.
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
    assert!(none.challenge.unwrap().contains("error=\"invalid_token\""));
    let expired = stack
        .resign(&tokens.access, &[("exp", -120), ("iat", -3720)])
        .unwrap();
    let seen = get(&stack, "/api/echo", Some(&expired), &[]).await;
    assert_eq!(
        (seen.status.as_u16(), seen.body["reason"].as_str()),
        (401, Some("expired"))
    );
    let underscore = http
        .get(stack.url("/api/echo"))
        .bearer_auth(&tokens.access)
        .header("x_cognito_sub", "attacker")
        .send()
        .await
        .unwrap();
    assert_eq!(underscore.status().as_u16(), 400);
    let forbidden = get(
        &stack,
        "/api/admin/stats",
        Some(&payload_free_token(&stack).await),
        &[],
    )
    .await;
    assert_eq!(
        forbidden.status.as_u16(),
        403,
        "the admin rule comes from the file"
    );
    assert_eq!(
        stack.app_requests().await.unwrap(),
        before,
        "no hostile request reached the app"
    );

    // 4. Fail closed: a hung authz times out into 503, a dead one is 503; nothing passes.
    stack.signal_authz("STOP").unwrap();
    let started = Instant::now();
    for (path, token) in [
        ("/api/echo", Some(tokens.access.as_str())),
        ("/api/activities/home", None),
    ] {
        let seen = get(&stack, path, token, &[("x-cognito-sub", "spoof")]).await;
        assert_eq!(seen.status.as_u16(), 503, "{path} with authz hung");
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "Envoy's 0.5 s timeout applies"
    );
    stack.signal_authz("CONT").unwrap();
    stack.kill_authz().unwrap();
    let seen = get(&stack, "/api/echo", Some(&tokens.access), &[]).await;
    assert_eq!(seen.status.as_u16(), 503, "authz dead");
    assert_eq!(
        stack.app_requests().await.unwrap(),
        before,
        "nothing reached the app"
    );
    stack.start_authz().await.unwrap();
    let seen = get(&stack, "/api/echo", Some(&tokens.access), &[]).await;
    assert_eq!(seen.status.as_u16(), 200, "recovered after restart");
}

/// A fresh user outside `admins`.
async fn payload_free_token(stack: &Stack) -> String {
    let cognito = stack.cognito();
    cognito
        .sign_up("plain@example.com", "Plain-User-Passw0rd", "Plain", "plain")
        .await
        .unwrap();
    cognito
        .confirm_sign_up("plain@example.com", "1")
        .await
        .unwrap();
    cognito
        .sign_in("plain@example.com", "Plain-User-Passw0rd")
        .await
        .unwrap()
        .access
}

/// Envoy's access-log line for `GET path`, once Envoy has written it.
async fn access_log_line(stack: &Stack, path: &str) -> String {
    let request = format!("\"GET {path}\"");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = std::fs::read_to_string(stack.log_path("envoy")).unwrap_or_default();
        if let Some(line) = log.lines().find(|l| l.contains(&request)) {
            return line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "Envoy logged no {request}:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_names_the_decisions_sub_never_a_forged_header() {
    let stack = Stack::start_with(
        layout("e2e-http-access-log"),
        Ports::ephemeral().unwrap(),
        Protocol::Http,
    )
    .await
    .unwrap_or_else(|e| panic!("the stack did not start: {e}"));
    let token = payload_free_token(&stack).await;
    let sub = payload(&token)["sub"].as_str().unwrap().to_string();
    let forged = [("x-cognito-sub", "victim-sub-1234")];

    // Denied without a token: no identity, so no sub, whatever the client claimed.
    let denied = get(&stack, "/api/admin/users", None, &forged).await;
    assert_eq!(denied.status.as_u16(), 401, "{}", denied.body);
    let line = access_log_line(&stack, "/api/admin/users").await;
    assert!(line.contains(" 401 authz=deny/no_token "), "{line}");
    assert!(!line.contains("victim-sub-1234"), "a forged sub: {line}");
    assert!(line.contains(" sub=- "), "{line}");

    // Denied with a valid token outside `admins`: a denial names no identity (as over gRPC),
    // and the forged one does not stand in for it.
    let forbidden = get(&stack, "/api/admin/stats", Some(&token), &forged).await;
    assert_eq!(forbidden.status.as_u16(), 403, "{}", forbidden.body);
    let line = access_log_line(&stack, "/api/admin/stats").await;
    assert!(line.contains(" 403 authz=deny/missing_group "), "{line}");
    assert!(!line.contains("victim-sub-1234"), "a forged sub: {line}");
    assert!(line.contains(" sub=- "), "{line}");

    // Allowed: the token's sub.
    let allowed = get(&stack, "/api/echo", Some(&token), &forged).await;
    assert_eq!(allowed.status.as_u16(), 200, "{}", allowed.body);
    let line = access_log_line(&stack, "/api/echo").await;
    assert!(line.contains(" 200 authz=allow/valid "), "{line}");
    assert!(line.contains(&format!(" sub={sub} ")), "{line}");
}
