//! The control API (`/revocations`, `/config`) answers only to the operator: a bearer secret
//! from `AUTHZ_ADMIN_TOKEN_FILE`, compared in constant time, and off without one. Probes and
//! scrapers (`/metrics`, `/healthz`, `/readyz`) need nothing. What the API accepts is bounded:
//! the body, each id, `before`, and the number of revocations held.

use crate::common;

use std::path::PathBuf;
use std::process::Command;

use cognito_authz::server::{self, Running};
use cognito_authz::testkit::{jwks, now, Behaviour, JwksServer, TestKey};
use common::serve_config;

const SECRET: &str = "an-operator-secret-of-32-bytes!!";

fn secret_file(name: &str, text: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("control-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("admin-token");
    std::fs::write(&path, text).unwrap();
    path
}

async fn start(idp: &JwksServer, extra: &[(&str, &str)]) -> Running {
    server::start(serve_config(&idp.url("/j"), extra, ""))
        .await
        .unwrap()
}

/// One request to the admin listener: (status, body).
async fn call(
    running: &Running,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: &str,
) -> (u16, String) {
    let mut request = reqwest::Client::new().request(
        method.parse().unwrap(),
        format!("http://{}{path}", running.admin_addr),
    );
    if let Some(bearer) = bearer {
        request = request.bearer_auth(bearer);
    }
    let response = request.body(body.to_string()).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

#[tokio::test]
async fn the_control_api_answers_only_to_the_secret_and_probes_need_none() {
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let file = secret_file("auth", &format!("{SECRET}\n"));
    let running = start(&idp, &[("AUTHZ_ADMIN_TOKEN_FILE", file.to_str().unwrap())]).await;
    let revoke = r#"{"sub": "8f1e2d3c-0000-4000-8000-00000000abcd"}"#;
    // Another process on the same network: no secret, a wrong one, another scheme.
    for bearer in [None, Some("wrong"), Some(&SECRET[..31]), Some("")] {
        let (status, _) = call(&running, "POST", "/revocations", bearer, revoke).await;
        assert_eq!(status, 401, "{bearer:?}");
        let (status, _) = call(&running, "GET", "/config", bearer, "").await;
        assert_eq!(status, 401, "{bearer:?}");
    }
    let basic = reqwest::Client::new()
        .get(format!("http://{}/config", running.admin_addr))
        .basic_auth("admin", Some(SECRET))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status().as_u16(), 401);
    assert_eq!(
        running.authorizer().revocations().len(),
        0,
        "nothing recorded"
    );
    // The same process with the secret.
    let (status, body) = call(&running, "POST", "/revocations", Some(SECRET), revoke).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(&running, "GET", "/config", Some(SECRET), "").await;
    assert_eq!(status, 200);
    assert!(!body.contains(SECRET), "the secret never shows: {body}");
    // Probes and scrapers need no secret.
    for path in ["/metrics", "/healthz"] {
        assert_eq!(call(&running, "GET", path, None, "").await.0, 200, "{path}");
    }
    running.stop().await.unwrap();
}

#[tokio::test]
async fn without_a_secret_the_control_api_is_off() {
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let running = start(&idp, &[]).await;
    let (status, body) = call(
        &running,
        "POST",
        "/revocations",
        None,
        r#"{"sub": "someone"}"#,
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("AUTHZ_ADMIN_TOKEN_FILE"), "{body}");
    assert_eq!(call(&running, "GET", "/config", None, "").await.0, 404);
    assert_eq!(running.authorizer().revocations().len(), 0);
    assert_eq!(call(&running, "GET", "/metrics", None, "").await.0, 200);
    running.stop().await.unwrap();
}

#[test]
fn a_secret_that_is_missing_or_short_is_a_configuration_error() {
    let short = secret_file("short", "tooshort\n");
    for (vars, named) in [
        (
            vec![("AUTHZ_ADMIN_TOKEN_FILE", "/nonexistent/admin-token")],
            "AUTHZ_ADMIN_TOKEN_FILE",
        ),
        (
            vec![("AUTHZ_ADMIN_TOKEN_FILE", short.to_str().unwrap())],
            "AUTHZ_ADMIN_TOKEN_FILE",
        ),
    ] {
        let mut env = common::env_for("http://127.0.0.1:9/j", &vars);
        env.insert("AUTHZ_GRPC_ADDR".into(), "127.0.0.1:0".into());
        let out = Command::new(env!("CARGO_BIN_EXE_cognito-authz"))
            .arg("check-config")
            .env_clear()
            .envs(&env)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{vars:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(named), "{stderr}");
        assert!(
            !stderr.contains("tooshort"),
            "the secret never shows: {stderr}"
        );
    }
}

#[tokio::test]
async fn the_revoke_command_takes_the_secret_from_a_file() {
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let file = secret_file("cli", SECRET);
    let running = start(&idp, &[("AUTHZ_ADMIN_TOKEN_FILE", file.to_str().unwrap())]).await;
    let admin = format!("http://{}", running.admin_addr);
    let run = |with_secret: bool| {
        let (admin, file) = (admin.clone(), file.clone());
        tokio::task::spawn_blocking(move || {
            let mut command = Command::new(env!("CARGO_BIN_EXE_cognito-authz"));
            command
                .args(["revoke", "--admin", &admin, "--sub", "someone"])
                .env_clear();
            if with_secret {
                command.arg("--admin-token-file").arg(&file);
            }
            command.output().unwrap()
        })
    };
    let refused = run(false).await.unwrap();
    assert_ne!(refused.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("401"));
    let accepted = run(true).await.unwrap();
    assert_eq!(
        accepted.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&accepted.stderr)
    );
    assert_eq!(running.authorizer().revocations().len(), 1);
    running.stop().await.unwrap();
}

/// `revoke --token` takes the token as an operator pastes it: `bearer` in any letter case.
#[tokio::test]
async fn the_revoke_command_takes_a_pasted_token_in_any_case() {
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let file = secret_file("pasted", SECRET);
    let running = start(&idp, &[("AUTHZ_ADMIN_TOKEN_FILE", file.to_str().unwrap())]).await;
    let admin = format!("http://{}", running.admin_addr);
    let token = TestKey::shared(0).token(&cognito_authz::testkit::access_claims(
        common::ISS,
        common::CLIENT,
        now(),
    ));
    let pasted = format!("bearer {token}");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_cognito-authz"))
            .args(["revoke", "--admin", &admin, "--token", &pasted])
            .arg("--admin-token-file")
            .arg(&file)
            .env_clear()
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(running.authorizer().revocations().len(), 1, "the session");
    running.stop().await.unwrap();
}

#[tokio::test]
async fn what_the_control_api_accepts_is_bounded() {
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let file = secret_file("bounds", SECRET);
    let running = start(
        &idp,
        &[
            ("AUTHZ_ADMIN_TOKEN_FILE", file.to_str().unwrap()),
            ("AUTHZ_MAX_REVOCATIONS", "3"),
        ],
    )
    .await;
    let post = |body: String| {
        let running = &running;
        async move { call(running, "POST", "/revocations", Some(SECRET), &body).await }
    };
    // A body over 16 KiB, an id over 256 bytes, `before` in the future.
    let (status, _) = post(format!(r#"{{"sub": "{}"}}"#, "a".repeat(17 * 1024))).await;
    assert_eq!(status, 413);
    let (status, body) = post(format!(r#"{{"sub": "{}"}}"#, "a".repeat(257))).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = post(format!(r#"{{"jti": "{}"}}"#, "a".repeat(300))).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = post(format!(r#"{{"sub": "u", "before": {}}}"#, now() + 3600)).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(running.authorizer().revocations().len(), 0);
    // The list is capped: the fourth is refused with 503, and the metric says how full it is.
    for i in 0..3 {
        let (status, body) = post(format!(r#"{{"jti": "j{i}"}}"#)).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = post(r#"{"jti": "one-too-many"}"#.to_string()).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(running.authorizer().revocations().len(), 3);
    let (_, metrics) = call(&running, "GET", "/metrics", None, "").await;
    assert!(metrics.contains("cognito_authz_revocations 3"), "{metrics}");
    assert!(
        metrics.contains("cognito_authz_revocations_refused_total{reason=\"full\"} 1"),
        "{metrics}"
    );
    running.stop().await.unwrap();
}

#[test]
fn diagnostics_are_off_by_default_wherever_the_grpc_listener_is_not_local() {
    let config = |addr: &str, diagnostics: Option<&str>| {
        let mut vars = vec![("AUTHZ_GRPC_ADDR", addr)];
        vars.extend(diagnostics.map(|d| ("AUTHZ_DIAGNOSTICS", d)));
        common::config_for("http://127.0.0.1:9/j", &vars)
            .server
            .diagnostics
    };
    assert!(config("127.0.0.1:9001", None));
    assert!(config("[::1]:9001", None));
    assert!(config("unix:/run/cognito-authz/authz.sock", None));
    assert!(!config("0.0.0.0:9001", None), "a shared service's listener");
    assert!(!config("10.0.0.5:9001", None));
    assert!(config("0.0.0.0:9001", Some("on")), "unless configured");
    assert!(!config("127.0.0.1:9001", Some("off")));
}

#[tokio::test]
async fn with_diagnostics_off_verify_token_and_reflection_are_not_served() {
    use cognito_authz::generated::diagnostics::diagnostics_client::DiagnosticsClient;
    use cognito_authz::generated::diagnostics::VerifyTokenRequest;
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let running = start(&idp, &[("AUTHZ_DIAGNOSTICS", "off")]).await;
    let cognito_authz::server::GrpcAddr::Tcp(addr) = running.grpc_addr.clone() else {
        unreachable!()
    };
    let status = DiagnosticsClient::new(common::channel(addr).await)
        .verify_token(VerifyTokenRequest { token: "x".into() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented);
    // Envoy's Check is still served.
    let check =
        envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient::new(
            common::channel(addr).await,
        )
        .check(common::check_request("GET", "/x", &[], &[]))
        .await;
    assert!(check.is_ok());
    running.stop().await.unwrap();
}
