//! OpenTelemetry's standard `OTEL_*` variables for traces, read and bounded like ours: a bad
//! value is an exit 2 naming the variable, where the SDK would fall back silently.

use super::*;

/// The trace settings; tracing is off unless an endpoint is set.
pub(super) fn trace_settings(var: Vars<'_>) -> Result<TraceSettings, ConfigError> {
    let endpoint = settings::text(var, &OTEL_TRACES_ENDPOINT, None)
        .or_else(|| settings::text(var, &OTEL_ENDPOINT, None))
        .map(|(name, url)| collector_url(name, url))
        .transpose()?;
    let service_name = settings::text(var, &OTEL_SERVICE_NAME, None)
        .map(|(_, name)| name.trim().to_string())
        .unwrap_or_default();
    let sampler = settings::choice(var, &OTEL_SAMPLER, None, &SamplerChoice::CHOICES)?;
    let ratio = settings::text(var, &OTEL_SAMPLER_ARG, None)
        .map(|(name, text)| ratio(name, &text))
        .transpose()?
        .unwrap_or(1.0);
    let millis = |setting| settings::number(var, setting, None).map(Duration::from_millis);
    let max_queue = settings::count(var, &OTEL_QUEUE, None)?;
    let max_batch = settings::count(var, &OTEL_BATCH, None)?;
    Ok(TraceSettings {
        endpoint,
        service_name,
        sampler,
        ratio,
        // A batch larger than the queue could never fill.
        max_batch: max_batch.min(max_queue),
        max_queue,
        delay: millis(&OTEL_DELAY)?,
        export_timeout: millis(&OTEL_EXPORT_TIMEOUT)?,
    })
}

/// An `http://` URL with a host. No `https://`: the exporter is built without TLS, and a
/// collector it cannot reach would lose every span; a collector beside the service (the node's
/// or the pod's) takes plain OTLP and forwards it over TLS.
fn collector_url(name: &'static str, url: String) -> Result<String, ConfigError> {
    let url = url.trim().to_string();
    if url.starts_with("https://") {
        return Err(ConfigError::invalid(
            name,
            format!(
                "'{url}': TLS to the collector is not supported; send to a collector beside \
                 the service (http://) and let it forward over TLS"
            ),
        ));
    }
    let host = url
        .strip_prefix("http://")
        .ok_or_else(|| ConfigError::invalid(name, format!("'{url}' is not an http:// URL")))?;
    if host.is_empty() || host.starts_with('/') {
        return Err(ConfigError::invalid(name, format!("'{url}' names no host")));
    }
    Ok(url)
}

/// A sampling ratio: a number from 0 to 1.
fn ratio(name: &'static str, text: &str) -> Result<f64, ConfigError> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|r| (0.0..=1.0).contains(r))
        .ok_or_else(|| ConfigError::invalid(name, format!("'{text}' is not a number from 0 to 1")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(vars: &[(&str, &str)]) -> Result<TraceSettings, ConfigError> {
        trace_settings(&|k: &str| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn tracing_is_off_without_an_endpoint_and_takes_the_standard_defaults() {
        let settings = read(&[]).unwrap();
        assert_eq!(settings.endpoint, None);
        assert_eq!(settings.service_name, "cognito-authz");
        assert_eq!(settings.sampler, SamplerChoice::ParentBasedAlwaysOn);
        assert_eq!(settings.ratio, 1.0);
        assert_eq!((settings.max_queue, settings.max_batch), (2048, 512));
        assert_eq!(settings.delay, Duration::from_secs(5));
        assert_eq!(settings.export_timeout, Duration::from_secs(30));
    }

    #[test]
    fn the_traces_endpoint_overrides_the_general_one() {
        let settings = read(&[
            (ENV_OTEL_ENDPOINT, "http://collector:4317"),
            (ENV_OTEL_TRACES_ENDPOINT, "http://traces:4317"),
        ])
        .unwrap();
        assert_eq!(settings.endpoint.as_deref(), Some("http://traces:4317"));
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        for (vars, name) in [
            (
                vec![(ENV_OTEL_ENDPOINT, "collector:4317")],
                ENV_OTEL_ENDPOINT,
            ),
            (
                vec![(ENV_OTEL_TRACES_ENDPOINT, "http://")],
                ENV_OTEL_TRACES_ENDPOINT,
            ),
            (vec![(ENV_OTEL_SAMPLER, "sometimes")], ENV_OTEL_SAMPLER),
            (vec![(ENV_OTEL_SAMPLER_ARG, "1.5")], ENV_OTEL_SAMPLER_ARG),
            (vec![(ENV_OTEL_SAMPLER_ARG, "NaN")], ENV_OTEL_SAMPLER_ARG),
            (vec![(ENV_OTEL_QUEUE, "0")], ENV_OTEL_QUEUE),
            (vec![(ENV_OTEL_DELAY, "-1")], ENV_OTEL_DELAY),
            (
                vec![(ENV_OTEL_EXPORT_TIMEOUT, "99999999999")],
                ENV_OTEL_EXPORT_TIMEOUT,
            ),
        ] {
            let err = read(&vars).expect_err(name).to_string();
            assert!(err.contains(name), "{err}");
        }
        let settings = read(&[
            (ENV_OTEL_SAMPLER, "TraceIdRatio"),
            (ENV_OTEL_SAMPLER_ARG, "0.01"),
        ])
        .unwrap();
        assert_eq!(
            (settings.sampler, settings.ratio),
            (SamplerChoice::TraceIdRatio, 0.01)
        );
    }
}
