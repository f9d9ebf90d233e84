//! The edge as users deploy it: the shipped `envoy/envoy.yaml` in front of the demo app, a real
//! cognito-authz and the Cognito emulator. Hostile spellings of identity headers, malformed
//! hosts and CORS preflights (answered by Envoy), judged by what the client got and what the
//! upstream received.
//!
//! Needs `scripts/setup-venv` and `cargo build --workspace` first (the README's test command
//! does both); without them it fails, naming what is missing.

use crate::common;

use cognito_authz::identity::IDENTITY_HEADERS;
use cruddur_demo::stack::{Layout, Ports, Stack};
use cruddur_demo::walkthrough::payload;

fn layout(name: &str) -> Layout {
    common::stack_layout(name)
}

async fn signed_in(stack: &Stack) -> String {
    let cognito = stack.cognito();
    let email = "edge@example.com";
    cognito
        .sign_up(email, "Edge-Test-Passw0rd", "Edge", "edge")
        .await
        .unwrap();
    cognito.confirm_sign_up(email, "1").await.unwrap();
    cognito
        .sign_in(email, "Edge-Test-Passw0rd")
        .await
        .unwrap()
        .access
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_edge_holds_against_spelling_tricks_bad_hosts_and_answers_preflights() {
    let stack = Stack::start(layout("edge"), Ports::ephemeral().unwrap())
        .await
        .unwrap_or_else(|e| panic!("the stack did not start: {e}"));
    let token = signed_in(&stack).await;
    let sub = payload(&token)["sub"].as_str().unwrap().to_string();
    let port = stack.ports.envoy;

    // 1. Underscore spellings of every managed header: refused by Envoy on every path, with a
    //    token, without one, and on the route cognito-authz never sees.
    let before = stack.app_requests().await.unwrap();
    for name in IDENTITY_HEADERS {
        let spelled = name.replace('-', "_");
        for (path, auth) in [
            ("/api/echo", format!("Authorization: Bearer {token}\r\n")),
            ("/api/activities/home", String::new()),
            ("/healthz", String::new()),
        ] {
            let (status, response) = common::raw(
                port,
                &format!(
                    "GET {path} HTTP/1.1\r\nHost: app\r\n{auth}{spelled}: attacker\r\n\
                     Connection: close\r\n\r\n"
                ),
            );
            assert_eq!(status, 400, "{spelled} on {path}: {response}");
        }
    }
    assert_eq!(
        stack.app_requests().await.unwrap(),
        before,
        "no underscore spelling reached the app"
    );

    // 2. Hosts cognito-authz cannot parse are answered, not crashed on (it used to panic: 503).
    for host in [
        "Host: [::1",
        "Host: [",
        "Host: a.example\r\nHost: b.example",
    ] {
        let (status, response) = common::raw(
            port,
            &format!(
                "GET /api/echo HTTP/1.1\r\n{host}\r\nAuthorization: Bearer {token}\r\n\
                 Connection: close\r\n\r\n"
            ),
        );
        assert_ne!(status, 503, "{host:?}: the check failed: {response}");
        if status == 200 {
            let last = stack.app_last_request().await.unwrap();
            assert_eq!(last["headers"]["x-cognito-sub"], sub.as_str(), "{host:?}");
        }
    }
    let (status, _) = common::raw(
        port,
        "GET /api/echo HTTP/1.1\r\nHost: [::1\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 400, "a bad host is no way around the token");

    // 3. CORS preflights are answered by Envoy's CORS filter on every route: neither the app
    //    nor cognito-authz sees one.
    let http = reqwest::Client::new();
    let frontend = stack.frontend_url();
    let origin = frontend.as_str();
    let requests = stack.app_requests().await.unwrap();
    let checks = stack.authz_checks().await.unwrap();
    for path in [
        "/api/echo",
        "/api/admin/stats",
        "/api/activities/home",
        "/other",
    ] {
        let preflight = http
            .request(reqwest::Method::OPTIONS, stack.url(path))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .header("x-cognito-sub", "spoofed")
            .header("x-cognito-groups", "admins")
            .send()
            .await
            .unwrap();
        assert_eq!(preflight.status().as_u16(), 200, "preflight on {path}");
        let allow = |name: &str| {
            preflight
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_ascii_lowercase()
        };
        assert_eq!(allow("access-control-allow-origin"), origin, "{path}");
        assert!(
            allow("access-control-allow-headers").contains("authorization"),
            "{path}"
        );
    }
    // A stranger's origin gets no CORS grant, and its preflight is answered by Envoy too.
    let foreign = http
        .request(reqwest::Method::OPTIONS, stack.url("/api/echo"))
        .header("origin", "http://evil.example")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert!(foreign
        .headers()
        .get("access-control-allow-origin")
        .is_none());
    assert_eq!(
        stack.app_requests().await.unwrap(),
        requests,
        "no preflight reached the app"
    );
    assert_eq!(
        stack.authz_checks().await.unwrap(),
        checks,
        "no preflight was checked"
    );

    // 4. An OPTIONS that is no preflight gets the ordinary decision.
    let before = stack.app_requests().await.unwrap();
    let plain = http
        .request(reqwest::Method::OPTIONS, stack.url("/api/echo"))
        .header("origin", origin)
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status().as_u16(), 401);
    assert_eq!(stack.app_requests().await.unwrap(), before);

    // 5. The cross-origin call the preflight was for: allowed, identity from the token only.
    let call = http
        .get(stack.url("/api/echo"))
        .header("origin", origin)
        .bearer_auth(&token)
        .header("x-cognito-sub", "spoofed")
        .send()
        .await
        .unwrap();
    assert_eq!(call.status().as_u16(), 200);
    assert_eq!(
        call.headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some(origin)
    );
    let last = stack.app_last_request().await.unwrap();
    assert_eq!(last["headers"]["x-cognito-sub"], sub.as_str());
}
