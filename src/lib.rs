//! cognito-authz: an Envoy `ext_authz` sidecar that verifies Amazon Cognito tokens.
//!
//! Envoy asks, for every request, whether the caller holds a valid Cognito token; the service
//! verifies it exactly as AWS prescribes and answers allow (with identity headers for the
//! upstream) or deny.
//!
//! # Layout
//! Lowest first; each module imports only from those above it in this list:
//! - [`clock`]: the one clock for everything that expires (system, or manual in tests).
//! - [`trace`]: OpenTelemetry spans (the check, JWKS, `GetUser`, Redis), W3C context, OTLP
//!   export through a bounded queue; off unless `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
//! - [`identity`]: token use, the compact identity, the managed identity headers.
//! - [`credential`]: where the token is (bearer, token header, cookie) and CORS preflights.
//! - [`pool`]: a configured user pool.
//! - [`jwks`]: the key store (fetch, refresh, refetch on unknown `kid`, outage tolerance).
//! - [`verify`]: the token checks and their stable reason codes.
//! - [`cache`]: the verified-token cache.
//! - [`revocation`]: explicit revocations and Cognito's `GetUser` answer.
//! - [`shared`]: revocations and verdicts shared between replicas through Redis.
//! - [`revocation_check`]: asking Cognito at most once per token per TTL, across replicas.
//! - [`header_plan`]: which headers every allow sets and removes, from the managed list.
//! - [`policy`]: route rules, `context_extensions` overrides, identity-header settings.
//! - [`metrics`]: Prometheus metrics.
//! - [`decision`]: the decision core: allow with identity, anonymous, or deny, as plain values.
//! - [`authz`]: Envoy's gRPC ext_authz protocol, a thin adapter over the core.
//! - [`http_authz`]: Envoy's HTTP ext_authz protocol, the other thin adapter.
//! - [`config`]: environment variables and the TOML file, parsed, validated, composed; every
//!   setting declared once in [`config::settings`].
//! - [`diagnostics`]: our own gRPC API (`VerifyToken`, `KeyStatus`).
//! - [`server`]: the `serve` runtime, by job: listeners (TCP, Unix socket, TLS), the admin
//!   listener and its operator-only control API, reload, graceful shutdown.
//! - `testkit` (feature `testkit`): keys, token minting and a local JWKS server for tests.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod authz;
pub mod cache;
pub mod clock;
pub mod config;
pub mod credential;
pub mod decision;
pub mod diagnostics;
pub mod header_plan;
pub mod headers;
pub mod http_authz;
pub mod identity;
pub mod jwks;
pub mod log_writer;
pub mod metrics;
pub mod policy;
pub mod pool;
pub mod revocation;
pub mod revocation_check;
pub mod server;
pub mod shared;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod trace;
pub mod verify;

/// Serialises a duration as fractional seconds (for `check-config` and `/config`).
pub(crate) mod secs {
    use serde::Serializer;
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

/// The current Unix time in whole seconds.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        // A clock before 1970 is broken; 0 makes every token look issued in the future.
        .unwrap_or(0)
}

/// Locks a mutex whose guarded data stays consistent even if a holder panicked (every critical
/// section here is a single insert, swap or read), so a poisoned lock is taken as it is.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Parses a switch, from a variable, a file or an Envoy override alike: `true` or `false` in any
/// letter case. Anything else (`1`, `yes`, empty) is an error that says what was found, never a
/// guess.
pub fn parse_bool(value: &str) -> Result<bool, String> {
    let value = value.trim();
    if value.eq_ignore_ascii_case("true") {
        Ok(true)
    } else if value.eq_ignore_ascii_case("false") {
        Ok(false)
    } else {
        Err(format!("'{value}' is not true or false"))
    }
}

/// Code generated from `proto/` by `build.rs`.
#[rustfmt::skip]
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod generated {
    /// The diagnostics API.
    pub mod diagnostics {
        tonic::include_proto!("cognito_authz.diagnostics.v1");
    }
    /// Encoded descriptor of the diagnostics API, for reflection.
    pub const DIAGNOSTICS_DESCRIPTOR: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/diagnostics_descriptor.bin"));
    /// Encoded descriptor of Envoy's ext_authz service and its imports, for reflection.
    pub const ENVOY_AUTHZ_DESCRIPTOR: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/envoy_authz_descriptor.bin"));
}

#[cfg(test)]
mod tests {
    use super::parse_bool;

    #[test]
    fn a_switch_is_true_or_false_in_any_case_and_nothing_else() {
        for (text, value) in [("true", true), (" FALSE ", false), ("True", true)] {
            assert_eq!(parse_bool(text), Ok(value), "{text}");
        }
        for text in ["1", "0", "yes", "no", "", "truee", "on"] {
            let problem = parse_bool(text).unwrap_err();
            assert!(
                problem.contains("is not true or false"),
                "{text}: {problem}"
            );
        }
    }

    #[test]
    fn a_poisoned_lock_is_still_taken() {
        let mutex = std::sync::Arc::new(std::sync::Mutex::new(1));
        let held = std::sync::Arc::clone(&mutex);
        let _ = std::thread::spawn(move || {
            let _guard = held.lock().unwrap();
            panic!("poison the lock");
        })
        .join();
        assert!(mutex.is_poisoned());
        assert_eq!(*super::lock(&mutex), 1);
    }
}
