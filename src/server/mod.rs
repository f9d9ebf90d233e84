//! The `serve` runtime: the gRPC listener (Envoy's Check, health, reflection v1 and v1alpha,
//! diagnostics) on TCP or a Unix socket, the admin HTTP listener (`/metrics`, `/healthz`,
//! `/readyz`), the key store's background tasks, and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::response::IntoResponse;
use envoy_types::ext_authz::v3::pb::AuthorizationServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::{Stream, StreamExt as _};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tonic_health::ServingStatus;
use tracing::{debug, error, info, warn};

use crate::authz::AuthzService;
use crate::config::{Config, ConfigError, TlsFiles};
use crate::decision::Authorizer;
use crate::diagnostics::DiagnosticsService;
use crate::generated::diagnostics::diagnostics_server::DiagnosticsServer;
use crate::jwks::{FetchError, KeyStore};
use crate::metrics::Metrics;
use crate::revocation::{Entry, Revocation};
use crate::revocation_check::RevocationChecker;
use crate::shared::Shared;

/// The gRPC service name health reports for Envoy's Check.
pub const AUTHZ_SERVICE_NAME: &str = "envoy.service.auth.v3.Authorization";
/// How often readiness is re-evaluated while starting.
const READINESS_POLL: Duration = Duration::from_millis(100);

/// Why the server could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A TLS file could not be read.
    #[error("cannot read TLS file {path}: {source}")]
    Tls {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP client for JWKS fetches could not be built.
    #[error("cannot build the JWKS client: {0}")]
    Client(#[source] FetchError),
    /// The reflection service could not load a descriptor.
    #[error("reflection: {0}")]
    Reflection(#[source] tonic_reflection::server::Error),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Transport(#[source] tonic::transport::Error),
    /// The Redis URL could not be used.
    #[error("AUTHZ_REDIS_URL: {0}")]
    Redis(#[source] redis::RedisError),
    /// The HTTP client for Cognito's API could not be built.
    #[error("cannot build the Cognito API client: {0}")]
    CognitoClient(#[source] reqwest::Error),
    /// A reload named a pool whose keys could not be fetched: swapping it in would turn a
    /// working service into a failing one, so the running configuration stays.
    #[error("pool {0} has no keys (its JWKS could not be fetched): reload refused")]
    ReloadWithoutKeys(String),
}

/// Where the gRPC listener is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrpcAddr {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A Unix socket path.
    Unix(PathBuf),
}

/// A started server.
pub struct Running {
    /// The bound gRPC address (with the real port when configured with port 0).
    pub grpc_addr: GrpcAddr,
    /// The bound admin address.
    pub admin_addr: SocketAddr,
    /// The bound HTTP ext_authz address, when that listener is on.
    pub http_addr: Option<GrpcAddr>,
    shutdown: watch::Sender<bool>,
    authorizer: Authorizer,
    metrics: Metrics,
    refresh: Arc<Mutex<Vec<JoinHandle<()>>>>,
    running_config: Arc<ArcSwap<Config>>,
    shared: Option<Shared>,
    health: tonic_health::server::HealthReporter,
    grpc: JoinHandle<Result<(), tonic::transport::Error>>,
    admin: JoinHandle<()>,
    http: Option<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
    grace: Duration,
}

async fn set_health(reporter: &tonic_health::server::HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    reporter
        .set_service_status(AUTHZ_SERVICE_NAME, status)
        .await;
}

/// Binds the listeners and starts serving; keys are fetched in the background and health says
/// `SERVING` once every pool has keys.
pub async fn start(config: Config) -> Result<Running, ServerError> {
    // Two rustls providers are linked (reqwest brings ring, tonic aws-lc-rs), so rustls cannot
    // pick one by itself; choose aws-lc-rs, the one our signatures use. Already chosen: fine.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let metrics = Metrics::new();
    let keys = KeyStore::with_observer(
        &config.pools,
        &config.jwks,
        std::sync::Arc::new(metrics.clone()),
    )
    .map_err(ServerError::Client)?;
    let verifier = config.verifier(keys.clone());
    let authorizer = Authorizer::new(
        verifier,
        config.routes.clone(),
        config.token_cache_entries,
        metrics.clone(),
    );
    authorizer.set_dry_run(config.server.dry_run);
    authorizer.set_full_metadata(config.server.full_metadata);
    authorizer
        .revocations()
        .set_cap(config.server.max_revocations);
    let shared = match &config.server.redis_url {
        Some(url) => Some(
            Shared::new(
                url,
                Arc::new(metrics.clone()),
                config
                    .server
                    .redis_signing_key
                    .as_ref()
                    .map(|k| k.as_bytes()),
            )
            .map_err(ServerError::Redis)?,
        ),
        None => None,
    };
    authorizer.set_revocation_checker(Some(revocation_checker(
        &config,
        &authorizer,
        shared.clone(),
        &metrics,
    )?));
    if config.server.dry_run {
        warn!("dry-run mode: every request is allowed; decisions are only logged and counted");
    }
    for warning in config.routes.envoy_forwarding_warnings() {
        warn!("{warning}");
    }

    let (health, health_service) = tonic_health::server::health_reporter();
    set_health(&health, ServingStatus::NotServing).await;
    let (shutdown, shutdown_rx) = watch::channel(false);

    let refresh: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
    let mut background = Vec::new();
    if let Some(shared) = &shared {
        background.push(shared.spawn_subscriber(authorizer.revocations(), shutdown_rx.clone()));
    }
    // Revocations are forgotten once no token they match can still be valid.
    background.push(tokio::spawn({
        let list = authorizer.revocations();
        async move {
            loop {
                tokio::time::sleep(Duration::from_secs(60)).await;
                list.purge(crate::unix_now());
            }
        }
    }));
    background.push(tokio::spawn({
        let (keys, refresh) = (keys.clone(), Arc::clone(&refresh));
        async move {
            keys.refresh_all().await;
            lock(&refresh).extend(keys.spawn_refresh());
        }
    }));
    // Health follows readiness for as long as the server runs: keys can appear late, and a
    // reload can add a pool that has none yet.
    background.push(tokio::spawn({
        let (authorizer, health, mut shutdown_rx) =
            (authorizer.clone(), health.clone(), shutdown_rx.clone());
        async move {
            let mut serving = false;
            loop {
                let ready = authorizer.verifier().keys().all_loaded();
                if ready != serving && !*shutdown_rx.borrow() {
                    serving = ready;
                    let status = if ready {
                        info!("every pool has keys: serving");
                        ServingStatus::Serving
                    } else {
                        warn!("a pool has no keys: not serving");
                        ServingStatus::NotServing
                    };
                    set_health(&health, status).await;
                }
                tokio::select! {
                    _ = tokio::time::sleep(READINESS_POLL) => {}
                    _ = shutdown_rx.wait_for(|stop| *stop) => break,
                }
            }
        }
    }));

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::generated::DIAGNOSTICS_DESCRIPTOR)
        .register_encoded_file_descriptor_set(crate::generated::ENVOY_AUTHZ_DESCRIPTOR)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(ServerError::Reflection)?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::generated::DIAGNOSTICS_DESCRIPTOR)
        .register_encoded_file_descriptor_set(crate::generated::ENVOY_AUTHZ_DESCRIPTOR)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(ServerError::Reflection)?;

    let mut builder = tonic::transport::Server::builder().tcp_nodelay(true);
    if let Some(tls) = &config.server.tls {
        builder = builder
            .tls_config(tls_config(tls)?)
            .map_err(ServerError::Transport)?;
        info!(mutual = tls.client_ca.is_some(), "gRPC listener uses TLS");
    }
    // Diagnostics and reflection only where configured (by default: a loopback or Unix-socket
    // listener): VerifyToken can spend the account's GetUser quota.
    let diagnostics = config.server.diagnostics;
    if !diagnostics {
        info!("diagnostics and reflection are off on the gRPC listener");
    }
    let router = builder
        .add_service(health_service)
        .add_service(AuthorizationServer::new(AuthzService::new(
            authorizer.clone(),
        )))
        .add_optional_service(diagnostics.then_some(reflection_v1))
        .add_optional_service(diagnostics.then_some(reflection_v1alpha))
        .add_optional_service(
            diagnostics
                .then(|| DiagnosticsServer::new(DiagnosticsService::new(authorizer.clone()))),
        );

    let stop = {
        let mut rx = shutdown_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let grpc_config = &config.server.grpc_addr;
    let (grpc_addr, grpc) = if let Some(path) = grpc_config.strip_prefix("unix:") {
        let path = PathBuf::from(path);
        // A socket left by a previous run would make bind fail.
        if std::fs::metadata(&path).is_ok() {
            let _ = std::fs::remove_file(&path);
        }
        let listener =
            tokio::net::UnixListener::bind(&path).map_err(|source| ServerError::Bind {
                addr: grpc_config.clone(),
                source,
            })?;
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
        (
            GrpcAddr::Unix(path),
            tokio::spawn(router.serve_with_incoming_shutdown(incoming, stop)),
        )
    } else {
        let listener =
            TcpListener::bind(grpc_config)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: grpc_config.clone(),
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: grpc_config.clone(),
            source,
        })?;
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        (
            GrpcAddr::Tcp(addr),
            tokio::spawn(router.serve_with_incoming_shutdown(incoming, stop)),
        )
    };

    let admin_listener = TcpListener::bind(&config.server.admin_addr)
        .await
        .map_err(|source| ServerError::Bind {
            addr: config.server.admin_addr.clone(),
            source,
        })?;
    let admin_addr = admin_listener
        .local_addr()
        .map_err(|source| ServerError::Bind {
            addr: config.server.admin_addr.clone(),
            source,
        })?;
    let running_config = Arc::new(ArcSwap::from_pointee(config.clone()));
    let admin = tokio::spawn({
        let app = admin_router(Admin {
            metrics: metrics.clone(),
            authorizer: authorizer.clone(),
            running_config: Arc::clone(&running_config),
            shared: shared.clone(),
            shutdown: shutdown_rx.clone(),
        });
        let mut rx = shutdown_rx.clone();
        async move {
            let stop = async move {
                let _ = rx.wait_for(|stop| *stop).await;
            };
            if let Err(err) = axum::serve(admin_listener, app)
                .with_graceful_shutdown(stop)
                .await
            {
                error!(cause = %err, "admin listener failed");
            }
        }
    });
    let (http_addr, http) = match &config.server.http_addr {
        Some(addr) => {
            let (bound, task) = serve_http(
                addr,
                config.server.tls.as_ref(),
                authorizer.clone(),
                shutdown_rx.clone(),
            )
            .await?;
            (Some(bound), Some(task))
        }
        None => (None, None),
    };
    info!(grpc = ?grpc_addr, admin = %admin_addr, http = ?http_addr, "listening");

    Ok(Running {
        grpc_addr,
        admin_addr,
        http_addr,
        shutdown,
        authorizer,
        metrics,
        refresh,
        running_config,
        shared,
        health,
        grpc,
        admin,
        http,
        background,
        grace: config.server.shutdown_grace,
    })
}

/// Binds the HTTP ext_authz listener (`host:port` or `unix:/path`) and serves it, HTTP/1.1 and
/// HTTP/2 with prior knowledge, until shutdown.
async fn serve_http(
    addr: &str,
    tls: Option<&TlsFiles>,
    authorizer: Authorizer,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(GrpcAddr, JoinHandle<()>), ServerError> {
    let bind_error = |source| ServerError::Bind {
        addr: addr.to_string(),
        source,
    };
    let app = crate::http_authz::router(authorizer);
    let acceptor_shutdown = shutdown.clone();
    let stop = async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    if let Some(path) = addr.strip_prefix("unix:") {
        let path = PathBuf::from(path);
        if std::fs::metadata(&path).is_ok() {
            let _ = std::fs::remove_file(&path);
        }
        let listener = tokio::net::UnixListener::bind(&path).map_err(bind_error)?;
        let task = tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await
            {
                error!(cause = %err, "HTTP ext_authz listener failed");
            }
        });
        return Ok((GrpcAddr::Unix(path), task));
    }
    let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
    let bound = listener.local_addr().map_err(bind_error)?;
    if let Some(tls) = tls {
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(rustls_config(tls)?));
        let listener = TlsListener::start(listener, acceptor, bound, acceptor_shutdown);
        info!(mutual = tls.client_ca.is_some(), "HTTP listener uses TLS");
        let task = tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await
            {
                error!(cause = %err, "HTTP ext_authz listener failed");
            }
        });
        return Ok((GrpcAddr::Tcp(bound), task));
    }
    let task = tokio::spawn(async move {
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        if let Err(err) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            error!(cause = %err, "HTTP ext_authz listener failed");
        }
    });
    Ok((GrpcAddr::Tcp(bound), task))
}

/// How long a client gets to finish the TLS handshake on the HTTP listener.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The HTTP listener's TLS: connections are accepted and handshaken in tasks of their own (a
/// slow client holds up no other), then handed to axum.
struct TlsListener {
    ready: tokio::sync::mpsc::Receiver<(
        tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
        SocketAddr,
    )>,
    addr: SocketAddr,
}

impl TlsListener {
    fn start(
        tcp: TcpListener,
        acceptor: tokio_rustls::TlsAcceptor,
        addr: SocketAddr,
        mut shutdown: watch::Receiver<bool>,
    ) -> TlsListener {
        let (done, ready) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = tcp.accept() => accepted,
                    _ = shutdown.wait_for(|stop| *stop) => return,
                };
                let Ok((stream, peer)) = accepted else {
                    // Out of file descriptors and the like: let the condition pass.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let (acceptor, done) = (acceptor.clone(), done.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    {
                        Ok(Ok(tls)) => {
                            let _ = done.send((tls, peer)).await;
                        }
                        Ok(Err(err)) => debug!(cause = %err, "TLS handshake failed"),
                        Err(_) => debug!("TLS handshake timed out"),
                    }
                });
            }
        });
        TlsListener { ready, addr }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The acceptor stopped (shutdown): nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.addr)
    }
}

/// rustls's server configuration from the same PEM files as the gRPC listener's TLS.
fn rustls_config(tls: &TlsFiles) -> Result<rustls::ServerConfig, ServerError> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let read = |path: &PathBuf| {
        std::fs::read(path).map_err(|source| ServerError::Tls {
            path: path.clone(),
            source,
        })
    };
    let bad = |path: &PathBuf, problem: String| ServerError::Tls {
        path: path.clone(),
        source: std::io::Error::other(problem),
    };
    let certs = CertificateDer::pem_slice_iter(&read(&tls.cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&tls.cert, e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(&read(&tls.key)?)
        .map_err(|e| bad(&tls.key, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(&tls.cert, e.to_string()))?;
    let builder = match &tls.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&read(ca)?) {
                roots
                    .add(cert.map_err(|e| bad(ca, e.to_string()))?)
                    .map_err(|e| bad(ca, e.to_string()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| bad(ca, e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| bad(&tls.cert, e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

fn tls_config(tls: &TlsFiles) -> Result<ServerTlsConfig, ServerError> {
    let read = |path: &PathBuf| {
        std::fs::read(path).map_err(|source| ServerError::Tls {
            path: path.clone(),
            source,
        })
    };
    let mut config =
        ServerTlsConfig::new().identity(Identity::from_pem(read(&tls.cert)?, read(&tls.key)?));
    if let Some(ca) = &tls.client_ca {
        config = config.client_ca_root(Certificate::from_pem(read(ca)?));
    }
    Ok(config)
}

/// The Cognito revocation checker for a configuration: each pool's `GetUser` endpoint, revoked
/// sessions recorded in the authorizer's list and shared through Redis.
fn revocation_checker(
    config: &Config,
    authorizer: &Authorizer,
    shared: Option<Shared>,
    metrics: &Metrics,
) -> Result<RevocationChecker, ServerError> {
    RevocationChecker::new(
        config.revocation.clone(),
        config
            .pools
            .iter()
            .map(|p| p.idp_endpoint.clone())
            .collect(),
        authorizer.revocations(),
        shared,
        revocation_lifetime(config),
        Some(Arc::new(metrics.clone())),
    )
    .map_err(ServerError::CognitoClient)
}

/// How long a revocation is kept: the longest a Cognito token lives, plus the leeway.
fn revocation_lifetime(config: &Config) -> i64 {
    crate::verify::MAX_TOKEN_LIFETIME_SECS
        + i64::try_from(config.leeway.as_secs()).unwrap_or(i64::MAX / 2)
}

/// A revocation as the admin API takes it: exactly one of `jti`, `origin_jti` and `sub` (with
/// `before`, default now).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    /// One token.
    pub jti: Option<String>,
    /// One sign-in session.
    pub origin_jti: Option<String>,
    /// One user...
    pub sub: Option<String>,
    /// ...for tokens issued before this (Unix seconds; default: now).
    pub before: Option<i64>,
}

impl RevokeRequest {
    /// The revocation it names, or what is wrong with it.
    pub fn revocation(self, now: i64) -> Result<Revocation, &'static str> {
        let nonempty = |v: Option<String>| v.filter(|v| !v.trim().is_empty());
        match (
            nonempty(self.jti),
            nonempty(self.origin_jti),
            nonempty(self.sub),
        ) {
            (Some(jti), None, None) if self.before.is_none() => Ok(Revocation::Jti(jti)),
            (None, Some(id), None) if self.before.is_none() => Ok(Revocation::Session(id)),
            (None, None, Some(sub)) => Ok(Revocation::Sub {
                sub,
                before: self.before.unwrap_or(now),
            }),
            _ => Err("give exactly one of jti, origin_jti, sub (before goes with sub only)"),
        }
    }
}

/// What the admin listener's handlers share.
#[derive(Clone)]
struct Admin {
    metrics: Metrics,
    authorizer: Authorizer,
    running_config: Arc<ArcSwap<Config>>,
    shared: Option<Shared>,
    shutdown: watch::Receiver<bool>,
}

/// Largest body the control API reads: a revocation is under 1 KiB.
const MAX_CONTROL_BODY_BYTES: usize = 16 * 1024;

type AdminResponse = (axum::http::StatusCode, axum::Json<serde_json::Value>);

fn admin_error(status: axum::http::StatusCode, message: &str) -> axum::response::Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

/// The control API (`/revocations`, `/config`) answers only to the operator: the bearer secret
/// of `AUTHZ_ADMIN_TOKEN_FILE`, compared in constant time. Without a secret it is off: the
/// admin listener is reachable by every process sharing the pod's or task's network (an SSRF
/// in the app is enough), and whoever can revoke can sign anyone out.
async fn operator_only(
    axum::extract::State(admin): axum::extract::State<Admin>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::{header, StatusCode};
    let config = admin.running_config.load();
    let Some(secret) = &config.server.admin_token else {
        return admin_error(
            StatusCode::NOT_FOUND,
            "the control API is off: give it a secret with AUTHZ_ADMIN_TOKEN_FILE",
        );
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    match presented {
        Some(token) if secret.matches(token.as_bytes()) => next.run(request).await,
        _ => {
            let mut response = admin_error(
                StatusCode::UNAUTHORIZED,
                "the control API needs the operator's bearer secret",
            );
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"cognito-authz-admin\""),
            );
            response.into_response()
        }
    }
}

/// `POST /revocations`: records a revocation here and shares it, within bounds.
async fn revoke(
    axum::extract::State(admin): axum::extract::State<Admin>,
    body: axum::body::Bytes,
) -> AdminResponse {
    use axum::http::StatusCode;
    let refuse = |status: StatusCode, problem: &str| {
        (status, axum::Json(serde_json::json!({ "error": problem })))
    };
    let now = crate::unix_now();
    let config = admin.running_config.load();
    let request = serde_json::from_slice::<RevokeRequest>(&body)
        .map_err(|_| "the body is not a revocation request")
        .and_then(|r| r.revocation(now));
    let revocation = match request {
        Ok(revocation) => revocation,
        Err(problem) => return refuse(StatusCode::BAD_REQUEST, problem),
    };
    let entry = Entry::new(revocation, now, revocation_lifetime(&config));
    let leeway = i64::try_from(config.leeway.as_secs()).unwrap_or(0);
    let list = admin.authorizer.revocations();
    if let Err(why) = entry.admissible(now, leeway) {
        list.refused(why);
        return refuse(StatusCode::BAD_REQUEST, &why.to_string());
    }
    if let Err(why) = list.insert(&entry) {
        warn!(cause = %why, "a revocation was refused");
        return refuse(StatusCode::SERVICE_UNAVAILABLE, &why.to_string());
    }
    // Shared, or not shared yet (Redis down: published when it returns), or nothing to share
    // with (no Redis). Only the middle one is not a success: 202, and the CLI exits 1.
    let (status, shared) = match &admin.shared {
        Some(shared) => match shared.publish(&entry).await {
            Ok(()) => (StatusCode::OK, Some(true)),
            Err(err) => {
                warn!(cause = %err, "a revocation was recorded here but not shared yet");
                (StatusCode::ACCEPTED, Some(false))
            }
        },
        None => (StatusCode::OK, None),
    };
    info!(
        kind = entry.revocation.kind(),
        shared = ?shared,
        "revocation recorded"
    );
    (
        status,
        axum::Json(serde_json::json!({
            "recorded": true,
            "expires": entry.expires,
            "shared": shared,
        })),
    )
}

/// `GET /config`: the configuration in force (as `check-config` prints it), reloads included.
async fn running_config(
    axum::extract::State(admin): axum::extract::State<Admin>,
) -> axum::Json<Arc<Config>> {
    axum::Json(admin.running_config.load_full())
}

/// `GET /metrics`: the Prometheus text exposition.
async fn metrics(axum::extract::State(admin): axum::extract::State<Admin>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        admin.metrics.encode(),
    )
}

/// `GET /readyz`: keys loaded, not draining, and Redis up where it is required.
async fn readyz(axum::extract::State(admin): axum::extract::State<Admin>) -> impl IntoResponse {
    use axum::http::StatusCode;
    let redis_required = admin.running_config.load().server.redis_required;
    let keys = admin.authorizer.verifier().keys().all_loaded();
    let redis = admin.shared.as_ref().map(Shared::is_up);
    let ready = keys && !*admin.shutdown.borrow() && !(redis_required && redis == Some(false));
    let detail = match redis {
        None => "",
        Some(true) => "redis: up\n",
        Some(false) => "redis: down (deciding from local state)\n",
    };
    if ready {
        (StatusCode::OK, format!("ready\n{detail}"))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready\n{detail}"),
        )
    }
}

/// The admin listener: probes and metrics for anyone who can reach it, the control API for the
/// operator only.
fn admin_router(admin: Admin) -> axum::Router {
    use axum::routing::{get, post};
    let control = axum::Router::new()
        .route("/revocations", post(revoke))
        .route("/config", get(running_config))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_CONTROL_BODY_BYTES))
        .route_layer(axum::middleware::from_fn_with_state(
            admin.clone(),
            operator_only,
        ));
    axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .merge(control)
        .with_state(admin)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Running {
    /// The decision core this server answers with.
    pub fn authorizer(&self) -> &Authorizer {
        &self.authorizer
    }

    /// Swaps in a new configuration's pools, app clients, routes and identity settings at once.
    /// Unchanged pools (same id and JWKS URI) keep their keys; new ones are fetched before the
    /// swap. Listener addresses and the runtime are not reloaded (a warning says so). The
    /// control API's secret and the revocation cap take effect at once.
    pub async fn reload(&self, config: Config) -> Result<(), ServerError> {
        let old_config = self.running_config.load_full();
        if config.server.grpc_addr != old_config.server.grpc_addr
            || config.server.admin_addr != old_config.server.admin_addr
        {
            warn!("listener addresses changed: they take effect at the next restart");
        }
        let signing = |c: &Config| {
            c.server
                .redis_signing_key
                .as_ref()
                .map(|k| k.as_bytes().to_vec())
        };
        if config.server.redis_url != old_config.server.redis_url
            || signing(&config) != signing(&old_config)
        {
            warn!("the Redis URL or signing key changed: they take effect at the next restart");
        }
        let old = self.authorizer.verifier();
        let keys =
            KeyStore::with_observer(&config.pools, &config.jwks, Arc::new(self.metrics.clone()))
                .map_err(ServerError::Client)?;
        for (index, pool) in config.pools.iter().enumerate() {
            if let Some(previous) = old
                .pools()
                .iter()
                .position(|p| p.id == pool.id && p.jwks_uri == pool.jwks_uri)
            {
                keys.adopt(index, old.keys().snapshot(previous));
            }
        }
        keys.refresh_all().await;
        if let Some(pool) = config
            .pools
            .iter()
            .enumerate()
            .find(|(index, _)| keys.snapshot(*index).is_empty())
        {
            keys.retire();
            return Err(ServerError::ReloadWithoutKeys(pool.1.id.clone()));
        }
        let mut checker = revocation_checker(
            &config,
            &self.authorizer,
            self.shared.clone(),
            &self.metrics,
        )?;
        // What Cognito said about tokens stays true across a reload.
        if let Some(previous) = self.authorizer.revocation_checker() {
            checker = checker.keeping_verdicts_of(&previous);
        }
        let verifier = config.verifier(keys.clone());
        self.authorizer
            .replace(verifier, config.routes.clone(), config.token_cache_entries);
        self.authorizer.set_revocation_checker(Some(checker));
        self.authorizer
            .revocations()
            .set_cap(config.server.max_revocations);
        self.authorizer.set_dry_run(config.server.dry_run);
        self.authorizer
            .set_full_metadata(config.server.full_metadata);
        // The old store's loops end, including any its start-up task has yet to spawn.
        old.keys().retire();
        let mut refresh = lock(&self.refresh);
        for task in refresh.drain(..) {
            task.abort();
        }
        refresh.extend(keys.spawn_refresh());
        info!(
            pools = config.pools.len(),
            routes = config.routes.rules.len(),
            "configuration reloaded"
        );
        self.running_config.store(Arc::new(config));
        Ok(())
    }

    /// Serves until `shutdown` completes, reloading on every item of `hangups`; then stops
    /// gracefully. A reload that fails, in reading or in applying, is logged and the running
    /// configuration keeps serving: nothing but `shutdown` ends the loop.
    pub async fn serve_until<R>(
        self,
        shutdown: impl Future<Output = ()>,
        mut hangups: impl Stream<Item = ()> + Unpin,
        reload: R,
    ) -> Result<(), ServerError>
    where
        R: Fn() -> Result<Config, ConfigError>,
    {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                Some(()) = hangups.next() => {
                    let applied = match reload() {
                        Ok(config) => self.reload(config).await.map_err(|e| e.to_string()),
                        Err(err) => Err(err.to_string()),
                    };
                    if let Err(cause) = applied {
                        error!(%cause, "reload refused: the running configuration stays");
                    }
                }
            }
        }
        info!("shutting down");
        self.stop().await
    }

    /// Reports `NOT_SERVING`, stops accepting, lets in-flight checks finish within the grace
    /// period, then stops everything.
    pub async fn stop(self) -> Result<(), ServerError> {
        set_health(&self.health, ServingStatus::NotServing).await;
        let _ = self.shutdown.send(true);
        let outcome = match tokio::time::timeout(self.grace, self.grpc).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(err))) => Err(ServerError::Transport(err)),
            Ok(Err(join)) => {
                error!(cause = %join, "gRPC server task failed");
                Ok(())
            }
            Err(_) => {
                warn!(grace = ?self.grace, "grace period over: closing remaining connections");
                Ok(())
            }
        };
        if let Some(http) = self.http {
            if tokio::time::timeout(self.grace, http).await.is_err() {
                warn!("HTTP ext_authz listener: grace period over");
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.admin).await;
        for task in self.background {
            task.abort();
        }
        self.authorizer.verifier().keys().retire();
        for task in lock(&self.refresh).drain(..) {
            task.abort();
        }
        for addr in std::iter::once(&self.grpc_addr).chain(self.http_addr.as_ref()) {
            if let GrpcAddr::Unix(path) = addr {
                let _ = std::fs::remove_file(path);
            }
        }
        info!("stopped");
        outcome
    }
}

/// Runs until `shutdown` completes, then stops gracefully. On SIGHUP, `reload` reads the
/// configuration again: a valid one is swapped in, an invalid one is refused with a log and the
/// running one keeps serving.
pub async fn run<R>(
    config: Config,
    shutdown: impl Future<Output = ()>,
    reload: R,
) -> Result<(), ServerError>
where
    R: Fn() -> Result<Config, ConfigError>,
{
    let running = start(config).await?;
    let hangups: std::pin::Pin<Box<dyn Stream<Item = ()> + Send>> =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(signal) => Box::pin(tokio_stream::wrappers::SignalStream::new(signal)),
            Err(err) => {
                warn!(cause = %err, "cannot listen for SIGHUP: no reloads");
                Box::pin(tokio_stream::pending())
            }
        };
    running.serve_until(shutdown, hangups, reload).await
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(err) => {
                warn!(cause = %err, "cannot listen for SIGTERM; only Ctrl-C stops the server");
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
