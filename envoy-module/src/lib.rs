//! cognito-authz inside Envoy: the sidecar's decision core (verifier, key store, cache, policy,
//! header plan, reasons, RFC 6750 denials) as an Envoy 1.40 dynamic module, an HTTP filter with
//! no hop. Build with `cargo build --release -p cognito-authz-envoy` and load
//! `libcognito_authz_envoy.so` by name through `ENVOY_DYNAMIC_MODULES_SEARCH_PATH`
//! (`envoy/envoy.module.yaml`).
//!
//! # Layout
//! - [`filter`]: the filter's logic, safe and testable without Envoy: the config (TOML, as
//!   `serve` reads it), the per-route overrides, one stream's check, decided on the worker
//!   thread when no network is needed and on the module's runtime otherwise.
//! - `abi`: the C ABI (hand-written from Envoy's `abi.h`), the only module with `unsafe`; its
//!   `unused` part holds the hooks Envoy requires that this filter has no use for, its `issued`
//!   part the per-route configs this module made (the only ones it reads).
#![deny(unsafe_code)]
#![warn(missing_docs)]

// Fault injection panics on a request header: for the test build only, never an optimised one.
#[cfg(all(feature = "fault-injection", not(debug_assertions)))]
compile_error!("the fault-injection feature is for the tests' debug build only");

#[allow(unsafe_code)]
mod abi;
pub mod filter;

pub use abi::ABI_VERSION;
