//! Prometheus metrics: decisions by decision and reason, check latency, key fetches by pool and
//! result, keys per pool. Labels are small closed sets (reason codes, configured pool ids).

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::cache::{CacheCounters, Lookup, LookupObserver};
use crate::jwks::FetchObserver;
use crate::revocation_check::CheckObserver;
use crate::shared::SharedObserver;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    decision: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FetchLabels {
    pool: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    pool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TimeoutLabels {
    listener: &'static str,
    timeout: &'static str,
}

/// Where the counts go instead of the registry: Envoy's stats, when the decision core runs
/// inside Envoy as the dynamic module. [`Metrics::with_observer`] forwards every count the
/// decision core makes to it, and counts nothing itself: one count, in one place. Its methods
/// may be called from any thread (a worker's, or the runtime's that fetches keys and talks to
/// Redis). Check latency is not forwarded: the module times a check itself, on the worker thread
/// that carries out the decision.
pub trait MetricsObserver: Send + Sync {
    /// One decision: `allow`, `allow_anonymous` or `deny`, and its reason code.
    fn decision(&self, decision: &'static str, reason: &'static str);
    /// One verified-token cache lookup: `hit`, `miss` or `stale` ([`crate::cache::Lookup`]).
    fn cache_lookup(&self, result: &'static str);
    /// One key fetch for `pool` ended with `result` (`ok` or an error label); `keys` are held.
    fn key_fetch(&self, pool: &str, result: &'static str, keys: usize);
    /// One revocation check ended with `result`.
    fn revocation_check(&self, result: &'static str);
    /// The Redis link is up or down.
    fn redis_up(&self, up: bool);
    /// A Redis operation `op` failed or timed out.
    fn redis_error(&self, op: &'static str);
    /// `count` explicit revocations are held.
    fn revocations_held(&self, count: usize);
    /// A revocation was refused, for `reason`.
    fn revocation_refused(&self, reason: &'static str);
}

struct Inner {
    registry: Registry,
    observer: Option<Arc<dyn MetricsObserver>>,
    decisions: Family<DecisionLabels, Counter>,
    check_duration: Histogram,
    fetches: Family<FetchLabels, Counter>,
    keys: Family<PoolLabels, Gauge>,
    cache: Family<CacheLabels, Counter>,
    revocation_checks: Family<CacheLabels, Counter>,
    redis_up: Gauge,
    redis_errors: Family<OpLabels, Counter>,
    revocations: Gauge,
    revocations_refused: Family<ReasonLabels, Counter>,
    connections: Family<ListenerLabels, Gauge>,
    connections_refused: Family<ListenerLabels, Counter>,
    connections_timed_out: Family<TimeoutLabels, Counter>,
}

/// The service's metrics; a cheap-to-clone handle.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered under `cognito_authz_`.
    pub fn new() -> Metrics {
        Metrics::build(None)
    }

    /// Metrics that forward every count of the decision core to `observer` instead of counting
    /// them in the registry (which then holds only the listeners' and the trace pipeline's,
    /// none of which the dynamic module has).
    pub fn with_observer(observer: Arc<dyn MetricsObserver>) -> Metrics {
        Metrics::build(Some(observer))
    }

    fn build(observer: Option<Arc<dyn MetricsObserver>>) -> Metrics {
        let mut registry = Registry::with_prefix("cognito_authz");
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "decisions",
            "Authorization decisions by decision (allow, allow_anonymous, deny) and reason code",
            decisions.clone(),
        );
        // 25 µs to about 1.6 s: a cache hit, a cold RSA verify, a refetch under a slow IdP.
        let check_duration = Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(25e-6, 2.0, 17),
        );
        registry.register_with_unit(
            "check_duration",
            "Time to decide one Check, from request to response",
            Unit::Seconds,
            check_duration.clone(),
        );
        let fetches = Family::<FetchLabels, Counter>::default();
        registry.register(
            "jwks_fetches",
            "JWKS fetches by pool and result (ok or an error label)",
            fetches.clone(),
        );
        let keys = Family::<PoolLabels, Gauge>::default();
        registry.register("jwks_keys", "Verification keys held per pool", keys.clone());
        let cache = Family::<CacheLabels, Counter>::default();
        registry.register(
            "token_cache_lookups",
            "Verified-token cache lookups by result (hit, miss, stale)",
            cache.clone(),
        );
        let revocation_checks = Family::<CacheLabels, Counter>::default();
        registry.register(
            "revocation_checks",
            "Revocation checks by result (cached, shared, valid, revoked, grace, unverifiable, timeout, unreachable, throttled, bad_answer, busy)",
            revocation_checks.clone(),
        );
        let redis_up = Gauge::default();
        registry.register(
            "redis_up",
            "1 while the Redis share is reachable (0 also when none is configured)",
            redis_up.clone(),
        );
        let redis_errors = Family::<OpLabels, Counter>::default();
        registry.register(
            "redis_errors",
            "Redis operations that failed or timed out, by operation",
            redis_errors.clone(),
        );
        let revocations = Gauge::default();
        registry.register(
            "revocations",
            "Explicit revocations held (AUTHZ_MAX_REVOCATIONS at most)",
            revocations.clone(),
        );
        let revocations_refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "revocations_refused",
            "Revocations refused, from the admin API or Redis, by reason (full, too_large, future)",
            revocations_refused.clone(),
        );
        let connections = Family::<ListenerLabels, Gauge>::default();
        registry.register(
            "connections",
            "Client connections open, by listener (grpc, http, admin)",
            connections.clone(),
        );
        let connections_refused = Family::<ListenerLabels, Counter>::default();
        registry.register(
            "connections_refused",
            "Connections closed on arrival because the listener was at its cap, by listener",
            connections_refused.clone(),
        );
        let connections_timed_out = Family::<TimeoutLabels, Counter>::default();
        registry.register(
            "connections_timed_out",
            "Connections closed by a timeout, by listener and timeout (header_read: no complete \
             first request or handshake in time; idle: no request for the idle timeout)",
            connections_timed_out.clone(),
        );
        registry.register_collector(Box::new(SpanCollector));
        Metrics {
            inner: Arc::new(Inner {
                observer,
                revocations,
                revocations_refused,
                revocation_checks,
                redis_up,
                redis_errors,
                registry,
                decisions,
                check_duration,
                fetches,
                keys,
                cache,
                connections,
                connections_refused,
                connections_timed_out,
            }),
        }
    }

    /// A connection on `listener` opened (`+1`) or closed (`-1`).
    pub fn connections_open(&self, listener: &'static str, delta: i64) {
        self.inner
            .connections
            .get_or_create(&ListenerLabels { listener })
            .inc_by(delta);
    }

    /// A connection on `listener` was closed on arrival: the listener was at its cap.
    pub fn connection_refused(&self, listener: &'static str) {
        self.inner
            .connections_refused
            .get_or_create(&ListenerLabels { listener })
            .inc();
    }

    /// A connection on `listener` was closed by `timeout` (`header_read` or `idle`).
    pub fn connection_timed_out(&self, listener: &'static str, timeout: &'static str) {
        self.inner
            .connections_timed_out
            .get_or_create(&TimeoutLabels { listener, timeout })
            .inc();
    }

    /// The cache's hit, miss and stale counters (or the observer they go to).
    pub fn cache_counters(&self) -> CacheCounters {
        if let Some(observer) = &self.inner.observer {
            return CacheCounters {
                observer: Some(Arc::new(ForwardLookups(Arc::clone(observer)))),
                ..CacheCounters::default()
            };
        }
        let [hits, misses, stale] = Lookup::ALL.map(|lookup| {
            self.inner
                .cache
                .get_or_create(&CacheLabels {
                    result: lookup.as_str(),
                })
                .clone()
        });
        CacheCounters {
            hits,
            misses,
            stale,
            observer: None,
        }
    }

    /// Whether a decision's latency is recorded here (not when an observer takes the counts:
    /// the dynamic module times its checks in Envoy's stats itself).
    pub fn times_checks(&self) -> bool {
        self.inner.observer.is_none()
    }

    /// Counts one decision and its latency.
    pub fn decision(&self, decision: &'static str, reason: &'static str, seconds: f64) {
        if let Some(observer) = &self.inner.observer {
            observer.decision(decision, reason);
            return;
        }
        self.inner
            .decisions
            .get_or_create(&DecisionLabels { decision, reason })
            .inc();
        self.inner.check_duration.observe(seconds);
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.inner.registry);
        out
    }
}

/// The cache's lookups, to the observer that replaces the registry.
struct ForwardLookups(Arc<dyn MetricsObserver>);

impl LookupObserver for ForwardLookups {
    fn lookup(&self, lookup: Lookup) {
        self.0.cache_lookup(lookup.as_str());
    }
}

/// The trace pipeline's span counts ([`crate::trace::counts`]), read at each scrape.
#[derive(Debug)]
struct SpanCollector;

impl prometheus_client::collector::Collector for SpanCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric as _;
        use prometheus_client::metrics::counter::ConstCounter;
        use std::sync::atomic::Ordering::Relaxed;
        let counts = crate::trace::counts();
        let exported = ConstCounter::new(counts.exported.load(Relaxed));
        exported.encode(encoder.encode_descriptor(
            "trace_spans_exported",
            "Spans the OTLP collector accepted",
            None,
            exported.metric_type(),
        )?)?;
        let mut dropped = encoder.encode_descriptor(
            "trace_spans_dropped",
            "Spans given up on, by reason (queue_full: the export queue was full; \
             export_failed: the collector refused or did not answer in time)",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (reason, count) in [
            ("queue_full", &counts.dropped_queue_full),
            ("export_failed", &counts.dropped_export_failed),
        ] {
            ConstCounter::new(count.load(Relaxed))
                .encode(dropped.encode_family(&ReasonLabels { reason })?)?;
        }
        Ok(())
    }
}

impl FetchObserver for Metrics {
    fn fetched(&self, pool_id: &str, result: &'static str, keys: usize) {
        if let Some(observer) = &self.inner.observer {
            observer.key_fetch(pool_id, result, keys);
            return;
        }
        self.inner
            .fetches
            .get_or_create(&FetchLabels {
                pool: pool_id.to_string(),
                result,
            })
            .inc();
        self.inner
            .keys
            .get_or_create(&PoolLabels {
                pool: pool_id.to_string(),
            })
            .set(i64::try_from(keys).unwrap_or(i64::MAX));
    }
}

impl CheckObserver for Metrics {
    fn revocation_check(&self, result: &'static str) {
        if let Some(observer) = &self.inner.observer {
            observer.revocation_check(result);
            return;
        }
        self.inner
            .revocation_checks
            .get_or_create(&CacheLabels { result })
            .inc();
    }
}

impl crate::revocation::ListObserver for Metrics {
    fn held(&self, count: usize) {
        if let Some(observer) = &self.inner.observer {
            observer.revocations_held(count);
            return;
        }
        self.inner
            .revocations
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    fn refused(&self, why: crate::revocation::Refused) {
        if let Some(observer) = &self.inner.observer {
            observer.revocation_refused(why.as_str());
            return;
        }
        self.inner
            .revocations_refused
            .get_or_create(&ReasonLabels {
                reason: why.as_str(),
            })
            .inc();
    }
}

impl SharedObserver for Metrics {
    fn redis_up(&self, up: bool) {
        if let Some(observer) = &self.inner.observer {
            observer.redis_up(up);
            return;
        }
        self.inner.redis_up.set(i64::from(up));
    }

    fn redis_error(&self, op: &'static str) {
        if let Some(observer) = &self.inner.observer {
            observer.redis_error(op);
            return;
        }
        self.inner
            .redis_errors
            .get_or_create(&OpLabels { op })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_names_every_metric() {
        let m = Metrics::new();
        m.decision("deny", "expired", 0.0001);
        m.fetched("us-east-1_A", "ok", 2);
        m.fetched("us-east-1_A", "timeout", 2);
        m.connections_open("http", 1);
        m.connection_refused("grpc");
        m.connection_timed_out("admin", "idle");
        let text = m.encode();
        for needle in [
            "cognito_authz_decisions_total{decision=\"deny\",reason=\"expired\"} 1",
            "cognito_authz_check_duration_seconds_count 1",
            "cognito_authz_jwks_fetches_total{pool=\"us-east-1_A\",result=\"timeout\"} 1",
            "cognito_authz_jwks_keys{pool=\"us-east-1_A\"} 2",
            "# TYPE cognito_authz_trace_spans_exported counter",
            "cognito_authz_trace_spans_exported_total 0",
            "cognito_authz_trace_spans_dropped_total{reason=\"queue_full\"} 0",
            "cognito_authz_trace_spans_dropped_total{reason=\"export_failed\"} 0",
            "cognito_authz_connections{listener=\"http\"} 1",
            "cognito_authz_connections_refused_total{listener=\"grpc\"} 1",
            "cognito_authz_connections_timed_out_total{listener=\"admin\",timeout=\"idle\"} 1",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }

    /// What the observer heard, one line per call.
    #[derive(Default)]
    struct Heard(std::sync::Mutex<Vec<String>>);

    impl Heard {
        fn push(&self, line: String) {
            self.0.lock().unwrap().push(line);
        }
    }

    impl MetricsObserver for Heard {
        fn decision(&self, decision: &'static str, reason: &'static str) {
            self.push(format!("decision {decision} {reason}"));
        }
        fn cache_lookup(&self, result: &'static str) {
            self.push(format!("cache {result}"));
        }
        fn key_fetch(&self, pool: &str, result: &'static str, keys: usize) {
            self.push(format!("fetch {pool} {result} {keys}"));
        }
        fn revocation_check(&self, result: &'static str) {
            self.push(format!("check {result}"));
        }
        fn redis_up(&self, up: bool) {
            self.push(format!("redis_up {up}"));
        }
        fn redis_error(&self, op: &'static str) {
            self.push(format!("redis_error {op}"));
        }
        fn revocations_held(&self, count: usize) {
            self.push(format!("held {count}"));
        }
        fn revocation_refused(&self, reason: &'static str) {
            self.push(format!("refused {reason}"));
        }
    }

    /// With an observer every count goes there, once, and the registry counts none of them:
    /// the module's Envoy stats replace the registry, they do not double it.
    #[test]
    fn an_observer_gets_every_count_and_the_registry_none() {
        use crate::revocation::ListObserver as _;
        let heard = Arc::new(Heard::default());
        let m = Metrics::with_observer(heard.clone());
        m.decision("deny", "expired", 0.0001);
        let cache = m.cache_counters();
        let table = crate::cache::TokenCache::with_counters(1, cache);
        let _ = table.get(&[0; 16], 0, 0, |_, _| true);
        m.fetched("us-east-1_A", "ok", 2);
        m.revocation_check("cached");
        m.redis_up(true);
        m.redis_error("get");
        m.held(3);
        m.refused(crate::revocation::Refused::Full);
        assert_eq!(
            *heard.0.lock().unwrap(),
            [
                "decision deny expired",
                "cache miss",
                "fetch us-east-1_A ok 2",
                "check cached",
                "redis_up true",
                "redis_error get",
                "held 3",
                "refused full",
            ]
        );
        let text = m.encode();
        for absent in [
            "cognito_authz_decisions_total{",
            "cognito_authz_check_duration_seconds_count 1",
            "cognito_authz_token_cache_lookups_total{",
            "cognito_authz_jwks_fetches_total{",
            "cognito_authz_jwks_keys{",
            "cognito_authz_revocation_checks_total{",
            "\ncognito_authz_redis_up 1",
            "cognito_authz_redis_errors_total{",
            "\ncognito_authz_revocations 3",
            "cognito_authz_revocations_refused_total{",
        ] {
            assert!(!text.contains(absent), "{absent} counted in\n{text}");
        }
    }
}
