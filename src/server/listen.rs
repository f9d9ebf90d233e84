//! Listeners: one binder for `host:port` and `unix:/path` shared by the gRPC and HTTP ext_authz
//! listeners, TLS for either, and the tasks that serve them until shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::info;

use super::conn::{self, Gate};
use super::{GrpcAddr, ServerError};
use crate::config::limits::Limits;
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

/// Serves an axum app on a TCP listener until shutdown, every connection bounded by `limits`
/// and `gate`.
pub(super) fn spawn_app(
    listener: TcpListener,
    app: axum::Router,
    gate: Gate,
    limits: Limits,
    shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(conn::serve_app(
        listener,
        None,
        app.into(),
        gate,
        limits,
        shutdown,
        false,
    ))
}

/// Binds the gRPC listener (`host:port` or `unix:/path`) and serves its routes until shutdown,
/// HTTP/2 alone, with TLS when configured; connections bounded like every listener's.
pub(super) async fn serve_grpc(
    addr: &str,
    routes: conn::App,
    tls: Option<&TlsFiles>,
    gate: Gate,
    limits: Limits,
    shutdown: watch::Receiver<bool>,
) -> Result<(GrpcAddr, JoinHandle<()>), ServerError> {
    if let Some(tls) = tls {
        info!(mutual = tls.client_ca.is_some(), "gRPC listener uses TLS");
    }
    let serving = Serving {
        app: routes,
        gate,
        limits,
        shutdown,
        http2_only: true,
    };
    serve(addr, tls, serving).await
}

/// Binds the HTTP ext_authz listener (`host:port` or `unix:/path`) and serves it, HTTP/1.1 and
/// HTTP/2 with prior knowledge (or by ALPN over TLS), until shutdown.
pub(super) async fn serve_http(
    addr: &str,
    tls: Option<&TlsFiles>,
    authorizer: Authorizer,
    trust_traceparent: bool,
    gate: Gate,
    limits: Limits,
    shutdown: watch::Receiver<bool>,
) -> Result<(GrpcAddr, JoinHandle<()>), ServerError> {
    if let Some(tls) = tls.filter(|_| !addr.starts_with("unix:")) {
        info!(mutual = tls.client_ca.is_some(), "HTTP listener uses TLS");
    }
    let serving = Serving {
        app: crate::http_authz::router(authorizer, trust_traceparent).into(),
        gate,
        limits,
        shutdown,
        http2_only: false,
    };
    serve(addr, tls, serving).await
}

/// What a listener serves and how it bounds its connections.
struct Serving {
    app: conn::App,
    gate: Gate,
    limits: Limits,
    shutdown: watch::Receiver<bool>,
    http2_only: bool,
}

/// Binds `addr` and serves on it until shutdown, with TLS when `tls` is given.
async fn serve(
    addr: &str,
    tls: Option<&TlsFiles>,
    serving: Serving,
) -> Result<(GrpcAddr, JoinHandle<()>), ServerError> {
    let bound = bind(addr).await?;
    let at = bound.addr();
    let Serving {
        app,
        gate,
        limits,
        shutdown,
        http2_only,
    } = serving;
    // The HTTP listener has always spoken TLS on TCP only; the gRPC one on either.
    let acceptor = match tls {
        Some(tls) if http2_only || matches!(bound, Bound::Tcp(..)) => Some(
            tokio_rustls::TlsAcceptor::from(Arc::new(rustls_config(tls, http2_only)?)),
        ),
        _ => None,
    };
    let task = match bound {
        Bound::Unix(listener, _) => tokio::spawn(conn::serve_app(
            listener, acceptor, app, gate, limits, shutdown, http2_only,
        )),
        Bound::Tcp(listener, _) => tokio::spawn(conn::serve_app(
            listener, acceptor, app, gate, limits, shutdown, http2_only,
        )),
    };
    Ok((at, task))
}

/// rustls's server configuration from the configured PEM files.
fn rustls_config(tls: &TlsFiles, http2_only: bool) -> Result<rustls::ServerConfig, ServerError> {
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
    // gRPC is HTTP/2 alone: a client that offers only HTTP/1.1 is refused at the handshake.
    config.alpn_protocols = if http2_only {
        vec![b"h2".to_vec()]
    } else {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    };
    Ok(config)
}
