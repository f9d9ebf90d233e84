//! The trace settings as the configuration reads them (the standard `OTEL_*` variables): plain
//! data, present whether or not the exporter is built in.

use std::time::Duration;

use serde::Serialize;

/// Which spans are kept (`OTEL_TRACES_SAMPLER`, with `OTEL_TRACES_SAMPLER_ARG` as the ratio).
/// Shown (`check-config`) by the names the variable takes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum SamplerChoice {
    /// `always_on`.
    #[serde(rename = "always_on")]
    AlwaysOn,
    /// `always_off`.
    #[serde(rename = "always_off")]
    AlwaysOff,
    /// `traceidratio`.
    #[serde(rename = "traceidratio")]
    TraceIdRatio,
    /// `parentbased_always_on` (the default: follow the caller, sample roots).
    #[serde(rename = "parentbased_always_on")]
    ParentBasedAlwaysOn,
    /// `parentbased_always_off`.
    #[serde(rename = "parentbased_always_off")]
    ParentBasedAlwaysOff,
    /// `parentbased_traceidratio`.
    #[serde(rename = "parentbased_traceidratio")]
    ParentBasedTraceIdRatio,
}

impl SamplerChoice {
    /// The names `OTEL_TRACES_SAMPLER` takes.
    pub const CHOICES: [(&'static str, SamplerChoice); 6] = [
        ("always_on", SamplerChoice::AlwaysOn),
        ("always_off", SamplerChoice::AlwaysOff),
        ("traceidratio", SamplerChoice::TraceIdRatio),
        ("parentbased_always_on", SamplerChoice::ParentBasedAlwaysOn),
        (
            "parentbased_always_off",
            SamplerChoice::ParentBasedAlwaysOff,
        ),
        (
            "parentbased_traceidratio",
            SamplerChoice::ParentBasedTraceIdRatio,
        ),
    ];
}

/// The `OTEL_*` settings, read and bounded by the configuration like ours.
#[derive(Debug, Clone, Serialize)]
pub struct TraceSettings {
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`): the collector's
    /// OTLP/gRPC address. Unset: tracing is off.
    pub endpoint: Option<String>,
    /// `OTEL_SERVICE_NAME`.
    pub service_name: String,
    /// `OTEL_TRACES_SAMPLER`.
    pub sampler: SamplerChoice,
    /// `OTEL_TRACES_SAMPLER_ARG`, for the ratio samplers.
    pub ratio: f64,
    /// `OTEL_BSP_MAX_QUEUE_SIZE`: spans waiting for export; one more is dropped and counted.
    pub max_queue: usize,
    /// `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`.
    pub max_batch: usize,
    /// `OTEL_BSP_SCHEDULE_DELAY`: the longest a span waits for a batch to fill.
    #[serde(with = "crate::secs")]
    pub delay: Duration,
    /// `OTEL_BSP_EXPORT_TIMEOUT`: one export's limit; its spans are dropped after it.
    #[serde(with = "crate::secs")]
    pub export_timeout: Duration,
}
