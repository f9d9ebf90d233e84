//! Forged identity headers never reach the upstream, on every shipped platform config, whatever
//! that platform shows the check. A real Envoy 1.40 runs the effective `ext_authz` settings of
//! each one in front of a recording upstream, asking a real cognito-authz:
//!
//! - every config in `envoy/` (native gRPC, HTTP, Unix socket, mutual TLS, compose, compose
//!   replicas), rendered onto loopback;
//! - the Kubernetes ConfigMap (`deploy/kubernetes/envoy-configmap.yaml`);
//! - ECS (`deploy/ecs/envoy.yaml`);
//! - Envoy Gateway's two `SecurityPolicy`s (`deploy/envoy-gateway/cruddur.yaml`), turned into
//!   the filter Envoy Gateway generates: `headersToExtAuth` becomes `allowed_headers`,
//!   `headersToBackend` becomes `allowed_upstream_headers`, `cors` the CORS filter before it;
//! - Istio's two providers (`deploy/istio/mesh-config.yaml`, the VirtualService's `corsPolicy`
//!   in `deploy/istio/authorization.yaml`): the gRPC provider sends every header, the HTTP one
//!   `includeRequestHeadersInCheck`;
//! - a plain hand-written config of each protocol: no `allowed_headers`, no CORS.
//!
//! On each: no token, a valid token, an invalid token, an optional route, a required route, the
//! health route (public), a preflight from the front end's origin and from another; then what
//! the upstream received. And CORS: preflights answered by Envoy (neither the check nor the app
//! sees one), denials readable by the page. Finally host rules through Envoy.
//!
//! Needs `scripts/setup-venv` (Envoy); fails naming it when missing.

use crate::common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cognito_authz::identity::IDENTITY_HEADERS;
use cognito_authz::server::{self, GrpcAddr, Running};
use cognito_authz::testkit::{access_claims, jwks, now, Behaviour, JwksServer, TestKey};
use cruddur_demo::stack::{decisions_total, Ports};
use serde_norway::Value as Yaml;

use common::{serve_config, CLIENT, ISS};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn envoy_binary() -> PathBuf {
    let venv = std::env::var_os("COGNITO_AUTHZ_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".venv"));
    let path = venv.join("bin/envoy");
    assert!(
        path.is_file(),
        "{} is missing: run scripts/setup-venv (it installs Envoy 1.40)",
        path.display()
    );
    path
}

/// The YAML documents of a file.
fn documents(path: &str) -> Vec<Yaml> {
    use serde::Deserialize as _;
    serde_norway::Deserializer::from_str(&read(path))
        .map(|doc| Yaml::deserialize(doc).unwrap_or_else(|e| panic!("{path}: {e}")))
        .collect()
}

/// The document of `kind` named `name` in a file.
fn object(path: &str, kind: &str, name: &str) -> Yaml {
    documents(path)
        .into_iter()
        .find(|d| d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("{path} has no {kind}/{name}"))
}

fn strings(value: &Yaml) -> Vec<String> {
    value
        .as_sequence()
        .map(|s| {
            s.iter()
                .map(|v| match v {
                    Yaml::String(s) => s.clone(),
                    other => serde_norway::to_string(other).unwrap().trim().to_string(),
                })
                .collect()
        })
        .unwrap_or_default()
}

// ---- the upstream: records what each probe delivered -------------------------------------

type Seen = Arc<Mutex<HashMap<String, Vec<(String, String)>>>>;

/// Records every request's headers under its `probe` query parameter.
async fn upstream() -> (u16, Seen) {
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
                    (
                        k.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            record.lock().unwrap().insert(probe, headers);
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (port, seen)
}

// ---- cognito-authz ---------------------------------------------------------------------------

struct Authz {
    running: Running,
    grpc: GrpcAddr,
    http_port: u16,
}

/// A cognito-authz with gRPC on `grpc` (TCP or unix), HTTP on a TCP port, `toml` as its file.
async fn authz(idp: &JwksServer, grpc: &str, toml: &str, extra: &[(&str, &str)]) -> Authz {
    let get_user = idp.url("/");
    let mut vars = vec![
        ("AUTHZ_GRPC_ADDR", grpc),
        ("AUTHZ_HTTP_ADDR", "127.0.0.1:0"),
        // The /api/ routes confirm tokens with Cognito: the local IdP answers GetUser with 200.
        ("COGNITO_IDP_ENDPOINT", get_user.as_str()),
    ];
    vars.extend_from_slice(extra);
    let running = server::start(serve_config(&idp.url("/j"), &vars, toml))
        .await
        .unwrap_or_else(|e| panic!("cognito-authz did not start: {e}"));
    let Some(GrpcAddr::Tcp(http)) = running.http_addr.clone() else {
        panic!("no HTTP listener");
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while common::http_get_opt(running.admin_addr, "/readyz").await != Some(200) {
        assert!(tokio::time::Instant::now() < deadline, "keys never loaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Authz {
        grpc: running.grpc_addr.clone(),
        http_port: http.port(),
        running,
    }
}

impl Authz {
    async fn checks(&self) -> u64 {
        let (_, metrics) = common::http_get(self.running.admin_addr, "/metrics").await;
        decisions_total(&metrics)
    }
}

// ---- Envoy -----------------------------------------------------------------------------------

struct Envoy(Child);
impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn start_envoy(dir: &Path, name: &str, text: &str, admin: u16) -> Envoy {
    let config = dir.join(format!("{name}.yaml"));
    std::fs::write(&config, text).unwrap();
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let mut envoy = Envoy(
        Command::new(envoy_binary())
            .arg("-c")
            .arg(&config)
            .args([
                "--disable-hot-restart",
                "--log-level",
                "warn",
                "--concurrency",
                "1",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let ready = std::net::SocketAddr::from(([127, 0, 0, 1], admin));
    while common::http_get_opt(ready, "/ready").await != Some(200) {
        if let Ok(Some(status)) = envoy.0.try_wait() {
            let log = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap();
            panic!("{name}: Envoy exited ({status}):\n{log}");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name}: Envoy never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    envoy
}

/// A shipped config on loopback: the documented ports replaced, every address 127.0.0.1, the
/// Unix socket and TLS files where the test keeps them.
fn localize(text: &str, ports: &Ports, authz: &Authz, dir: &Path) -> String {
    let d = Ports::DOCUMENTED;
    let mut text = text.to_string();
    for (from, to) in [
        (d.envoy, ports.envoy),
        (d.envoy_admin, ports.envoy_admin),
        (d.app, ports.app),
    ] {
        let needle = format!("port_value: {from} ");
        assert!(text.contains(&needle), "no {needle}");
        text = text.replace(&needle, &format!("port_value: {to} "));
    }
    if let GrpcAddr::Tcp(addr) = &authz.grpc {
        text = text.replace(
            &format!("port_value: {} ", d.authz),
            &format!("port_value: {} ", addr.port()),
        );
    }
    if let GrpcAddr::Unix(path) = &authz.grpc {
        text = text.replace(
            cruddur_demo::stack::UDS_PATH,
            path.to_str().expect("a UTF-8 path"),
        );
    }
    text = text
        .replace(
            &format!("port_value: {} ", d.authz_http),
            &format!("port_value: {} ", authz.http_port),
        )
        .replace(
            &format!("uri: http://127.0.0.1:{}", d.authz_http),
            &format!("uri: http://127.0.0.1:{}", authz.http_port),
        )
        .replace(cruddur_demo::stack::TLS_DIR, &format!("{}/", dir.display()));
    for host in [
        "0.0.0.0",
        "cognito-authz-1",
        "cognito-authz-2",
        "cognito-authz",
        "app",
    ] {
        text = text.replace(&format!("address: {host},"), "address: 127.0.0.1,");
    }
    text
}

// ---- Envoy configs as Envoy Gateway, Istio and a hand-written config make them ---------------

/// What a platform puts in Envoy, from its own settings.
#[derive(Default)]
struct Generated {
    /// `allowed_headers` matchers (`{exact: x}`), or none: Envoy sends every header.
    allowed_headers: Option<Vec<String>>,
    /// HTTP: `allowed_upstream_headers` matchers.
    upstream_headers: Vec<String>,
    /// HTTP: `allowed_client_headers` matchers (none: Envoy passes every header on a denial).
    client_headers: Vec<String>,
    /// The CORS policy: origins, methods, headers, exposed headers, max age, and whether a
    /// preflight from another origin goes on to the check.
    cors: Option<Cors>,
    http: bool,
}

struct Cors {
    origins: Vec<String>,
    methods: Vec<String>,
    headers: Vec<String>,
    expose: Vec<String>,
    max_age: String,
    forward_unmatched: bool,
}

/// A `ListStringMatcher` whose `patterns` key sits `indent` spaces in.
fn matchers(list: &[String], indent: usize) -> String {
    let pad = " ".repeat(indent);
    let items: Vec<String> = list.iter().map(|m| format!("{pad}- {m}\n")).collect();
    format!("{pad}patterns:\n{}", items.concat())
}

fn exact(names: &[String]) -> Vec<String> {
    names
        .iter()
        .map(|n| format!("{{exact: \"{n}\"}}"))
        .collect()
}

fn generated_config(g: &Generated, ports: &Ports, authz: &Authz) -> String {
    let mut authz_filter = String::from(
        "\"@type\": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz\n\
         transport_api_version: V3\nfailure_mode_allow: false\n",
    );
    if let Some(allowed) = &g.allowed_headers {
        authz_filter.push_str(&format!("allowed_headers:\n{}", matchers(allowed, 2)));
    }
    let authz_endpoint = if g.http {
        authz_filter.push_str(&format!(
            "http_service:\n  server_uri: {{ uri: \"http://127.0.0.1:{}\", cluster: authz, timeout: 2s }}\n  authorization_response:\n    allowed_upstream_headers:\n{}",
            authz.http_port,
            matchers(&g.upstream_headers, 6)
        ));
        if !g.client_headers.is_empty() {
            authz_filter.push_str(&format!(
                "    allowed_client_headers:\n{}",
                matchers(&g.client_headers, 6)
            ));
        }
        format!(
            "socket_address: {{ address: 127.0.0.1, port_value: {} }}",
            authz.http_port
        )
    } else {
        authz_filter
            .push_str("grpc_service: { envoy_grpc: { cluster_name: authz }, timeout: 2s }\n");
        match &authz.grpc {
            GrpcAddr::Tcp(addr) => format!(
                "socket_address: {{ address: 127.0.0.1, port_value: {} }}",
                addr.port()
            ),
            GrpcAddr::Unix(path) => format!("pipe: {{ path: {} }}", path.display()),
        }
    };
    let indent = |text: &str, by: usize| -> String {
        text.lines()
            .map(|l| format!("{}{l}\n", " ".repeat(by)))
            .collect()
    };
    let (cors_filter, cors_policy) = match &g.cors {
        Some(c) => (
            "          - name: envoy.filters.http.cors\n            typed_config: { \"@type\": type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors }\n".to_string(),
            format!(
                "              typed_per_filter_config:\n                envoy.filters.http.cors:\n                  \"@type\": type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy\n                  allow_origin_string_match:\n{}                  allow_methods: \"{}\"\n                  allow_headers: \"{}\"\n                  expose_headers: \"{}\"\n                  max_age: \"{}\"\n                  forward_not_matching_preflights: {}\n",
                c.origins.iter().map(|o| format!("                  - exact: \"{o}\"\n")).collect::<String>(),
                c.methods.join(","),
                c.headers.join(","),
                c.expose.join(","),
                c.max_age,
                c.forward_unmatched
            ),
        ),
        None => (String::new(), String::new()),
    };
    format!(
        r#"admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
static_resources:
  listeners:
  - address: {{ socket_address: {{ address: 127.0.0.1, port_value: {listener} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            virtual_hosts:
            - name: app
              domains: ["*"]
              routes:
              - match: {{ prefix: / }}
                route: {{ cluster: app }}
{cors_policy}          http_filters:
{cors_filter}          - name: envoy.filters.http.ext_authz
            typed_config:
{authz_filter}          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
  clusters:
  - name: authz
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{ http2_protocol_options: {{}} }}
    load_assignment:
      cluster_name: authz
      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ {authz_endpoint} }} }} }}] }}]
  - name: app
    connect_timeout: 1s
    load_assignment:
      cluster_name: app
      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {app} }} }} }} }}] }}]
"#,
        admin = ports.envoy_admin,
        listener = ports.envoy,
        app = ports.app,
        authz_filter = indent(&authz_filter, 14),
    )
}

/// Envoy Gateway's filter from a `SecurityPolicy`.
fn envoy_gateway(policy: &Yaml) -> Generated {
    let spec = &policy["spec"];
    let ext = &spec["extAuth"];
    let cors = &spec["cors"];
    Generated {
        allowed_headers: Some(exact(&strings(&ext["headersToExtAuth"]))),
        upstream_headers: exact(&strings(&ext["http"]["headersToBackend"])),
        client_headers: Vec::new(),
        cors: (!cors.is_null()).then(|| Cors {
            origins: strings(&cors["allowOrigins"]),
            methods: strings(&cors["allowMethods"]),
            headers: strings(&cors["allowHeaders"]),
            expose: strings(&cors["exposeHeaders"]),
            max_age: cors["maxAge"]
                .as_str()
                .unwrap_or("600s")
                .trim_end_matches('s')
                .into(),
            // Envoy Gateway leaves Envoy's default: a preflight from another origin goes on.
            forward_unmatched: true,
        }),
        http: !ext["http"].is_null(),
    }
}

/// Istio's header lists: `x-cognito-*` is a prefix, anything else exact.
fn istio_matchers(names: &[String]) -> Vec<String> {
    names
        .iter()
        .map(|n| match n.strip_suffix('*') {
            Some(prefix) => format!("{{prefix: \"{prefix}\"}}"),
            None => format!("{{exact: \"{n}\"}}"),
        })
        .collect()
}

/// Istio's filter from an extension provider and the VirtualService's `corsPolicy`.
fn istio(provider: &Yaml, cors: &Yaml) -> Generated {
    let http = &provider["envoyExtAuthzHttp"];
    let (settings, is_http) = if http.is_null() {
        (&provider["envoyExtAuthzGrpc"], false)
    } else {
        (http, true)
    };
    let include = strings(&settings["includeRequestHeadersInCheck"]);
    Generated {
        // Not set: Envoy sends every request header.
        allowed_headers: (!include.is_empty()).then(|| istio_matchers(&include)),
        upstream_headers: istio_matchers(&strings(&settings["headersToUpstreamOnAllow"])),
        client_headers: istio_matchers(&strings(&settings["headersToDownstreamOnDeny"])),
        cors: Some(Cors {
            origins: cors["allowOrigins"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|o| o["exact"].as_str().unwrap().to_string())
                .collect(),
            methods: strings(&cors["allowMethods"]),
            headers: strings(&cors["allowHeaders"]),
            expose: strings(&cors["exposeHeaders"]),
            max_age: cors["maxAge"]
                .as_str()
                .unwrap()
                .trim_end_matches('s')
                .into(),
            forward_unmatched: cors["unmatchedPreflights"].as_str() != Some("IGNORE"),
        }),
        http: is_http,
    }
}

/// The TOML a ConfigMap gives cognito-authz.
fn configmap_toml(path: &str) -> String {
    object(path, "ConfigMap", "cognito-authz")["data"]["cognito-authz.toml"]
        .as_str()
        .unwrap()
        .to_string()
}

// ---- the cases -------------------------------------------------------------------------------

const SUB: &str = "8f1e2d3c-0000-4000-8000-00000000abcd";
const FOREIGN_ORIGIN: &str = "https://evil.example";

struct Platform {
    name: String,
    config: String,
    ports: Ports,
    authz: usize,
    /// The front end's origin its CORS policy allows (none: it answers no CORS).
    origin: Option<String>,
}

fn forged(request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    IDENTITY_HEADERS
        .iter()
        .fold(request, |r, name| r.header(*name, format!("forged-{name}")))
}

/// One request and what must come of it.
struct Case<'a> {
    case: &'a str,
    method: &'a str,
    path: &'a str,
    bearer: Option<&'a str>,
    origin: Option<&'a str>,
    /// Whether it reaches the upstream.
    reaches: bool,
    /// The `x-cognito-sub` the upstream must see.
    sub: Option<&'a str>,
}

/// Every case on one platform; panics naming the platform and case.
async fn exercise(p: &Platform, authz: &Authz, seen: &Seen, token: &str, probe: &mut u32) {
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{}", p.ports.envoy);
    let invalid = format!("{}x", &token[..token.len() - 1]);
    let origin = p.origin.as_deref();
    // A preflight from the front end's origin where the platform answers CORS, else from any.
    let front = origin.or(Some(FOREIGN_ORIGIN));
    let get = |case, path, bearer, reaches, sub| Case {
        case,
        method: "GET",
        path,
        bearer,
        origin: None,
        reaches,
        sub,
    };
    let preflight = |case, path, origin, reaches| Case {
        case,
        method: "OPTIONS",
        path,
        bearer: None,
        origin,
        reaches,
        sub: None,
    };
    let home = "/api/activities/home";
    let cases = [
        get("health, no token", "/healthz", None, true, None),
        get("health, valid token", "/healthz", Some(token), true, None),
        get("optional, no token", home, None, true, None),
        get("optional, valid token", home, Some(token), true, Some(SUB)),
        get("optional, invalid token", home, Some(&invalid), true, None),
        get(
            "required, valid token",
            "/api/echo",
            Some(token),
            true,
            Some(SUB),
        ),
        get(
            "required, invalid token",
            "/api/echo",
            Some(&invalid),
            false,
            None,
        ),
        get("required, no token", "/api/echo", None, false, None),
        preflight("preflight, required route", "/api/echo", front, false),
        // Without CORS at the edge the check decides: anonymous on an optional route.
        preflight("preflight, optional route", home, front, origin.is_none()),
        preflight(
            "preflight, another origin",
            "/api/echo",
            Some(FOREIGN_ORIGIN),
            false,
        ),
    ];
    for Case {
        case,
        method,
        path,
        bearer,
        origin: from,
        reaches,
        sub,
    } in cases
    {
        *probe += 1;
        let id = probe.to_string();
        let mut request =
            forged(client.request(method.parse().unwrap(), format!("{base}{path}?probe={id}")))
                .header("x-cognito-groups", "admins");
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        if let Some(from) = from {
            request = request.header("origin", from);
        }
        if method == "OPTIONS" {
            request = request
                .header("access-control-request-method", "GET")
                .header("access-control-request-headers", "authorization");
        }
        let checks = authz.checks().await;
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: {case}: {e}", p.name));
        let status = response.status().as_u16();
        let received = seen.lock().unwrap().remove(&id);
        let what = format!("{}: {case}: HTTP {status}", p.name);
        let Some(headers) = received else {
            assert!(!reaches, "{what}: never reached the upstream");
            continue;
        };
        assert!(reaches, "{what}: reached the upstream");
        let forged: Vec<&(String, String)> = headers
            .iter()
            .filter(|(_, v)| v.starts_with("forged") || v == "admins")
            .collect();
        assert!(
            forged.is_empty(),
            "{what}: the upstream received {forged:?}"
        );
        let got_sub = headers
            .iter()
            .find(|(k, _)| k == "x-cognito-sub")
            .map(|(_, v)| v.as_str());
        assert_eq!(got_sub, sub, "{what}: x-cognito-sub");
        if method == "OPTIONS" {
            assert_eq!(authz.checks().await, checks + 1, "{what}: checked");
        }
    }
    // CORS at the edge, where the platform configures it.
    let Some(origin) = origin else { return };
    *probe += 1;
    let checks = authz.checks().await;
    let preflight = client
        .request(
            reqwest::Method::OPTIONS,
            format!("{base}/api/echo?probe={probe}"),
        )
        .header("origin", origin)
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .unwrap();
    let name = &p.name;
    assert_eq!(preflight.status().as_u16(), 200, "{name}: preflight");
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        origin,
        "{name}: preflight"
    );
    assert_eq!(
        authz.checks().await,
        checks,
        "{name}: the check saw a preflight"
    );
    let denied = client
        .get(format!("{base}/api/echo"))
        .header("origin", origin)
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status().as_u16(), 401, "{name}: denial");
    let header = |h: &str| {
        denied
            .headers()
            .get(h)
            .map(|v| v.to_str().unwrap().to_ascii_lowercase())
            .unwrap_or_else(|| panic!("{name}: the denial has no {h}: {:?}", denied.headers()))
    };
    assert_eq!(header("access-control-allow-origin"), origin, "{name}");
    assert!(
        header("access-control-expose-headers").contains("www-authenticate"),
        "{name}"
    );
    assert!(header("www-authenticate").starts_with("bearer"), "{name}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_identity_headers_never_reach_the_upstream_on_any_shipped_platform_config() {
    let envoy = envoy_binary();
    assert!(envoy.is_file());
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("platforms-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    common::write_pki(&dir);
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let (app, seen) = upstream().await;
    // A user in no group, without email: forged groups and email must not survive.
    let mut claims = access_claims(ISS, CLIENT, now());
    claims.as_object_mut().unwrap().remove("cognito:groups");
    let token = TestKey::shared(0).token(&claims);

    let rules = read("envoy/cognito-authz.toml");
    let k8s_rules = configmap_toml("deploy/kubernetes/cruddur.yaml");
    let eg_rules = configmap_toml("deploy/envoy-gateway/cruddur.yaml");
    let socket = |name: &str| format!("unix:{}", dir.join(format!("{name}.sock")).display());
    let pem = |name: &str| dir.join(name).display().to_string();
    let (cert, key, ca) = (pem("server.pem"), pem("server-key.pem"), pem("ca.pem"));
    let tls: [(&str, &str); 3] = [
        ("AUTHZ_TLS_CERT", &cert),
        ("AUTHZ_TLS_KEY", &key),
        ("AUTHZ_TLS_CLIENT_CA", &ca),
    ];
    // One cognito-authz per configuration a platform runs it with.
    let authzs = [
        // 0: the environment only (envoy.yaml, compose, ECS: route policy in context_extensions)
        authz(&idp, "127.0.0.1:0", "", &[]).await,
        // 1: envoy/cognito-authz.toml (envoy.http.yaml, the hand-written configs)
        authz(&idp, "127.0.0.1:0", &rules, &[]).await,
        // 2: a Unix socket (envoy.uds.yaml)
        authz(&idp, &socket("uds"), "", &[]).await,
        // 3: mutual TLS (envoy.tls.yaml)
        authz(&idp, "127.0.0.1:0", "", &tls).await,
        // 4: the Kubernetes pod's config on its socket (the ConfigMap, Istio's providers)
        authz(&idp, &socket("k8s"), &k8s_rules, &[]).await,
        // 5: Envoy Gateway's shared deployment
        authz(&idp, "127.0.0.1:0", &eg_rules, &[]).await,
    ];

    let native_origin = Some("http://127.0.0.1:3000".to_string());
    let deployed_origin = Some(cruddur_demo::stack::DEPLOYED_ORIGIN.to_string());
    let mut platforms: Vec<(String, String, usize, Option<String>)> = Vec::new();
    for (file, authz) in [
        ("envoy/envoy.yaml", 0),
        ("envoy/envoy.http.yaml", 1),
        ("envoy/envoy.uds.yaml", 2),
        ("envoy/envoy.tls.yaml", 3),
        ("envoy/envoy.compose.yaml", 0),
        ("envoy/envoy.compose-replicas.yaml", 0),
    ] {
        platforms.push((file.into(), read(file), authz, native_origin.clone()));
    }
    platforms.push((
        "deploy/ecs/envoy.yaml".into(),
        read("deploy/ecs/envoy.yaml"),
        0,
        deployed_origin.clone(),
    ));
    let configmap = object(
        "deploy/kubernetes/envoy-configmap.yaml",
        "ConfigMap",
        "cruddur-envoy",
    );
    platforms.push((
        "the Kubernetes ConfigMap".into(),
        configmap["data"]["envoy.yaml"]
            .as_str()
            .unwrap()
            .to_string(),
        4,
        deployed_origin.clone(),
    ));

    let mut generated: Vec<(String, Generated, usize)> = Vec::new();
    for policy in ["cruddur-cognito-grpc", "cruddur-cognito-http"] {
        let policy = object(
            "deploy/envoy-gateway/cruddur.yaml",
            "SecurityPolicy",
            policy,
        );
        let name = format!(
            "Envoy Gateway SecurityPolicy {}",
            policy["metadata"]["name"].as_str().unwrap()
        );
        generated.push((name, envoy_gateway(&policy), 5));
    }
    let mesh = object(
        "deploy/istio/mesh-config.yaml",
        "IstioOperator",
        "cruddur-ext-authz",
    );
    let service = object(
        "deploy/istio/authorization.yaml",
        "VirtualService",
        "cruddur",
    );
    let cors = &service["spec"]["http"][0]["corsPolicy"];
    for provider in mesh["spec"]["meshConfig"]["extensionProviders"]
        .as_sequence()
        .unwrap()
    {
        let name = format!("Istio provider {}", provider["name"].as_str().unwrap());
        generated.push((name, istio(provider, cors), 4));
    }
    for (name, http) in [("hand-written gRPC", false), ("hand-written HTTP", true)] {
        let g = Generated {
            http,
            upstream_headers: vec!["{prefix: \"x-cognito-\"}".into()],
            ..Generated::default()
        };
        generated.push((name.into(), g, 1));
    }

    let mut runs = Vec::new();
    for (name, text, authz, origin) in platforms {
        let mut ports = Ports::ephemeral().unwrap();
        ports.app = app;
        let config = localize(&text, &ports, &authzs[authz], &dir);
        runs.push(Platform {
            name,
            config,
            ports,
            authz,
            origin,
        });
    }
    for (name, g, authz) in generated {
        let mut ports = Ports::ephemeral().unwrap();
        ports.app = app;
        let config = generated_config(&g, &ports, &authzs[authz]);
        let origin = g.cors.as_ref().map(|c| c.origins[0].clone());
        runs.push(Platform {
            name,
            config,
            ports,
            authz,
            origin,
        });
    }
    assert_eq!(
        runs.len(),
        14,
        "every shipped platform config, and two hand-written"
    );
    let mut probe = 0;
    for p in &runs {
        let file = p.name.replace(['/', ' '], "_");
        let _envoy = start_envoy(&dir, &file, &p.config, p.ports.envoy_admin).await;
        exercise(p, &authzs[p.authz], &seen, &token, &mut probe).await;
    }
    for a in authzs {
        a.running.stop().await.unwrap();
    }
}

/// Host rules through the shipped Envoy: the host is matched without case, port or trailing
/// dot, and one that does not parse is refused (400 `bad_host`): neither the public rule below
/// the host rule nor the plain `required` fallback, which a valid token outside the group would
/// pass. Methods match in any case, and HEAD as GET.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_and_method_rules_hold_through_envoy_whatever_their_spelling() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("platform-hosts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let (app, _seen) = upstream().await;
    let rules = "[[routes]]\nhost = \"internal.example\"\nprefix = \"/internal\"\nmode = \"required\"\n\
                 groups_any = [\"admins\"]\n\
                 [[routes]]\nprefix = \"/internal\"\nmode = \"public\"\n\
                 [[routes]]\npath = \"/methods\"\nmethods = [\"GET\", \"DELETE\"]\nmode = \"required\"\n\
                 groups_any = [\"admins\"]\n\
                 [[routes]]\npath = \"/methods\"\nmode = \"public\"\n";
    let authz = authz(&idp, "127.0.0.1:0", rules, &[]).await;
    let mut ports = Ports::ephemeral().unwrap();
    ports.app = app;
    let config = localize(&read("envoy/envoy.yaml"), &ports, &authz, &dir);
    let _envoy = start_envoy(&dir, "envoy", &config, ports.envoy_admin).await;
    // A valid token of a user in no group.
    let mut claims = access_claims(ISS, CLIENT, now());
    claims.as_object_mut().unwrap().remove("cognito:groups");
    let token = TestKey::shared(0).token(&claims);
    for (host, anonymous, with_token) in [
        ("other.example", 200, 200),
        ("internal.example", 401, 403),
        ("INTERNAL.Example", 401, 403),
        ("internal.example.", 401, 403),
        ("Internal.Example.:8080", 401, 403),
        // Does not parse: refused.
        ("internal.example..", 400, 400),
        ("internal.example:", 400, 400),
        ("internal.example:x", 400, 400),
    ] {
        for (bearer, expected) in [("", anonymous), (token.as_str(), with_token)] {
            let auth = if bearer.is_empty() {
                String::new()
            } else {
                format!("Authorization: Bearer {bearer}\r\n")
            };
            let (status, head) = common::raw(
                ports.envoy,
                &format!(
                    "GET /internal/x HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n"
                ),
            );
            assert_eq!(
                status,
                expected,
                "Host: {host}, token: {}: {head}",
                !bearer.is_empty()
            );
        }
    }
    // HTTP/2 lets a lowercase method through Envoy; the rule still applies. HEAD is GET.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    for method in ["DELETE", "delete", "GET", "HEAD"] {
        let response = h2
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                format!("http://127.0.0.1:{}/methods", ports.envoy),
            )
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 403, "{method}");
    }
    authz.running.stop().await.unwrap();
}
