//! cognito-authz: an Envoy `ext_authz` sidecar that verifies Amazon Cognito tokens.
//!
//! Envoy asks, for every request, whether the caller holds a valid Cognito token; the service
//! verifies it exactly as AWS prescribes and answers allow (with identity headers for the
//! upstream) or deny.
//!
//! # Layout
//! - [`config`]: environment variables and the TOML file, parsed then validated.
//! - [`jwks`]: the key store (fetch, refresh, refetch on unknown `kid`, outage tolerance).
//! - [`verify`]: the token checks and their stable reason codes.
//! - `testkit` (feature `testkit`): keys, token minting and a local JWKS server for tests.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
pub mod jwks;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod verify;

/// The current Unix time in whole seconds.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        // A clock before 1970 is broken; 0 makes every token look issued in the future.
        .unwrap_or(0)
}
