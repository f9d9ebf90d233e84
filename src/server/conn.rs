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

use crate::authz::AuthzService;
use crate::config::limits::Limits;
use crate::metrics::Metrics;
use envoy_types::ext_authz::v3::pb::AuthorizationServer;

/// How long a connection closed for its header-read deadline gets to go quietly before it is
/// dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// How long a connection that has sent nothing gets, once its listener has closed, to send its
/// first request.
const FIRST_REQUEST_ON_CLOSE: Duration = Duration::from_millis(250);
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
    /// Closes the listener, first taking the connections the kernel has already let in:
    /// closing with them queued would reset them, their requests sent.
    fn close(self) -> Vec<Self::Io>;
}

/// At most this many accepts are made when a listener closes, so at most this many queued
/// connections are taken.
const TAKEN_ON_CLOSE: usize = 1024;

/// Accepts from a non-blocking listener until nothing is queued, in at most [`TAKEN_ON_CLOSE`]
/// calls: one aborted (its peer reset it in the queue) counts too, so peers that keep
/// connecting and resetting cannot keep the listener open.
fn take_queued<S>(mut accept: impl FnMut() -> io::Result<S>) -> Vec<S> {
    let mut taken = Vec::new();
    for _ in 0..TAKEN_ON_CLOSE {
        match accept() {
            Ok(socket) => taken.push(socket),
            Err(err) if err.kind() == io::ErrorKind::ConnectionAborted => {}
            Err(_) => break,
        }
    }
    taken
}

impl Accept for TcpListener {
    type Io = TcpStream;
    async fn next(&self) -> io::Result<TcpStream> {
        let (stream, _) = self.accept().await?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    fn close(self) -> Vec<TcpStream> {
        // The standard listener accepts with a system call each time, where tokio's answers
        // from readiness it may not have heard of yet. It is non-blocking: an empty queue ends.
        let Ok(listener) = self.into_std() else {
            return Vec::new();
        };
        take_queued(|| listener.accept())
            .into_iter()
            .filter_map(|(stream, _)| {
                stream.set_nonblocking(true).ok()?;
                let stream = TcpStream::from_std(stream).ok()?;
                let _ = stream.set_nodelay(true);
                Some(stream)
            })
            .collect()
    }
}

impl Accept for UnixListener {
    type Io = UnixStream;
    async fn next(&self) -> io::Result<UnixStream> {
        Ok(self.accept().await?.0)
    }

    fn close(self) -> Vec<UnixStream> {
        let Ok(listener) = self.into_std() else {
            return Vec::new();
        };
        take_queued(|| listener.accept())
            .into_iter()
            .filter_map(|(stream, _)| {
                stream.set_nonblocking(true).ok()?;
                UnixStream::from_std(stream).ok()
            })
            .collect()
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
/// closes the listener and only then tells the connections to close (`serve`'s receiver turns
/// true), and waits for them to finish.
///
/// In that order, because a client told to go away (HTTP/2's GOAWAY) opens its next connection
/// at once, as Envoy does: with the listener still open, that connection could land in its
/// queue as it closed, and be reset with a check sent. Once the listener is closed, the
/// reconnect is refused and Envoy fails that one check closed.
async fn accept_loop<L, F, Fut>(listener: L, gate: Gate, shutdown: watch::Receiver<bool>, serve: F)
where
    L: Accept,
    F: Fn(L::Io, Ticket, watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut connections = JoinSet::new();
    let (close, closing) = watch::channel(false);
    let admit = |io: L::Io, connections: &mut JoinSet<()>| match gate.admit() {
        Some(ticket) => {
            connections.spawn(serve(io, ticket, closing.clone()));
        }
        None => drop(io),
    };
    let stop = stopped(shutdown);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            accepted = listener.next() => match accepted {
                Ok(io) => admit(io, &mut connections),
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
    for io in listener.close() {
        admit(io, &mut connections);
    }
    let _ = close.send(true);
    while connections.join_next().await.is_some() {}
}

/// Serves an axum app on `listener` until shutdown, every connection bounded by `limits` and
/// `gate`; with TLS when `tls` is given.
pub(super) async fn serve_app<L: Accept>(
    listener: L,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: App,
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
    accept_loop(listener, gate, shutdown, |io, ticket, closing| {
        let connection = Connection {
            builder: Arc::clone(&builder),
            app: app.clone(),
            limits,
            closing,
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

/// The path of Envoy's one call per request on the gRPC listener.
const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

/// What a listener serves: an axum app and, on the gRPC listener, the `Check` service, called
/// without the router in between. Envoy's check is the one call made per request; the router
/// would hand it to the same service after a path match and a boxed call.
#[derive(Clone)]
pub(super) struct App {
    router: axum::Router,
    check: Option<AuthorizationServer<AuthzService>>,
}

impl App {
    /// The gRPC listener's: its routes, and the `Check` service among them.
    pub(super) fn grpc(router: axum::Router, check: AuthorizationServer<AuthzService>) -> App {
        App {
            router,
            check: Some(check),
        }
    }

    /// Answers one request: `Check` straight to its service, anything else through the router.
    async fn call(self, request: http::Request<hyper::body::Incoming>) -> axum::response::Response {
        match self.check {
            Some(check) if request.uri().path() == CHECK_PATH => {
                let Ok(response) = tower::ServiceExt::oneshot(check, request).await;
                response.map(axum::body::Body::new)
            }
            _ => {
                let Ok(response) = tower::ServiceExt::oneshot(self.router, request).await;
                response
            }
        }
    }
}

impl From<axum::Router> for App {
    fn from(router: axum::Router) -> App {
        App {
            router,
            check: None,
        }
    }
}

/// One HTTP connection and what bounds it.
struct Connection {
    builder: Arc<auto::Builder<TokioExecutor>>,
    app: App,
    limits: Limits,
    /// Turns true once the listener is closed: time to finish and go.
    closing: watch::Receiver<bool>,
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
                let answer = tokio::time::timeout(timeout, app.call(request)).await;
                Ok::<_, std::convert::Infallible>(answer.unwrap_or_else(|_| timed_out(grpc)))
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
            _ = stopped(self.closing.clone()) => {
                // Taken from the listener's queue as it closed, or opened just before: nothing
                // read yet, and hyper drops a connection unread when told to close before it
                // knows the protocol. Its first request (Envoy sends it with the connection)
                // gets a moment.
                if !self.activity.started.load(Ordering::SeqCst) {
                    let first_request = async {
                        while !self.activity.started.load(Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_millis(2)).await;
                        }
                    };
                    tokio::select! {
                        _ = connection.as_mut() => return,
                        _ = tokio::time::timeout(FIRST_REQUEST_ON_CLOSE, first_request) => {}
                    }
                }
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

    /// Taking what a closing listener's queue holds makes at most [`TAKEN_ON_CLOSE`] calls,
    /// however they fail: connections aborted one after the other (peers that connect and reset
    /// as fast as the server accepts) must not hold the listener open and shutdown waiting.
    #[test]
    fn a_closing_listener_takes_its_queue_in_bounded_calls_even_when_every_one_is_aborted() {
        let mut calls = 0usize;
        let taken: Vec<()> = take_queued(|| {
            calls += 1;
            if calls > 10 * TAKEN_ON_CLOSE {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Err(io::ErrorKind::ConnectionAborted.into())
        });
        assert!(taken.is_empty());
        assert!(calls <= TAKEN_ON_CLOSE, "{calls} calls");
        let mut calls = 0usize;
        let taken = take_queued(|| {
            calls += 1;
            if calls.is_multiple_of(2) {
                Err(io::ErrorKind::ConnectionAborted.into())
            } else {
                Ok(calls)
            }
        });
        assert!(
            !taken.is_empty() && calls <= TAKEN_ON_CLOSE,
            "{calls} calls"
        );
    }

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

    /// HTTP/2 frame types and flags the Envoy-like client below reads and writes.
    const DATA: u8 = 0;
    const HEADERS: u8 = 1;
    const RST_STREAM: u8 = 3;
    const SETTINGS: u8 = 4;
    const PING: u8 = 6;
    const GOAWAY: u8 = 7;
    const END_STREAM: u8 = 1;
    const END_HEADERS: u8 = 4;
    const ACK: u8 = 1;

    async fn write_frame(
        io: &mut (impl AsyncWrite + Unpin),
        kind: u8,
        flags: u8,
        stream: u32,
        payload: &[u8],
    ) -> io::Result<()> {
        use tokio::io::AsyncWriteExt as _;
        let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
        let mut frame = vec![len[1], len[2], len[3], kind, flags];
        frame.extend_from_slice(&stream.to_be_bytes());
        frame.extend_from_slice(payload);
        io.write_all(&frame).await
    }

    async fn read_frame(io: &mut (impl AsyncRead + Unpin)) -> io::Result<(u8, u8, u32, Vec<u8>)> {
        use tokio::io::AsyncReadExt as _;
        let mut head = [0u8; 9];
        io.read_exact(&mut head).await?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        io.read_exact(&mut payload).await?;
        Ok((head[3], head[4], stream, payload))
    }

    /// `GET /` on `stream`, HPACK-coded from the static table.
    async fn send_get(io: &mut (impl AsyncWrite + Unpin), stream: u32) -> io::Result<()> {
        let block = [0x82, 0x86, 0x84, 0x01, 0x01, b'a'];
        write_frame(io, HEADERS, END_STREAM | END_HEADERS, stream, &block).await
    }

    /// Reads `io` until `stream` is answered or refused unprocessed (`Ok(None)`), or the server
    /// says GOAWAY while `stream` is still owed (`Ok(Some(()))`, unless `goaway_seen`). An
    /// error is the connection ending with `stream` neither answered nor refused.
    async fn await_answer(
        io: &mut TcpStream,
        stream: u32,
        goaway_seen: bool,
    ) -> io::Result<Option<()>> {
        loop {
            let (kind, flags, on, payload) = read_frame(io).await?;
            match kind {
                SETTINGS if flags & ACK == 0 => write_frame(io, SETTINGS, ACK, 0, &[]).await?,
                PING if flags & ACK == 0 => write_frame(io, PING, ACK, 0, &payload).await?,
                HEADERS | DATA if on == stream && flags & END_STREAM != 0 => return Ok(None),
                // REFUSED_STREAM: never processed.
                RST_STREAM if on == stream && payload == [0, 0, 0, 7] => return Ok(None),
                RST_STREAM if on == stream => {
                    return Err(io::Error::other(format!("stream reset: {payload:?}")));
                }
                GOAWAY => {
                    let last = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])
                        & 0x7fff_ffff;
                    if stream > last {
                        return Ok(None);
                    }
                    if !goaway_seen {
                        return Ok(Some(()));
                    }
                }
                _ => {}
            }
        }
    }

    /// One client as Envoy's HTTP/2 connection pool is one: requests back to back on one
    /// connection, and on GOAWAY a new connection at once while the old one finishes the request
    /// it owes. Returns every request lost on a connection that was let in (its TCP connect
    /// succeeded); a refused connect ends the client.
    async fn envoy_like_client(addr: std::net::SocketAddr) -> Vec<String> {
        use tokio::io::AsyncWriteExt as _;
        let mut failures = Vec::new();
        let mut draining = JoinSet::new();
        while let Ok(mut tcp) = TcpStream::connect(addr).await {
            let opened = async {
                tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await?;
                write_frame(&mut tcp, SETTINGS, 0, 0, &[]).await
            };
            if let Err(err) = opened.await {
                failures.push(format!("preface: {err}"));
                continue;
            }
            let mut stream = 1;
            loop {
                if let Err(err) = send_get(&mut tcp, stream).await {
                    failures.push(format!("request {stream} not sent: {err}"));
                    break;
                }
                match await_answer(&mut tcp, stream, false).await {
                    Ok(None) => stream += 2,
                    Ok(Some(())) => {
                        // Told to go away: the old connection finishes what it owes, and the
                        // next request goes on a new one at once.
                        draining.spawn(async move {
                            await_answer(&mut tcp, stream, true)
                                .await
                                .map_err(|err| format!("request {stream} lost after GOAWAY: {err}"))
                        });
                        break;
                    }
                    Err(err) => {
                        failures.push(format!("request {stream} lost: {err}"));
                        break;
                    }
                }
            }
        }
        while let Some(done) = draining.join_next().await {
            if let Err(failure) = done.unwrap() {
                failures.push(failure);
            }
        }
        failures
    }

    /// Stopping a listener while its clients reconnect as soon as they are told to go away
    /// (Envoy does so on GOAWAY) resets no connection it let in. The listener closes before any
    /// connection says GOAWAY, so a reconnect is refused and Envoy fails that check closed; it
    /// used to land in the listener's backlog and be reset there, request sent.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stopping_resets_no_connection_it_let_in() {
        let mut failures = Vec::new();
        for _ in 0..60 {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (stop, shutdown) = watch::channel(false);
            let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
            let gate = Gate::new("grpc", 1000, &Metrics::new());
            let limits = Limits::default();
            let server = tokio::spawn(serve_app(
                listener,
                None,
                app.into(),
                gate,
                limits,
                shutdown,
                true,
            ));
            let clients: Vec<_> = (0..4)
                .map(|_| tokio::spawn(envoy_like_client(addr)))
                .collect();
            tokio::time::sleep(Duration::from_millis(30)).await;
            stop.send(true).unwrap();
            server.await.unwrap();
            for client in clients {
                failures.extend(client.await.unwrap());
            }
        }
        assert!(
            failures.is_empty(),
            "{} failures: {failures:#?}",
            failures.len()
        );
    }

    /// A connection the listener takes from its queue as it closes, its request already sent,
    /// is answered on every listener: on one that tells HTTP/1.1 from HTTP/2 by the first
    /// bytes, hyper used to drop it unread when told to close before it had read them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connection_taken_as_the_listener_closes_gets_its_answer() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        for http2_only in [false, true] {
            for round in 0..20 {
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr = listener.local_addr().unwrap();
                // In the listener's queue, the request sent, before anything accepts it.
                let mut client = TcpStream::connect(addr).await.unwrap();
                if http2_only {
                    client
                        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
                        .await
                        .unwrap();
                    write_frame(&mut client, SETTINGS, 0, 0, &[]).await.unwrap();
                    send_get(&mut client, 1).await.unwrap();
                } else {
                    client
                        .write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n")
                        .await
                        .unwrap();
                }
                // Told to stop before it starts: it takes its queue and closes at once.
                let (_stop, shutdown) = watch::channel(true);
                let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
                let gate = Gate::new("http", 16, &Metrics::new());
                let server = tokio::spawn(serve_app(
                    listener,
                    None,
                    app.into(),
                    gate,
                    Limits::default(),
                    shutdown,
                    http2_only,
                ));
                let answer = async {
                    if http2_only {
                        // The answer's HEADERS on stream 1, before the connection ends.
                        while let Ok((kind, _, stream, _)) = read_frame(&mut client).await {
                            if kind == HEADERS && stream == 1 {
                                return true;
                            }
                        }
                        false
                    } else {
                        let mut answer = Vec::new();
                        let _ = client.read_to_end(&mut answer).await;
                        answer.starts_with(b"HTTP/1.1 200")
                    }
                };
                let answered = tokio::time::timeout(Duration::from_secs(5), answer)
                    .await
                    .unwrap_or(false);
                assert!(
                    answered,
                    "round {round}, HTTP/2 only: {http2_only}: no answer"
                );
                // An HTTP/2 server waits for its GOAWAY's ping to be answered; gone is enough.
                drop(client);
                server.await.unwrap();
            }
        }
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
