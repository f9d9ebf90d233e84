//! Connections under bounds, on every listener: a cap on how many are open, a deadline for a new
//! connection's first request (its TLS handshake included), an idle deadline between requests,
//! HTTP/2 keep-alive and a request timeout. Each closing
//! is counted. The defaults and why: [`crate::config::limits`].
//!
//! Every listener is served here, one hyper connection per accepted socket: HTTP/1.1 or HTTP/2 by
//! the first bytes on the HTTP ext_authz and admin listeners, HTTP/2 alone on the gRPC one (its
//! tonic services as one router). Closing an idle connection is graceful: HTTP/2 says GOAWAY, so
//! a request sent meanwhile is refused cleanly and retried elsewhere rather than lost.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
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
}

impl Activity {
    fn new() -> Arc<Activity> {
        Arc::new(Activity {
            opened: Instant::now(),
            started: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            last_done_ms: AtomicU64::new(0),
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
        // Lazily: a request does not wake this; the deadline is looked at again when it would
        // have passed, and has usually moved on by then. Never later than one idle timeout
        // from now: a first request that comes and goes before the header-read deadline moves
        // the deadline earlier, not later.
        let again = idle.unwrap_or(limits.header_read_timeout);
        loop {
            let now = Instant::now();
            let next = match self.deadline(limits, idle) {
                Some((at, which)) if now >= at => return which,
                Some((at, _)) => at.min(now + again),
                // In flight (or idle without a timeout): look again later.
                None => now + again,
            };
            tokio::time::sleep_until(next).await;
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
    http2_only: bool,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    if http2_only {
        builder = builder.http2_only();
    }
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
            let headers = request.headers();
            let grpc = headers
                .get(http::header::CONTENT_TYPE)
                .is_some_and(|t| t.as_bytes().starts_with(b"application/grpc"));
            // A gRPC call's own deadline, when it is the sooner (Envoy sends its ext_authz
            // timeout as one).
            let timeout = headers
                .get("grpc-timeout")
                .and_then(|v| grpc_timeout(v.as_bytes()))
                .filter(|_| grpc)
                .map_or(request_timeout, |asked| asked.min(request_timeout));
            async move {
                let _in_flight = in_flight;
                let answer = tower::ServiceExt::oneshot(app, request);
                match tokio::time::timeout(timeout, answer).await {
                    Ok(answer) => answer,
                    Err(_) => Ok(timed_out(grpc)),
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

/// A `grpc-timeout` header's duration: at most eight digits and a unit (`H`, `M`, `S`, `m`, `u`,
/// `n`), as gRPC's HTTP/2 protocol defines it; none when malformed.
fn grpc_timeout(value: &[u8]) -> Option<Duration> {
    let (unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The answer to a request that outlived the request timeout: gRPC's `DEADLINE_EXCEEDED` to a
/// gRPC call, else a 503; Envoy turns either into its failure answer, never an allow.
fn timed_out(grpc: bool) -> axum::response::Response {
    if grpc {
        let status = tonic::Status::deadline_exceeded("the request timeout passed");
        return status.into_http::<axum::body::Body>();
    }
    let mut response =
        axum::response::Response::new(axum::body::Body::from("{\"error\":\"request timed out\"}"));
    *response.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection whose first request came and went is closed for idleness one idle timeout
    /// later, even when the header-read timeout is the longer: the watch first slept towards
    /// the header-read deadline and closed an idle connection only then.
    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_closes_after_the_idle_timeout_not_the_header_read_one() {
        let limits = Limits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(2),
            ..Limits::default()
        };
        let activity = Activity::new();
        let opened = Instant::now();
        let watch = tokio::spawn({
            let (activity, limits) = (Arc::clone(&activity), limits);
            async move { activity.expired(&limits, Some(limits.idle_timeout)).await }
        });
        // The watch is asleep before the first request arrives, as on a real connection.
        tokio::task::yield_now().await;
        drop(activity.begin());
        assert_eq!(watch.await.unwrap(), "idle");
        let closed_after = opened.elapsed();
        assert!(
            closed_after < Duration::from_secs(3),
            "an idle connection was closed after {closed_after:?}, its idle timeout is 2 s"
        );
    }

    #[test]
    fn grpc_timeouts_are_read_as_grpc_defines_them() {
        assert_eq!(grpc_timeout(b"500m"), Some(Duration::from_millis(500)));
        assert_eq!(grpc_timeout(b"2S"), Some(Duration::from_secs(2)));
        assert_eq!(grpc_timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(
            grpc_timeout(b"99999999H"),
            Some(Duration::from_secs(99_999_999 * 3600))
        );
        assert_eq!(grpc_timeout(b"7u"), Some(Duration::from_micros(7)));
        for bad in [
            &b""[..],
            b"m",
            b"123456789m",
            b"12x",
            b"-1S",
            b"1.5S",
            "٣S".as_bytes(),
        ] {
            assert_eq!(grpc_timeout(bad), None, "{bad:?}");
        }
    }
}
