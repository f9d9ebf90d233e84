//! Configuration: environment variables and an optional TOML file, parsed, validated, then used.
//!
//! Layering, lowest to highest: built-in defaults, then the config file, then the environment.
//! Pools are the exception to plain overriding: the file may list several pools, and the
//! environment describes at most one (the app's own `AWS_COGNITO_USER_POOL_ID`). When that pool
//! id also appears in the file, the environment's values override that pool's fields; otherwise
//! it is added to the file's pools.
//!
//! Every scalar setting is declared once in [`settings`] (variable, file key, default, bounds,
//! doc line); its readers do the layering and name the variable or key in every exit-2 message.
//! The sections live in their own files: [`server`] for `[server]`, [`pools`] for the pools;
//! this file composes them.
//!
//! Why no layering crate (figment, config): their environment providers map variables to keys
//! by a prefix and a naming rule, while ours are the app's own names (`AWS_COGNITO_*`) beside
//! our own (`COGNITO_*`, `AUTHZ_*`); the pool merge above, comma lists and the exit-2 message
//! naming the exact variable or file key would stay hand-written around either crate.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::identity::TokenUsePolicy;
use crate::jwks::{
    JwksSettings, DEFAULT_JWKS_MAX_BYTES, DEFAULT_JWKS_MIN_REFETCH_SECS, DEFAULT_JWKS_REFRESH_SECS,
    DEFAULT_JWKS_RETRY_MAX_MS, DEFAULT_JWKS_RETRY_MIN_MS, DEFAULT_JWKS_TIMEOUT_MS,
};
use crate::policy::{
    IdentitySpec, PolicyError, RouteConfig, RouteDefaults, RouteSpec, DEFAULT_ALLOW_PREFLIGHT,
};
pub use crate::pool::PoolConfig;

use crate::revocation_check::{self, OnUnavailable, RevocationMode, RevocationSettings};
use crate::trace::settings::{SamplerChoice, TraceSettings};

pub mod limits;
mod pools;
mod server;
pub mod settings;
mod tracing;

use self::pools::*;
use self::server::*;
pub use self::server::{AdminToken, ServerConfig, SigningKeys, TlsFiles};
use self::settings::*;
use self::tracing::trace_settings;

/// Pool id of the single pool described by the environment (the app's variable).
pub const ENV_POOL_ID: &str = "AWS_COGNITO_USER_POOL_ID";
/// App client id(s) of that pool: one id or a comma-separated list.
pub const ENV_CLIENT_IDS: &str = "AWS_COGNITO_USER_POOL_CLIENT_ID";
/// Region, used only when the pool id carries none (`us-east-1_AbC` carries `us-east-1`).
pub const ENV_REGION: &str = "AWS_DEFAULT_REGION";
/// Expected `iss`, overriding the two AWS forms derived from the pool id.
pub const ENV_ISSUER: &str = "COGNITO_ISSUER";
/// Where to fetch the pool's keys, overriding `{issuer}/.well-known/jwks.json`.
pub const ENV_JWKS_URI: &str = "COGNITO_JWKS_URI";
/// Token use the pool accepts: `access` (default), `id` or `any`.
pub const ENV_TOKEN_USE: &str = "COGNITO_TOKEN_USE";
/// Clock-skew leeway in seconds applied to `exp`, `nbf` and `iat`.
pub const ENV_LEEWAY: &str = "COGNITO_CLOCK_LEEWAY_SECONDS";
/// Seconds between background JWKS refreshes.
pub const ENV_JWKS_REFRESH: &str = "COGNITO_JWKS_REFRESH_SECONDS";
/// Penalty window in seconds: at most one JWKS fetch per pool per window for unknown `kid`s.
pub const ENV_JWKS_MIN_REFETCH: &str = "COGNITO_JWKS_MIN_REFETCH_SECONDS";
/// Timeout in milliseconds for one JWKS fetch (connect, send and read together).
pub const ENV_JWKS_TIMEOUT_MS: &str = "COGNITO_JWKS_TIMEOUT_MS";
/// Path of the TOML config file (also `--config`).
pub const ENV_CONFIG_FILE: &str = "COGNITO_AUTHZ_CONFIG";
/// Verified tokens to cache (0 disables the cache).
pub const ENV_TOKEN_CACHE_SIZE: &str = "COGNITO_TOKEN_CACHE_SIZE";
/// Address of the gRPC listener (Envoy's ext_authz, health, reflection, diagnostics).
pub const ENV_GRPC_ADDR: &str = "AUTHZ_GRPC_ADDR";
/// Address of the admin HTTP listener (`/metrics`, `/healthz`, `/readyz`).
pub const ENV_ADMIN_ADDR: &str = "AUTHZ_ADMIN_ADDR";
/// Tokio worker threads for `serve` (default: one per core).
pub const ENV_WORKER_THREADS: &str = "AUTHZ_WORKER_THREADS";
/// PEM certificate chain for the gRPC listener: setting it (with the key) turns TLS on.
pub const ENV_TLS_CERT: &str = "AUTHZ_TLS_CERT";
/// PEM private key for the gRPC listener.
pub const ENV_TLS_KEY: &str = "AUTHZ_TLS_KEY";
/// PEM CA bundle: setting it requires clients (Envoy) to present a certificate it signed.
pub const ENV_TLS_CLIENT_CA: &str = "AUTHZ_TLS_CLIENT_CA";
/// How long a new connection has to send its first request (TLS handshake included), and an
/// HTTP/1.1 request its headers, in seconds.
pub const ENV_HEADER_READ_TIMEOUT: &str = "AUTHZ_HEADER_READ_TIMEOUT_SECONDS";
/// How long an HTTP or admin connection may sit with no request in flight, in seconds.
pub const ENV_IDLE_TIMEOUT: &str = "AUTHZ_IDLE_TIMEOUT_SECONDS";
/// HTTP/2 keep-alive: seconds between pings on a quiet connection.
pub const ENV_KEEPALIVE: &str = "AUTHZ_KEEPALIVE_SECONDS";
/// HTTP/2 keep-alive: seconds a ping has to be answered before the connection is closed.
pub const ENV_KEEPALIVE_TIMEOUT: &str = "AUTHZ_KEEPALIVE_TIMEOUT_SECONDS";
/// The longest one request may take, in seconds.
pub const ENV_REQUEST_TIMEOUT: &str = "AUTHZ_REQUEST_TIMEOUT_SECONDS";
/// Connections open at once on the gRPC listener.
pub const ENV_GRPC_MAX_CONNECTIONS: &str = "AUTHZ_GRPC_MAX_CONNECTIONS";
/// Connections open at once on the HTTP ext_authz listener.
pub const ENV_HTTP_MAX_CONNECTIONS: &str = "AUTHZ_HTTP_MAX_CONNECTIONS";
/// Connections open at once on the admin listener.
pub const ENV_ADMIN_MAX_CONNECTIONS: &str = "AUTHZ_ADMIN_MAX_CONNECTIONS";
/// Dry-run (shadow) mode: decide, log and count, but allow every request (`true`/`false`).
pub const ENV_DRY_RUN: &str = "AUTHZ_DRY_RUN";
/// Address of the HTTP ext_authz listener (Envoy's `http_service`): `host:port` or
/// `unix:/path`. Off when unset.
pub const ENV_HTTP_ADDR: &str = "AUTHZ_HTTP_ADDR";
/// Whether a `traceparent` at the HTTP ext_authz listener is Envoy's own (`true`: Envoy's
/// tracer is on and replaces a client's) or may be a client's (`false`, the default).
pub const ENV_HTTP_TRUST_TRACEPARENT: &str = "AUTHZ_HTTP_TRUST_TRACEPARENT";
/// Dynamic metadata per decision: `minimal` (default: decision, reason, sub) or `full` (also
/// rule, pool, token_use).
pub const ENV_DECISION_METADATA: &str = "AUTHZ_DECISION_METADATA";
/// Cognito's API endpoint for the environment's pool (`GetUser`), overriding
/// `https://cognito-idp.{region}.amazonaws.com/`.
pub const ENV_IDP_ENDPOINT: &str = "COGNITO_IDP_ENDPOINT";
/// Service-wide revocation checks: `off` (default) or `cognito`.
pub const ENV_REVOCATION: &str = "COGNITO_REVOCATION";
/// Seconds a Cognito verdict on a token is trusted.
pub const ENV_REVOCATION_TTL: &str = "COGNITO_REVOCATION_TTL_SECONDS";
/// When Cognito gives no verdict: `deny` (default, 503) or `grace` (accept a recent verdict).
pub const ENV_REVOCATION_ON_UNAVAILABLE: &str = "COGNITO_REVOCATION_ON_UNAVAILABLE";
/// How old a verdict `grace` accepts, in seconds.
pub const ENV_REVOCATION_GRACE: &str = "COGNITO_REVOCATION_GRACE_SECONDS";
/// Timeout of one `GetUser` call, in milliseconds.
pub const ENV_REVOCATION_TIMEOUT_MS: &str = "COGNITO_REVOCATION_TIMEOUT_MS";
/// `GetUser` calls in flight per pool.
pub const ENV_REVOCATION_MAX_CONCURRENT: &str = "COGNITO_REVOCATION_MAX_CONCURRENT";
/// Tokens `GetUser` cannot judge on routes that require the check: `deny` (default) or `allow`.
pub const ENV_REVOCATION_UNVERIFIABLE: &str = "COGNITO_REVOCATION_UNVERIFIABLE";
/// Redis shared by every replica (`redis://` or `rediss://`): revocations and verdicts. In
/// cluster mode, one or more seed nodes, comma-separated.
pub const ENV_REDIS_URL: &str = "AUTHZ_REDIS_URL";
/// Whether [`ENV_REDIS_URL`] is a Redis Cluster's (`false` by default).
pub const ENV_REDIS_CLUSTER: &str = "AUTHZ_REDIS_CLUSTER";
/// Whether `/readyz` fails while Redis is down (`false` by default).
pub const ENV_REDIS_REQUIRED: &str = "AUTHZ_REDIS_REQUIRED";
/// Log format: `text` (default) or `json`.
pub const ENV_LOG_FORMAT: &str = "AUTHZ_LOG_FORMAT";
/// Let CORS preflights through as anonymous on every route that does not say otherwise
/// (`true`, or `false`, the default: the shipped Envoy configs answer them at the edge).
pub const ENV_ALLOW_PREFLIGHT: &str = "AUTHZ_ALLOW_PREFLIGHT";
/// A file holding the control API's bearer secret (`/revocations`, `/config`). Without one
/// (or [`ENV_ADMIN_TOKEN`]) the control API is off.
pub const ENV_ADMIN_TOKEN_FILE: &str = "AUTHZ_ADMIN_TOKEN_FILE";
/// The control API's bearer secret itself, for platforms that inject secrets as variables
/// (ECS task `secrets`); prefer [`ENV_ADMIN_TOKEN_FILE`] elsewhere.
pub const ENV_ADMIN_TOKEN: &str = "AUTHZ_ADMIN_TOKEN";
/// Most explicit revocations held (admin API and Redis alike); one more is refused.
pub const ENV_MAX_REVOCATIONS: &str = "AUTHZ_MAX_REVOCATIONS";
/// Our diagnostics service (`VerifyToken`, `KeyStatus`) and gRPC reflection on the gRPC
/// listener: `auto` (the default: on only when it listens on loopback or a Unix socket), `on`
/// or `off`. `VerifyToken` can make `GetUser` calls against the account's quota.
pub const ENV_DIAGNOSTICS: &str = "AUTHZ_DIAGNOSTICS";
/// A file holding the keys that sign (HMAC-SHA256) what replicas share through Redis, one a
/// line, for a Redis that others can write: every key signs, any verifies, values signed with
/// none are ignored.
pub const ENV_REDIS_SIGNING_KEY_FILE: &str = "AUTHZ_REDIS_SIGNING_KEY_FILE";
/// OpenTelemetry's standard variables (traces): the collector's OTLP/gRPC endpoint; unset, no
/// traces are made.
pub const ENV_OTEL_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// The traces-only form of [`ENV_OTEL_ENDPOINT`], which it overrides.
pub const ENV_OTEL_TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
/// The service name on our spans.
pub const ENV_OTEL_SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
/// Which traces are kept.
pub const ENV_OTEL_SAMPLER: &str = "OTEL_TRACES_SAMPLER";
/// The ratio of the ratio samplers.
pub const ENV_OTEL_SAMPLER_ARG: &str = "OTEL_TRACES_SAMPLER_ARG";
/// Spans waiting for export; one more is dropped and counted.
pub const ENV_OTEL_QUEUE: &str = "OTEL_BSP_MAX_QUEUE_SIZE";
/// Spans per export.
pub const ENV_OTEL_BATCH: &str = "OTEL_BSP_MAX_EXPORT_BATCH_SIZE";
/// The longest a span waits for its batch, in milliseconds.
pub const ENV_OTEL_DELAY: &str = "OTEL_BSP_SCHEDULE_DELAY";
/// One export's limit, in milliseconds.
pub const ENV_OTEL_EXPORT_TIMEOUT: &str = "OTEL_BSP_EXPORT_TIMEOUT";
/// Shortest Redis signing key accepted: 32 bytes.
pub const MIN_SIGNING_KEY_BYTES: usize = 32;
/// Longest Redis signing key accepted: HMAC-SHA256 hashes any key over its 64-byte block down
/// to 32 bytes, so a longer one adds nothing but a larger file to read.
pub const MAX_SIGNING_KEY_BYTES: usize = 256;
/// Most keys `AUTHZ_REDIS_SIGNING_KEY_FILE` may hold: a rotation needs two (the new and the
/// old); a few more leave room for a rotation begun before the last one ended.
pub const MAX_SIGNING_KEYS: usize = 4;
/// Shortest control-API secret accepted: 16 bytes (128 bits if random).
pub const MIN_ADMIN_TOKEN_BYTES: usize = 16;

/// Default leeway: 30 s absorbs ordinary NTP drift between Cognito and this host without
/// stretching a one-hour token noticeably.
pub const DEFAULT_LEEWAY_SECS: u64 = 30;
pub use crate::clock::MAX_LEEWAY_SECS;
/// Default cap on a token: a Cognito access token is about 1 KiB; 16 KiB leaves room for
/// hundreds of groups while bounding the work an attacker can ask for.
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Default gRPC listen address: loopback, since a sidecar's Envoy is on the same host (or in the
/// same pod or task). Containers that reach it over a network set `0.0.0.0:9001` themselves.
pub const DEFAULT_GRPC_ADDR: &str = "127.0.0.1:9001";
/// Default admin listen address: loopback only, metrics are not for the world.
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:9002";
/// Default grace period for in-flight checks on SIGTERM/SIGINT.
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 10;

/// A configuration problem, naming the variable or key and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A variable or key has a bad or missing value.
    #[error("{key}: {problem}")]
    Invalid {
        /// The environment variable or file key (`pools[0].client_ids`).
        key: String,
        /// What is wrong.
        problem: String,
    },
    /// The config file could not be read.
    #[error("{path}: cannot read config file: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid TOML for this schema; the message names the key.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, which names the key and line.
        message: String,
    },
}

impl From<PolicyError> for ConfigError {
    fn from(err: PolicyError) -> Self {
        ConfigError::Invalid {
            key: err.key,
            problem: err.problem,
        }
    }
}

impl ConfigError {
    fn invalid(key: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

impl Config {
    /// A verifier for these pools and settings over `keys` (built from the same pools).
    pub fn verifier(&self, keys: crate::jwks::KeyStore) -> crate::verify::Verifier {
        crate::verify::Verifier::new(&self.pools, self.verify_settings(), keys)
    }

    /// Each pool's Cognito API endpoint (for `GetUser`), in pool order.
    pub fn idp_endpoints(&self) -> Vec<Option<String>> {
        self.pools.iter().map(|p| p.idp_endpoint.clone()).collect()
    }

    /// The verifier's settings.
    pub fn verify_settings(&self) -> crate::verify::VerifySettings {
        crate::verify::VerifySettings {
            leeway: self.leeway,
            max_token_bytes: self.max_token_bytes,
        }
    }
}

/// The whole effective configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// The user pools whose tokens are accepted; never empty.
    pub pools: Vec<PoolConfig>,
    /// Clock-skew leeway.
    #[serde(with = "crate::secs")]
    pub leeway: Duration,
    /// Largest token accepted, in bytes.
    pub max_token_bytes: usize,
    /// Verified tokens cached (0: no cache).
    pub token_cache_entries: usize,
    /// Key-store tuning.
    pub jwks: JwksSettings,
    /// Listeners and logging.
    pub server: ServerConfig,
    /// Route rules, identity headers and token sources.
    pub routes: RouteConfig,
    /// Tuning of revocation checks with Cognito (`[revocation]`).
    pub revocation: RevocationSettings,
    /// OpenTelemetry traces (the standard `OTEL_*` variables).
    pub tracing: TraceSettings,
}

/// The file's schema. Every field is optional; unknown keys are errors (a typo must not pass
/// silently as a default).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    leeway_seconds: Option<u64>,
    allow_preflight: Option<bool>,
    max_token_bytes: Option<usize>,
    token_cache_entries: Option<u64>,
    jwks: Option<FileJwks>,
    server: Option<FileServer>,
    #[serde(default)]
    pools: Vec<FilePool>,
    #[serde(default)]
    routes: Vec<RouteSpec>,
    identity: Option<IdentitySpec>,
    revocation: Option<FileRevocation>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRevocation {
    mode: Option<String>,
    ttl_seconds: Option<u64>,
    on_unavailable: Option<String>,
    grace_seconds: Option<u64>,
    timeout_ms: Option<u64>,
    max_concurrent: Option<u64>,
    unverifiable: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileJwks {
    refresh_seconds: Option<u64>,
    min_refetch_seconds: Option<u64>,
    timeout_ms: Option<u64>,
    max_bytes: Option<usize>,
    retry_min_ms: Option<u64>,
    retry_max_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileServer {
    grpc_addr: Option<String>,
    admin_addr: Option<String>,
    shutdown_grace_seconds: Option<u64>,
    log_format: Option<String>,
    worker_threads: Option<u64>,
    dry_run: Option<bool>,
    http_addr: Option<String>,
    http_trust_traceparent: Option<bool>,
    decision_metadata: Option<String>,
    redis_url: Option<String>,
    redis_cluster: Option<bool>,
    redis_required: Option<bool>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_client_ca: Option<PathBuf>,
    admin_token_file: Option<PathBuf>,
    redis_signing_key_file: Option<PathBuf>,
    max_revocations: Option<u64>,
    diagnostics: Option<String>,
    header_read_timeout_seconds: Option<u64>,
    idle_timeout_seconds: Option<u64>,
    keepalive_seconds: Option<u64>,
    keepalive_timeout_seconds: Option<u64>,
    request_timeout_seconds: Option<u64>,
    grpc_max_connections: Option<u64>,
    http_max_connections: Option<u64>,
    admin_max_connections: Option<u64>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePool {
    id: Option<String>,
    region: Option<String>,
    #[serde(default)]
    client_ids: Vec<String>,
    token_use: Option<String>,
    issuer: Option<String>,
    jwks_uri: Option<String>,
    idp_endpoint: Option<String>,
}

impl Config {
    /// Reads the process environment and the config file it (or `file`) names.
    pub fn from_env(file: Option<&Path>) -> Result<Config, ConfigError> {
        Config::from_lookup(|key| std::env::var(key).ok(), file)
    }

    /// Builds the configuration from a variable lookup and an optional file path; the file path
    /// argument wins over `COGNITO_AUTHZ_CONFIG`. Empty variables count as unset.
    pub fn from_lookup<F>(lookup: F, file: Option<&Path>) -> Result<Config, ConfigError>
    where
        F: Fn(&str) -> Option<String>,
    {
        let var = |key: &str| lookup(key).filter(|v| !v.trim().is_empty());
        Config::combine(&var, named_file(&var, file)?)
    }

    /// Parses TOML text as if it were the config file (for tests and `check-config`).
    pub fn from_toml<F>(lookup: F, text: &str) -> Result<Config, ConfigError>
    where
        F: Fn(&str) -> Option<String>,
    {
        let var = |key: &str| lookup(key).filter(|v| !v.trim().is_empty());
        let file_config = parse_file(Path::new("<config>"), text)?;
        Config::combine(&var, file_config)
    }

    /// Parses JSON text with the config file's schema: the shape Envoy Gateway gives a dynamic
    /// module's config (an `EnvoyExtensionPolicy`'s `config`, serialised as JSON).
    pub fn from_json<F>(lookup: F, text: &str) -> Result<Config, ConfigError>
    where
        F: Fn(&str) -> Option<String>,
    {
        let var = |key: &str| lookup(key).filter(|v| !v.trim().is_empty());
        Config::combine(&var, parse_json(text)?)
    }

    /// As [`Config::from_toml`] or [`Config::from_json`] (JSON when the text starts with `{`),
    /// for a configuration Envoy holds and shows (`/config_dump`): the dynamic module's. A Redis
    /// password in it is refused; the same URL in [`ENV_REDIS_URL`] is Envoy's environment.
    pub fn from_envoy_filter<F>(lookup: F, text: &str) -> Result<Config, ConfigError>
    where
        F: Fn(&str) -> Option<String>,
    {
        let var = |key: &str| lookup(key).filter(|v| !v.trim().is_empty());
        let file_config = if text.trim_start().starts_with('{') {
            parse_json(text)?
        } else {
            parse_file(Path::new("<config>"), text)?
        };
        let url = file_config
            .server
            .as_ref()
            .and_then(|s| s.redis_url.as_deref());
        if url.is_some_and(password_in) {
            return Err(ConfigError::invalid(
                "server.redis_url",
                format!(
                    "carries a password, which Envoy shows in /config_dump: give the URL in \
                     {ENV_REDIS_URL}, in Envoy's environment, instead"
                ),
            ));
        }
        Config::combine(&var, file_config)
    }

    fn combine(
        var: &dyn Fn(&str) -> Option<String>,
        file: FileConfig,
    ) -> Result<Config, ConfigError> {
        let file_jwks = file.jwks.unwrap_or_default();
        let file_server = file.server.unwrap_or_default();

        let leeway = Duration::from_secs(settings::number(var, &LEEWAY, file.leeway_seconds)?);
        let max_token_bytes = settings::count(
            var,
            &MAX_TOKEN_BYTES,
            file.max_token_bytes.map(|n| n as u64),
        )?;
        let token_cache_entries =
            settings::count(var, &TOKEN_CACHE_SIZE, file.token_cache_entries)?;

        let jwks = jwks_settings(var, file_jwks)?;
        let server = server_config(var, file_server)?;
        let pools = merge_pools(var, file.pools)?
            .into_iter()
            .map(|raw| validate_pool(raw, var(ENV_REGION)))
            .collect::<Result<Vec<_>, _>>()?;
        if pools.is_empty() {
            return Err(ConfigError::invalid(
                ENV_POOL_ID,
                "no user pool configured: set it, or list [[pools]] in the config file",
            ));
        }
        let pool_ids: Vec<&str> = pools.iter().map(|p| p.id.as_str()).collect();
        let (revocation, revocation_mode, on_unavailable) =
            revocation_settings(var, file.revocation.unwrap_or_default())?;
        let defaults = RouteDefaults {
            allow_preflight: settings::switch(var, &ALLOW_PREFLIGHT, file.allow_preflight)?,
            revocation: revocation_mode,
            revocation_on_unavailable: on_unavailable,
        };
        let routes = RouteConfig::build(
            file.routes,
            file.identity.unwrap_or_default(),
            defaults,
            &pool_ids,
        )?;
        check_pools(var, &pools, &routes)?;
        let tracing = trace_settings(var)?;

        Ok(Config {
            revocation,
            pools,
            leeway,
            max_token_bytes,
            token_cache_entries,
            jwks,
            server,
            routes,
            tracing,
        })
    }
}

/// `[jwks]` and its variables: the key store's timing and bounds.
fn jwks_settings(
    var: &dyn Fn(&str) -> Option<String>,
    file_jwks: FileJwks,
) -> Result<JwksSettings, ConfigError> {
    let jwks = JwksSettings {
        refresh_interval: Duration::from_secs(settings::number(
            var,
            &JWKS_REFRESH,
            file_jwks.refresh_seconds,
        )?),
        min_refetch_interval: Duration::from_secs(settings::number(
            var,
            &JWKS_MIN_REFETCH,
            file_jwks.min_refetch_seconds,
        )?),
        fetch_timeout: Duration::from_millis(settings::number(
            var,
            &JWKS_TIMEOUT,
            file_jwks.timeout_ms,
        )?),
        max_body_bytes: settings::count(
            var,
            &JWKS_MAX_BYTES,
            file_jwks.max_bytes.map(|n| n as u64),
        )?,
        retry_min: Duration::from_millis(settings::number(
            var,
            &JWKS_RETRY_MIN,
            file_jwks.retry_min_ms,
        )?),
        retry_max: Duration::from_millis(settings::number(
            var,
            &JWKS_RETRY_MAX,
            file_jwks.retry_max_ms,
        )?),
    };
    if jwks.retry_max < jwks.retry_min {
        return Err(ConfigError::invalid(
            "jwks.retry_max_ms",
            "must not be smaller than jwks.retry_min_ms",
        ));
    }

    Ok(jwks)
}

/// `[revocation]` and its variables: the service-wide mode and on-unavailable policy (route
/// defaults), and the tuning of the checks with Cognito.
fn revocation_settings(
    var: &dyn Fn(&str) -> Option<String>,
    file_revocation: FileRevocation,
) -> Result<(RevocationSettings, RevocationMode, OnUnavailable), ConfigError> {
    let revocation_mode = settings::choice(
        var,
        &REVOCATION,
        file_revocation.mode,
        &RevocationMode::CHOICES,
    )?;
    let on_unavailable = settings::choice(
        var,
        &REVOCATION_ON_UNAVAILABLE,
        file_revocation.on_unavailable,
        &OnUnavailable::CHOICES,
    )?;
    let revocation = RevocationSettings {
        ttl: Duration::from_secs(settings::number(
            var,
            &REVOCATION_TTL,
            file_revocation.ttl_seconds,
        )?),
        grace: Duration::from_secs(settings::number(
            var,
            &REVOCATION_GRACE,
            file_revocation.grace_seconds,
        )?),
        timeout: Duration::from_millis(settings::number(
            var,
            &REVOCATION_TIMEOUT,
            file_revocation.timeout_ms,
        )?),
        max_concurrent: settings::count(
            var,
            &REVOCATION_MAX_CONCURRENT,
            file_revocation.max_concurrent,
        )?,
        allow_unverifiable: settings::choice(
            var,
            &REVOCATION_UNVERIFIABLE,
            file_revocation.unverifiable,
            &[("deny", false), ("allow", true)],
        )?,
    };
    Ok((revocation, revocation_mode, on_unavailable))
}

/// The flag of `cognito-authz revoke` that names a Redis URL, as its errors name it.
pub const REDIS_FLAG: &str = "--redis";

/// What a one-shot writer of revocations to the shared Redis needs (`cognito-authz revoke
/// --redis`): the settings the entry depends on, from the same variables and file as `serve`,
/// and nothing else (revoking needs no pool).
pub struct SharedWriterConfig {
    /// The Redis URL (`redis://` or `rediss://`, an ACL user and password in it); a cluster's
    /// seed nodes, comma-separated.
    pub redis_url: String,
    /// The Redis is a cluster ([`ENV_REDIS_CLUSTER`]).
    pub redis_cluster: bool,
    /// The clock leeway, which bounds a `before` and lengthens an entry's life.
    pub leeway: Duration,
    /// The keys that sign what is shared, when configured (never shown).
    pub redis_signing_key: Option<SigningKeys>,
    /// Where the URL came from: the flag, the variable or the file's key.
    pub redis_url_from: &'static str,
}

/// Every field, the Redis URL without its password.
impl std::fmt::Debug for SharedWriterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedWriterConfig")
            .field("redis_url", &crate::shared::redacted_urls(&self.redis_url))
            .field("redis_cluster", &self.redis_cluster)
            .field("leeway", &self.leeway)
            .field("redis_signing_key", &self.redis_signing_key)
            .field("redis_url_from", &self.redis_url_from)
            .finish()
    }
}

impl SharedWriterConfig {
    /// Reads the process environment and the config file it (or `file`) names; `url` is the
    /// one given on the command line, which wins over [`ENV_REDIS_URL`].
    pub fn from_env(file: Option<&Path>, url: Option<&str>) -> Result<Self, ConfigError> {
        SharedWriterConfig::from_lookup(|key| std::env::var(key).ok(), file, url)
    }

    /// As [`SharedWriterConfig::from_env`], from a variable lookup. A URL on the command line
    /// may not carry a password: `/proc/*/cmdline` and shell history would show it.
    pub fn from_lookup<F>(
        lookup: F,
        file: Option<&Path>,
        url: Option<&str>,
    ) -> Result<Self, ConfigError>
    where
        F: Fn(&str) -> Option<String>,
    {
        let var = |key: &str| lookup(key).filter(|v| !v.trim().is_empty());
        let file = named_file(&var, file)?;
        let file_server = file.server.unwrap_or_default();
        let leeway = Duration::from_secs(settings::number(&var, &LEEWAY, file.leeway_seconds)?);
        let picked = match url {
            Some(url) => {
                if password_in(url) {
                    return Err(ConfigError::invalid(
                        REDIS_FLAG,
                        format!(
                            "a password on the command line shows in /proc and shell \
                             history: put the URL in {ENV_REDIS_URL} (or the config file's \
                             server.redis_url) and give {REDIS_FLAG} alone"
                        ),
                    ));
                }
                Some((REDIS_FLAG, url.to_string()))
            }
            None => settings::text(&var, &REDIS_URL, file_server.redis_url),
        };
        let redis_url_from = picked.as_ref().map_or(ENV_REDIS_URL, |(from, _)| *from);
        let redis_cluster = settings::switch(&var, &REDIS_CLUSTER, file_server.redis_cluster)?;
        let redis_url = redis_url(picked, redis_cluster)?.ok_or_else(|| {
            ConfigError::invalid(
                ENV_REDIS_URL,
                format!("not set: give {REDIS_FLAG} URL, set it, or set server.redis_url in the config file"),
            )
        })?;
        Ok(SharedWriterConfig {
            redis_url,
            redis_cluster,
            leeway,
            redis_signing_key: signing_keys(&var, file_server.redis_signing_key_file)?,
            redis_url_from,
        })
    }

    /// The Redis URL with its password replaced, to show.
    pub fn shown_url(&self) -> String {
        crate::shared::redacted_urls(&self.redis_url)
    }

    /// Where the entry is written.
    pub fn redis_target(&self) -> crate::shared::RedisTarget {
        crate::shared::RedisTarget {
            urls: server::redis_urls(&self.redis_url),
            cluster: self.redis_cluster,
        }
    }
}

/// The config file `file` names (the argument wins over `COGNITO_AUTHZ_CONFIG`), read; empty
/// when neither names one.
fn named_file(
    var: &dyn Fn(&str) -> Option<String>,
    file: Option<&Path>,
) -> Result<FileConfig, ConfigError> {
    let path = file
        .map(Path::to_path_buf)
        .or_else(|| var(ENV_CONFIG_FILE).map(PathBuf::from));
    match &path {
        Some(path) => read_file(path),
        None => Ok(FileConfig::default()),
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_file(path, &text)
}

/// A parser's message with no value in it: a value in the wrong place may be a secret (a Redis
/// URL with its password). Messages about keys (an unknown, missing or repeated field) name
/// only keys and stay whole; any other is cut where it would start quoting (`"`, `` ` ``, `'`),
/// however the value is escaped. serde's messages stop at the first line (toml adds the
/// source line after it).
fn without_values(message: &str) -> String {
    const ABOUT_KEYS: [&str; 4] = [
        "unknown field",
        "missing field",
        "duplicate field",
        "duplicate key",
    ];
    let message = message.lines().next().unwrap_or_default().trim();
    if ABOUT_KEYS.iter().any(|about| message.starts_with(about)) {
        return message.to_string();
    }
    match message.find(['"', '`', '\'']) {
        Some(cut) => format!("{} (the value is not shown)", message[..cut].trim_end()),
        None => message.to_string(),
    }
}

fn parse_json(text: &str) -> Result<FileConfig, ConfigError> {
    serde_json::from_str(text).map_err(|err| ConfigError::Parse {
        path: PathBuf::from("<config>"),
        message: format!(
            "line {} column {}: {}",
            err.line(),
            err.column(),
            without_values(&err.to_string())
        ),
    })
}

fn parse_file(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
    toml::from_str(text).map_err(|err: toml::de::Error| {
        // The line by number, never by its text: it may hold a secret.
        let line = err
            .span()
            .and_then(|span| text.get(..span.start))
            .map_or(0, |before| before.matches('\n').count() + 1);
        ConfigError::Parse {
            path: path.to_path_buf(),
            message: format!("line {line}: {}", without_values(err.message())),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn app_env() -> Vec<(&'static str, &'static str)> {
        vec![
            (ENV_POOL_ID, "us-east-1_AbC123"),
            (ENV_CLIENT_IDS, "client-a"),
        ]
    }

    fn err_key(result: Result<Config, ConfigError>) -> String {
        match result {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected an Invalid error, got {other:?}"),
        }
    }

    #[test]
    fn the_apps_variables_are_enough() {
        let config = Config::from_lookup(env(&app_env()), None).unwrap();
        let pool = &config.pools[0];
        assert_eq!(pool.region.as_deref(), Some("us-east-1"));
        assert_eq!(pool.client_ids, vec!["client-a"]);
        assert_eq!(pool.token_use, TokenUsePolicy::Access);
        assert_eq!(
            pool.issuers,
            vec![
                "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_AbC123",
                "https://issuer-cognito-idp.us-east-1.amazonaws.com/us-east-1_AbC123",
            ]
        );
        assert_eq!(
            pool.jwks_uri,
            "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_AbC123/.well-known/jwks.json"
        );
        assert_eq!(config.leeway, Duration::from_secs(DEFAULT_LEEWAY_SECS));
    }

    #[test]
    fn client_ids_are_a_comma_list_without_blanks_or_repeats() {
        let mut vars = app_env();
        vars[1] = (ENV_CLIENT_IDS, " a, b ,,a ");
        let config = Config::from_lookup(env(&vars), None).unwrap();
        assert_eq!(config.pools[0].client_ids, vec!["a", "b"]);
    }

    #[test]
    fn a_pool_without_clients_is_refused_naming_the_variable() {
        let key = err_key(Config::from_lookup(
            env(&[(ENV_POOL_ID, "us-east-1_AbC123"), (ENV_CLIENT_IDS, " , ")]),
            None,
        ));
        assert_eq!(key, ENV_CLIENT_IDS);
    }

    #[test]
    fn no_pool_at_all_is_refused() {
        assert_eq!(err_key(Config::from_lookup(env(&[]), None)), ENV_POOL_ID);
    }

    #[test]
    fn pool_variables_without_a_pool_id_are_refused() {
        let key = err_key(Config::from_lookup(
            env(&[(ENV_JWKS_URI, "http://127.0.0.1:1/jwks")]),
            None,
        ));
        assert_eq!(key, ENV_JWKS_URI);
    }

    #[test]
    fn an_emulator_pool_id_needs_an_issuer_unless_a_region_is_given() {
        let vars = [(ENV_POOL_ID, "local_abc"), (ENV_CLIENT_IDS, "c")];
        assert_eq!(err_key(Config::from_lookup(env(&vars), None)), ENV_ISSUER);

        let mut with_issuer = vars.to_vec();
        with_issuer.push((ENV_ISSUER, "http://127.0.0.1:5000/local_abc/"));
        let config = Config::from_lookup(env(&with_issuer), None).unwrap();
        assert_eq!(
            config.pools[0].issuers,
            vec!["http://127.0.0.1:5000/local_abc"]
        );
        assert_eq!(
            config.pools[0].jwks_uri,
            "http://127.0.0.1:5000/local_abc/.well-known/jwks.json"
        );

        let mut with_region = vars.to_vec();
        with_region.push((ENV_REGION, "eu-west-2"));
        let config = Config::from_lookup(env(&with_region), None).unwrap();
        assert_eq!(
            config.pools[0].issuers[0],
            "https://cognito-idp.eu-west-2.amazonaws.com/local_abc"
        );
    }

    #[test]
    fn the_pool_ids_region_wins_over_the_default_region() {
        let mut vars = app_env();
        vars.push((ENV_REGION, "eu-west-1"));
        let config = Config::from_lookup(env(&vars), None).unwrap();
        assert_eq!(config.pools[0].region.as_deref(), Some("us-east-1"));
    }

    #[test]
    fn an_explicit_issuer_replaces_both_aws_forms() {
        let mut vars = app_env();
        vars.push((ENV_ISSUER, "https://idp.example/pool"));
        vars.push((ENV_JWKS_URI, "http://127.0.0.1:5000/pool/keys"));
        let config = Config::from_lookup(env(&vars), None).unwrap();
        assert_eq!(config.pools[0].issuers, vec!["https://idp.example/pool"]);
        assert_eq!(config.pools[0].jwks_uri, "http://127.0.0.1:5000/pool/keys");
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (key, value) in [
            (ENV_TOKEN_USE, "refresh"),
            (ENV_LEEWAY, "ten"),
            (ENV_LEEWAY, "-1"),
            (ENV_JWKS_REFRESH, "0"),
            (ENV_JWKS_TIMEOUT_MS, "0"),
            (ENV_ISSUER, "ftp://example"),
            (ENV_JWKS_URI, "not a url"),
            (ENV_LOG_FORMAT, "xml"),
            (ENV_GRPC_ADDR, "nowhere"),
            (ENV_ALLOW_PREFLIGHT, "sometimes"),
            (ENV_HTTP_ADDR, "localhost"),
            (ENV_HTTP_ADDR, "unix:relative.sock"),
            (ENV_DECISION_METADATA, "all"),
            (ENV_REVOCATION, "yes"),
            (ENV_REVOCATION_TTL, "0"),
            (ENV_REVOCATION_ON_UNAVAILABLE, "allow"),
            (ENV_REVOCATION_UNVERIFIABLE, "maybe"),
            (ENV_REDIS_URL, "http://127.0.0.1:6379"),
            (ENV_IDP_ENDPOINT, "ftp://x"),
        ] {
            let mut vars = app_env();
            vars.push((key, value));
            assert_eq!(
                err_key(Config::from_lookup(env(&vars), None)),
                key,
                "{key}={value}"
            );
        }
    }

    #[test]
    fn a_leeway_past_five_minutes_is_refused() {
        // A huge leeway overflowed the exp arithmetic and switched expiry checking off.
        for value in ["301", "9223372036854775807", "18446744073709551615"] {
            let mut vars = app_env();
            vars.push((ENV_LEEWAY, value));
            let err = Config::from_lookup(env(&vars), None).unwrap_err();
            assert!(
                err.to_string().starts_with(&format!("{ENV_LEEWAY}:")),
                "{value}: {err}"
            );
        }
        let mut vars = app_env();
        vars.push((ENV_LEEWAY, "300"));
        let config = Config::from_lookup(env(&vars), None).unwrap();
        assert_eq!(config.leeway, Duration::from_secs(MAX_LEEWAY_SECS));
        let err = Config::from_toml(env(&app_env()), "leeway_seconds = 86400\n").unwrap_err();
        assert!(err.to_string().starts_with("leeway_seconds:"), "{err}");
    }

    #[test]
    fn a_zero_refetch_window_is_refused() {
        let mut vars = app_env();
        vars.push((ENV_JWKS_MIN_REFETCH, "0"));
        assert_eq!(
            err_key(Config::from_lookup(env(&vars), None)),
            ENV_JWKS_MIN_REFETCH
        );
        let err =
            Config::from_toml(env(&app_env()), "[jwks]\nmin_refetch_seconds = 0\n").unwrap_err();
        assert!(
            err.to_string().starts_with("jwks.min_refetch_seconds:"),
            "{err}"
        );
    }

    #[test]
    fn the_grpc_listener_defaults_to_loopback() {
        let config = Config::from_lookup(env(&app_env()), None).unwrap();
        assert_eq!(config.server.grpc_addr, "127.0.0.1:9001");
    }

    #[test]
    fn preflights_are_checked_unless_switched_on() {
        let config = Config::from_lookup(env(&app_env()), None).unwrap();
        assert!(!config.routes.fallback.allow_preflight);
        let mut vars = app_env();
        vars.push((ENV_ALLOW_PREFLIGHT, "true"));
        let config = Config::from_lookup(env(&vars), None).unwrap();
        assert!(config.routes.fallback.allow_preflight);
        let config = Config::from_toml(env(&app_env()), "allow_preflight = true\n").unwrap();
        assert!(config.routes.fallback.allow_preflight);
    }

    #[test]
    fn revocation_checks_need_an_endpoint_and_default_to_the_region() {
        let mut vars = app_env();
        vars.push((ENV_REVOCATION, "cognito"));
        let config = Config::from_lookup(env(&vars), None).unwrap();
        assert_eq!(
            config.pools[0].idp_endpoint.as_deref(),
            Some("https://cognito-idp.us-east-1.amazonaws.com/")
        );
        assert_eq!(config.routes.fallback.revocation, RevocationMode::Cognito);
        let emulator = [
            (ENV_POOL_ID, "local_abc"),
            (ENV_CLIENT_IDS, "c"),
            (ENV_ISSUER, "http://127.0.0.1:5000/local_abc"),
            (ENV_REVOCATION, "cognito"),
        ];
        assert_eq!(
            err_key(Config::from_lookup(env(&emulator), None)),
            ENV_IDP_ENDPOINT
        );
        let mut with_endpoint = emulator.to_vec();
        with_endpoint.push((ENV_IDP_ENDPOINT, "http://127.0.0.1:5000"));
        let config = Config::from_lookup(env(&with_endpoint), None).unwrap();
        assert_eq!(
            config.pools[0].idp_endpoint.as_deref(),
            Some("http://127.0.0.1:5000/")
        );
    }

    #[test]
    fn a_redis_password_never_shows() {
        let mut vars = app_env();
        vars.push((ENV_REDIS_URL, "redis://:s3cret@127.0.0.1:6379/0"));
        let config = Config::from_lookup(env(&vars), None).unwrap();
        let shown = serde_json::to_string(&config).unwrap();
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            shown.contains("redis://:redacted@127.0.0.1:6379/0"),
            "{shown}"
        );
        // Nor in `Debug`, of the whole configuration or of `revoke --redis`'s.
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("s3cret") && debug.contains(":redacted@"),
            "{debug}"
        );
        let writer = SharedWriterConfig::from_lookup(env(&vars), None, None).unwrap();
        let debug = format!("{writer:?}");
        assert!(
            !debug.contains("s3cret") && debug.contains(":redacted@"),
            "{debug}"
        );
    }

    #[test]
    fn a_redis_url_that_turns_off_certificate_checks_is_refused() {
        // The Redis client reads `#insecure` as "do not check the server's certificate".
        for url in [
            "rediss://authz:s3cret@cache.example:6379#insecure",
            "rediss://cache.example:6379/0#INSECURE",
        ] {
            let mut vars = app_env();
            vars.push((ENV_REDIS_URL, url));
            let err = Config::from_lookup(env(&vars), None)
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(&format!("{ENV_REDIS_URL}:")), "{err}");
            assert!(err.contains("insecure") && !err.contains("s3cret"), "{err}");
            let err = SharedWriterConfig::from_lookup(env(&vars), None, None).unwrap_err();
            assert!(err.to_string().contains("insecure"), "{err}");
        }
        let mut vars = app_env();
        vars.push((ENV_REDIS_URL, "rediss://authz:s3cret@cache.example:6379"));
        assert!(Config::from_lookup(env(&vars), None).is_ok());
    }

    #[test]
    fn cluster_mode_takes_seed_nodes_and_hides_every_password() {
        let seeds = "rediss://authz:s3cret@node-1:6379, rediss://authz:s3cret@node-2:6379";
        let mut vars = app_env();
        vars.push((ENV_REDIS_URL, seeds));
        // Several URLs are a cluster's seed nodes: refused without cluster mode.
        assert_eq!(
            err_key(Config::from_lookup(env(&vars), None)),
            ENV_REDIS_URL
        );
        vars.push((ENV_REDIS_CLUSTER, "true"));
        let config = Config::from_lookup(env(&vars), None).unwrap();
        let target = config.server.redis_target().unwrap();
        assert!(target.cluster);
        assert_eq!(
            target.urls,
            [
                "rediss://authz:s3cret@node-1:6379",
                "rediss://authz:s3cret@node-2:6379"
            ]
        );
        let shown = serde_json::to_string(&config).unwrap();
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            shown.contains(
                "rediss://authz:redacted@node-1:6379,rediss://authz:redacted@node-2:6379"
            ),
            "{shown}"
        );
        // One scheme: TLS to some seed nodes and not to others is a mistake.
        let mut mixed = app_env();
        mixed.push((ENV_REDIS_CLUSTER, "true"));
        mixed.push((ENV_REDIS_URL, "rediss://node-1:6379,redis://node-2:6379"));
        assert_eq!(
            err_key(Config::from_lookup(env(&mixed), None)),
            ENV_REDIS_URL
        );
        // What the client would refuse at start-up is refused here, without the password:
        // seeds separated by something else than commas, no host, a bad port, two users.
        for bad in [
            "redis://authz:s3cret@node-1:6379 redis://authz:s3cret@node-2:6379",
            "redis://authz:s3cret@node-1:6379;redis://authz:s3cret@node-2:6379",
            "redis://",
            "redis://authz:s3cret@node-1:99999",
            "redis://authz:s3cret@node-1:6379,redis://authz:0ther@node-2:6379",
            "redis://authz:s3cret@node-1:6379,redis://other:s3cret@node-2:6379",
        ] {
            let mut vars = app_env();
            vars.push((ENV_REDIS_CLUSTER, "true"));
            vars.push((ENV_REDIS_URL, bad));
            match Config::from_lookup(env(&vars), None) {
                Err(err @ ConfigError::Invalid { .. }) => {
                    let shown = err.to_string();
                    assert!(shown.contains(ENV_REDIS_URL), "{bad}: {shown}");
                    assert!(
                        !shown.contains("s3cret") && !shown.contains("0ther"),
                        "{shown}"
                    );
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
        // One URL in cluster mode is the usual form (a configuration endpoint).
        let mut one = app_env();
        one.push((ENV_REDIS_CLUSTER, "true"));
        one.push((
            ENV_REDIS_URL,
            "rediss://authz:s3cret@clustercfg.example:6379",
        ));
        let config = Config::from_lookup(env(&one), None).unwrap();
        assert_eq!(config.server.redis_target().unwrap().urls.len(), 1);
        // The one-shot writer reads the same settings, and shows no password either.
        let writer = SharedWriterConfig::from_lookup(env(&vars), None, None).unwrap();
        assert!(writer.redis_target().cluster);
        assert!(!writer.shown_url().contains("s3cret"));
    }

    #[test]
    fn token_use_is_case_insensitive() {
        let mut vars = app_env();
        vars.push((ENV_TOKEN_USE, "ANY"));
        let config = Config::from_lookup(env(&vars), None).unwrap();
        assert_eq!(config.pools[0].token_use, TokenUsePolicy::Any);
    }

    #[test]
    fn region_derivation_needs_the_aws_shape() {
        assert_eq!(region_from_pool_id("us-east-1_AbC"), Some("us-east-1"));
        assert_eq!(
            region_from_pool_id("us-gov-west-1_x"),
            Some("us-gov-west-1")
        );
        assert_eq!(region_from_pool_id("local_abc"), None);
        assert_eq!(region_from_pool_id("us-east-1_"), None);
        assert_eq!(region_from_pool_id("us-east-x_abc"), None);
        assert_eq!(region_from_pool_id("nounderscore"), None);
    }

    const TWO_POOLS: &str = r#"
        leeway_seconds = 5
        [jwks]
        refresh_seconds = 60
        [[pools]]
        id = "us-east-1_One"
        client_ids = ["web"]
        [[pools]]
        id = "local_two"
        client_ids = ["svc-a", "svc-b"]
        token_use = "any"
        issuer = "http://127.0.0.1:5000/local_two"
        jwks_uri = "http://127.0.0.1:5000/local_two/.well-known/jwks.json"
    "#;

    #[test]
    fn a_file_can_list_several_pools() {
        let config = Config::from_toml(env(&[]), TWO_POOLS).unwrap();
        assert_eq!(config.pools.len(), 2);
        assert_eq!(config.pools[1].client_ids, vec!["svc-a", "svc-b"]);
        assert_eq!(config.pools[1].token_use, TokenUsePolicy::Any);
        assert_eq!(config.leeway, Duration::from_secs(5));
        assert_eq!(config.jwks.refresh_interval, Duration::from_secs(60));
    }

    #[test]
    fn the_environment_overrides_the_file() {
        let vars = [
            (ENV_LEEWAY, "7"),
            (ENV_POOL_ID, "us-east-1_One"),
            (ENV_CLIENT_IDS, "mobile"),
        ];
        let config = Config::from_toml(env(&vars), TWO_POOLS).unwrap();
        assert_eq!(config.leeway, Duration::from_secs(7));
        assert_eq!(config.pools.len(), 2, "same pool id merges, not duplicates");
        assert_eq!(config.pools[0].client_ids, vec!["mobile"]);

        let vars = [(ENV_POOL_ID, "eu-west-1_Three"), (ENV_CLIENT_IDS, "x")];
        let config = Config::from_toml(env(&vars), TWO_POOLS).unwrap();
        assert_eq!(config.pools.len(), 3, "a new pool id is added");
    }

    /// The file's fields as its schema names them: serde lists them when it refuses an
    /// unknown one.
    fn schema_fields(section: &str) -> Vec<String> {
        let text = match section {
            "" => "bogus_key = 1\n".to_string(),
            "pools[]" => "[[pools]]\nbogus_key = 1\n".to_string(),
            _ => format!("[{section}]\nbogus_key = 1\n"),
        };
        let err = Config::from_toml(env(&[]), &text).unwrap_err().to_string();
        let expected = err
            .split("expected one of ")
            .nth(1)
            .unwrap_or_else(|| panic!("{section}: {err}"));
        expected
            .split(',')
            .filter_map(|f| f.split('`').nth(1))
            .map(str::to_string)
            .collect()
    }

    /// Every file key the settings declare is a field of the file's schema, and every scalar
    /// field of the schema is declared: the table and the schema cannot drift apart.
    #[test]
    fn the_file_schema_has_exactly_the_declared_keys() {
        let sections = ["", "jwks", "server", "revocation", "pools[]"];
        // Tables and lists read by their own code, not scalar settings.
        let structured = [
            "jwks",
            "server",
            "pools",
            "routes",
            "identity",
            "revocation",
        ];
        let mut fields = Vec::new();
        for section in sections {
            for field in schema_fields(section) {
                if section.is_empty() && structured.contains(&field.as_str()) {
                    continue;
                }
                fields.push(if section.is_empty() {
                    field
                } else {
                    format!("{section}.{field}")
                });
            }
        }
        fields.sort();
        let mut declared: Vec<String> = settings::SETTINGS
            .iter()
            .filter_map(|s| s.key.map(str::to_string))
            .collect();
        declared.sort();
        assert_eq!(fields, declared);
    }

    #[test]
    fn the_http_listener_believes_a_traceparent_only_when_told_envoy_traces() {
        let config = Config::from_lookup(env(&app_env()), None).unwrap();
        assert!(!config.server.http_trust_traceparent);
        let mut vars = app_env();
        vars.push((ENV_HTTP_TRUST_TRACEPARENT, "true"));
        let config = Config::from_lookup(env(&vars), None).unwrap();
        assert!(config.server.http_trust_traceparent);
        let mut vars = app_env();
        vars.push((ENV_HTTP_TRUST_TRACEPARENT, "envoy"));
        let err = Config::from_lookup(env(&vars), None).unwrap_err();
        assert!(
            err.to_string().starts_with(ENV_HTTP_TRUST_TRACEPARENT),
            "{err}"
        );
    }

    #[test]
    fn a_switch_is_true_or_false_and_nothing_else() {
        for (value, expected) in [
            ("TRUE", Some(true)),
            ("false", Some(false)),
            ("1", None),
            ("yes", None),
        ] {
            let mut vars = app_env();
            vars.push((ENV_DRY_RUN, value));
            match Config::from_lookup(env(&vars), None) {
                Ok(config) => assert_eq!(Some(config.server.dry_run), expected, "{value}"),
                Err(err) => {
                    assert_eq!(expected, None, "{value}: {err}");
                    assert!(err.to_string().starts_with(ENV_DRY_RUN), "{err}");
                }
            }
        }
    }

    #[test]
    fn a_zero_in_the_file_is_refused_under_the_file_key() {
        for (text, key) in [
            ("[jwks]\nmax_bytes = 0\n", "jwks.max_bytes"),
            ("[jwks]\nrefresh_seconds = 0\n", "jwks.refresh_seconds"),
        ] {
            let err = Config::from_toml(env(&app_env()), text).unwrap_err();
            assert!(err.to_string().starts_with(key), "{text}: {err}");
        }
    }

    #[test]
    fn file_errors_name_the_key() {
        let err = Config::from_toml(env(&[]), "[[pools]]\nid = \"us-east-1_X\"\n").unwrap_err();
        assert!(err.to_string().starts_with("pools[0].client_ids:"), "{err}");

        let err = Config::from_toml(env(&[]), "leeway_secs = 3\n").unwrap_err();
        assert!(err.to_string().contains("leeway_secs"), "{err}");

        let err = Config::from_toml(
            env(&[]),
            "[[pools]]\nid = \"us-east-1_X\"\nregion = \"eu-west-1\"\nclient_ids = [\"a\"]\n",
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("pools[0].region:"), "{err}");
    }

    #[test]
    fn two_pools_may_not_claim_one_issuer() {
        let text = r#"
            [[pools]]
            id = "us-east-1_One"
            client_ids = ["a"]
            [[pools]]
            id = "local"
            client_ids = ["b"]
            issuer = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_One"
        "#;
        let err = Config::from_toml(env(&[]), text).unwrap_err();
        assert!(err.to_string().starts_with("pools[1].issuer:"), "{err}");
    }

    #[test]
    fn a_missing_file_is_an_error_naming_it() {
        let err = Config::from_lookup(
            env(&[(ENV_CONFIG_FILE, "/nonexistent/cognito-authz.toml")]),
            None,
        )
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/cognito-authz.toml"));
    }

    #[test]
    fn the_signing_key_file_holds_one_key_a_line_the_first_signing() {
        let old = "o".repeat(MIN_SIGNING_KEY_BYTES);
        let new = "n".repeat(MAX_SIGNING_KEY_BYTES);
        let keys = signing_keys_text(ENV_REDIS_SIGNING_KEY_FILE, &format!("\n {new} \n\n{old}\n"))
            .unwrap();
        assert_eq!(keys.as_bytes(), vec![new.as_bytes(), old.as_bytes()]);
        // Shown by count only, in check-config and in logs.
        let shown = format!("{keys:?} {}", serde_json::to_string(&keys).unwrap());
        assert!(!shown.contains(&old) && !shown.contains(&new), "{shown}");
        assert!(shown.contains("<2 redacted"), "{shown}");
    }

    #[test]
    fn a_bad_signing_key_file_names_the_variable_and_the_line_never_the_key() {
        let key = |n: usize| format!("{n}").repeat(MIN_SIGNING_KEY_BYTES);
        let short = "s".repeat(MIN_SIGNING_KEY_BYTES - 1);
        let long = "l".repeat(MAX_SIGNING_KEY_BYTES + 1);
        let five = (1..=MAX_SIGNING_KEYS + 1)
            .map(key)
            .collect::<Vec<_>>()
            .join("\n");
        for (text, says) in [
            (String::new(), "no key"),
            ("\n  \n".to_string(), "no key"),
            (format!("{}\n{short}", key(1)), "line 2"),
            (long.clone(), "line 1"),
            (format!("{} {}", key(1), key(2)), "without spaces"),
            (
                format!("{}\n\n{}", key(1), key(1)),
                "line 3 repeats the key of line 1",
            ),
            (five, "more than 4 keys"),
        ] {
            match signing_keys_text(ENV_REDIS_SIGNING_KEY_FILE, &text) {
                Err(ConfigError::Invalid { key: name, problem }) => {
                    assert_eq!(name, ENV_REDIS_SIGNING_KEY_FILE);
                    assert!(problem.contains(says), "{problem}");
                    for secret in [&short, &long, &key(1)] {
                        assert!(!problem.contains(secret.as_str()), "{problem}");
                    }
                }
                other => panic!("{text:?} was taken: {other:?}"),
            }
        }
        // Through the variable: a file too large to be a key file, and a missing one.
        let dir = std::env::temp_dir().join(format!("signing-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let big = dir.join("big");
        std::fs::write(&big, "k".repeat(5000)).unwrap();
        for path in [big.display().to_string(), "/nonexistent/key".to_string()] {
            let mut vars: Vec<(&str, &str)> = app_env();
            vars.push((ENV_REDIS_SIGNING_KEY_FILE, &path));
            assert_eq!(
                err_key(Config::from_lookup(env(&vars), None)),
                ENV_REDIS_SIGNING_KEY_FILE
            );
        }
        let good = dir.join("good");
        std::fs::write(&good, format!("{}\n{}\n", key(1), key(2))).unwrap();
        let good = good.display().to_string();
        let mut vars: Vec<(&str, &str)> = app_env();
        vars.push((ENV_REDIS_SIGNING_KEY_FILE, &good));
        let config = Config::from_lookup(env(&vars), None).unwrap();
        assert_eq!(config.server.redis_signing_key.unwrap().as_bytes().len(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_json_config_reads_as_the_same_toml_would_and_never_quotes_a_value() {
        let toml = "leeway_seconds = 30\n[[routes]]\nname = \"health\"\npath = \"/healthz\"\n\
                    mode = \"public\"\n[[routes]]\nname = \"admin\"\n\
                    path_separated_prefix = \"/api/admin\"\nmode = \"required\"\n\
                    groups_any = [\"admins\"]\n";
        let json = r#"{"leeway_seconds": 30, "routes": [
            {"name": "health", "path": "/healthz", "mode": "public"},
            {"name": "admin", "path_separated_prefix": "/api/admin", "mode": "required",
             "groups_any": ["admins"]}]}"#;
        let from_toml = Config::from_toml(env(&app_env()), toml).unwrap();
        let from_json = Config::from_json(env(&app_env()), json).unwrap();
        assert_eq!(format!("{from_json:?}"), format!("{from_toml:?}"));
        assert_eq!(from_json.leeway, Duration::from_secs(30));
        assert_eq!(from_json.routes.rules.len(), 2);

        // A typo is refused, naming the key; a value in the wrong place is never repeated.
        let typo = Config::from_json(env(&app_env()), r#"{"rotues": []}"#).unwrap_err();
        assert!(typo.to_string().contains("rotues"), "{typo}");
        let secret = "rediss://user:hunter2@redis.internal:6380";
        let misplaced = format!(r#"{{"leeway_seconds": "{secret}"}}"#);
        let err = Config::from_json(env(&app_env()), &misplaced)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("leeway_seconds") || err.contains("invalid type"),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "{err}");
        // Nor is TOML read as JSON.
        assert!(Config::from_json(env(&app_env()), toml).is_err());
    }
}
