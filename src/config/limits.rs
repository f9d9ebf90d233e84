//! What a listener allows one connection, and how many at once: the bounds that keep a slow or
//! silent client (a neighbour on the same network, not only Envoy) from holding the process's
//! files. Defaults, and why each is what it is:
//!
//! - **Header read, 10 s**: a TLS handshake and a first request take milliseconds from Envoy on
//!   the same host or pod; ten seconds forgives a stalled scheduler, not a client that never
//!   finishes.
//! - **Idle, 90 s**: longer than the 60 s after which the shipped Envoy configs close their idle
//!   pooled connections themselves, so Envoy, not us, ends them. A config that keeps them longer
//!   loses nothing either: the close is graceful (HTTP/2's GOAWAY; HTTP/1.1 only between
//!   requests), and a test loads Envoy after we closed its idle connections. Without it, a
//!   neighbour's connections that made one request each would hold the cap for good.
//! - **Keep-alive, a ping after 30 s of quiet, answered within 10 s**: what gRPC's own
//!   keep-alive guidance calls safe against proxies' limits, and a dead peer is gone within 40 s.
//! - **Request, 10 s**: a check is bounded long before by its JWKS and revocation timeouts and
//!   by Envoy's own (500 ms in the shipped configs); this is the backstop.
//! - **Connections: 256 gRPC, 640 HTTP, 64 admin, 960 in all**: under the 1,024 open files a
//!   container's soft limit often is, with room for the process's own files and outgoing
//!   connections. Envoy's HTTP/1.1 ext_authz cluster opens one connection per check in flight
//!   (up to 1,024 by its default circuit breaker), so the shipped HTTP configs hold it to 512,
//!   and queue the rest inside Envoy instead of being refused here.

use std::time::Duration;

use serde::Serialize;

/// Default header-read timeout, in seconds.
pub const DEFAULT_HEADER_READ_TIMEOUT_SECS: u64 = 10;
/// Default idle timeout, in seconds.
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 90;
/// Default HTTP/2 keep-alive interval, in seconds.
pub const DEFAULT_KEEPALIVE_SECS: u64 = 30;
/// Default time a keep-alive ping has to be answered, in seconds.
pub const DEFAULT_KEEPALIVE_TIMEOUT_SECS: u64 = 10;
/// Default request timeout, in seconds.
pub const DEFAULT_REQUEST_TIMEOUT_SECS: u64 = 10;
/// Default cap on the gRPC listener's connections.
pub const DEFAULT_GRPC_MAX_CONNECTIONS: usize = 256;
/// Default cap on the HTTP ext_authz listener's connections.
pub const DEFAULT_HTTP_MAX_CONNECTIONS: usize = 640;
/// Default cap on the admin listener's connections.
pub const DEFAULT_ADMIN_MAX_CONNECTIONS: usize = 64;

/// The listeners' bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// A new connection's time to its first request (TLS handshake included); an HTTP/1.1
    /// request's time to its last header.
    #[serde(with = "crate::secs")]
    pub header_read_timeout: Duration,
    /// How long a connection may hold no request.
    #[serde(with = "crate::secs")]
    pub idle_timeout: Duration,
    /// HTTP/2 keep-alive ping interval.
    #[serde(with = "crate::secs")]
    pub keepalive: Duration,
    /// How long a ping has to be answered.
    #[serde(with = "crate::secs")]
    pub keepalive_timeout: Duration,
    /// The longest one request may take.
    #[serde(with = "crate::secs")]
    pub request_timeout: Duration,
    /// Connections at once on the gRPC listener.
    pub grpc_max_connections: usize,
    /// Connections at once on the HTTP ext_authz listener.
    pub http_max_connections: usize,
    /// Connections at once on the admin listener.
    pub admin_max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(DEFAULT_HEADER_READ_TIMEOUT_SECS),
            idle_timeout: Duration::from_secs(DEFAULT_IDLE_TIMEOUT_SECS),
            keepalive: Duration::from_secs(DEFAULT_KEEPALIVE_SECS),
            keepalive_timeout: Duration::from_secs(DEFAULT_KEEPALIVE_TIMEOUT_SECS),
            request_timeout: Duration::from_secs(DEFAULT_REQUEST_TIMEOUT_SECS),
            grpc_max_connections: DEFAULT_GRPC_MAX_CONNECTIONS,
            http_max_connections: DEFAULT_HTTP_MAX_CONNECTIONS,
            admin_max_connections: DEFAULT_ADMIN_MAX_CONNECTIONS,
        }
    }
}
