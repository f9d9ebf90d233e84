//! Reload: routes, pools and app clients swap at once; an invalid new configuration is refused
//! and the running one keeps serving. Directly through `Running::reload`, and end to end with
//! the real binary and SIGHUP.

use crate::common;

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use cognito_authz::config::Config;
use cognito_authz::generated::diagnostics::diagnostics_client::DiagnosticsClient;
use cognito_authz::generated::diagnostics::KeyStatusRequest;
use cognito_authz::server::{self, GrpcAddr};
use cognito_authz::testkit::{access_claims, jwks, now, Behaviour, JwksServer, TestKey};
use common::{answer, channel, check_request, env_for, serve_config, Answer, CLIENT, ISS};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;

const ADMIN_SECRET: &str = "reload-test-admin-secret";

/// A file with the control API's secret (a reload turns the control API on with it).
fn admin_secret() -> String {
    let path = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("reload-admin-token-{}", std::process::id()));
    std::fs::write(&path, ADMIN_SECRET).unwrap();
    path.display().to_string()
}

/// `/config` as the operator reads it.
async fn config_shown(running: &server::Running) -> (u16, String) {
    let response = reqwest::Client::new()
        .get(format!("http://{}/config", running.admin_addr))
        .bearer_auth(ADMIN_SECRET)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

async fn check(addr: std::net::SocketAddr, path: &str, token: Option<&str>) -> Answer {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    let response = AuthorizationClient::new(channel(addr).await)
        .check(check_request("GET", path, &headers, &[]))
        .await
        .expect("Check answers")
        .into_inner();
    answer(&response)
}

fn token_for(client: &str) -> String {
    TestKey::shared(0).token(&access_claims(ISS, client, now()))
}

const PUBLIC_OPEN: &str = "[[routes]]\nprefix = \"/open\"\nmode = \"public\"\n";

#[tokio::test]
async fn a_reload_swaps_routes_and_clients_at_once() {
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let running = server::start(serve_config(&idp.url("/j"), &[], ""))
        .await
        .unwrap();
    let GrpcAddr::Tcp(addr) = running.grpc_addr else {
        unreachable!()
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    assert!(matches!(
        check(addr, "/open", None).await,
        Answer::Denied { status: 401, .. }
    ));
    assert!(matches!(
        check(addr, "/api", Some(&token_for(CLIENT))).await,
        Answer::Allowed { .. }
    ));
    assert!(matches!(
        check(addr, "/api", Some(&token_for("mobile"))).await,
        Answer::Denied { status: 401, .. }
    ));
    let fetches = idp.hits();

    let secret = admin_secret();
    let next = serve_config(
        &idp.url("/j"),
        &[
            ("AWS_COGNITO_USER_POOL_CLIENT_ID", "mobile"),
            ("AUTHZ_ADMIN_TOKEN_FILE", &secret),
        ],
        PUBLIC_OPEN,
    );
    running.reload(next).await.unwrap();
    assert!(matches!(
        check(addr, "/open", None).await,
        Answer::Allowed { .. }
    ));
    assert!(matches!(
        check(addr, "/api", Some(&token_for("mobile"))).await,
        Answer::Allowed { .. }
    ));
    match check(addr, "/api", Some(&token_for(CLIENT))).await {
        Answer::Denied { status, body, .. } => {
            assert_eq!(
                (status, body["reason"].as_str()),
                (401, Some("wrong_client"))
            );
        }
        other => panic!("the old client still passes (a cached identity?): {other:?}"),
    }
    assert!(
        idp.hits() <= fetches + 1,
        "the unchanged pool kept its keys"
    );
    // What is running is what the diagnostics show.
    let (status, body) = config_shown(&running).await;
    assert_eq!(status, 200);
    let shown: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        shown["pools"][0]["client_ids"],
        serde_json::json!(["mobile"])
    );
    assert_eq!(shown["routes"]["rules"][0]["path"]["Prefix"], "/open");
    running.stop().await.unwrap();
}

#[tokio::test]
async fn key_status_and_config_follow_a_reload_to_another_pool() {
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let running = server::start(serve_config(&idp.url("/j"), &[], ""))
        .await
        .unwrap();
    let GrpcAddr::Tcp(addr) = running.grpc_addr else {
        unreachable!()
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    running
        .reload(serve_config(
            &idp.url("/other"),
            &[
                ("AWS_COGNITO_USER_POOL_ID", "eu-west-1_Other"),
                ("AUTHZ_ADMIN_TOKEN_FILE", &admin_secret()),
            ],
            "",
        ))
        .await
        .unwrap();
    let status = DiagnosticsClient::new(channel(addr).await)
        .key_status(KeyStatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    let pools: Vec<(&str, &str)> = status
        .pools
        .iter()
        .map(|p| (p.pool_id.as_str(), p.jwks_uri.as_str()))
        .collect();
    assert_eq!(pools, vec![("eu-west-1_Other", idp.url("/other").as_str())]);
    let (_, body) = config_shown(&running).await;
    let shown: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(shown["pools"][0]["id"], "eu-west-1_Other");
    running.stop().await.unwrap();
}

#[tokio::test]
async fn a_failed_reload_keeps_serving_and_the_server_still_stops_gracefully() {
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let running = server::start(serve_config(&idp.url("/j"), &[], ""))
        .await
        .unwrap();
    let GrpcAddr::Tcp(addr) = running.grpc_addr else {
        unreachable!()
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The new configuration swaps the app client and adds a pool whose IdP cannot be reached:
    // applying it fails (the new pool has no keys), after it was read successfully.
    let dead_pool = r#"
        [[pools]]
        id = "eu-west-1_Dead"
        client_ids = ["x"]
        jwks_uri = "http://127.0.0.1:9/jwks.json"
    "#;
    let jwks_uri = idp.url("/j");
    let reload = move || {
        Ok(serve_config(
            &jwks_uri,
            &[
                ("AWS_COGNITO_USER_POOL_CLIENT_ID", "mobile"),
                ("COGNITO_JWKS_TIMEOUT_MS", "300"),
            ],
            dead_pool,
        ))
    };
    let hangups = tokio_stream::StreamExt::chain(tokio_stream::iter([()]), tokio_stream::pending());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(running.serve_until(
        async move {
            let _ = stopped.await;
        },
        hangups,
        reload,
    ));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!served.is_finished(), "a failed reload ended the server");
    assert!(
        matches!(
            check(addr, "/api", Some(&token_for(CLIENT))).await,
            Answer::Allowed { .. }
        ),
        "the running configuration stays"
    );
    stop.send(()).unwrap();
    served.await.unwrap().expect("a graceful stop");
}

#[tokio::test]
async fn a_replaced_key_stores_refresh_loops_stop() {
    // The start-up fetch is slow, so a reload lands before the first store has spawned its
    // refresh loops; they must not start fetching the old IdP afterwards.
    let old_idp = JwksServer::start(Behaviour::Slow(
        Duration::from_millis(1200),
        Box::new(Behaviour::Json(jwks(&[TestKey::shared(0)]))),
    ))
    .await;
    let new_idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let fast = [("COGNITO_JWKS_REFRESH_SECONDS", "1")];
    let running = server::start(serve_config(&old_idp.url("/j"), &fast, ""))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    running
        .reload(serve_config(&new_idp.url("/j"), &fast, ""))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let settled = old_idp.hits();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        old_idp.hits(),
        settled,
        "the replaced store still refreshes from the old IdP"
    );
    assert!(new_idp.hits() >= 3, "the new store refreshes every second");
    running.stop().await.unwrap();
}

#[tokio::test]
async fn a_reload_keeps_the_keys_of_unchanged_pools_when_the_idp_is_down() {
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let running = server::start(serve_config(&idp.url("/j"), &[], ""))
        .await
        .unwrap();
    let GrpcAddr::Tcp(addr) = running.grpc_addr else {
        unreachable!()
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    idp.set(Behaviour::Status(503));
    running
        .reload(serve_config(&idp.url("/j"), &[], PUBLIC_OPEN))
        .await
        .unwrap();
    assert!(matches!(
        check(addr, "/api", Some(&token_for(CLIENT))).await,
        Answer::Allowed { .. }
    ));
    running.stop().await.unwrap();
}

#[tokio::test]
async fn sighup_reloads_the_file_and_refuses_an_invalid_one() {
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let dir = std::env::temp_dir().join(format!("cognito-authz-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("config.toml");
    std::fs::write(&file, "").unwrap();
    let grpc = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let admin = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut vars = env_for(&idp.url("/j"), &[]);
    vars.insert("AUTHZ_GRPC_ADDR".into(), grpc.to_string());
    vars.insert("AUTHZ_ADMIN_ADDR".into(), admin.to_string());
    // The test's own config must parse too, before the binary sees it.
    Config::from_toml(|k| vars.get(k).cloned(), PUBLIC_OPEN).unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_cognito-authz"))
        .args(["--config", file.to_str().unwrap(), "serve"])
        .env_clear()
        .envs(&vars)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while common::http_get_opt(admin, "/readyz").await != Some(200) {
        assert!(tokio::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(matches!(
        check(grpc, "/open", None).await,
        Answer::Denied { status: 401, .. }
    ));

    let hup = || {
        let status = Command::new("kill")
            .args(["-HUP", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    std::fs::write(&file, PUBLIC_OPEN).unwrap();
    hup();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !matches!(check(grpc, "/open", None).await, Answer::Allowed { .. }) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the reload never took effect"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    std::fs::write(
        &file,
        "[[routes]]\nprefix = \"/open\"\nmode = \"wide-open\"\n",
    )
    .unwrap();
    hup();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        matches!(check(grpc, "/open", None).await, Answer::Allowed { .. }),
        "the running configuration still serves"
    );
    assert!(matches!(
        check(grpc, "/api", None).await,
        Answer::Denied { status: 401, .. }
    ));

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    let mut logs = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    assert!(status.success(), "SIGTERM exits 0: {status}\n{logs}");
    assert!(logs.contains("configuration reloaded"), "{logs}");
    assert!(logs.contains("reload refused"), "{logs}");
    std::fs::remove_dir_all(dir).ok();
}
