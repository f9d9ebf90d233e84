//! W3C trace context for the check span (feature `otel`): which `traceparent` is believed, who
//! decides sampling when a client names the trace, and the link that stands in for a parent
//! when the `traceparent` may be a client's (the HTTP protocol, unless Envoy's tracer is on).

use std::sync::OnceLock;

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanContext, SpanKind, TraceContextExt, TraceFlags, TraceState};
use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SamplingDecision, ShouldSample};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::Carrier;

/// Makes `span` a child of the W3C trace context in `transport` (what Envoy sets: the gRPC
/// metadata, or the HTTP protocol's request headers), else of a `traceparent` among the
/// `request`'s own headers (the client's, when Envoy forwards it). A missing or malformed
/// `traceparent` leaves `span` a root: never an error. Nothing is parsed when tracing is off.
///
/// Only `traceparent` is read: a `tracestate` (up to 16 KiB a client chooses) would ride on
/// every span we export. A context from the request's headers is the client's word, so it
/// links the trace but does not choose sampling: the configured root sampler decides, as for a
/// trace of our own.
pub(super) fn adopt_parent(span: &Span, transport: &dyn Carrier, request: Option<&dyn Carrier>) {
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

/// Links `span`, left a root, to the context `claimed`'s `traceparent` names (see
/// [`super::link_claimed`]): a link carries the ids, never a parent or a sampling choice.
pub(super) fn link_claimed(span: &Span, claimed: &dyn Carrier) {
    if let Some(claimed) = parent_in(claimed) {
        span.add_link(claimed);
    }
}

/// The longest `traceparent` read: version 00 is 55 characters; later versions may append.
const MAX_TRACEPARENT: usize = 128;

/// A carrier's `traceparent`, and nothing else, for the W3C propagator.
struct TraceparentOnly<'a>(&'a dyn Carrier);

impl Extractor for TraceparentOnly<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        if key != "traceparent" {
            return None;
        }
        self.0.header(key).filter(|v| v.len() <= MAX_TRACEPARENT)
    }

    fn keys(&self) -> Vec<&str> {
        Vec::new()
    }
}

/// The valid span context a carrier's `traceparent` names.
fn parent_in(source: &dyn Carrier) -> Option<SpanContext> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanId, TraceId};

    /// The W3C context a `traceparent` value names, as [`adopt_parent`] reads it (invalid when it
    /// names none).
    fn context_of(traceparent: &str) -> Context {
        let headers =
            std::collections::HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
        parent_in(&headers)
            .map(|parent| Context::new().with_remote_span_context(parent))
            .unwrap_or_default()
    }

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
}
