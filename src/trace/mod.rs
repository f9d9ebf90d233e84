//! OpenTelemetry traces: the check's span as a child of the caller's (Envoy's `ext_authz` span),
//! with child spans for JWKS fetches, Cognito `GetUser` calls and Redis operations. Off unless
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set; [`export`] installs the exporter.
//!
//! Our spans are `tracing` spans of target [`TARGET`]: only the OpenTelemetry layer enables
//! that target, never the log layer, so with tracing off a span costs one disabled-callsite
//! check and the logs never change. A span records codes and names (decision, reason, rule,
//! pool, cache hit or miss, operation), never a token, a header map or a request.

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub mod export;

/// The `tracing` target of every span meant for OpenTelemetry.
pub const TARGET: &str = "cognito_authz::trace";

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

/// Makes `span` a child of the first valid W3C trace context among `sources`, tried in order
/// (the transport's metadata first, then the request's own headers). A missing or malformed
/// `traceparent` leaves `span` a root: never an error. Nothing is parsed when tracing is off.
pub fn adopt_parent(span: &Span, sources: &[&dyn Extractor]) {
    if span.is_disabled() {
        return;
    }
    let propagator = TraceContextPropagator::new();
    for source in sources {
        let cx = propagator.extract(*source);
        if cx.span().span_context().is_valid() {
            // Fails only when no OpenTelemetry layer is installed: then there is nothing to link.
            let _ = span.set_parent(cx);
            return;
        }
    }
}

/// The decision on the current check span (a no-op outside one).
pub fn record_decision(decision: &str, reason: &str, rule: &str, pool: Option<&str>) {
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

/// gRPC request metadata as a W3C trace context source (Envoy's, for the gRPC protocol).
pub struct Metadata<'a>(pub &'a tonic::metadata::MetadataMap);

impl Extractor for Metadata<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        // The W3C propagator asks for `traceparent` and `tracestate` by name only.
        Vec::new()
    }
}

/// HTTP request headers as a W3C trace context source (the HTTP protocol's request).
pub struct HttpHeaders<'a>(pub &'a axum::http::HeaderMap);

impl Extractor for HttpHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        Vec::new()
    }
}

/// The W3C context a `traceparent` value names (invalid when it names none).
pub fn context_of(traceparent: &str) -> Context {
    let headers =
        std::collections::HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
    TraceContextPropagator::new().extract(&headers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanId, TraceId};

    #[test]
    fn a_valid_traceparent_is_read_and_a_malformed_one_is_ignored() {
        let cx = context_of("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
        let span = cx.span();
        let parent = span.span_context();
        assert!(parent.is_valid());
        assert_eq!(
            parent.trace_id(),
            TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap()
        );
        assert_eq!(
            parent.span_id(),
            SpanId::from_hex("b7ad6b7169203331").unwrap()
        );
        for bad in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01-extra",
            "00-\u{e9}af7651916cd43dd8448eb211c8031-b7ad6b7169203331-01",
        ] {
            assert!(
                !context_of(bad).span().span_context().is_valid(),
                "{bad:?} was taken"
            );
        }
    }

    #[test]
    fn without_a_layer_spans_are_disabled_and_adopting_a_parent_is_a_no_op() {
        let span = check_span("grpc");
        assert!(span.is_disabled());
        let headers = std::collections::HashMap::from([(
            "traceparent".to_string(),
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_string(),
        )]);
        adopt_parent(&span, &[&headers]);
        record_decision("allow", "valid", "api", Some("pool"));
        record_cache(true);
    }
}
