//! The `serve` runtime, composed from its parts: the gRPC listener (Envoy's Check, health,
//! reflection v1 and v1alpha, diagnostics) and the HTTP ext_authz listener on TCP or a Unix
//! socket ([`listen`]), the admin listener with its probes, metrics and operator-only control
//! API ([`admin`]), the key store's background tasks and the readiness loop (here), reload
//! ([`reload`]) and graceful shutdown ([`shutdown`]).

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use envoy_types::ext_authz::v3::pb::AuthorizationServer;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::Stream;
use tonic_health::ServingStatus;
use tracing::{info, warn};

use crate::authz::AuthzService;
use crate::clock::Clock;
use crate::config::{Config, ConfigError};
use crate::decision::Authorizer;
use crate::diagnostics::DiagnosticsService;
use crate::generated::diagnostics::diagnostics_server::DiagnosticsServer;
use crate::jwks::{FetchError, KeyStore};
use crate::lock;
use crate::metrics::Metrics;
use crate::shared::Shared;

mod admin;
mod conn;
mod listen;
mod reload;
mod shutdown;

pub use admin::{BadRevocation, RevocationRecorded, RevokeRequest};
pub use shutdown::shutdown_signal;

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
    grpc: JoinHandle<()>,
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
    start_with_clock(config, Clock::system()).await
}

/// Like [`start`], judging every expiry (tokens, verdicts, revocations, shared entries) by
/// `clock`: tests pass a manual one and advance it instead of sleeping.
pub async fn start_with_clock(config: Config, clock: Clock) -> Result<Running, ServerError> {
    // Two rustls providers are linked (reqwest brings ring, tonic aws-lc-rs), so rustls cannot
    // pick one by itself; choose aws-lc-rs, the one our signatures use. Already chosen: fine.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let metrics = Metrics::new();
    let (authorizer, keys, shared) = decision_core(&config, &metrics, clock)?;

    let (health, health_service) = tonic_health::server::health_reporter();
    set_health(&health, ServingStatus::NotServing).await;
    let (shutdown, shutdown_rx) = watch::channel(false);

    let refresh: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
    let background = spawn_background(
        &authorizer,
        &keys,
        shared.as_ref(),
        &health,
        &shutdown_rx,
        &refresh,
    );

    let limits = config.server.limits;
    let router = grpc_router(&config, &authorizer, health_service)?;
    let (grpc_addr, grpc) = listen::serve_grpc(
        &config.server.grpc_addr,
        router,
        config.server.tls.as_ref(),
        conn::Gate::new("grpc", limits.grpc_max_connections, &metrics),
        limits,
        shutdown_rx.clone(),
    )
    .await?;

    let admin_error = |source| ServerError::Bind {
        addr: config.server.admin_addr.clone(),
        source,
    };
    let admin_listener = tokio::net::TcpListener::bind(&config.server.admin_addr)
        .await
        .map_err(admin_error)?;
    let admin_addr = admin_listener.local_addr().map_err(admin_error)?;
    let running_config = Arc::new(ArcSwap::from_pointee(config.clone()));
    let admin = listen::spawn_app(
        admin_listener,
        admin::router(admin::Admin {
            metrics: metrics.clone(),
            authorizer: authorizer.clone(),
            running_config: Arc::clone(&running_config),
            shared: shared.clone(),
            shutdown: shutdown_rx.clone(),
        }),
        conn::Gate::new("admin", limits.admin_max_connections, &metrics),
        limits,
        shutdown_rx.clone(),
    );
    let (http_addr, http) = match &config.server.http_addr {
        Some(addr) => {
            let (bound, task) = listen::serve_http(
                addr,
                config.server.tls.as_ref(),
                authorizer.clone(),
                config.server.http_trust_traceparent,
                conn::Gate::new("http", limits.http_max_connections, &metrics),
                limits,
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

/// The decision core a configuration describes: its key store (not yet fetched), the authorizer
/// over it, and the Redis link when one is configured.
fn decision_core(
    config: &Config,
    metrics: &Metrics,
    clock: Clock,
) -> Result<(Authorizer, KeyStore, Option<Shared>), ServerError> {
    let keys = KeyStore::with_observer(&config.pools, &config.jwks, Arc::new(metrics.clone()))
        .map_err(ServerError::Client)?;
    let authorizer = Authorizer::with_clock(
        config.verifier(keys.clone()),
        config.routes.clone(),
        config.token_cache_entries,
        metrics.clone(),
        clock.clone(),
    );
    authorizer.set_dry_run(config.server.dry_run);
    authorizer.set_full_metadata(config.server.full_metadata);
    authorizer
        .revocations()
        .set_cap(config.server.max_revocations);
    let shared = match config.server.redis_target() {
        Some(target) => {
            let signing = config
                .server
                .redis_signing_key
                .as_ref()
                .map(|keys| keys.as_bytes())
                .unwrap_or_default();
            let shared = Shared::new(target, Arc::new(metrics.clone()), &signing)
                .map_err(ServerError::Redis)?;
            Some(shared.with_clock(clock))
        }
        None => None,
    };
    authorizer.set_revocation_checker(Some(reload::revocation_checker(
        config,
        &authorizer,
        shared.clone(),
        metrics,
    )?));
    if config.server.dry_run {
        warn!("dry-run mode: every request is allowed; decisions are only logged and counted");
    }
    for warning in config.routes.envoy_forwarding_warnings() {
        warn!("{warning}");
    }
    Ok((authorizer, keys, shared))
}

/// The decision core with its upkeep running and no listener: what a filter inside Envoy (the
/// dynamic module) embeds. Dropping it stops the upkeep.
pub struct Core {
    /// Decides checks.
    pub authorizer: Authorizer,
    /// What the core counts.
    pub metrics: Metrics,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    refresh: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Core {
    /// Builds the core `config` describes and starts its upkeep (the first key fetch and the
    /// refresh loops, the revocation purge, the Redis subscriber) on the current Tokio runtime.
    /// With an `observer`, everything the core counts goes there instead of into its registry
    /// (the dynamic module's Envoy stats).
    pub fn start(
        config: &Config,
        clock: Clock,
        observer: Option<Arc<dyn crate::metrics::MetricsObserver>>,
    ) -> Result<Core, ServerError> {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let metrics = match observer {
            Some(observer) => Metrics::with_observer(observer),
            None => Metrics::new(),
        };
        let (authorizer, keys, shared) = decision_core(config, &metrics, clock)?;
        // Kept by the core: a closed channel would read as "stop" to the Redis subscriber.
        let (stop, shutdown_rx) = watch::channel(false);
        let refresh: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let tasks = spawn_upkeep(&authorizer, &keys, shared.as_ref(), &shutdown_rx, &refresh);
        Ok(Core {
            authorizer,
            metrics,
            stop,
            tasks,
            refresh,
        })
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for task in self.tasks.iter().chain(lock(&self.refresh).iter()) {
            task.abort();
        }
    }
}

/// The tasks that run beside the listeners: the core's upkeep and the readiness loop.
fn spawn_background(
    authorizer: &Authorizer,
    keys: &KeyStore,
    shared: Option<&Shared>,
    health: &tonic_health::server::HealthReporter,
    shutdown_rx: &watch::Receiver<bool>,
    refresh: &Arc<Mutex<Vec<JoinHandle<()>>>>,
) -> Vec<JoinHandle<()>> {
    let mut background = spawn_upkeep(authorizer, keys, shared, shutdown_rx, refresh);
    background.push(spawn_readiness(
        authorizer.clone(),
        shared.cloned(),
        health.clone(),
        shutdown_rx.clone(),
    ));
    background
}

/// The decision core's upkeep: the Redis subscriber, the revocation purge, and the first key
/// fetch (which then starts the refresh loops).
fn spawn_upkeep(
    authorizer: &Authorizer,
    keys: &KeyStore,
    shared: Option<&Shared>,
    shutdown_rx: &watch::Receiver<bool>,
    refresh: &Arc<Mutex<Vec<JoinHandle<()>>>>,
) -> Vec<JoinHandle<()>> {
    let mut background = Vec::new();
    if let Some(shared) = shared {
        background.push(shared.spawn_subscriber(authorizer.revocations(), shutdown_rx.clone()));
    }
    // Revocations are forgotten once no token they match can still be valid.
    background.push(tokio::spawn({
        let (list, clock) = (authorizer.revocations(), authorizer.clock().clone());
        async move {
            loop {
                tokio::time::sleep(Duration::from_secs(60)).await;
                list.purge(clock.now());
            }
        }
    }));
    background.push(tokio::spawn({
        let (keys, refresh) = (keys.clone(), Arc::clone(refresh));
        async move {
            keys.refresh_all().await;
            lock(&refresh).extend(keys.spawn_refresh());
        }
    }));
    background
}

/// Health follows readiness for as long as the server runs: keys can appear late, and a reload
/// can add a pool that has none yet.
fn spawn_readiness(
    authorizer: Authorizer,
    shared: Option<Shared>,
    health: tonic_health::server::HealthReporter,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut serving = false;
        loop {
            // Not before the revocations in Redis are loaded (or Redis found unreachable).
            let ready = authorizer.verifier().keys().all_loaded()
                && shared.as_ref().is_none_or(Shared::settled);
            if ready != serving && !*shutdown.borrow() {
                serving = ready;
                let status = if ready {
                    info!("every pool has keys (and the shared revocations are loaded): serving");
                    ServingStatus::Serving
                } else {
                    warn!(
                        "a pool has no keys, or the shared revocations are not loaded: not serving"
                    );
                    ServingStatus::NotServing
                };
                set_health(&health, status).await;
            }
            tokio::select! {
                _ = tokio::time::sleep(READINESS_POLL) => {}
                _ = shutdown.wait_for(|stop| *stop) => break,
            }
        }
    })
}

/// The gRPC services: health and Envoy's Check always; diagnostics and reflection only where
/// configured (by default: a loopback or Unix-socket listener), since `VerifyToken` can spend the
/// account's `GetUser` quota.
fn grpc_router(
    config: &Config,
    authorizer: &Authorizer,
    health_service: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
) -> Result<conn::App, ServerError> {
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::generated::DIAGNOSTICS_DESCRIPTOR)
            .register_encoded_file_descriptor_set(crate::generated::ENVOY_AUTHZ_DESCRIPTOR)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let check = AuthorizationServer::new(AuthzService::new(authorizer.clone()));
    let mut routes = tonic::service::RoutesBuilder::default();
    routes
        .add_service(health_service)
        .add_service(check.clone());
    if config.server.diagnostics {
        routes
            .add_service(reflection().build_v1().map_err(ServerError::Reflection)?)
            .add_service(
                reflection()
                    .build_v1alpha()
                    .map_err(ServerError::Reflection)?,
            )
            .add_service(DiagnosticsServer::new(DiagnosticsService::new(
                authorizer.clone(),
            )));
    } else {
        info!("diagnostics and reflection are off on the gRPC listener");
    }
    // Served like the other listeners, on HTTP/2 alone (`listen::serve_grpc`).
    let router = routes.routes().prepare().into_axum_router();
    Ok(conn::App::grpc(router, check))
}

impl Running {
    /// The decision core this server answers with.
    pub fn authorizer(&self) -> &Authorizer {
        &self.authorizer
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
