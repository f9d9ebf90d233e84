//! OpenTelemetry traces: the check's span as a child of the caller's (Envoy's `ext_authz` span),
//! with child spans for JWKS fetches, Cognito `GetUser` calls and Redis operations. Off unless
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set; [`export`] installs the exporter.
//!
//! Our spans are `tracing` spans of target [`TARGET`]: only the OpenTelemetry layer enables
//! that target, never the log layer, so with tracing off a span costs one disabled-callsite
//! check and the logs never change. A span records codes and names (decision, reason, rule,
//! pool, cache hit or miss, operation), never a token, a header map or a request.
//!
//! The OpenTelemetry crates are behind the `otel` feature (on by default, and required by the
//! binary): the fuzz targets build the decision core without them, and there the spans stay
//! plain `tracing` spans no layer enables and no context is read.

use std::sync::atomic::AtomicU64;

use tracing::Span;

#[cfg(feature = "otel")]
mod context;
#[cfg(feature = "otel")]
pub mod export;
pub mod settings;

#[cfg(feature = "otel")]
pub(crate) use context::set_root_sampler;

/// The `tracing` target of every span meant for OpenTelemetry. Not a module path: filters
/// match targets by prefix, and switching these spans off in the logs must not switch off a
/// module's log events.
pub const TARGET: &str = "cognito_authz_otel";

/// The check's span, before its parent is known: `protocol` is `grpc` or `http`. Its fields
/// are filled in by [`record_decision`] and [`record_cache`].
pub fn check_span(protocol: &'static str) -> Span {
    tracing::info_span!(
        target: TARGET,
        "authz.check",
        otel.kind = "server",
        rpc.system = protocol,
        decision = tracing::field::Empty,
        reason = tracing::field::Empty,
        rule = tracing::field::Empty,
        pool = tracing::field::Empty,
        cache = tracing::field::Empty,
    )
}

/// Makes `span` a child of the W3C trace context in `transport` (what Envoy sets: the gRPC
/// metadata, or the HTTP protocol's request headers), else of a `traceparent` among the
/// `request`'s own headers (the client's, when Envoy forwards it). A missing or malformed
/// `traceparent` leaves `span` a root: never an error. Nothing is read when tracing is off.
pub fn adopt_parent(span: &Span, transport: &dyn Carrier, request: Option<&dyn Carrier>) {
    if span.is_disabled() {
        return;
    }
    #[cfg(feature = "otel")]
    context::adopt_parent(span, transport, request);
    #[cfg(not(feature = "otel"))]
    let _ = (transport, request);
}

/// Leaves `span` the root of a trace of its own and links it to the W3C context a `traceparent`
/// in `claimed` names, when one is there: where a client's own `traceparent` may arrive in the
/// same place as Envoy's (the HTTP protocol's request headers), a client chooses neither our
/// trace id nor whether we sample (the configured root sampler decides, as for any trace of our
/// own), and a trace it names can still be found from ours. Nothing is read when tracing is off.
pub fn link_claimed(span: &Span, claimed: &dyn Carrier) {
    if span.is_disabled() {
        return;
    }
    #[cfg(feature = "otel")]
    context::link_claimed(span, claimed);
    #[cfg(not(feature = "otel"))]
    let _ = claimed;
}

/// Where a trace context may travel: header-like maps looked up by lower-case name.
pub trait Carrier {
    /// The value of `name`, when it is there and text.
    fn header(&self, name: &str) -> Option<&str>;
}

impl Carrier for tonic::metadata::MetadataMap {
    fn header(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Carrier for axum::http::HeaderMap {
    fn header(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Carrier for std::collections::HashMap<String, String> {
    fn header(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

/// Spans handed to the exporter and spans given up on, for `/metrics`. Process-wide, like the
/// tracer provider they describe; zero while tracing is off.
#[derive(Debug, Default)]
pub struct SpanCounts {
    /// Spans the collector accepted.
    pub exported: AtomicU64,
    /// Spans dropped because the queue was full.
    pub dropped_queue_full: AtomicU64,
    /// Spans dropped because their export failed or timed out.
    pub dropped_export_failed: AtomicU64,
}

/// The process's span counts.
pub fn counts() -> &'static SpanCounts {
    static COUNTS: SpanCounts = SpanCounts {
        exported: AtomicU64::new(0),
        dropped_queue_full: AtomicU64::new(0),
        dropped_export_failed: AtomicU64::new(0),
    };
    &COUNTS
}

/// Whether any check span can be recorded: a trace pipeline is installed. Read from the
/// callsite's cached interest, so a check pays nothing for the span lookups below when
/// tracing is off (`Span::current()` is a walk of the registry's span stack).
fn recording() -> bool {
    tracing::enabled!(target: TARGET, tracing::Level::INFO)
}

/// The decision on the current check span (a no-op outside one).
pub fn record_decision(decision: &str, reason: &str, rule: &str, pool: Option<&str>) {
    if !recording() {
        return;
    }
    let span = Span::current();
    if span.is_disabled() {
        return;
    }
    span.record("decision", decision);
    span.record("reason", reason);
    span.record("rule", rule);
    if let Some(pool) = pool {
        span.record("pool", pool);
    }
}

/// Whether the token was found in the verified-token cache, on the current check span.
pub fn record_cache(hit: bool) {
    if !recording() {
        return;
    }
    Span::current().record("cache", if hit { "hit" } else { "miss" });
}

/// A child span for one Redis operation (`op` is a command name such as `GET`).
pub fn redis_span(op: &'static str) -> Span {
    tracing::info_span!(
        target: TARGET,
        "redis",
        otel.kind = "client",
        db.system.name = "redis",
        db.operation.name = op,
        otel.status_code = tracing::field::Empty,
    )
}

/// A child span for one JWKS fetch of `pool`.
pub fn jwks_span(pool: &str) -> Span {
    tracing::info_span!(
        target: TARGET,
        "jwks.fetch",
        otel.kind = "client",
        pool,
        outcome = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    )
}

/// A child span for one Cognito `GetUser` call.
pub fn get_user_span() -> Span {
    tracing::info_span!(
        target: TARGET,
        "cognito.GetUser",
        otel.kind = "client",
        rpc.system = "aws-api",
        rpc.service = "CognitoIdentityProvider",
        rpc.method = "GetUser",
        outcome = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    )
}

/// Marks `span` failed, with a short outcome code (never an error's text, which may quote
/// what a peer sent).
pub fn record_failure(span: &Span, outcome: &str) {
    span.record("outcome", outcome);
    span.record("otel.status_code", "ERROR");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_layer_spans_are_disabled_and_adopting_a_parent_is_a_no_op() {
        let span = check_span("grpc");
        assert!(span.is_disabled());
        let headers = std::collections::HashMap::from([(
            "traceparent".to_string(),
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_string(),
        )]);
        adopt_parent(&span, &headers, Some(&headers));
        record_decision("allow", "valid", "api", Some("pool"));
        record_cache(true);
    }
}
