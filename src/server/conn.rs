//! Connections under bounds, on every listener: a cap on how many are open, a deadline for a new
//! connection's first request (its TLS handshake included), an idle deadline between requests
//! (HTTP ext_authz and admin listeners), HTTP/2 keep-alive and a request timeout. Each closing
//! is counted. The defaults and why: [`crate::config::limits`].
//!
//! The HTTP and admin listeners are served here, one hyper connection per accepted socket (HTTP/1.1
//! or HTTP/2 by the first bytes). The gRPC listener is tonic's, fed the sockets this module
//! accepted: [`Guarded`] closes one that sends no complete request in time, and [`CountRequests`]
//! tells it when a request arrives.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{mpsc, watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tonic::codegen::http;
use tracing::{debug, warn};

use crate::config::limits::Limits;
use crate::metrics::Metrics;

/// How long a connection closed for its header-read deadline gets to go quietly before it is
/// dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// The shortest time between two warnings that a listener is at its cap.
const CAP_WARNING_EVERY: Duration = Duration::from_secs(10);

/// Completes once `shutdown` turns true.
pub(super) async fn stopped(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// A listener that hands out sockets.
pub(super) trait Accept: Send + 'static {
    /// One accepted connection.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// The next connection.
    fn next(&self) -> impl Future<Output = io::Result<Self::Io>> + Send;
}

impl Accept for TcpListener {
    type Io = TcpStream;
    async fn next(&self) -> io::Result<TcpStream> {
        let (stream, _) = self.accept().await?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }
}

impl Accept for UnixListener {
    type Io = UnixStream;
    async fn next(&self) -> io::Result<UnixStream> {
        Ok(self.accept().await?.0)
    }
}

/// A listener's cap and its counts.
#[derive(Clone)]
pub(super) struct Gate {
    permits: Arc<Semaphore>,
    listener: &'static str,
    metrics: Metrics,
    last_warning: Arc<std::sync::Mutex<Option<Instant>>>,
}

impl Gate {
    /// At most `max` connections at once on `listener` (`grpc`, `http`, `admin`).
    pub(super) fn new(listener: &'static str, max: usize, metrics: &Metrics) -> Gate {
        Gate {
            permits: Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS))),
            listener,
            metrics: metrics.clone(),
            last_warning: Arc::default(),
        }
    }

    /// A place for one more connection, or none (counted, and warned of now and then).
    fn admit(&self) -> Option<Ticket> {
        match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(permit) => {
                self.metrics.connections_open(self.listener, 1);
                Some(Ticket {
                    _permit: permit,
                    gate: self.clone(),
                })
            }
            Err(_) => {
                self.metrics.connection_refused(self.listener);
                let mut last = crate::lock(&self.last_warning);
                if last.is_none_or(|at| at.elapsed() >= CAP_WARNING_EVERY) {
                    *last = Some(Instant::now());
                    warn!(
                        listener = self.listener,
                        "at the connection cap: new connections are closed on arrival"
                    );
                }
                None
            }
        }
    }
}

/// A connection's place under its listener's cap, given back when the connection ends.
pub(super) struct Ticket {
    _permit: OwnedSemaphorePermit,
    gate: Gate,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.gate.metrics.connections_open(self.gate.listener, -1);
    }
}

/// What a connection is doing: whether a request has arrived, how many are in flight, and when
/// the last one ended.
pub(super) struct Activity {
    opened: Instant,
    started: AtomicBool,
    in_flight: AtomicUsize,
    /// Milliseconds from `opened` to the end of the last request.
    last_done_ms: AtomicU64,
    done: Notify,
}

impl Activity {
    fn new() -> Arc<Activity> {
        Arc::new(Activity {
            opened: Instant::now(),
            started: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            last_done_ms: AtomicU64::new(0),
            done: Notify::new(),
        })
    }

    /// A request arrived; it is in flight until the guard drops.
    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.started.store(true, Ordering::SeqCst);
        InFlight(Arc::clone(self))
    }

    /// When the connection is to be closed and why, if nothing happens first; none while a
    /// request is in flight, or when it is idle and `idle` is none.
    fn deadline(&self, limits: &Limits, idle: Option<Duration>) -> Option<(Instant, &'static str)> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        if !self.started.load(Ordering::SeqCst) {
            return Some((self.opened + limits.header_read_timeout, "header_read"));
        }
        let last = Duration::from_millis(self.last_done_ms.load(Ordering::SeqCst));
        idle.map(|idle| (self.opened + last + idle, "idle"))
    }

    /// Completes, naming the timeout, once the connection has passed a deadline with nothing in
    /// flight.
    async fn expired(&self, limits: &Limits, idle: Option<Duration>) -> &'static str {
        loop {
            let done = self.done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            match self.deadline(limits, idle) {
                None => done.await,
                Some((at, which)) if Instant::now() >= at => return which,
                Some((at, _)) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = done => {}
                    }
                }
            }
        }
    }
}

/// A request in flight on its connection.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        let since = u64::try_from(activity.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        activity.last_done_ms.store(since, Ordering::SeqCst);
        activity.in_flight.fetch_sub(1, Ordering::SeqCst);
        activity.done.notify_waiters();
    }
}

/// Accepts on `listener` until shutdown, hands each connection under the cap to `serve`, then
/// waits for the connections to finish.
async fn accept_loop<L, F, Fut>(listener: L, gate: Gate, shutdown: watch::Receiver<bool>, serve: F)
where
    L: Accept,
    F: Fn(L::Io, Ticket) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut connections = JoinSet::new();
    let stop = stopped(shutdown);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            accepted = listener.next() => match accepted {
                Ok(io) => match gate.admit() {
                    Some(ticket) => {
                        connections.spawn(serve(io, ticket));
                    }
                    None => drop(io),
                },
                // Out of file descriptors and the like: let the condition pass.
                Err(err) => {
                    debug!(cause = %err, listener = gate.listener, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = &mut stop => break,
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// Serves an axum app on `listener` until shutdown, every connection bounded by `limits` and
/// `gate`; with TLS when `tls` is given.
pub(super) async fn serve_app<L: Accept>(
    listener: L,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: axum::Router,
    gate: Gate,
    limits: Limits,
    shutdown: watch::Receiver<bool>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.keepalive)
        .keep_alive_timeout(limits.keepalive_timeout);
    let builder = Arc::new(builder);
    let metrics = gate.metrics.clone();
    let listener_name = gate.listener;
    accept_loop(listener, gate, shutdown.clone(), |io, ticket| {
        let connection = Connection {
            builder: Arc::clone(&builder),
            app: app.clone(),
            limits,
            shutdown: shutdown.clone(),
            metrics: metrics.clone(),
            listener: listener_name,
            activity: Activity::new(),
        };
        let tls = tls.clone();
        async move {
            let _ticket = ticket;
            match tls {
                None => connection.serve(io).await,
                Some(acceptor) => {
                    let by = connection.activity.opened + limits.header_read_timeout;
                    match tokio::time::timeout_at(by, acceptor.accept(io)).await {
                        Ok(Ok(stream)) => connection.serve(stream).await,
                        Ok(Err(err)) => debug!(cause = %err, "TLS handshake failed"),
                        Err(_) => connection
                            .metrics
                            .connection_timed_out(listener_name, "header_read"),
                    }
                }
            }
        }
    })
    .await;
}

/// One HTTP connection and what bounds it.
struct Connection {
    builder: Arc<auto::Builder<TokioExecutor>>,
    app: axum::Router,
    limits: Limits,
    shutdown: watch::Receiver<bool>,
    metrics: Metrics,
    listener: &'static str,
    activity: Arc<Activity>,
}

impl Connection {
    async fn serve<IO>(self, io: IO)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (app, activity, request_timeout) = (
            self.app.clone(),
            Arc::clone(&self.activity),
            self.limits.request_timeout,
        );
        let service = hyper::service::service_fn(move |request: http::Request<_>| {
            let (app, in_flight) = (app.clone(), activity.begin());
            async move {
                let _in_flight = in_flight;
                let answer = tower::ServiceExt::oneshot(app, request);
                match tokio::time::timeout(request_timeout, answer).await {
                    Ok(answer) => answer,
                    Err(_) => Ok(timed_out()),
                }
            }
        });
        let connection = self.builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(connection);
        let idle = Some(self.limits.idle_timeout);
        tokio::select! {
            served = connection.as_mut() => {
                if let Err(err) = served {
                    debug!(cause = %err, listener = self.listener, "connection ended");
                }
            }
            which = self.activity.expired(&self.limits, idle) => {
                self.metrics.connection_timed_out(self.listener, which);
                connection.as_mut().graceful_shutdown();
                // Idle: nothing is in flight, unless a request arrived this very moment.
                let bound = if which == "idle" { request_timeout } else { CLOSE_GRACE };
                let _ = tokio::time::timeout(bound, connection).await;
            }
            _ = stopped(self.shutdown.clone()) => {
                connection.as_mut().graceful_shutdown();
                let _ = connection.await;
            }
        }
    }
}

/// The answer to a request that outlived the request timeout: a 503, which Envoy's HTTP
/// ext_authz treats as a denial.
fn timed_out() -> axum::response::Response {
    let mut response =
        axum::response::Response::new(axum::body::Body::from("{\"error\":\"request timed out\"}"));
    *response.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
    response
}

/// The sockets the gRPC listener serves: accepted here, under the cap, each [`Guarded`]. Ends at
/// shutdown.
pub(super) fn grpc_incoming<L: Accept>(
    listener: L,
    gate: Gate,
    limits: Limits,
    shutdown: watch::Receiver<bool>,
) -> tokio_stream::wrappers::ReceiverStream<io::Result<Guarded<L::Io>>> {
    let (sender, receiver) = mpsc::channel(16);
    let metrics = gate.metrics.clone();
    let listener_name = gate.listener;
    tokio::spawn(accept_loop(listener, gate, shutdown, move |io, ticket| {
        let activity = Activity::new();
        let guarded = Guarded {
            first_request_by: Some(Box::pin(tokio::time::sleep_until(
                activity.opened + limits.header_read_timeout,
            ))),
            io,
            activity,
            metrics: metrics.clone(),
            listener: listener_name,
            _ticket: ticket,
        };
        let sender = sender.clone();
        async move {
            let _ = sender.send(Ok(guarded)).await;
        }
    }));
    tokio_stream::wrappers::ReceiverStream::new(receiver)
}

/// A gRPC connection's socket: closed (its reads fail) when no request has arrived by the
/// header-read deadline, TLS handshake and HTTP/2 preface included. It holds the connection's
/// place under the cap.
pub(super) struct Guarded<IO> {
    io: IO,
    activity: Arc<Activity>,
    first_request_by: Option<Pin<Box<Sleep>>>,
    metrics: Metrics,
    listener: &'static str,
    _ticket: Ticket,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Guarded<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(deadline) = &mut this.first_request_by {
            if this.activity.started.load(Ordering::SeqCst) {
                this.first_request_by = None;
            } else if deadline.as_mut().poll(cx).is_ready() {
                this.first_request_by = None;
                this.metrics
                    .connection_timed_out(this.listener, "header_read");
                // Stays failed: the deadline is gone, but so is the connection.
                this.activity.started.store(true, Ordering::SeqCst);
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no request within the header-read timeout",
                )));
            }
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Guarded<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// What tonic puts in each request's extensions for a [`Guarded`] connection.
#[derive(Clone)]
pub(super) struct ConnActivity(Arc<Activity>);

impl<IO> tonic::transport::server::Connected for Guarded<IO> {
    type ConnectInfo = ConnActivity;

    fn connect_info(&self) -> ConnActivity {
        ConnActivity(Arc::clone(&self.activity))
    }
}

/// The gRPC server's layer that tells each request's connection it has one in flight.
#[derive(Clone, Copy, Default)]
pub(super) struct CountRequestsLayer;

impl<S> tower::Layer<S> for CountRequestsLayer {
    type Service = CountRequests<S>;

    fn layer(&self, inner: S) -> CountRequests<S> {
        CountRequests(inner)
    }
}

/// See [`CountRequestsLayer`].
#[derive(Clone)]
pub(super) struct CountRequests<S>(S);

impl<S, B> tower::Service<http::Request<B>> for CountRequests<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Counted<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        use tonic::transport::server::TlsConnectInfo;
        let extensions = request.extensions();
        let activity = extensions
            .get::<ConnActivity>()
            .or_else(|| {
                extensions
                    .get::<TlsConnectInfo<ConnActivity>>()
                    .map(TlsConnectInfo::get_ref)
            })
            .map(|conn| conn.0.begin());
        Counted {
            inner: self.0.call(request),
            _in_flight: activity,
        }
    }
}

pin_project_lite::pin_project! {
    /// A request's future, holding its connection's in-flight mark until it completes.
    pub(super) struct Counted<F> {
        #[pin]
        inner: F,
        _in_flight: Option<InFlight>,
    }
}

impl<F: Future> Future for Counted<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.project().inner.poll(cx)
    }
}
