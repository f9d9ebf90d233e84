//! OpenTelemetry traces: the check's span as a child of the caller's (Envoy's `ext_authz` span),
//! with child spans for JWKS fetches, Cognito `GetUser` calls and Redis operations. Off unless
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set; [`export`] installs the exporter.
//!
//! Our spans are `tracing` spans of target [`TARGET`]: only the OpenTelemetry layer enables
//! that target, never the log layer, so with tracing off a span costs one disabled-callsite
//! check and the logs never change. A span records codes and names (decision, reason, rule,
//! pool, cache hit or miss, operation), never a token, a header map or a request.

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use std::sync::OnceLock;

use opentelemetry::trace::{SpanContext, SpanKind, TraceContextExt, TraceFlags, TraceState};
use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SamplingDecision, ShouldSample};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub mod export;

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
/// `traceparent` leaves `span` a root: never an error. Nothing is parsed when tracing is off.
///
/// Only `traceparent` is read: a `tracestate` (up to 16 KiB a client chooses) would ride on
/// every span we export. A context from the request's headers is the client's word, so it
/// links the trace but does not choose sampling: the configured root sampler decides, as for a
/// trace of our own.
pub fn adopt_parent(span: &Span, transport: &dyn Extractor, request: Option<&dyn Extractor>) {
    if span.is_disabled() {
        return;
    }
    let parent = match parent_in(transport) {
        Some(parent) => parent,
        None => match request.and_then(parent_in) {
            Some(claimed) => resampled(&claimed),
            None => return,
        },
    };
    // Fails only when no OpenTelemetry layer is installed: then there is nothing to link.
    let _ = span.set_parent(Context::new().with_remote_span_context(parent));
}

/// The longest `traceparent` read: version 00 is 55 characters; later versions may append.
const MAX_TRACEPARENT: usize = 128;

/// A source's `traceparent`, and nothing else.
struct TraceparentOnly<'a>(&'a dyn Extractor);

impl Extractor for TraceparentOnly<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        if key != "traceparent" {
            return None;
        }
        self.0.get(key).filter(|v| v.len() <= MAX_TRACEPARENT)
    }

    fn keys(&self) -> Vec<&str> {
        Vec::new()
    }
}

/// The valid span context a source's `traceparent` names.
fn parent_in(source: &dyn Extractor) -> Option<SpanContext> {
    let cx = TraceContextPropagator::new().extract(&TraceparentOnly(source));
    let parent = cx.span().span_context().clone();
    parent.is_valid().then_some(parent)
}

/// The sampler that decides a trace of our own, for contexts a client names.
static ROOT_SAMPLER: OnceLock<Sampler> = OnceLock::new();

/// Sets the root sampler (once, when the pipeline starts).
pub(crate) fn set_root_sampler(sampler: Sampler) {
    let _ = ROOT_SAMPLER.set(sampler);
}

/// `claimed` with its sampled flag set by the root sampler instead of the client.
fn resampled(claimed: &SpanContext) -> SpanContext {
    let sampled = ROOT_SAMPLER.get().is_some_and(|sampler| {
        let result = sampler.should_sample(
            None,
            claimed.trace_id(),
            "authz.check",
            &SpanKind::Server,
            &[],
            &[],
        );
        result.decision == SamplingDecision::RecordAndSample
    });
    let flags = if sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    SpanContext::new(
        claimed.trace_id(),
        claimed.span_id(),
        flags,
        true,
        TraceState::default(),
    )
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
    parent_in(&headers)
        .map(|parent| Context::new().with_remote_span_context(parent))
        .unwrap_or_default()
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
    fn a_tracestate_is_never_read_and_an_oversized_traceparent_is_ignored() {
        let headers = std::collections::HashMap::from([
            (
                "traceparent".to_string(),
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_string(),
            ),
            ("tracestate".to_string(), format!("k={}", "v".repeat(200))),
        ]);
        let parent = parent_in(&headers).unwrap();
        assert_eq!(parent.trace_state().header(), "");
        let long = format!(
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-{}",
            "0".repeat(MAX_TRACEPARENT)
        );
        assert!(!context_of(&long).span().span_context().is_valid());
    }

    #[test]
    fn a_clients_context_is_sampled_by_our_root_sampler_not_its_flag() {
        let unsampled = SpanContext::new(
            TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap(),
            SpanId::from_hex("b7ad6b7169203331").unwrap(),
            TraceFlags::default(),
            true,
            TraceState::default(),
        );
        // Before a pipeline starts there is no root sampler: nothing a client says is sampled.
        assert!(!resampled(&unsampled).is_sampled());
        set_root_sampler(Sampler::AlwaysOn);
        let taken = resampled(&unsampled);
        assert!(taken.is_sampled());
        assert_eq!(
            (taken.trace_id(), taken.span_id()),
            (unsampled.trace_id(), unsampled.span_id())
        );
    }

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
