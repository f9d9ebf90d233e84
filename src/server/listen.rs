//! Listeners: one binder for `host:port` and `unix:/path` shared by the gRPC and HTTP ext_authz
//! listeners, TLS for either, and the tasks that serve them until shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tracing::{debug, error, info};

use super::{GrpcAddr, ServerError};
use crate::config::TlsFiles;
use crate::decision::Authorizer;

/// A bound listener, TCP or Unix socket.
pub(super) enum Bound {
    /// `host:port`, with the port the system chose when configured with 0.
    Tcp(TcpListener, SocketAddr),
    /// `unix:/path`.
    Unix(UnixListener, PathBuf),
}

impl Bound {
    /// Where it listens.
    pub(super) fn addr(&self) -> GrpcAddr {
        match self {
            Bound::Tcp(_, addr) => GrpcAddr::Tcp(*addr),
            Bound::Unix(_, path) => GrpcAddr::Unix(path.clone()),
        }
    }
}

/// Binds `host:port` or `unix:/path`. A socket file left by a previous run is replaced, or the
/// bind would fail.
pub(super) async fn bind(addr: &str) -> Result<Bound, ServerError> {
    let bind_error = |source| ServerError::Bind {
        addr: addr.to_string(),
        source,
    };
    if let Some(path) = addr.strip_prefix("unix:") {
        let path = PathBuf::from(path);
        if std::fs::metadata(&path).is_ok() {
            let _ = std::fs::remove_file(&path);
        }
        let listener = UnixListener::bind(&path).map_err(bind_error)?;
        return Ok(Bound::Unix(listener, path));
    }
    let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
    let bound = listener.local_addr().map_err(bind_error)?;
    Ok(Bound::Tcp(listener, bound))
}

/// Completes once `shutdown` turns true.
pub(super) async fn stopped(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Serves an axum app on a listener until shutdown, logging a failure as `what`'s.
pub(super) fn spawn_axum<L>(
    listener: L,
    app: axum::Router,
    shutdown: watch::Receiver<bool>,
    what: &'static str,
) -> JoinHandle<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app)
            .with_graceful_shutdown(stopped(shutdown))
            .await
        {
            error!(cause = %err, "{what} listener failed");
        }
    })
}

/// Binds the gRPC listener (`host:port` or `unix:/path`) and serves `router` until shutdown.
pub(super) async fn serve_grpc(
    addr: &str,
    router: tonic::transport::server::Router,
    shutdown: watch::Receiver<bool>,
) -> Result<(GrpcAddr, GrpcTask), ServerError> {
    let bound = bind(addr).await?;
    let at = bound.addr();
    let stop = stopped(shutdown);
    let task = match bound {
        Bound::Tcp(listener, _) => {
            let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
            tokio::spawn(router.serve_with_incoming_shutdown(incoming, stop))
        }
        Bound::Unix(listener, _) => {
            let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
            tokio::spawn(router.serve_with_incoming_shutdown(incoming, stop))
        }
    };
    Ok((at, task))
}

/// The gRPC server's task: its error, if it stops badly.
pub(super) type GrpcTask = JoinHandle<Result<(), tonic::transport::Error>>;

/// Binds the HTTP ext_authz listener (`host:port` or `unix:/path`) and serves it, HTTP/1.1 and
/// HTTP/2 with prior knowledge, until shutdown.
pub(super) async fn serve_http(
    addr: &str,
    tls: Option<&TlsFiles>,
    authorizer: Authorizer,
    trust_traceparent: bool,
    shutdown: watch::Receiver<bool>,
) -> Result<(GrpcAddr, JoinHandle<()>), ServerError> {
    const WHAT: &str = "HTTP ext_authz";
    let app = crate::http_authz::router(authorizer, trust_traceparent);
    let bound = bind(addr).await?;
    let at = bound.addr();
    let task = match (bound, tls) {
        (Bound::Unix(listener, _), _) => spawn_axum(listener, app, shutdown, WHAT),
        (Bound::Tcp(listener, addr), Some(tls)) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(rustls_config(tls)?));
            let listener = TlsListener::start(listener, acceptor, addr, shutdown.clone());
            info!(mutual = tls.client_ca.is_some(), "HTTP listener uses TLS");
            spawn_axum(listener, app, shutdown, WHAT)
        }
        (Bound::Tcp(listener, _), None) => {
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                let _ = tcp.set_nodelay(true);
            });
            spawn_axum(listener, app, shutdown, WHAT)
        }
    };
    Ok((at, task))
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

/// tonic's server TLS from the configured PEM files.
pub(super) fn tls_config(tls: &TlsFiles) -> Result<ServerTlsConfig, ServerError> {
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
