//! TLS and mutual TLS on the gRPC listener: with tonic clients, and through a real Envoy 1.40
//! using envoy/envoy.tls.yaml, whose client certificate must be the right CA's or every request
//! fails closed.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cognito_authz::server::{self, GrpcAddr, Running};
use cognito_authz::testkit::{access_claims, jwks, now, Behaviour, JwksServer, TestKey};
use common::{check_request, serve_config, write_pki, CLIENT, ISS};
use cruddur_demo::stack::{render_envoy_config, tls_envoy_config, Ports, TLS_DIR};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

fn pki(name: &str) -> PathBuf {
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    write_pki(&dir);
    dir
}

async fn tls_server(idp: &JwksServer, dir: &Path, mutual: bool) -> Running {
    let cert = dir.join("server.pem");
    let key = dir.join("server-key.pem");
    let ca = dir.join("ca.pem");
    // The shipped config's /api/ routes confirm tokens with Cognito: the local IdP server
    // answers GetUser with 200 (a live token).
    let get_user = idp.url("/");
    let mut vars = vec![
        ("AUTHZ_TLS_CERT", cert.to_str().unwrap()),
        ("AUTHZ_TLS_KEY", key.to_str().unwrap()),
        ("COGNITO_IDP_ENDPOINT", get_user.as_str()),
    ];
    if mutual {
        vars.push(("AUTHZ_TLS_CLIENT_CA", ca.to_str().unwrap()));
    }
    let running = server::start(serve_config(&idp.url("/j"), &vars, ""))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    running
}

async fn check_over(
    addr: std::net::SocketAddr,
    tls: Option<ClientTlsConfig>,
) -> Result<(), String> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}")).unwrap();
    if let Some(tls) = tls {
        endpoint = endpoint
            .tls_config(tls.domain_name("cognito-authz"))
            .unwrap();
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("connect: {e}"))?;
    AuthorizationClient::new(channel)
        .check(check_request("GET", "/api", &[], &[]))
        .await
        .map(|_| ())
        .map_err(|e| format!("check: {e}"))
}

fn read(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap()
}

#[tokio::test]
async fn mutual_tls_admits_only_clients_with_a_certificate_from_the_ca() {
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let dir = pki("mtls");
    let running = tls_server(&idp, &dir, true).await;
    let GrpcAddr::Tcp(addr) = running.grpc_addr else {
        unreachable!()
    };
    let ca = Certificate::from_pem(read(&dir, "ca.pem"));
    let with = |name: &str| {
        ClientTlsConfig::new()
            .ca_certificate(ca.clone())
            .identity(Identity::from_pem(
                read(&dir, &format!("{name}.pem")),
                read(&dir, &format!("{name}-key.pem")),
            ))
    };
    check_over(addr, Some(with("envoy")))
        .await
        .expect("the CA's client certificate is accepted");
    assert!(
        check_over(addr, Some(with("rogue"))).await.is_err(),
        "another CA's certificate is refused"
    );
    assert!(
        check_over(
            addr,
            Some(ClientTlsConfig::new().ca_certificate(ca.clone()))
        )
        .await
        .is_err(),
        "no client certificate is refused"
    );
    assert!(
        check_over(addr, None).await.is_err(),
        "plaintext is refused"
    );
    running.stop().await.unwrap();
}

#[tokio::test]
async fn tls_without_client_certificates_serves_any_tls_client() {
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let dir = pki("tls");
    let running = tls_server(&idp, &dir, false).await;
    let GrpcAddr::Tcp(addr) = running.grpc_addr else {
        unreachable!()
    };
    let ca = Certificate::from_pem(read(&dir, "ca.pem"));
    check_over(addr, Some(ClientTlsConfig::new().ca_certificate(ca)))
        .await
        .unwrap();
    assert!(
        check_over(addr, None).await.is_err(),
        "plaintext is refused"
    );
    running.stop().await.unwrap();
}

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tool(name: &str) -> PathBuf {
    let venv = std::env::var_os("COGNITO_AUTHZ_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv"));
    let path = venv.join("bin").join(name);
    assert!(
        path.is_file(),
        "{} is missing: run scripts/setup-venv",
        path.display()
    );
    path
}

fn native() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("envoy/envoy.yaml")).unwrap()
}

async fn envoy_with(dir: &Path, client: &str, ports: Ports) -> Proc {
    let text = render_envoy_config(&tls_envoy_config(&native()), ports)
        .unwrap()
        .replace(TLS_DIR, &format!("{}/", dir.display()))
        .replace("/envoy.pem", &format!("/{client}.pem"))
        .replace("/envoy-key.pem", &format!("/{client}-key.pem"));
    run_envoy(dir, client, &text, ports).await
}

async fn run_envoy(dir: &Path, name: &str, text: &str, ports: Ports) -> Proc {
    let config = dir.join(format!("envoy-{name}.yaml"));
    std::fs::write(&config, text).unwrap();
    let envoy = Proc(
        Command::new(tool("envoy"))
            .arg("-c")
            .arg(&config)
            .args([
                "--disable-hot-restart",
                "--log-level",
                "error",
                "--concurrency",
                "1",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while common::http_get_opt(
        std::net::SocketAddr::from(([127, 0, 0, 1], ports.envoy_admin)),
        "/ready",
    )
    .await
        != Some(200)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "Envoy never became ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    envoy
}

#[tokio::test]
async fn envoy_reaches_cognito_authz_over_mutual_tls_and_fails_closed_with_a_wrong_certificate() {
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let dir = pki("envoy-mtls");
    let running = tls_server(&idp, &dir, true).await;
    let GrpcAddr::Tcp(authz) = running.grpc_addr else {
        unreachable!()
    };
    let app_bin = Path::new(env!("CARGO_BIN_EXE_cognito-authz")).with_file_name("cruddur-app");
    assert!(
        app_bin.is_file(),
        "{} is missing: cargo build --workspace",
        app_bin.display()
    );

    let mut ports = Ports::ephemeral().unwrap();
    ports.authz = authz.port();
    let _app = Proc(
        Command::new(&app_bin)
            .env("PORT", ports.app.to_string())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let envoy = envoy_with(&dir, "envoy", ports).await;
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{}/api/echo", ports.envoy);
    let token = TestKey::shared(0).token(&access_claims(ISS, CLIENT, now()));

    let denied = http.get(&url).send().await.unwrap();
    assert_eq!(
        denied.status().as_u16(),
        401,
        "the check ran over mutual TLS"
    );
    let body: serde_json::Value = denied.json().await.unwrap();
    assert_eq!(body["reason"], "no_token");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let allowed = loop {
        let response = http.get(&url).bearer_auth(&token).send().await.unwrap();
        if response.status().as_u16() == 200 || tokio::time::Instant::now() > deadline {
            break response;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(allowed.status().as_u16(), 200);
    let seen: serde_json::Value = allowed.json().await.unwrap();
    assert_eq!(
        seen["identity_headers"]["x-cognito-sub"],
        "8f1e2d3c-0000-4000-8000-00000000abcd"
    );
    drop(envoy);

    let mut rogue_ports = Ports::ephemeral().unwrap();
    rogue_ports.authz = authz.port();
    rogue_ports.app = ports.app;
    let _rogue = envoy_with(&dir, "rogue", rogue_ports).await;
    let url = format!("http://127.0.0.1:{}/api/echo", rogue_ports.envoy);
    let refused = http.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(
        refused.status().as_u16(),
        503,
        "a rejected handshake fails closed"
    );
    running.stop().await.unwrap();
}

/// The app binary next to ours, started on the stack's app port.
fn start_app(ports: Ports) -> Proc {
    let app_bin = Path::new(env!("CARGO_BIN_EXE_cognito-authz")).with_file_name("cruddur-app");
    assert!(
        app_bin.is_file(),
        "{} is missing: cargo build --workspace",
        app_bin.display()
    );
    Proc(
        Command::new(&app_bin)
            .env("PORT", ports.app.to_string())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// Through Envoy: no token is cognito-authz's 401, a valid token reaches the app with identity.
async fn assert_envoy_checks_through(ports: Ports) {
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{}/api/echo", ports.envoy);
    let denied = http.get(&url).send().await.unwrap();
    assert_eq!(denied.status().as_u16(), 401);
    assert_eq!(
        denied.json::<serde_json::Value>().await.unwrap()["reason"],
        "no_token"
    );
    let token = TestKey::shared(0).token(&access_claims(ISS, CLIENT, now()));
    let allowed = http.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(allowed.status().as_u16(), 200);
    let seen: serde_json::Value = allowed.json().await.unwrap();
    assert_eq!(
        seen["identity_headers"]["x-cognito-sub"],
        "8f1e2d3c-0000-4000-8000-00000000abcd"
    );
}

#[tokio::test]
async fn envoy_reaches_cognito_authz_over_server_only_tls() {
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let dir = pki("envoy-tls");
    let running = tls_server(&idp, &dir, false).await;
    let GrpcAddr::Tcp(authz) = running.grpc_addr else {
        unreachable!()
    };
    let mut ports = Ports::ephemeral().unwrap();
    ports.authz = authz.port();
    let _app = start_app(ports);
    // Server-only TLS: the mutual-TLS config without Envoy's client certificate.
    let text = render_envoy_config(&tls_envoy_config(&native()), ports)
        .unwrap()
        .replace(
            "          tls_certificates:\n          - certificate_chain: { filename: /etc/cognito-authz/tls/envoy.pem }\n            private_key: { filename: /etc/cognito-authz/tls/envoy-key.pem }\n",
            "",
        )
        .replace(TLS_DIR, &format!("{}/", dir.display()));
    assert!(
        !text.contains("private_key"),
        "the client certificate was removed"
    );
    let _envoy = run_envoy(&dir, "server-only", &text, ports).await;
    assert_envoy_checks_through(ports).await;
    running.stop().await.unwrap();
}

#[tokio::test]
async fn envoy_reaches_cognito_authz_over_a_unix_socket() {
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("envoy-uds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("authz.sock");
    let addr = format!("unix:{}", socket.display());
    let get_user = idp.url("/");
    let running = server::start(serve_config(
        &idp.url("/j"),
        &[
            ("AUTHZ_GRPC_ADDR", addr.as_str()),
            ("COGNITO_IDP_ENDPOINT", get_user.as_str()),
        ],
        "",
    ))
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ports = Ports::ephemeral().unwrap();
    let _app = start_app(ports);
    // Render the ports first (keeping 9001, which the socket flavour replaces), then the socket.
    let rendered = render_envoy_config(
        &native(),
        Ports {
            authz: 9001,
            ..ports
        },
    )
    .unwrap();
    let text = cruddur_demo::stack::uds_envoy_config(&rendered)
        .replace(cruddur_demo::stack::UDS_PATH, socket.to_str().unwrap());
    assert!(
        text.contains("pipe: {"),
        "the authz cluster uses the socket"
    );
    let _envoy = run_envoy(&dir, "uds", &text, ports).await;
    assert_envoy_checks_through(ports).await;
    running.stop().await.unwrap();
}

#[tokio::test]
async fn the_http_listener_speaks_tls_with_the_same_files() {
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let dir = pki("http-tls");
    let pem = |name: &str| dir.join(name).display().to_string();
    let (cert, key, ca) = (pem("server.pem"), pem("server-key.pem"), pem("ca.pem"));
    let running = server::start(serve_config(
        &idp.url("/j"),
        &[
            ("AUTHZ_TLS_CERT", &cert),
            ("AUTHZ_TLS_KEY", &key),
            ("AUTHZ_TLS_CLIENT_CA", &ca),
            ("AUTHZ_HTTP_ADDR", "127.0.0.1:0"),
        ],
        "",
    ))
    .await
    .unwrap();
    let Some(GrpcAddr::Tcp(http)) = running.http_addr.clone() else {
        unreachable!()
    };
    let root = reqwest::Certificate::from_pem(&read(&dir, "ca.pem")).unwrap();
    let client = |identity: Option<&str>| {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(root.clone())
            .resolve("cognito-authz", http);
        if let Some(name) = identity {
            let mut pem = read(&dir, &format!("{name}.pem"));
            pem.extend(read(&dir, &format!("{name}-key.pem")));
            builder = builder.identity(reqwest::Identity::from_pem(&pem).unwrap());
        }
        builder.build().unwrap()
    };
    let url = format!("https://cognito-authz:{}/api/x", http.port());
    // Envoy with its client certificate: the check answers (no token: 401), over HTTP/1.1 and
    // HTTP/2 (ALPN).
    let answer = client(Some("envoy")).get(&url).send().await.unwrap();
    assert_eq!(answer.status().as_u16(), 401);
    assert_eq!(
        answer.headers()["x-authz-reason"].to_str().unwrap(),
        "no_token"
    );
    // No client certificate, or one from another CA: no answer at all.
    assert!(client(None).get(&url).send().await.is_err());
    assert!(client(Some("rogue")).get(&url).send().await.is_err());
    // Plain HTTP: no answer either.
    assert!(reqwest::get(format!("http://{http}/api/x")).await.is_err());
    running.stop().await.unwrap();
}
