//! The local stack, natively on loopback: the Cognito emulator (moto) with the bootcamp pool,
//! cognito-authz, the demo app and Envoy, each a real process with its log in a work folder.
//! Dropping the [`Stack`] stops every process it started.

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cognito::Cognito;
pub use crate::envoy_config::{
    compose_envoy_config, compose_replicas_envoy_config, ecs_envoy_config, http_envoy_config,
    kubernetes_configmap, kubernetes_envoy_config, module_envoy_config, render_envoy_config,
    tls_envoy_config, uds_envoy_config, EnvoyConfig, AUTHZ_CLUSTER, DEPLOYED_ORIGIN, TLS_DIR,
    UDS_PATH,
};
pub use crate::error::StackError;
use crate::ports::pick_ports;
pub use crate::ports::Ports;

fn err(message: impl Into<String>) -> StackError {
    StackError(message.into())
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
    /// Per replica, environment that wins over `extra_env` (a rolling deploy's new settings).
    replica_env: std::collections::HashMap<usize, Vec<(String, String)>>,
    traces: Option<String>,
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
    /// An OTLP/gRPC collector (`http://host:port`): Envoy traces every request and
    /// cognito-authz joins its traces, both exporting there, each within a fraction of a second.
    pub traces: Option<String>,
    /// Request headers of the client's that Envoy also shows the check (`allowed_headers`).
    pub forward_to_check: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            protocol: Protocol::Grpc,
            replicas: 1,
            redis: false,
            authz_env: Vec::new(),
            traces: None,
            forward_to_check: Vec::new(),
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

/// Which of Envoy's two ext_authz protocols the stack runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `grpc_service` and `envoy/envoy.yaml`: route policy from Envoy's `context_extensions`.
    Grpc,
    /// `http_service` and `envoy/envoy.http.yaml`: route policy from
    /// `envoy/cognito-authz.toml`, since this protocol has no `context_extensions`.
    Http,
    /// No sidecar: cognito-authz runs inside Envoy as a dynamic module
    /// (`envoy/envoy.module.yaml`, `libcognito_authz_envoy.so` from the binaries' folder).
    Module,
}

/// The host and port of an OTLP collector's `http://host:port` endpoint.
fn collector_address(endpoint: &str) -> Result<(String, u16), StackError> {
    let rest = endpoint.strip_prefix("http://").ok_or_else(|| {
        err(format!(
            "{endpoint}: the collector must be http://host:port"
        ))
    })?;
    let (host, port) = rest
        .trim_end_matches('/')
        .rsplit_once(':')
        .ok_or_else(|| err(format!("{endpoint}: no port")))?;
    let port = port
        .parse()
        .map_err(|_| err(format!("{endpoint}: the port is not a number")))?;
    Ok((host.to_string(), port))
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
            replica_env: std::collections::HashMap::new(),
            traces: options.traces,
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
        if protocol == Protocol::Module {
            stack.replicas.clear();
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
            Protocol::Module => "envoy/envoy.module.yaml",
        };
        let config = std::fs::read_to_string(stack.layout.root.join(file))
            .map_err(|e| err(format!("{file}: {e}")))?;
        let rendered = stack.layout.work_dir.join("envoy.yaml");
        let config = EnvoyConfig::parse(&config);
        config.render(ports)?;
        if stack.replicas.len() > 1 {
            // The authz cluster balances across every replica, and with gRPC asks each one's
            // health.
            let endpoints: Vec<(&str, u16)> = stack
                .replicas
                .iter()
                .map(|r| match protocol {
                    Protocol::Grpc => ("127.0.0.1", r.grpc),
                    Protocol::Http | Protocol::Module => ("127.0.0.1", r.http),
                })
                .collect();
            config.authz_endpoints(&endpoints);
            if protocol == Protocol::Grpc {
                config.with_health_checks();
            }
        }
        for header in &options.forward_to_check {
            config.forward_to_check(header);
        }
        if let Some(collector) = &stack.traces {
            let (host, port) = collector_address(collector)?;
            config.with_tracing(&host, port, Some(200));
        }
        let text = config.text();
        std::fs::write(&rendered, text).map_err(|e| err(format!("{}: {e}", rendered.display())))?;
        stack
            .start_envoy("envoy", &rendered, ports.envoy_admin)
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

    /// Starts Envoy `name` on the rendered config `config` and waits until its admin port
    /// `admin` says it is ready.
    async fn start_envoy(
        &mut self,
        name: &str,
        config: &Path,
        admin: u16,
    ) -> Result<(), StackError> {
        let envoy = self.layout.tool("envoy");
        let mut command = Command::new(envoy);
        command.arg("-c").arg(config).args([
            "--disable-hot-restart",
            "--log-level",
            "warn",
            "--concurrency",
            "2",
        ]);
        if self.protocol == Protocol::Module {
            // The module reads the app's variables from Envoy's environment, as `serve` does;
            // the loader's line (the ABI version matched, or a warning) goes to envoy.log.
            command
                .args(["--component-log-level", "dynamic_modules:info"])
                .env("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", &self.layout.bin_dir)
                .envs(self.authz_env()?);
        }
        self.spawn(name, &mut command)?;
        self.wait_http(name, &format!("http://127.0.0.1:{admin}/ready"))
            .await
    }

    /// One more Envoy running the module (another pod's), on free ports in front of the same
    /// app, with the same config and environment (the same Redis among it); its ingress port.
    /// Module stacks only: the other flavours' Envoys would share the first one's sidecars.
    pub async fn start_module_envoy(&mut self) -> Result<u16, StackError> {
        if self.protocol != Protocol::Module {
            return Err(err("another Envoy is for the module flavour"));
        }
        let [envoy, envoy_admin] = free_ports::<2>()?;
        let file = "envoy/envoy.module.yaml";
        let text = std::fs::read_to_string(self.layout.root.join(file))
            .map_err(|e| err(format!("{file}: {e}")))?;
        let config = EnvoyConfig::parse(&text);
        config.render(Ports {
            envoy,
            envoy_admin,
            ..self.ports
        })?;
        let name = format!("envoy-{envoy}");
        let rendered = self.layout.work_dir.join(format!("{name}.yaml"));
        std::fs::write(&rendered, config.text())
            .map_err(|e| err(format!("{}: {e}", rendered.display())))?;
        self.start_envoy(&name, &rendered, envoy_admin).await?;
        Ok(envoy)
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

    /// Replaces the extra environment of the replicas started from now on
    /// ([`Options::authz_env`]).
    pub fn set_authz_env(&mut self, env: Vec<(String, String)>) {
        self.extra_env = env;
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
            .envs(self.authz_env()?)
            .env("AUTHZ_GRPC_ADDR", format!("127.0.0.1:{}", ports.grpc))
            .env("AUTHZ_ADMIN_ADDR", format!("127.0.0.1:{}", ports.admin))
            .env("AUTHZ_ADMIN_TOKEN_FILE", self.admin_token_file()?)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            );
        if self.protocol == Protocol::Http {
            command
                .env("AUTHZ_HTTP_ADDR", format!("127.0.0.1:{}", ports.http))
                .env(
                    "COGNITO_AUTHZ_CONFIG",
                    self.layout.root.join("envoy/cognito-authz.toml"),
                );
        }
        if let Some(collector) = &self.traces {
            command
                .env("OTEL_EXPORTER_OTLP_ENDPOINT", collector)
                .env("OTEL_BSP_SCHEDULE_DELAY", "200");
            // Envoy traces here, so the HTTP check's traceparent is Envoy's (docs/operations.md).
            command.env("AUTHZ_HTTP_TRUST_TRACEPARENT", "true");
        }
        command.envs(self.extra_env.iter().map(|(k, v)| (k, v)));
        if let Some(env) = self.replica_env.get(&replica) {
            command.envs(env.iter().map(|(k, v)| (k, v)));
        }
        let name = Stack::replica_name(replica);
        self.spawn(&name, &mut command)?;
        self.wait_http(&name, &format!("http://127.0.0.1:{}/readyz", ports.admin))
            .await
    }

    /// What cognito-authz reads wherever it runs (a replica's process, or Envoy's for the
    /// module): the app's pool variables, the emulator's JWKS and API (through the counting
    /// proxy), the short revocation TTL, the shared Redis, and the options' extra variables.
    fn authz_env(&self) -> Result<Vec<(String, String)>, StackError> {
        let mut env: Vec<(String, String)> = [
            ("AWS_COGNITO_USER_POOL_ID", self.pool.pool_id.clone()),
            (
                "AWS_COGNITO_USER_POOL_CLIENT_ID",
                self.pool.client_id.clone(),
            ),
            ("AWS_DEFAULT_REGION", "us-east-1".to_string()),
            ("COGNITO_JWKS_URI", self.pool.jwks_uri.clone()),
            (
                "COGNITO_IDP_ENDPOINT",
                format!("http://127.0.0.1:{}/", self.proxy.port),
            ),
            (
                "COGNITO_REVOCATION_TTL_SECONDS",
                REVOCATION_TTL_SECS.to_string(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        if let Some(port) = self.redis_port {
            env.push((
                "AUTHZ_REDIS_URL".to_string(),
                format!("redis://127.0.0.1:{port}/"),
            ));
        }
        if self.protocol == Protocol::Module {
            env.extend(self.extra_env.iter().cloned());
        }
        Ok(env)
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

    /// More environment for replica `replica` from its next start on, winning over the options'
    /// `authz_env`: a rolling deploy's new settings.
    pub fn set_replica_env(&mut self, replica: usize, env: &[(&str, &str)]) {
        self.replica_env.insert(
            replica,
            env.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
    }

    /// One more replica on free ports, not started (see [`Stack::start_replica`]) and outside
    /// Envoy's cluster, which is fixed at start: a replica that joins later, or an operator's
    /// one-off. Its index.
    pub fn add_replica(&mut self) -> Result<usize, StackError> {
        let [grpc, admin, http] = free_ports::<3>()?;
        self.replicas.push(ReplicaPorts { grpc, admin, http });
        Ok(self.replicas.len() - 1)
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

    /// The process id of replica `replica`, while it runs.
    pub fn replica_pid(&self, replica: usize) -> Option<u32> {
        let name = Stack::replica_name(replica);
        self.procs
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.child.id())
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
        if !sent.success() {
            return Err(err(format!("kill -{signal} failed")));
        }
        // A stop takes effect as each thread is next scheduled, which on a loaded machine can
        // be after `kill` returns: wait until the kernel reports every thread stopped (`T`).
        if signal == "STOP" {
            let tasks = format!("/proc/{}/task", proc.child.id());
            let deadline = Instant::now() + Duration::from_secs(5);
            while !all_threads_stopped(Path::new(&tasks)) {
                if Instant::now() > deadline {
                    return Err(err("cognito-authz did not stop within 5 s"));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        Ok(())
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
        let replica = self
            .replicas
            .first()
            .ok_or_else(|| err("no cognito-authz process runs (the module is in Envoy)"))?;
        let url = format!("http://127.0.0.1:{}/metrics", replica.admin);
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

/// Whether every thread under `/proc/PID/task` is stopped (state `T`, after the command name
/// in parentheses in its `stat`).
fn all_threads_stopped(tasks: &Path) -> bool {
    let Ok(threads) = std::fs::read_dir(tasks) else {
        return false;
    };
    threads.flatten().all(|thread| {
        std::fs::read_to_string(thread.path().join("stat"))
            .ok()
            .and_then(|stat| {
                stat.rsplit_once(") ")
                    .map(|(_, rest)| rest.starts_with('T'))
            })
            .unwrap_or(false)
    })
}

/// `N` free loopback ports.
fn free_ports<const N: usize>() -> Result<[u16; N], StackError> {
    let picked = pick_ports(N).map_err(|e| err(format!("no free port: {e}")))?;
    let mut ports = [0u16; N];
    ports.copy_from_slice(&picked);
    Ok(ports)
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
