//! Span export over OTLP/gRPC: the OpenTelemetry SDK's tracer provider and OTLP exporter, fed
//! by a bounded queue of our own so that a slow or dead collector never blocks or slows a
//! check, and every span it cannot take is counted (`cognito_authz_trace_spans_dropped_total`).
//!
//! Why a queue of our own: the SDK's `BatchSpanProcessor` is bounded too, but keeps its count
//! of dropped spans to itself (it only logs it at shutdown), and an operator needs that count
//! in `/metrics` while it grows.

use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::Context;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{
    Sampler, SdkTracerProvider, Span, SpanData, SpanExporter, SpanProcessor,
};
use opentelemetry_sdk::Resource;

pub use super::settings::{SamplerChoice, TraceSettings};
use tokio::sync::mpsc;

impl SamplerChoice {
    /// What decides a trace that starts here (for the parent-based samplers, their root).
    fn root(self, ratio: f64) -> Sampler {
        match self {
            SamplerChoice::AlwaysOn | SamplerChoice::ParentBasedAlwaysOn => Sampler::AlwaysOn,
            SamplerChoice::AlwaysOff | SamplerChoice::ParentBasedAlwaysOff => Sampler::AlwaysOff,
            SamplerChoice::TraceIdRatio | SamplerChoice::ParentBasedTraceIdRatio => {
                Sampler::TraceIdRatioBased(ratio)
            }
        }
    }

    fn sampler(self, ratio: f64) -> Sampler {
        match self {
            SamplerChoice::AlwaysOn => Sampler::AlwaysOn,
            SamplerChoice::AlwaysOff => Sampler::AlwaysOff,
            SamplerChoice::TraceIdRatio => Sampler::TraceIdRatioBased(ratio),
            SamplerChoice::ParentBasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
            SamplerChoice::ParentBasedAlwaysOff => {
                Sampler::ParentBased(Box::new(Sampler::AlwaysOff))
            }
            SamplerChoice::ParentBasedTraceIdRatio => {
                Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio)))
            }
        }
    }
}

/// What the export thread is asked to do besides exporting.
enum Control {
    /// Export what is queued now, then answer.
    Flush(std::sync::mpsc::Sender<()>),
    /// Export what is queued, then stop.
    Shutdown(std::sync::mpsc::Sender<()>),
}

/// The bounded queue in front of the exporter: `on_end` never waits.
#[derive(Debug)]
struct QueueProcessor {
    spans: mpsc::Sender<SpanData>,
    control: Mutex<Option<mpsc::UnboundedSender<Control>>>,
}

impl QueueProcessor {
    /// Sends `make` to the export thread and waits up to `timeout` for its answer.
    fn ask(
        &self,
        make: fn(std::sync::mpsc::Sender<()>) -> Control,
        timeout: Duration,
    ) -> OTelSdkResult {
        let (done, wait) = std::sync::mpsc::channel();
        let sent = crate::lock(&self.control)
            .as_ref()
            .is_some_and(|control| control.send(make(done)).is_ok());
        if !sent {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        wait.recv_timeout(timeout)
            .map_err(|_| OTelSdkError::Timeout(timeout))
    }
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.spans.try_send(span).is_err() {
            super::counts()
                .dropped_queue_full
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.ask(Control::Flush, Duration::from_secs(5))
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let result = self.ask(Control::Shutdown, timeout);
        crate::lock(&self.control).take();
        result
    }
}

/// Exports what arrives on `spans` in batches, one export at a time.
async fn export_loop(
    exporter: impl SpanExporter,
    mut spans: mpsc::Receiver<SpanData>,
    mut control: mpsc::UnboundedReceiver<Control>,
    settings: TraceSettings,
) {
    let mut batch = Vec::with_capacity(settings.max_batch);
    loop {
        let deadline = tokio::time::sleep(settings.delay);
        tokio::pin!(deadline);
        // Fill a batch until it is full or the delay passes.
        let asked = loop {
            let room = settings.max_batch.saturating_sub(batch.len()).max(1);
            tokio::select! {
                received = spans.recv_many(&mut batch, room) => {
                    if received == 0 || batch.len() >= settings.max_batch {
                        break None;
                    }
                }
                () = &mut deadline => break None,
                asked = control.recv() => break asked,
            }
        };
        let stopping = matches!(asked, Some(Control::Shutdown(_)));
        if asked.is_some() {
            // Everything queued before the question goes out with this answer.
            while let Ok(span) = spans.try_recv() {
                batch.push(span);
            }
        }
        for chunk in std::mem::take(&mut batch).chunks(settings.max_batch.max(1)) {
            export(&exporter, chunk.to_vec(), settings.export_timeout).await;
        }
        match asked {
            Some(Control::Flush(done)) | Some(Control::Shutdown(done)) => {
                let _ = done.send(());
            }
            None => {}
        }
        if stopping || (spans.is_closed() && spans.is_empty()) {
            let _ = exporter.shutdown();
            return;
        }
    }
}

/// One export within `timeout`; its spans are counted as exported or dropped.
async fn export(exporter: &impl SpanExporter, batch: Vec<SpanData>, timeout: Duration) {
    let n = batch.len() as u64;
    if n == 0 {
        return;
    }
    let counter = match tokio::time::timeout(timeout, exporter.export(batch)).await {
        Ok(Ok(())) => &super::counts().exported,
        Ok(Err(_)) | Err(_) => &super::counts().dropped_export_failed,
    };
    counter.fetch_add(n, Ordering::Relaxed);
}

/// The installed pipeline; [`Tracing::shutdown`] exports what is queued.
pub struct Tracing {
    provider: SdkTracerProvider,
}

impl Tracing {
    /// Starts the export thread and the tracer provider for `settings` (whose endpoint is set).
    /// The thread runs its own single-threaded runtime, so exporting never takes a worker from
    /// the checks. Fails when the thread or the exporter cannot be made.
    pub fn start(settings: &TraceSettings) -> Result<Tracing, String> {
        let endpoint = settings
            .endpoint
            .clone()
            .ok_or("tracing needs OTEL_EXPORTER_OTLP_ENDPOINT")?;
        let resource = Resource::builder()
            .with_service_name(settings.service_name.clone())
            .build();
        let (spans_tx, spans_rx) = mpsc::channel(settings.max_queue.max(1));
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread_settings = settings.clone();
        let thread_resource = resource.clone();
        std::thread::Builder::new()
            .name("otlp-export".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(err) => {
                        let _ = ready_tx.send(Err(format!("the export runtime: {err}")));
                        return;
                    }
                };
                runtime.block_on(async move {
                    // tonic's channel belongs to the runtime it is made in: this one.
                    let built = opentelemetry_otlp::SpanExporter::builder()
                        .with_tonic()
                        .with_endpoint(endpoint)
                        .with_timeout(thread_settings.export_timeout)
                        .build();
                    let mut exporter = match built {
                        Ok(exporter) => exporter,
                        Err(err) => {
                            let _ = ready_tx.send(Err(format!("the OTLP exporter: {err}")));
                            return;
                        }
                    };
                    exporter.set_resource(&thread_resource);
                    let _ = ready_tx.send(Ok(()));
                    export_loop(exporter, spans_rx, control_rx, thread_settings).await;
                });
            })
            .map_err(|err| format!("the export thread: {err}"))?;
        ready_rx
            .recv()
            .map_err(|_| "the export thread stopped".to_string())??;
        let processor = QueueProcessor {
            spans: spans_tx,
            control: Mutex::new(Some(control_tx)),
        };
        super::set_root_sampler(settings.sampler.root(settings.ratio));
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(settings.sampler.sampler(settings.ratio))
            .with_resource(resource)
            .build();
        Ok(Tracing { provider })
    }

    /// The `tracing` layer that turns our spans ([`super::TARGET`]) into OpenTelemetry spans.
    pub fn layer<S>(&self) -> impl tracing_subscriber::Layer<S>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        use tracing_subscriber::Layer as _;
        let tracer = self.provider.tracer("cognito-authz");
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target(super::TARGET, tracing::Level::INFO),
            )
    }

    /// Exports what is queued (within `timeout`) and stops the export thread.
    pub fn shutdown(self, timeout: Duration) {
        if let Err(err) = self.provider.shutdown_with_timeout(timeout) {
            tracing::warn!(error = %err, "traces not all exported at shutdown");
        }
    }
}
