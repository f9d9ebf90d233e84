//! Shared helpers for the integration tests: configurations pointing at a local JWKS server.
#![allow(dead_code)]

pub mod otlp;
pub mod redis_cluster;

use std::collections::HashMap;

use cognito_authz::config::Config;
use cognito_authz::jwks::KeyStore;
use cognito_authz::verify::Verifier;
use cruddur_demo::stack::Layout;

pub const POOL: &str = "us-east-1_IntegPool";
pub const ISS: &str = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_IntegPool";
pub const CLIENT: &str = "integ-client";

/// The environment a user would set, pointing the JWKS at `jwks_uri`, plus `extra`.
pub fn env_for(jwks_uri: &str, extra: &[(&str, &str)]) -> HashMap<String, String> {
    let mut vars: HashMap<String, String> = [
        ("AWS_COGNITO_USER_POOL_ID", POOL),
        ("AWS_COGNITO_USER_POOL_CLIENT_ID", CLIENT),
        ("COGNITO_JWKS_URI", jwks_uri),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in extra {
        vars.insert(k.to_string(), v.to_string());
    }
    vars
}

pub fn config_for(jwks_uri: &str, extra: &[(&str, &str)]) -> Config {
    let vars = env_for(jwks_uri, extra);
    Config::from_lookup(|k| vars.get(k).cloned(), None).expect("valid test configuration")
}

/// A verifier whose store has not fetched yet.
pub fn verifier_for(config: &Config) -> Verifier {
    let keys = KeyStore::new(&config.pools, &config.jwks).expect("key store");
    config.verifier(keys)
}

use envoy_types::ext_authz::v3::pb::{CheckRequest, CheckResponse, HttpResponse};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;

/// A CheckRequest as Envoy sends it (header names lowercase).
pub fn check_request(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    extensions: &[(&str, &str)],
) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    id: "1".into(),
                    method: method.into(),
                    path: path.into(),
                    host: "app.local".into(),
                    scheme: "http".into(),
                    protocol: "HTTP/1.1".into(),
                    headers: headers
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            context_extensions: extensions
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }),
    }
}

/// What Envoy would do with a CheckResponse, in plain terms.
#[derive(Debug)]
pub enum Answer {
    Allowed {
        set: HashMap<String, String>,
        removed: Vec<String>,
    },
    Denied {
        status: i32,
        headers: HashMap<String, String>,
        body: serde_json::Value,
    },
}

#[allow(deprecated)]
pub fn answer(response: &CheckResponse) -> Answer {
    match response.http_response.as_ref().expect("an http_response") {
        HttpResponse::OkResponse(ok) => {
            assert_eq!(response.status.as_ref().unwrap().code, 0);
            let mut set = HashMap::new();
            for h in &ok.headers {
                assert_eq!(
                    h.append.as_ref().map(|b| b.value),
                    Some(false),
                    "every injected header overwrites (append: false)"
                );
                let hv = h.header.as_ref().unwrap();
                set.insert(hv.key.clone(), hv.value.clone());
            }
            for name in &ok.headers_to_remove {
                assert!(!set.contains_key(name), "{name} is both set and removed");
            }
            Answer::Allowed {
                set,
                removed: ok.headers_to_remove.clone(),
            }
        }
        HttpResponse::DeniedResponse(denied) => {
            assert_ne!(response.status.as_ref().unwrap().code, 0);
            Answer::Denied {
                status: denied.status.as_ref().unwrap().code,
                headers: denied
                    .headers
                    .iter()
                    .map(|h| {
                        let hv = h.header.as_ref().unwrap();
                        (hv.key.clone(), hv.value.clone())
                    })
                    .collect(),
                body: serde_json::from_str(&denied.body).expect("a JSON body"),
            }
        }
        other => panic!("we never answer with {other:?}"),
    }
}

/// Server configuration on ephemeral loopback ports.
pub fn serve_config(jwks_uri: &str, extra: &[(&str, &str)], toml_text: &str) -> Config {
    let mut vars = env_for(jwks_uri, extra);
    vars.entry("AUTHZ_GRPC_ADDR".into())
        .or_insert_with(|| "127.0.0.1:0".into());
    vars.insert("AUTHZ_ADMIN_ADDR".into(), "127.0.0.1:0".into());
    Config::from_toml(|k| vars.get(k).cloned(), toml_text).expect("valid test configuration")
}

/// A tonic channel to a TCP address.
pub async fn channel(addr: std::net::SocketAddr) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("connect to the gRPC listener")
}

/// Envoy's Check for `GET /api/x` with `Authorization: Bearer <token>`, through the gRPC
/// listener at `addr`: the answer as the tests read it.
pub async fn check_bearer(addr: std::net::SocketAddr, token: &str) -> Answer {
    let auth = format!("Bearer {token}");
    let response =
        envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient::new(
            channel(addr).await,
        )
        .check(check_request(
            "GET",
            "/api/x",
            &[("authorization", &auth)],
            &[],
        ))
        .await
        .expect("Check")
        .into_inner();
    answer(&response)
}

/// GET on the admin listener: (status, body).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let response = reqwest::get(format!("http://{addr}{path}"))
        .await
        .expect("admin request");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// GET on the admin listener: the status, or `None` when nothing answers yet.
pub async fn http_get_opt(addr: std::net::SocketAddr, path: &str) -> Option<u16> {
    reqwest::get(format!("http://{addr}{path}"))
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

/// A throwaway PKI in `dir`: `ca.pem`; `server.pem`/`server-key.pem` for cognito-authz (names
/// cognito-authz, localhost, 127.0.0.1); `envoy.pem`/`envoy-key.pem`, a client certificate from
/// the same CA; `rogue.pem`/`rogue-key.pem`, a client certificate from another CA.
pub fn write_pki(dir: &std::path::Path) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
    std::fs::create_dir_all(dir).unwrap();
    let new_ca = |name: &str| {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert, Issuer::new(params, key))
    };
    let leaf = |names: Vec<String>, issuer: &Issuer<'_, KeyPair>| {
        let mut params = CertificateParams::new(names).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (ca_cert, ca) = new_ca("cognito-authz test CA");
    let (_, rogue_ca) = new_ca("rogue CA");
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    for (name, names, issuer) in [
        (
            "server",
            vec!["cognito-authz".to_string(), "localhost".to_string()],
            &ca,
        ),
        ("envoy", vec!["envoy".to_string()], &ca),
        ("rogue", vec!["envoy".to_string()], &rogue_ca),
    ] {
        let (cert, key) = leaf(names, issuer);
        std::fs::write(dir.join(format!("{name}.pem")), cert).unwrap();
        std::fs::write(dir.join(format!("{name}-key.pem")), key).unwrap();
    }
}

/// The demo stack's layout for an end-to-end test: the binaries next to ours, a work folder of
/// the test's own. Fails, naming the fix, when Envoy, the emulator or a binary is missing.
pub fn stack_layout(name: &str) -> Layout {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_cognito-authz"))
        .parent()
        .expect("binary folder")
        .to_path_buf();
    let work = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{name}-{}", std::process::id()));
    Layout::new(root, &bin_dir, &work).unwrap_or_else(|e| panic!("{e}"))
}

/// One raw HTTP/1.1 request to a loopback port (reqwest normalises what an attacker would not:
/// the Host, underscore headers); returns the status and the response head. Reads only up to
/// the end of the head: Envoy closes a rejected connection only after its delayed-close timeout.
pub fn raw(port: u16, head: &str) -> (u16, String) {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    while !bytes.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
        }
    }
    let response = String::from_utf8_lossy(&bytes).into_owned();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"));
    (status, response)
}

/// A throwaway Debian `redis-server`; killed when dropped.
pub struct Redis(std::process::Child);

impl Redis {
    /// A throwaway Debian `redis-server` on a free loopback port, and its URL.
    pub fn start() -> (Redis, String) {
        let port = cruddur_demo::stack::Ports::ephemeral().unwrap().app;
        let child = std::process::Command::new("/usr/bin/redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (the README's test command installs it)");
        (Redis(child), format!("redis://127.0.0.1:{port}/"))
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
