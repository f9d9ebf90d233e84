//! The peer the module is measured against (bench/run's scenario (2r)): Envoy's own `jwt_authn`
//! writing the six identity headers, with its payload in metadata and an RBAC filter that
//! admits only the app client's access tokens — what Istio's RequestAuthentication plus an
//! AuthorizationPolicy on `request.auth.claims[client_id]` and `[token_use]` compile to. Its
//! filters are `bench/jwt-authn-rbac.yaml`, the file the bench runs, in the pinned Envoy.
//!
//! RBAC closes the gap in `client_id` and `token_use`. What the peer still lets through is
//! checked here, each token side by side with the cognito-authz module in front of the same
//! upstream: a token without `exp`, one issued far in the future and one without a `kid`
//! reach the upstream through the peer, with identity headers, and are refused by the module;
//! and a client's own `x-cognito-email` (a claim the token lacks) reaches the upstream through
//! the peer, where the module removes it.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cognito_authz::testkit::{access_claims, jwks, now, Behaviour, JwksServer, TestKey};
use serde_json::{json, Value};

use crate::common;

const POOL: &str = "us-east-1_PeerPool";
const CLIENT: &str = "peer-client";

fn issuer() -> String {
    format!("https://cognito-idp.us-east-1.amazonaws.com/{POOL}")
}

/// What the upstream received, each request's headers under its `probe` query parameter.
type Seen = Arc<Mutex<HashMap<String, HashMap<String, String>>>>;

async fn recording_upstream() -> (u16, Seen) {
    let seen: Seen = Arc::default();
    let record = Arc::clone(&seen);
    let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let record = Arc::clone(&record);
        async move {
            let probe = request
                .uri()
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("probe=")))
                .unwrap_or("none")
                .to_string();
            let headers = request
                .headers()
                .iter()
                .map(|(k, v)| {
                    let value = String::from_utf8_lossy(v.as_bytes()).into_owned();
                    (k.as_str().to_string(), value)
                })
                .collect();
            record.lock().unwrap().insert(probe, headers);
            "upstream"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, seen)
}

/// Scenario (2r)'s filters from the file the bench reads, for this test's pool and keys.
fn peer_filters(jwks_document: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/jwt-authn-rbac.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    for placeholder in ["${ISSUER}", "${JWKS}", "${CLIENT_ID}"] {
        assert!(text.contains(placeholder), "{path:?} lacks {placeholder}");
    }
    text.replace("${ISSUER}", &issuer())
        .replace("${JWKS}", jwks_document)
        .replace("${CLIENT_ID}", CLIENT)
        .lines()
        .filter(|line| !line.starts_with('#'))
        .map(|line| format!("          {line}\n"))
        .collect()
}

const MODULE_FILTER: &str = r#"          - name: envoy.filters.http.dynamic_modules
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter
              dynamic_module_config: { name: cognito_authz_envoy }
              filter_name: cognito-authz
              filter_config:
                "@type": type.googleapis.com/google.protobuf.StringValue
                value: ""
"#;

/// One listener in front of `upstream`, with `filters` before the router.
fn config(listen: u16, admin: u16, upstream: u16, filters: &str) -> String {
    format!(
        r#"admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
static_resources:
  listeners:
  - address: {{ socket_address: {{ address: 127.0.0.1, port_value: {listen} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: peer
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: / }}
                route: {{ cluster: upstream }}
          http_filters:
{filters}          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: upstream
    connect_timeout: 0.25s
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {upstream} }} }} }}
"#
    )
}

/// The pinned Envoy, killed on drop.
struct Envoy {
    child: Child,
    port: u16,
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_envoy(
    layout: &cruddur_demo::stack::Layout,
    name: &str,
    upstream: u16,
    filters: &str,
    env: &[(&str, String)],
) -> Envoy {
    let ports: Vec<std::net::TcpListener> = (0..2)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let [listen, admin] = [0, 1].map(|i| ports[i].local_addr().unwrap().port());
    drop(ports);
    let path = layout.work_dir.join(format!("{name}.yaml"));
    std::fs::write(&path, config(listen, admin, upstream, filters)).unwrap();
    let log = layout.work_dir.join(format!("{name}.log"));
    let file = std::fs::File::create(&log).unwrap();
    let child = Command::new(layout.tool("envoy"))
        .arg("-c")
        .arg(&path)
        .args([
            "--disable-hot-restart",
            "--concurrency",
            "1",
            "--log-level",
            "warn",
        ])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    let mut envoy = Envoy {
        child,
        port: listen,
    };
    let ready = std::net::SocketAddr::from(([127, 0, 0, 1], admin));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while common::http_get_opt(ready, "/ready").await != Some(200) {
        if let Ok(Some(status)) = envoy.child.try_wait() {
            panic!(
                "{name}: Envoy exited ({status}):\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name}: Envoy never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    envoy
}

/// `GET /api/peer?probe=PROBE` through `envoy` with `token`: the status and the `reason` of a
/// denial's JSON body (empty when it has none).
async fn send(envoy: &Envoy, token: &str, probe: &str) -> (u16, String) {
    send_with(envoy, token, probe, &[]).await
}

/// [`send`] with `extra` request headers.
async fn send_with(
    envoy: &Envoy,
    token: &str,
    probe: &str,
    extra: &[(&str, &str)],
) -> (u16, String) {
    let mut request = reqwest::Client::new()
        .get(format!(
            "http://127.0.0.1:{}/api/peer?probe={probe}",
            envoy.port
        ))
        .bearer_auth(token);
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let reason = body["reason"].as_str().unwrap_or("").to_string();
    (status, reason)
}

fn claims() -> Value {
    access_claims(&issuer(), CLIENT, now())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_jwt_authn_with_rbac_lets_through_and_the_module_refuses() {
    let layout = common::stack_layout("jwt-authn-peer");
    let key = TestKey::shared(0);
    let idp = JwksServer::start(Behaviour::Json(jwks(&[key]))).await;
    let (upstream, seen) = recording_upstream().await;
    let peer = start_envoy(
        &layout,
        "peer",
        upstream,
        &peer_filters(&jwks(&[key]).to_string()),
        &[],
    )
    .await;
    let module_env = [
        (
            "ENVOY_DYNAMIC_MODULES_SEARCH_PATH",
            layout.bin_dir.display().to_string(),
        ),
        ("AWS_COGNITO_USER_POOL_ID", POOL.to_string()),
        ("AWS_COGNITO_USER_POOL_CLIENT_ID", CLIENT.to_string()),
        ("AWS_DEFAULT_REGION", "us-east-1".to_string()),
        ("COGNITO_JWKS_URI", idp.url("/jwks.json")),
    ];
    assert!(
        layout.bin_dir.join("libcognito_authz_envoy.so").is_file(),
        "libcognito_authz_envoy.so is missing: build it with `cargo build -p cognito-authz-envoy`"
    );
    let module = start_envoy(&layout, "module", upstream, MODULE_FILTER, &module_env).await;
    let log = std::fs::read_to_string(layout.work_dir.join("peer.log")).unwrap();
    assert!(
        !log.to_lowercase().contains("deprecated"),
        "the peer's config uses a deprecated field:\n{log}"
    );

    // The app client's access token passes both, with the peer's identity headers; the module
    // fetches its keys after Envoy is ready, so it is asked until it has them.
    let valid = key.token(&claims());
    assert_eq!(
        send(&peer, &valid, "peer-valid").await,
        (200, String::new())
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while send(&module, &valid, "module-valid").await.0 != 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the module never admitted a valid token"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let peer_valid = seen.lock().unwrap()["peer-valid"].clone();
    assert_eq!(
        (
            peer_valid.get("x-cognito-client-id").map(String::as_str),
            peer_valid.get("x-cognito-token-use").map(String::as_str),
        ),
        (Some(CLIENT), Some("access")),
        "{peer_valid:?}"
    );

    // A header the token has no claim for is the client's own through the peer
    // (`claim_to_headers` only adds what the token carries); the module removes it.
    let forged = [("x-cognito-email", "ceo@example.com")];
    for (envoy, probe) in [(&peer, "peer-forged"), (&module, "module-forged")] {
        assert_eq!(
            send_with(envoy, &valid, probe, &forged).await,
            (200, String::new())
        );
    }
    let email = |probe: &str| seen.lock().unwrap()[probe].get("x-cognito-email").cloned();
    assert_eq!(email("peer-forged").as_deref(), Some("ceo@example.com"));
    assert_eq!(email("module-forged"), None);

    // RBAC does its part: another client's token and an ID token are refused (403) and never
    // reach the upstream.
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut claims = claims();
        edit(&mut claims);
        key.token(&claims)
    };
    let refused = [
        (
            "other-client",
            with(&|c| c["client_id"] = json!("other-client")),
        ),
        ("id-token", with(&|c| c["token_use"] = json!("id"))),
    ];
    for (probe, token) in &refused {
        assert_eq!(
            send(&peer, token, probe).await,
            (403, String::new()),
            "{probe}"
        );
        assert!(
            !seen.lock().unwrap().contains_key(*probe),
            "{probe} reached the upstream"
        );
    }

    // What the peer still lets through: each reaches the upstream, with the identity headers
    // the app trusts, and the module refuses each with its reason, the upstream untouched.
    let far_future = now() + 10 * 365 * 24 * 3600;
    let header_without_kid = json!({"alg": "RS256", "typ": "JWT"});
    let through = [
        (
            "no-exp",
            with(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
            "invalid_claims",
        ),
        (
            "iat-far-future",
            with(&|c| c["iat"] = json!(far_future)),
            "not_yet_valid",
        ),
        (
            "no-kid",
            key.token_with_header(&header_without_kid, &claims()),
            "malformed",
        ),
    ];
    for (probe, token, reason) in &through {
        let peer_probe = format!("peer-{probe}");
        assert_eq!(
            send(&peer, token, &peer_probe).await,
            (200, String::new()),
            "{probe}"
        );
        let received = seen.lock().unwrap().get(&peer_probe).cloned();
        let received = received.unwrap_or_else(|| panic!("{probe} did not reach the upstream"));
        assert_eq!(
            received.get("x-cognito-sub").map(String::as_str),
            claims()["sub"].as_str(),
            "{probe}: {received:?}"
        );
        let module_probe = format!("module-{probe}");
        assert_eq!(
            send(&module, token, &module_probe).await,
            (401, reason.to_string()),
            "{probe}"
        );
        assert!(
            !seen.lock().unwrap().contains_key(&module_probe),
            "{probe} reached the upstream through the module"
        );
    }
}
