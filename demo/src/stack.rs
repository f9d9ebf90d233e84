//! The local stack, natively on loopback: the Cognito emulator (moto) with the bootcamp pool,
//! cognito-authz, the demo app and Envoy, each a real process with its log in a work folder.
//! Dropping the [`Stack`] stops every process it started.

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cognito::Cognito;

/// A failure to start or drive the stack, with what the process logs said.
#[derive(Debug)]
pub struct StackError(pub String);

impl std::fmt::Display for StackError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StackError {}

fn err(message: impl Into<String>) -> StackError {
    StackError(message.into())
}

/// The ports the stack listens on, all on 127.0.0.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    /// Envoy's ingress: where clients connect.
    pub envoy: u16,
    /// Envoy's admin interface.
    pub envoy_admin: u16,
    /// cognito-authz gRPC (Check, health, reflection, diagnostics).
    pub authz: u16,
    /// cognito-authz admin HTTP (metrics, health).
    pub authz_admin: u16,
    /// cognito-authz's HTTP ext_authz listener (used by the HTTP flavour).
    pub authz_http: u16,
    /// The front end (its own origin, as the bootcamp's React app).
    pub frontend: u16,
    /// The demo app.
    pub app: u16,
    /// The Cognito emulator.
    pub cognito: u16,
}

impl Ports {
    /// The documented ports, the ones `envoy/envoy.yaml` names.
    pub const DOCUMENTED: Ports = Ports {
        envoy: 8080,
        envoy_admin: 9901,
        authz: 9001,
        authz_admin: 9002,
        authz_http: 9003,
        frontend: 3000,
        app: 8000,
        cognito: 5000,
    };

    /// Eight free loopback ports, below the ephemeral range and never twice in one process (for
    /// tests running side by side).
    pub fn ephemeral() -> std::io::Result<Ports> {
        let p = pick_ports(8)?;
        Ok(Ports {
            envoy: p[0],
            envoy_admin: p[1],
            authz: p[2],
            authz_admin: p[3],
            app: p[4],
            cognito: p[5],
            authz_http: p[6],
            frontend: p[7],
        })
    }
}

/// Where things are.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The project root (holds `scripts/` and `envoy/`).
    pub root: PathBuf,
    /// The virtualenv with `envoy`, `moto_server`, `grpcurl` and `python`.
    pub venv: PathBuf,
    /// The folder holding the `cognito-authz` and `cruddur-app` binaries.
    pub bin_dir: PathBuf,
    /// Logs and rendered configs.
    pub work_dir: PathBuf,
}

impl Layout {
    /// The layout for a project root and a binaries folder; the virtualenv is `root/.venv` or
    /// `COGNITO_AUTHZ_VENV`. Fails, naming the fix, when a tool is missing: a test that needs
    /// Envoy or the emulator must never pass by skipping.
    pub fn new(root: &Path, bin_dir: &Path, work_dir: &Path) -> Result<Layout, StackError> {
        let venv = std::env::var_os("COGNITO_AUTHZ_VENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join(".venv"));
        let layout = Layout {
            root: root.to_path_buf(),
            venv,
            bin_dir: bin_dir.to_path_buf(),
            work_dir: work_dir.to_path_buf(),
        };
        for tool in ["envoy", "moto_server", "grpcurl", "python"] {
            if !layout.tool(tool).is_file() {
                return Err(err(format!(
                    "{} is missing: run scripts/setup-venv (it installs Envoy, the Cognito emulator and grpcurl)",
                    layout.tool(tool).display()
                )));
            }
        }
        for bin in ["cognito-authz", "cruddur-app"] {
            if !layout.bin_dir.join(bin).is_file() {
                return Err(err(format!(
                    "{} is missing: build the workspace (cargo build --workspace)",
                    layout.bin_dir.join(bin).display()
                )));
            }
        }
        std::fs::create_dir_all(work_dir)
            .map_err(|e| err(format!("cannot create {}: {e}", work_dir.display())))?;
        Ok(layout)
    }

    /// A tool in the virtualenv.
    pub fn tool(&self, name: &str) -> PathBuf {
        self.venv.join("bin").join(name)
    }
}

/// The bootcamp pool as the set-up script created it.
#[derive(Debug, Clone)]
pub struct Pool {
    /// The pool id.
    pub pool_id: String,
    /// The app client id.
    pub client_id: String,
    /// Where cognito-authz fetches the keys.
    pub jwks_uri: String,
}

struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

/// The running stack.
pub struct Stack {
    /// Where things are.
    pub layout: Layout,
    /// The ports.
    pub ports: Ports,
    /// The pool.
    pub pool: Pool,
    /// The ext_authz protocol Envoy speaks to cognito-authz.
    pub protocol: Protocol,
    /// Each cognito-authz replica's gRPC, admin and HTTP ports (the first is `ports`').
    pub replicas: Vec<ReplicaPorts>,
    /// Redis's port, when the replicas share one.
    pub redis_port: Option<u16>,
    proxy: CognitoProxy,
    frontend: Option<tokio::task::JoinHandle<()>>,
    extra_env: Vec<(String, String)>,
    procs: Vec<Proc>,
}

/// One cognito-authz replica's ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaPorts {
    /// gRPC (Check, health, diagnostics).
    pub grpc: u16,
    /// Admin HTTP (metrics, readiness, revocations).
    pub admin: u16,
    /// HTTP ext_authz.
    pub http: u16,
}

/// How to start the stack.
#[derive(Debug, Clone)]
pub struct Options {
    /// The ext_authz protocol Envoy speaks.
    pub protocol: Protocol,
    /// cognito-authz processes behind Envoy's authz cluster.
    pub replicas: usize,
    /// Start a Redis the replicas share (`AUTHZ_REDIS_URL`).
    pub redis: bool,
    /// More environment for every replica.
    pub authz_env: Vec<(String, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            protocol: Protocol::Grpc,
            replicas: 1,
            redis: false,
            authz_env: Vec::new(),
        }
    }
}

/// How long the stack's cognito-authz trusts a Cognito verdict: short, so signing out shows in
/// a demo within seconds (the service's default is 60).
pub const REVOCATION_TTL_SECS: u64 = 2;

/// A pass-through in front of the emulator's API that counts `GetUser` calls: how many times
/// the replicas asked Cognito.
struct CognitoProxy {
    port: u16,
    get_user_calls: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl CognitoProxy {
    async fn start(upstream: String) -> Result<CognitoProxy, StackError> {
        use std::sync::atomic::AtomicU64;
        use std::sync::Arc;
        let calls = Arc::new(AtomicU64::new(0));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| err(format!("cognito proxy: {e}")))?;
        let port = listener
            .local_addr()
            .map_err(|e| err(format!("cognito proxy: {e}")))?
            .port();
        let http = reqwest::Client::new();
        let counted = Arc::clone(&calls);
        let app = axum::Router::new().fallback(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let (http, upstream, counted) =
                    (http.clone(), upstream.clone(), Arc::clone(&counted));
                async move {
                    crate::frontend::forward_cognito(
                        &http,
                        &upstream,
                        &headers,
                        body,
                        Some(&counted),
                    )
                    .await
                }
            },
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(CognitoProxy {
            port,
            get_user_calls: calls,
            task,
        })
    }
}

/// The compose flavour of a native Envoy config: the ingress listens on all interfaces and the
/// clusters find cognito-authz and the app by their service names. `envoy/envoy.compose.yaml`
/// is this function's output, and a test keeps it so.
pub fn compose_envoy_config(native: &str) -> String {
    flavour(
        native,
        "# Compose stack: generated from envoy.yaml by cruddur_demo::stack::compose_envoy_config\n\
         # (a test keeps the two in step). Services: cognito-authz:9001, app:8000.\n",
        |body| {
            edited(
                &body,
                &[
                    (LOOPBACK_LISTENER, ANY_LISTENER, 1),
                    ("type: STATIC", "type: STRICT_DNS", 2),
                    (
                        AUTHZ_ENDPOINT,
                        "socket_address: { address: cognito-authz, port_value: 9001 }",
                        1,
                    ),
                    (
                        "socket_address: { address: 127.0.0.1, port_value: 8000 }",
                        "socket_address: { address: app, port_value: 8000 }",
                        1,
                    ),
                ],
            )
        },
    )
}

/// A flavour of the native config: the same first line, `header` (the flavour's own comment
/// lines) in place of the native comment, then the native body passed through `transform`.
fn flavour(native: &str, header: &str, transform: impl FnOnce(String) -> String) -> String {
    let body = native
        .lines()
        .skip_while(|l| l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    format!(
        "# Envoy 1.40 in front of the demo app, asking cognito-authz about every request.\n{header}{}\n",
        transform(body)
    )
}

/// `text` with each of `edits` applied, each `(from, to, count)`: `from` must stand exactly
/// `count` times. The flavours are edits of the native config's text (its comments are part of
/// what ships); a reformatted source fails here, loudly, instead of yielding a flavour that
/// silently kept the native value.
fn edited(text: &str, edits: &[(&str, &str, usize)]) -> String {
    let mut text = text.to_string();
    for (from, to, count) in edits {
        let found = text.matches(from).count();
        assert_eq!(
            found, *count,
            "the Envoy config holds {found}× {from:?} where this flavour edits {count}: \
             update the flavour with the native config"
        );
        text = text.replace(from, to);
    }
    text
}

/// Which of Envoy's two ext_authz protocols the stack runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `grpc_service` and `envoy/envoy.yaml`: route policy from Envoy's `context_extensions`.
    Grpc,
    /// `http_service` and `envoy/envoy.http.yaml`: route policy from
    /// `envoy/cognito-authz.toml`, since this protocol has no `context_extensions`.
    Http,
}

const HTTP_SERVICE: &str = r#"              http_service:
                server_uri:
                  uri: http://127.0.0.1:9003
                  cluster: cognito_authz
                  timeout: 0.5s
                authorization_response:
                  # A 200 copies these onto the upstream request, replacing the client's copies;
                  # cognito-authz lists the ones to drop in x-envoy-auth-headers-to-remove.
                  allowed_upstream_headers:
                    patterns:
                    - prefix: x-cognito-
                  # A denial passes its RFC 6750 challenge and JSON body on to the client.
                  allowed_client_headers:
                    patterns:
                    - exact: www-authenticate
                    - exact: content-type
                    - exact: cache-control
                    - exact: retry-after
                  # The decision and reason, for the access log.
                  dynamic_metadata_from_headers:
                    patterns:
                    - prefix: x-authz-
"#;

/// The HTTP flavour of a native Envoy config: the ext_authz filter speaks Envoy's HTTP protocol
/// (`http_service`) to cognito-authz's `AUTHZ_HTTP_ADDR` over the same HTTP/2 cluster, and the
/// routes carry no `context_extensions` (this protocol has none: `envoy/cognito-authz.toml`
/// holds the same policy as rules). `envoy/envoy.http.yaml` is this function's output.
pub fn http_envoy_config(native: &str) -> String {
    flavour(
        native,
        "# HTTP ext_authz protocol: generated from envoy.yaml by cruddur_demo::stack::http_envoy_config\n\
         # (a test keeps the two in step). Run cognito-authz with AUTHZ_HTTP_ADDR=127.0.0.1:9003 and\n\
         # COGNITO_AUTHZ_CONFIG=envoy/cognito-authz.toml (the routes' policy as rules).\n",
        |body| {
            let grpc = "              grpc_service:\n                envoy_grpc: { cluster_name: cognito_authz }\n                timeout: 0.5s\n";
            let body = edited(
                &body,
                &[
                    (grpc, HTTP_SERVICE, 1),
                    (
                        AUTHZ_ENDPOINT,
                        "socket_address: { address: 127.0.0.1, port_value: 9003 }",
                        1,
                    ),
                    ("ext_authz:decision)%", "ext_authz:x-authz-decision)%", 1),
                    ("ext_authz:reason)%", "ext_authz:x-authz-reason)%", 1),
                    (
                        "%DYNAMIC_METADATA(envoy.filters.http.ext_authz:sub)%",
                        "%REQ(X-COGNITO-SUB)%",
                        1,
                    ),
                ],
            );
            without_context_extensions(&body)
        },
    )
}

/// Drops every route's `typed_per_filter_config` that only sets `context_extensions`, keeping
/// the ones that disable ext_authz.
fn without_context_extensions(body: &str) -> String {
    let lines: Vec<&str> = body.lines().collect();
    let mut out = Vec::with_capacity(lines.len());
    let mut removed = 0;
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if line.trim() == "typed_per_filter_config:" {
            let indent = line.len() - line.trim_start().len();
            let end = lines[i + 1..]
                .iter()
                .position(|l| l.len() - l.trim_start().len() <= indent)
                .map_or(lines.len(), |p| i + 1 + p);
            if lines[i..end].iter().any(|l| l.trim() == "check_settings:") {
                removed += 1;
                i = end;
                continue;
            }
        }
        out.push(line);
        i += 1;
    }
    assert!(
        removed > 0,
        "no route of the Envoy config sets context_extensions: update the HTTP flavour"
    );
    out.join("\n")
}

/// The demo's front-end origins in the native config's CORS policy.
const DEMO_ORIGINS: &str = "                  - exact: http://127.0.0.1:3000\n                  - exact: http://localhost:3000\n";
/// The front end's origin in the deployment flavours (Kubernetes, ECS): change it to yours.
pub const DEPLOYED_ORIGIN: &str = "https://cruddur.example.com";

/// The config with the CORS policy allowing [`DEPLOYED_ORIGIN`] instead of the demo's origins.
fn with_deployed_origin(body: &str) -> String {
    let deployed =
        format!("                  - exact: {DEPLOYED_ORIGIN}  # your front end's origin\n");
    edited(body, &[(DEMO_ORIGINS, &deployed, 1)])
}

const LOOPBACK_LISTENER: &str = "socket_address: { address: 127.0.0.1, port_value: 8080 }";
const ANY_LISTENER: &str = "socket_address: { address: 0.0.0.0, port_value: 8080 }";
/// The native config's cognito-authz endpoint.
const AUTHZ_ENDPOINT: &str = "socket_address: { address: 127.0.0.1, port_value: 9001 }";

/// The ECS flavour: the task's containers share localhost (awsvpc), so cognito-authz and the
/// app stay on 127.0.0.1 and only the listener opens to the load balancer.
/// `deploy/ecs/envoy.yaml` is this function's output.
pub fn ecs_envoy_config(native: &str) -> String {
    flavour(
        native,
        "# ECS (Fargate, awsvpc): generated from envoy.yaml by cruddur_demo::stack::ecs_envoy_config\n\
         # (a test keeps the two in step). Baked into the Envoy image by deploy/ecs/envoy.Dockerfile.\n",
        |body| with_deployed_origin(&edited(&body, &[(LOOPBACK_LISTENER, ANY_LISTENER, 1)])),
    )
}

/// The Kubernetes flavour: the Unix-socket config with the listener open to the pod network
/// (cognito-authz shares the pod through an in-memory volume, the app listens on loopback).
pub fn kubernetes_envoy_config(native: &str) -> String {
    with_deployed_origin(&edited(
        &uds_envoy_config(native),
        &[(LOOPBACK_LISTENER, ANY_LISTENER, 1)],
    ))
}

/// `deploy/kubernetes/envoy-configmap.yaml`: the Kubernetes flavour as the ConfigMap the pod
/// mounts, so the config in the cluster is the tested one.
pub fn kubernetes_configmap(native: &str) -> String {
    let config = kubernetes_envoy_config(native);
    let indented: String = config
        .lines()
        .map(|l| {
            if l.is_empty() {
                "\n".to_string()
            } else {
                format!("    {l}\n")
            }
        })
        .collect();
    format!(
        "# Envoy's config for the pod in cruddur.yaml: generated from envoy/envoy.yaml by\n\
         # cruddur_demo::stack::kubernetes_configmap (a test keeps the two in step and validates it).\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cruddur-envoy\n  labels: {{ app.kubernetes.io/name: cruddur }}\n\
         data:\n  envoy.yaml: |\n{indented}"
    )
}

/// Several replicas: Envoy asks each one's gRPC health (`NOT_SERVING` without keys or while
/// draining) and stops sending checks to one that fails, so a dead replica costs a few 503s,
/// not half the traffic.
const REPLICA_HEALTH_CHECKS: &str = "    health_checks:
    - timeout: 0.25s
      interval: 0.5s
      unhealthy_threshold: 1
      healthy_threshold: 1
      grpc_health_check: { service_name: envoy.service.auth.v3.Authorization }
";

fn with_health_checks(config: &str) -> String {
    let anchor = "  - name: cognito_authz\n    type: STATIC\n    connect_timeout: 0.25s\n    per_connection_buffer_limit_bytes: 32768\n";
    let strict = anchor.replace("type: STATIC", "type: STRICT_DNS");
    let anchor = if config.contains(anchor) {
        anchor
    } else {
        strict.as_str()
    };
    edited(
        config,
        &[(anchor, &format!("{anchor}{REPLICA_HEALTH_CHECKS}"), 1)],
    )
}

/// The compose flavour for the `replicas` profile: two cognito-authz replicas behind one Envoy.
/// `envoy/envoy.compose-replicas.yaml` is this function's output.
pub fn compose_replicas_envoy_config(native: &str) -> String {
    let compose = compose_envoy_config(native);
    let one = "        - endpoint:\n            address:\n              socket_address: { address: cognito-authz, port_value: 9001 }\n";
    let two = [1, 2]
        .map(|i| {
            format!(
                "        - endpoint:\n            address:\n              socket_address: {{ address: cognito-authz-{i}, port_value: 9001 }}\n"
            )
        })
        .concat();
    edited(
        &with_health_checks(&compose),
        &[
            (
                "# Compose stack: generated from envoy.yaml by cruddur_demo::stack::compose_envoy_config\n",
                "# Compose, profile `replicas`: generated from envoy.yaml by\n# cruddur_demo::stack::compose_replicas_envoy_config. Two cognito-authz replicas sharing Redis.\n",
                1,
            ),
            (one, &two, 1),
        ],
    )
}

/// Where the Unix-socket flavour expects cognito-authz (`AUTHZ_GRPC_ADDR=unix:` this path).
pub const UDS_PATH: &str = "/run/cognito-authz/authz.sock";

/// The Unix-socket flavour of a native Envoy config: the authz cluster reaches cognito-authz
/// through [`UDS_PATH`] instead of TCP. `envoy/envoy.uds.yaml` is this function's output.
pub fn uds_envoy_config(native: &str) -> String {
    flavour(
        native,
        "# Unix socket: generated from envoy.yaml by cruddur_demo::stack::uds_envoy_config (a test\n\
         # keeps the two in step). Run cognito-authz with AUTHZ_GRPC_ADDR=unix:/run/cognito-authz/authz.sock.\n",
        |body| edited(&body, &[(AUTHZ_ENDPOINT, &format!("pipe: {{ path: {UDS_PATH} }}"), 1)]),
    )
}

/// Where the mutual-TLS flavour reads its files: the CA that signed cognito-authz's certificate
/// and Envoy's own client certificate and key.
pub const TLS_DIR: &str = "/etc/cognito-authz/tls/";

const UPSTREAM_TLS: &str = r#"    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: cognito-authz
        common_tls_context:
          alpn_protocols: [h2]
          tls_certificates:
          - certificate_chain: { filename: /etc/cognito-authz/tls/envoy.pem }
            private_key: { filename: /etc/cognito-authz/tls/envoy-key.pem }
          validation_context:
            trusted_ca: { filename: /etc/cognito-authz/tls/ca.pem }
            match_typed_subject_alt_names:
            - san_type: DNS
              matcher: { exact: cognito-authz }
"#;

/// The mutual-TLS flavour of a native Envoy config: Envoy presents a client certificate to
/// cognito-authz and accepts only a server certificate for `cognito-authz` from the CA in
/// [`TLS_DIR`]. `envoy/envoy.tls.yaml` is this function's output.
pub fn tls_envoy_config(native: &str) -> String {
    flavour(
        native,
        "# Mutual TLS to cognito-authz: generated from envoy.yaml by cruddur_demo::stack::tls_envoy_config\n\
         # (a test keeps the two in step). Files in /etc/cognito-authz/tls/: ca.pem, envoy.pem, envoy-key.pem.\n",
        |body| {
            let anchor = "  - name: cognito_authz\n    type: STATIC\n    connect_timeout: 0.25s\n";
            edited(&body, &[(anchor, &format!("{anchor}{UPSTREAM_TLS}"), 1)])
        },
    )
}

/// The native Envoy config with the documented ports replaced by `ports`.
pub fn render_envoy_config(native: &str, ports: Ports) -> Result<String, StackError> {
    let d = Ports::DOCUMENTED;
    let mut text = native.to_string();
    for (from, to) in [
        (d.envoy, ports.envoy),
        (d.envoy_admin, ports.envoy_admin),
        (d.app, ports.app),
    ] {
        let needle = format!("port_value: {from} ");
        if !text.contains(&needle) {
            return Err(err(format!("the Envoy config has no '{needle}' to render")));
        }
        text = text.replace(&needle, &format!("port_value: {to} "));
    }
    // The front end's origin, which the CORS policy allows, moves with its port.
    text = text.replace(
        &format!("exact: http://127.0.0.1:{}\n", d.frontend),
        &format!("exact: http://127.0.0.1:{}\n", ports.frontend),
    );
    text = text.replace(
        &format!("exact: http://localhost:{}\n", d.frontend),
        &format!("exact: http://localhost:{}\n", ports.frontend),
    );
    // One of the two authz ports, by protocol.
    let grpc = format!("port_value: {} ", d.authz);
    let http = format!("port_value: {} ", d.authz_http);
    if text.contains(&grpc) {
        text = text.replace(&grpc, &format!("port_value: {} ", ports.authz));
    } else if text.contains(&http) {
        text = text
            .replace(&http, &format!("port_value: {} ", ports.authz_http))
            .replace(
                &format!("uri: http://127.0.0.1:{}", d.authz_http),
                &format!("uri: http://127.0.0.1:{}", ports.authz_http),
            );
    } else {
        return Err(err(
            "the Envoy config names no cognito-authz port to render",
        ));
    }
    Ok(text)
}

/// The sum of `cognito_authz_decisions_total` over its labels, from a `/metrics` page.
pub fn decisions_total(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("cognito_authz_decisions_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(25)..].join("\n")
}

impl Stack {
    /// Starts the emulator, creates the pool, then starts cognito-authz, the app and Envoy, each
    /// waited on until it answers.
    pub async fn start(layout: Layout, ports: Ports) -> Result<Stack, StackError> {
        Stack::start_options(layout, ports, Options::default()).await
    }

    /// Like [`Stack::start`], with Envoy speaking `protocol` to cognito-authz.
    pub async fn start_with(
        layout: Layout,
        ports: Ports,
        protocol: Protocol,
    ) -> Result<Stack, StackError> {
        let options = Options {
            protocol,
            ..Options::default()
        };
        Stack::start_options(layout, ports, options).await
    }

    /// The stack as `options` say: the protocol, several replicas, a shared Redis.
    pub async fn start_options(
        layout: Layout,
        ports: Ports,
        options: Options,
    ) -> Result<Stack, StackError> {
        let protocol = options.protocol;
        let mut replicas = vec![ReplicaPorts {
            grpc: ports.authz,
            admin: ports.authz_admin,
            http: ports.authz_http,
        }];
        for _ in 1..options.replicas.max(1) {
            let [grpc, admin, http] = free_ports::<3>()?;
            replicas.push(ReplicaPorts { grpc, admin, http });
        }
        let proxy = CognitoProxy::start(format!("http://127.0.0.1:{}/", ports.cognito)).await?;
        let mut stack = Stack {
            protocol,
            replicas,
            redis_port: None,
            proxy,
            frontend: None,
            extra_env: options.authz_env,
            layout,
            ports,
            pool: Pool {
                pool_id: String::new(),
                client_id: String::new(),
                jwks_uri: String::new(),
            },
            procs: Vec::new(),
        };
        let moto = stack.layout.tool("moto_server");
        stack.spawn(
            "cognito-emulator",
            Command::new(moto).args(["-H", "127.0.0.1", "-p", &ports.cognito.to_string()]),
        )?;
        stack.wait_tcp("cognito-emulator", ports.cognito).await?;
        stack.pool = stack.create_pool()?;
        if options.redis {
            let [port] = free_ports::<1>()?;
            stack.redis_port = Some(port);
            stack.start_redis().await?;
        }
        for replica in 0..stack.replicas.len() {
            stack.start_replica(replica).await?;
        }

        let app = stack.layout.bin_dir.join("cruddur-app");
        stack.spawn("app", Command::new(app).env("PORT", ports.app.to_string()))?;
        stack
            .wait_http("app", &format!("http://127.0.0.1:{}/healthz", ports.app))
            .await?;

        let file = match protocol {
            Protocol::Grpc => "envoy/envoy.yaml",
            Protocol::Http => "envoy/envoy.http.yaml",
        };
        let config = std::fs::read_to_string(stack.layout.root.join(file))
            .map_err(|e| err(format!("{file}: {e}")))?;
        let rendered = stack.layout.work_dir.join("envoy.yaml");
        let text = with_replicas(
            &render_envoy_config(&config, ports)?,
            &stack.replicas,
            protocol,
        );
        std::fs::write(&rendered, text).map_err(|e| err(format!("{}: {e}", rendered.display())))?;
        let envoy = stack.layout.tool("envoy");
        stack.spawn(
            "envoy",
            Command::new(envoy).arg("-c").arg(&rendered).args([
                "--disable-hot-restart",
                "--log-level",
                "warn",
                "--concurrency",
                "2",
            ]),
        )?;
        stack
            .wait_http(
                "envoy",
                &format!("http://127.0.0.1:{}/ready", ports.envoy_admin),
            )
            .await?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", ports.frontend))
            .await
            .map_err(|e| {
                err(format!(
                    "the front end cannot listen on {}: {e}",
                    ports.frontend
                ))
            })?;
        let pages = crate::frontend::router(
            stack.cognito_endpoint() + "/",
            &format!("http://127.0.0.1:{}", ports.envoy),
            &stack.pool.client_id,
        );
        stack.frontend = Some(tokio::spawn(async move {
            let _ = axum::serve(listener, pages).await;
        }));
        Ok(stack)
    }

    fn create_pool(&self) -> Result<Pool, StackError> {
        let endpoint = self.cognito_endpoint();
        let out = Command::new(self.layout.tool("python"))
            .arg(self.layout.root.join("scripts/cognito_setup.py"))
            .args(["--endpoint", &endpoint])
            .output()
            .map_err(|e| err(format!("cognito_setup.py: {e}")))?;
        if !out.status.success() {
            return Err(err(format!(
                "cognito_setup.py failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let value: Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| err(format!("cognito_setup.py printed no JSON: {e}")))?;
        let field = |name: &str| {
            value[name]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| err(format!("cognito_setup.py printed no {name}")))
        };
        Ok(Pool {
            pool_id: field("pool_id")?,
            client_id: field("client_id")?,
            jwks_uri: field("jwks_uri")?,
        })
    }

    /// Starts cognito-authz (the first replica) with the app's own variables and waits until it
    /// holds keys.
    pub async fn start_authz(&mut self) -> Result<(), StackError> {
        self.start_replica(0).await
    }

    fn replica_name(replica: usize) -> String {
        if replica == 0 {
            "cognito-authz".to_string()
        } else {
            format!("cognito-authz-{replica}")
        }
    }

    /// Starts replica `replica` and waits until it holds keys. Every replica confirms tokens
    /// with the emulator (through the counting proxy) where a route asks for it.
    pub async fn start_replica(&mut self, replica: usize) -> Result<(), StackError> {
        let bin = self.layout.bin_dir.join("cognito-authz");
        let ports = *self
            .replicas
            .get(replica)
            .ok_or_else(|| err(format!("there is no replica {replica}")))?;
        let mut command = Command::new(bin);
        command
            .arg("serve")
            .env("AWS_COGNITO_USER_POOL_ID", &self.pool.pool_id)
            .env("AWS_COGNITO_USER_POOL_CLIENT_ID", &self.pool.client_id)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("COGNITO_JWKS_URI", &self.pool.jwks_uri)
            .env(
                "COGNITO_IDP_ENDPOINT",
                format!("http://127.0.0.1:{}/", self.proxy.port),
            )
            .env(
                "COGNITO_REVOCATION_TTL_SECONDS",
                REVOCATION_TTL_SECS.to_string(),
            )
            .env("AUTHZ_GRPC_ADDR", format!("127.0.0.1:{}", ports.grpc))
            .env("AUTHZ_ADMIN_ADDR", format!("127.0.0.1:{}", ports.admin))
            .env("AUTHZ_ADMIN_TOKEN_FILE", self.admin_token_file()?)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            );
        if let Some(port) = self.redis_port {
            command.env("AUTHZ_REDIS_URL", format!("redis://127.0.0.1:{port}/"));
        }
        if self.protocol == Protocol::Http {
            command
                .env("AUTHZ_HTTP_ADDR", format!("127.0.0.1:{}", ports.http))
                .env(
                    "COGNITO_AUTHZ_CONFIG",
                    self.layout.root.join("envoy/cognito-authz.toml"),
                );
        }
        command.envs(self.extra_env.iter().map(|(k, v)| (k, v)));
        let name = Stack::replica_name(replica);
        self.spawn(&name, &mut command)?;
        self.wait_http(&name, &format!("http://127.0.0.1:{}/readyz", ports.admin))
            .await
    }

    /// The file holding the control API's secret every replica reads (made on first use, mode
    /// 0600): `cognito-authz revoke --admin-token-file` takes it.
    pub fn admin_token_file(&self) -> Result<PathBuf, StackError> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = self.layout.work_dir.join("admin-token");
        if !path.exists() {
            // Unique per stack: the process id and the clock, hex; a demo's secret, not a key.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let secret = format!("{:x}{:032x}", std::process::id(), nanos);
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| err(format!("{}: {e}", path.display())))?;
            std::io::Write::write_all(&mut file, secret.as_bytes())
                .map_err(|e| err(format!("{}: {e}", path.display())))?;
        }
        Ok(path)
    }

    /// Kills replica `replica` (as a crash would).
    pub fn kill_replica(&mut self, replica: usize) -> Result<(), StackError> {
        let mut proc = self.take(&Stack::replica_name(replica))?;
        proc.child
            .kill()
            .and_then(|_| proc.child.wait())
            .map_err(|e| err(format!("cannot kill replica {replica}: {e}")))?;
        Ok(())
    }

    /// Starts the shared Redis (on [`Stack::redis_port`]) and waits until it answers.
    pub async fn start_redis(&mut self) -> Result<(), StackError> {
        let port = self
            .redis_port
            .ok_or_else(|| err("this stack has no Redis"))?;
        let server = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .ok_or_else(|| {
                err("redis-server is missing: install Debian's redis-server (scripts/test does)")
            })?;
        self.spawn(
            "redis",
            Command::new(server).args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ]),
        )?;
        self.wait_tcp("redis", port).await
    }

    /// Kills the shared Redis.
    pub fn kill_redis(&mut self) -> Result<(), StackError> {
        let mut proc = self.take("redis")?;
        proc.child
            .kill()
            .and_then(|_| proc.child.wait())
            .map_err(|e| err(format!("cannot kill redis: {e}")))?;
        Ok(())
    }

    /// `GetUser` calls the replicas made so far.
    pub fn get_user_calls(&self) -> u64 {
        self.proxy
            .get_user_calls
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Takes a running process out of the stack's care (the caller stops it).
    fn take(&mut self, name: &str) -> Result<Proc, StackError> {
        let index = self
            .procs
            .iter()
            .position(|p| p.name == name)
            .ok_or_else(|| err(format!("{name} is not running")))?;
        Ok(self.procs.remove(index))
    }

    /// Kills cognito-authz (as a crash would) and waits until it is gone.
    pub fn kill_authz(&mut self) -> Result<(), StackError> {
        let mut proc = self.take("cognito-authz")?;
        proc.child
            .kill()
            .and_then(|_| proc.child.wait())
            .map_err(|e| err(format!("cannot kill cognito-authz: {e}")))?;
        Ok(())
    }

    /// Sends cognito-authz a signal (`STOP` freezes it, as a hung process would; `CONT` thaws it).
    pub fn signal_authz(&self, signal: &str) -> Result<(), StackError> {
        let proc = self
            .procs
            .iter()
            .find(|p| p.name == "cognito-authz")
            .ok_or_else(|| err("cognito-authz is not running"))?;
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &proc.child.id().to_string()])
            .status()
            .map_err(|e| err(format!("kill -{signal}: {e}")))?;
        if sent.success() {
            Ok(())
        } else {
            Err(err(format!("kill -{signal} failed")))
        }
    }

    /// Sends cognito-authz SIGTERM and waits (up to 30 s) for it to exit; returns its exit code.
    pub fn terminate_authz(&mut self) -> Result<Option<i32>, StackError> {
        let mut proc = self.take("cognito-authz")?;
        let sent = Command::new("kill")
            .args(["-TERM", &proc.child.id().to_string()])
            .status()
            .map_err(|e| err(format!("kill -TERM: {e}")))?;
        if !sent.success() {
            return Err(err("kill -TERM failed"));
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match proc.child.try_wait() {
                Ok(Some(status)) => return Ok(status.code()),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) => {
                    let _ = proc.child.kill();
                    return Err(err("cognito-authz did not exit within 30 s of SIGTERM"));
                }
                Err(e) => return Err(err(format!("waiting for cognito-authz: {e}"))),
            }
        }
    }

    /// One of Envoy's counters (`cluster.cognito_authz.upstream_rq_rx_reset`), from its admin.
    pub async fn envoy_counter(&self, name: &str) -> Result<u64, StackError> {
        let url = format!(
            "http://127.0.0.1:{}/stats?filter=^{}$",
            self.ports.envoy_admin,
            name.replace('.', "\\.")
        );
        let text = reqwest::get(url)
            .await
            .map_err(|e| err(format!("envoy stats: {e}")))?
            .text()
            .await
            .map_err(|e| err(format!("envoy stats: {e}")))?;
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| err(format!("envoy has no counter {name}: {text}")))
    }

    /// The emulator's endpoint.
    pub fn cognito_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.cognito)
    }

    /// A Cognito client for the pool's app client.
    pub fn cognito(&self) -> Cognito {
        Cognito::new(
            &self.cognito_endpoint(),
            &self.pool.pool_id,
            &self.pool.client_id,
        )
    }

    /// The front end's origin (`http://127.0.0.1:3000` on the documented ports).
    pub fn frontend_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.frontend)
    }

    /// Envoy's ingress URL for `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.ports.envoy, path)
    }

    /// cognito-authz's gRPC address.
    pub fn authz_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports.authz))
    }

    /// The app's own counters and its record of the last request (read directly, not through
    /// Envoy).
    async fn app_stats(&self) -> Result<Value, StackError> {
        reqwest::get(format!("http://127.0.0.1:{}/_stats", self.ports.app))
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| err(format!("app stats: {e}")))?
            .json()
            .await
            .map_err(|e| err(format!("app stats: {e}")))
    }

    /// Requests the app has served so far.
    pub async fn app_requests(&self) -> Result<u64, StackError> {
        self.app_stats().await?["requests"]
            .as_u64()
            .ok_or_else(|| err("app stats: no count"))
    }

    /// Checks cognito-authz (replica 0) has decided so far, from its `/metrics`.
    pub async fn authz_checks(&self) -> Result<u64, StackError> {
        let url = format!("http://127.0.0.1:{}/metrics", self.replicas[0].admin);
        let text = reqwest::get(url)
            .await
            .map_err(|e| err(format!("cognito-authz metrics: {e}")))?
            .text()
            .await
            .map_err(|e| err(format!("cognito-authz metrics: {e}")))?;
        Ok(decisions_total(&text))
    }

    /// OPTIONS requests with `Access-Control-Request-Method` (CORS preflights) that reached the
    /// app.
    pub async fn app_preflights(&self) -> Result<u64, StackError> {
        self.app_stats().await?["preflights"]
            .as_u64()
            .ok_or_else(|| err("app stats: no preflight count"))
    }

    /// What the last request to reach the app carried: `{"method", "path", "headers"}` with
    /// credentials redacted.
    pub async fn app_last_request(&self) -> Result<Value, StackError> {
        Ok(self.app_stats().await?["last"].clone())
    }

    /// Re-signs an emulator token with the emulator's key after setting time claims relative
    /// to now (`[("exp", -60)]`): a real token the emulator would never hand out.
    pub fn resign(&self, token: &str, edits: &[(&str, i64)]) -> Result<String, StackError> {
        use std::io::Write as _;
        let mut command = Command::new(self.layout.tool("python"));
        command.arg(self.layout.root.join("scripts/emulator_token.py"));
        for (claim, seconds) in edits {
            command.arg("--set").arg(format!("{claim}={seconds}"));
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| err(format!("emulator_token.py: {e}")))?;
        child
            .stdin
            .take()
            .ok_or_else(|| err("emulator_token.py: no stdin"))?
            .write_all(token.as_bytes())
            .map_err(|e| err(format!("emulator_token.py: {e}")))?;
        let out = child
            .wait_with_output()
            .map_err(|e| err(format!("emulator_token.py: {e}")))?;
        if !out.status.success() {
            return Err(err(format!(
                "emulator_token.py failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Runs grpcurl from the virtualenv against cognito-authz; returns stdout.
    pub fn grpcurl(&self, args: &[&str]) -> Result<String, StackError> {
        let out = Command::new(self.layout.tool("grpcurl"))
            .arg("-plaintext")
            .args(args)
            .output()
            .map_err(|e| err(format!("grpcurl: {e}")))?;
        if !out.status.success() {
            return Err(err(format!(
                "grpcurl {args:?} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The path of a process's log.
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.layout.work_dir.join(format!("{name}.log"))
    }

    fn spawn(&mut self, name: &str, command: &mut Command) -> Result<(), StackError> {
        let log = self.log_path(name);
        let file = File::create(&log).map_err(|e| err(format!("{}: {e}", log.display())))?;
        let file2 = file
            .try_clone()
            .map_err(|e| err(format!("{}: {e}", log.display())))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(file2)
            .spawn()
            .map_err(|e| err(format!("cannot start {name}: {e}")))?;
        self.procs.push(Proc {
            name: name.to_string(),
            child,
            log,
        });
        Ok(())
    }

    fn check_alive(&mut self, name: &str) -> Result<(), StackError> {
        if let Some(proc) = self.procs.iter_mut().find(|p| p.name == name) {
            if let Ok(Some(status)) = proc.child.try_wait() {
                return Err(err(format!(
                    "{name} exited ({status}); its log ends:\n{}",
                    tail(&proc.log)
                )));
            }
        }
        Ok(())
    }

    async fn wait_tcp(&mut self, name: &str, port: u16) -> Result<(), StackError> {
        self.wait_for(name, Probe::Tcp(port)).await
    }

    async fn wait_http(&mut self, name: &str, url: &str) -> Result<(), StackError> {
        self.wait_for(name, Probe::Http(url)).await
    }

    /// Polls `probe` until it succeeds, the process dies (its log tail is the error), or 30 s
    /// pass.
    async fn wait_for(&mut self, name: &str, probe: Probe<'_>) -> Result<(), StackError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let http = reqwest::Client::new();
        loop {
            let ready = match probe {
                Probe::Tcp(port) => TcpStream::connect(("127.0.0.1", port)).is_ok(),
                Probe::Http(url) => http
                    .get(url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success()),
            };
            if ready {
                return Ok(());
            }
            self.check_alive(name)?;
            if Instant::now() > deadline {
                let what = match probe {
                    Probe::Tcp(port) => format!("listen on port {port}"),
                    Probe::Http(url) => format!("become ready at {url}"),
                };
                return Err(err(format!(
                    "{name} did not {what}; its log ends:\n{}",
                    tail(&self.log_path(name))
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// How the stack knows a process is up.
#[derive(Clone, Copy)]
enum Probe<'a> {
    Tcp(u16),
    Http(&'a str),
}

/// `N` free loopback ports.
fn free_ports<const N: usize>() -> Result<[u16; N], StackError> {
    let picked = pick_ports(N).map_err(|e| err(format!("no free port: {e}")))?;
    let mut ports = [0u16; N];
    ports.copy_from_slice(&picked);
    Ok(ports)
}

/// `n` loopback ports nothing listens on, for processes the stack starts later. They come from
/// below Linux's ephemeral range (32768 and up), so no outgoing connection can take one in the
/// meantime, and never twice in one process, so stacks started side by side by one test binary
/// cannot collide.
fn pick_ports(n: usize) -> std::io::Result<Vec<u16>> {
    use std::collections::HashSet;
    use std::hash::{BuildHasher, Hasher};
    use std::sync::{Mutex, OnceLock};
    static HANDED_OUT: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let mut handed_out = HANDED_OUT
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let random = std::collections::hash_map::RandomState::new();
    let mut ports = Vec::with_capacity(n);
    for attempt in 0u64..100_000 {
        if ports.len() == n {
            break;
        }
        let mut hasher = random.build_hasher();
        hasher.write_u64(attempt);
        let port = 20_000 + (hasher.finish() % 12_000) as u16;
        if handed_out.contains(&port) || TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        handed_out.insert(port);
        ports.push(port);
    }
    if ports.len() < n {
        return Err(std::io::Error::other("no free loopback port below 32000"));
    }
    Ok(ports)
}

/// A rendered config whose authz cluster balances across every replica (the first is already
/// in it).
fn with_replicas(rendered: &str, replicas: &[ReplicaPorts], protocol: Protocol) -> String {
    let port = |r: &ReplicaPorts| match protocol {
        Protocol::Grpc => r.grpc,
        Protocol::Http => r.http,
    };
    let endpoint = |p: u16| {
        format!(
            "        - endpoint:\n            address:\n              socket_address: {{ address: 127.0.0.1, port_value: {p} }}\n"
        )
    };
    let first = endpoint(port(&replicas[0]));
    let all: String = replicas.iter().map(|r| endpoint(port(r))).collect();
    let balanced = rendered.replacen(&first, &all, 1);
    if replicas.len() > 1 && protocol == Protocol::Grpc {
        with_health_checks(&balanced)
    } else {
        balanced
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.proxy.task.abort();
        if let Some(frontend) = &self.frontend {
            frontend.abort();
        }
        for proc in self.procs.iter_mut().rev() {
            let _ = proc.child.kill();
            let _ = proc.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NATIVE: &str = include_str!("../../envoy/envoy.yaml");

    /// A native config whose layout moved (here: the authz endpoint in block style) makes every
    /// flavour that edits it fail, instead of shipping the native value unchanged.
    #[test]
    fn a_reformatted_native_config_fails_loudly() {
        let moved = NATIVE.replace(
            AUTHZ_ENDPOINT,
            "socket_address:\n                address: 127.0.0.1\n                port_value: 9001",
        );
        assert_ne!(moved, NATIVE);
        for (name, generate) in [
            ("uds", uds_envoy_config as fn(&str) -> String),
            ("compose", compose_envoy_config),
            ("http", http_envoy_config),
        ] {
            let outcome = std::panic::catch_unwind(|| generate(&moved));
            assert!(
                outcome.is_err(),
                "{name}: generated from a config it could not edit"
            );
        }
        // The flavours that do not touch the endpoint still generate.
        assert!(std::panic::catch_unwind(|| ecs_envoy_config(&moved)).is_ok());
    }

    #[test]
    fn every_committed_envoy_flavour_is_generated_from_the_native_config() {
        // (file, committed text, generator, regeneration flag, a line the flavour must hold)
        type Flavour = (
            &'static str,
            &'static str,
            fn(&str) -> String,
            &'static str,
            &'static str,
        );
        let flavours: [Flavour; 7] = [
            (
                "envoy.compose.yaml",
                include_str!("../../envoy/envoy.compose.yaml"),
                compose_envoy_config,
                "--print-compose-envoy",
                "address: cognito-authz, port_value: 9001",
            ),
            (
                "envoy.uds.yaml",
                include_str!("../../envoy/envoy.uds.yaml"),
                uds_envoy_config,
                "--print-uds-envoy",
                "pipe: { path: /run/cognito-authz/authz.sock }",
            ),
            (
                "envoy.tls.yaml",
                include_str!("../../envoy/envoy.tls.yaml"),
                tls_envoy_config,
                "--print-tls-envoy",
                "envoy.transport_sockets.tls",
            ),
            (
                "envoy.http.yaml",
                include_str!("../../envoy/envoy.http.yaml"),
                http_envoy_config,
                "--print-http-envoy",
                "http_service:",
            ),
            (
                "envoy.compose-replicas.yaml",
                include_str!("../../envoy/envoy.compose-replicas.yaml"),
                compose_replicas_envoy_config,
                "--print-compose-replicas-envoy",
                "address: cognito-authz-2, port_value: 9001",
            ),
            (
                "../deploy/ecs/envoy.yaml",
                include_str!("../../deploy/ecs/envoy.yaml"),
                ecs_envoy_config,
                "--print-ecs-envoy",
                "address: 0.0.0.0, port_value: 8080",
            ),
            (
                "../deploy/kubernetes/envoy-configmap.yaml",
                include_str!("../../deploy/kubernetes/envoy-configmap.yaml"),
                kubernetes_configmap,
                "--print-kubernetes-configmap",
                "pipe: { path: /run/cognito-authz/authz.sock }",
            ),
        ];
        for (file, committed, generate, flag, marker) in flavours {
            assert_eq!(
                committed,
                generate(NATIVE),
                "envoy/{file} is stale: regenerate it with \
                 `cargo run -p cruddur-demo --bin cruddur-demo -- {flag}`"
            );
            assert!(committed.contains(marker), "{file} lacks {marker}");
        }
    }

    #[test]
    fn the_http_flavour_drops_context_extensions_but_keeps_the_cors_policy() {
        let http = http_envoy_config(NATIVE);
        assert!(!http.contains("context_extensions"));
        assert!(!http.contains("grpc_service"));
        assert!(!http.contains("disabled: true"), "every route is checked");
        assert!(http.contains("envoy.extensions.filters.http.cors.v3.CorsPolicy"));
        assert_eq!(
            http.matches("- match:").count(),
            NATIVE.matches("- match:").count(),
            "every route stays"
        );
    }

    #[test]
    fn rendering_replaces_every_documented_port() {
        let ports = Ports {
            envoy: 1,
            envoy_admin: 2,
            authz: 3,
            authz_admin: 4,
            app: 5,
            cognito: 6,
            authz_http: 7,
            frontend: 8,
        };
        let text = render_envoy_config(NATIVE, ports).unwrap();
        assert!(
            text.contains("exact: http://127.0.0.1:8\n"),
            "the front end's origin"
        );
        assert!(
            text.contains("exact: http://localhost:8\n"),
            "the front end's origin"
        );
        for old in [
            "port_value: 8080 ",
            "port_value: 9901 ",
            "port_value: 9001 ",
            "port_value: 8000 ",
        ] {
            assert!(!text.contains(old), "{old} left in the rendered config");
        }
        assert!(render_envoy_config("admin: {}", ports).is_err());
        let http = render_envoy_config(&http_envoy_config(NATIVE), ports).unwrap();
        assert!(http.contains("uri: http://127.0.0.1:7") && !http.contains("port_value: 9003"));
    }
}
