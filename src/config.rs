//! Configuration: environment variables and an optional TOML file, parsed, validated, then used.
//!
//! Layering, lowest to highest: built-in defaults, then the config file, then the environment.
//! Pools are the exception to plain overriding: the file may list several pools, and the
//! environment describes at most one (the app's own `AWS_COGNITO_USER_POOL_ID`). When that pool
//! id also appears in the file, the environment's values override that pool's fields; otherwise
//! it is added to the file's pools.
//!
//! Why no layering crate (figment, config): their environment providers map variables to keys
//! by a prefix and a naming rule, while ours are the app's own names (`AWS_COGNITO_*`) beside
//! our own (`COGNITO_*`, `AUTHZ_*`); the pool merge above, comma lists and the exit-2 message
//! naming the exact variable or file key would stay hand-written around either crate. The
//! layering itself is the `pick_*` helpers below: a few lines each.

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
/// Dry-run (shadow) mode: decide, log and count, but allow every request (`true`/`false`).
pub const ENV_DRY_RUN: &str = "AUTHZ_DRY_RUN";
/// Address of the HTTP ext_authz listener (Envoy's `http_service`): `host:port` or
/// `unix:/path`. Off when unset.
pub const ENV_HTTP_ADDR: &str = "AUTHZ_HTTP_ADDR";
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
/// Redis shared by every replica (`redis://` or `rediss://`): revocations and verdicts.
pub const ENV_REDIS_URL: &str = "AUTHZ_REDIS_URL";
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
/// A file holding the key that signs (HMAC-SHA256) what replicas share through Redis, for a
/// Redis that others can write: values not signed with it are ignored.
pub const ENV_REDIS_SIGNING_KEY_FILE: &str = "AUTHZ_REDIS_SIGNING_KEY_FILE";
/// Shortest Redis signing key accepted: 32 bytes.
pub const MIN_SIGNING_KEY_BYTES: usize = 32;
/// Shortest control-API secret accepted: 16 bytes (128 bits if random).
pub const MIN_ADMIN_TOKEN_BYTES: usize = 16;

/// Default leeway: 30 s absorbs ordinary NTP drift between Cognito and this host without
/// stretching a one-hour token noticeably.
pub const DEFAULT_LEEWAY_SECS: u64 = 30;
/// Largest leeway accepted: five minutes (Kerberos's classic skew) is already generous; more
/// would quietly extend every token, and a huge value would switch expiry checking off.
pub const MAX_LEEWAY_SECS: u64 = 300;
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

/// Listener and logging settings for `serve`.
#[derive(Debug, Clone, Serialize)]
pub struct ServerConfig {
    /// gRPC listen address (`host:port`, or `unix:/path`).
    pub grpc_addr: String,
    /// Admin HTTP listen address.
    pub admin_addr: String,
    /// Grace period for in-flight checks at shutdown.
    #[serde(with = "crate::secs")]
    pub shutdown_grace: Duration,
    /// Emit logs as JSON lines.
    pub json_logs: bool,
    /// Runtime worker threads; `None`: one per core.
    pub worker_threads: Option<usize>,
    /// Dry-run (shadow) mode: every request is allowed; decisions are still logged and counted.
    pub dry_run: bool,
    /// HTTP ext_authz listen address (`host:port` or `unix:/path`), when on.
    pub http_addr: Option<String>,
    /// Full dynamic metadata (rule, pool, token_use besides decision, reason, sub).
    pub full_metadata: bool,
    /// Redis shared by the replicas, when configured (shown without its password).
    #[serde(serialize_with = "redacted_url")]
    pub redis_url: Option<String>,
    /// `/readyz` fails while Redis is down.
    pub redis_required: bool,
    /// TLS for the gRPC listener, when configured.
    pub tls: Option<TlsFiles>,
    /// The control API's secret, when configured (never shown).
    pub admin_token: Option<AdminToken>,
    /// The key signing shared Redis values, when configured (never shown).
    pub redis_signing_key: Option<AdminToken>,
    /// Most explicit revocations held.
    pub max_revocations: usize,
    /// Serve the diagnostics service and reflection on the gRPC listener.
    pub diagnostics: bool,
}

/// The control API's bearer secret. Shown as `<redacted>`; compared in constant time.
#[derive(Clone)]
pub struct AdminToken(std::sync::Arc<str>);

impl AdminToken {
    /// The secret's bytes (a signing key).
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// Whether `presented` is the secret. Both sides are hashed first, so the comparison takes
    /// the same time whatever the lengths, and then compared in constant time.
    pub fn matches(&self, presented: &[u8]) -> bool {
        use aws_lc_rs::digest::{digest, SHA256};
        let (want, got) = (
            digest(&SHA256, self.0.as_bytes()),
            digest(&SHA256, presented),
        );
        aws_lc_rs::constant_time::verify_slices_are_equal(want.as_ref(), got.as_ref()).is_ok()
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

impl Serialize for AdminToken {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

/// Whether the gRPC listener serves diagnostics and reflection: as configured, or (`auto`)
/// only where nothing but this host can reach it.
fn diagnostics(
    var: &dyn Fn(&str) -> Option<String>,
    file: Option<String>,
    grpc_addr: &str,
) -> Result<bool, ConfigError> {
    let (key, value) = match var(ENV_DIAGNOSTICS) {
        Some(v) => (ENV_DIAGNOSTICS.to_string(), v),
        None => match file {
            Some(v) => ("server.diagnostics".to_string(), v),
            None => (ENV_DIAGNOSTICS.to_string(), "auto".to_string()),
        },
    };
    match value.trim().to_ascii_lowercase().as_str() {
        "on" => Ok(true),
        "off" => Ok(false),
        "auto" => Ok(grpc_addr.starts_with("unix:")
            || grpc_addr
                .parse::<std::net::SocketAddr>()
                .is_ok_and(|a| a.ip().is_loopback())),
        other => Err(ConfigError::invalid(
            key,
            format!("'{other}' is not one of auto, on, off"),
        )),
    }
}

/// A secret read from the file the variable (or the file key) names: trimmed, at least
/// `min_bytes`, no spaces.
fn secret_file(
    var: &dyn Fn(&str) -> Option<String>,
    env_key: &str,
    file_key: &str,
    file: Option<PathBuf>,
    min_bytes: usize,
) -> Result<Option<AdminToken>, ConfigError> {
    let Some((key, path)) = var(env_key)
        .map(|p| (env_key.to_string(), PathBuf::from(p)))
        .or_else(|| file.map(|p| (file_key.to_string(), p)))
    else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(&path).map_err(|e| {
        ConfigError::invalid(key.clone(), format!("cannot read {}: {e}", path.display()))
    })?;
    secret_text(&key, &text, min_bytes).map(Some)
}

fn secret_text(key: &str, text: &str, min_bytes: usize) -> Result<AdminToken, ConfigError> {
    let secret = text.trim();
    if secret.len() < min_bytes || secret.chars().any(char::is_whitespace) {
        return Err(ConfigError::invalid(
            key,
            format!(
                "the secret must be at least {min_bytes} bytes without spaces \
                 (for example: openssl rand -hex 32)"
            ),
        ));
    }
    Ok(AdminToken(secret.into()))
}

/// The control API's secret from [`ENV_ADMIN_TOKEN_FILE`] (or the file key) or
/// [`ENV_ADMIN_TOKEN`]: trimmed, at least [`MIN_ADMIN_TOKEN_BYTES`].
fn admin_token(
    var: &dyn Fn(&str) -> Option<String>,
    file: Option<PathBuf>,
) -> Result<Option<AdminToken>, ConfigError> {
    let from_file = secret_file(
        var,
        ENV_ADMIN_TOKEN_FILE,
        "server.admin_token_file",
        file,
        MIN_ADMIN_TOKEN_BYTES,
    )?;
    match (from_file, var(ENV_ADMIN_TOKEN)) {
        (Some(_), Some(_)) => Err(ConfigError::invalid(
            ENV_ADMIN_TOKEN,
            format!("set {ENV_ADMIN_TOKEN_FILE} or {ENV_ADMIN_TOKEN}, not both"),
        )),
        (Some(secret), None) => Ok(Some(secret)),
        (None, Some(text)) => secret_text(ENV_ADMIN_TOKEN, &text, MIN_ADMIN_TOKEN_BYTES).map(Some),
        (None, None) => Ok(None),
    }
}

/// Files for the gRPC listener's TLS (paths only: `check-config` never prints key material).
#[derive(Debug, Clone, Serialize)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// PEM CA bundle for client certificates (mutual TLS), when required.
    pub client_ca: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            grpc_addr: DEFAULT_GRPC_ADDR.to_string(),
            admin_addr: DEFAULT_ADMIN_ADDR.to_string(),
            shutdown_grace: Duration::from_secs(DEFAULT_SHUTDOWN_GRACE_SECS),
            json_logs: false,
            worker_threads: None,
            dry_run: false,
            http_addr: None,
            full_metadata: false,
            redis_url: None,
            redis_required: false,
            tls: None,
            admin_token: None,
            redis_signing_key: None,
            max_revocations: crate::revocation::DEFAULT_MAX_REVOCATIONS,
            diagnostics: true,
        }
    }
}

impl Config {
    /// A verifier for these pools and settings over `keys` (built from the same pools).
    pub fn verifier(&self, keys: crate::jwks::KeyStore) -> crate::verify::Verifier {
        crate::verify::Verifier::new(&self.pools, self.verify_settings(), keys)
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
    decision_metadata: Option<String>,
    redis_url: Option<String>,
    redis_required: Option<bool>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_client_ca: Option<PathBuf>,
    admin_token_file: Option<PathBuf>,
    redis_signing_key_file: Option<PathBuf>,
    max_revocations: Option<u64>,
    diagnostics: Option<String>,
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

/// A pool before validation, with the name of the key each field came from.
struct RawPool {
    key: String,
    id: String,
    region: Option<(String, String)>,
    client_ids: (String, Vec<String>),
    token_use: Option<(String, String)>,
    issuer: Option<(String, String)>,
    jwks_uri: Option<(String, String)>,
    idp_endpoint: Option<(String, String)>,
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
        let file_path = file
            .map(Path::to_path_buf)
            .or_else(|| var(ENV_CONFIG_FILE).map(PathBuf::from));
        let file_config = match &file_path {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        Config::combine(&var, file_config)
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

    fn combine(
        var: &dyn Fn(&str) -> Option<String>,
        file: FileConfig,
    ) -> Result<Config, ConfigError> {
        let file_jwks = file.jwks.unwrap_or_default();
        let file_server = file.server.unwrap_or_default();

        let leeway = Duration::from_secs(at_most(
            pick_u64_keyed(
                var,
                ENV_LEEWAY,
                "leeway_seconds",
                file.leeway_seconds,
                DEFAULT_LEEWAY_SECS,
            )?,
            MAX_LEEWAY_SECS,
        )?);
        let max_token_bytes = file.max_token_bytes.unwrap_or(DEFAULT_MAX_TOKEN_BYTES);
        if max_token_bytes < 1024 {
            return Err(ConfigError::invalid(
                "max_token_bytes",
                format!("{max_token_bytes} is too small for any Cognito token (minimum 1024)"),
            ));
        }

        let token_cache_entries = usize::try_from(pick_u64(
            var,
            ENV_TOKEN_CACHE_SIZE,
            file.token_cache_entries,
            crate::cache::DEFAULT_CACHE_ENTRIES as u64,
        )?)
        .map_err(|_| ConfigError::invalid(ENV_TOKEN_CACHE_SIZE, "too large"))?;

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
            allow_preflight: pick_bool(
                var,
                ENV_ALLOW_PREFLIGHT,
                file.allow_preflight,
                DEFAULT_ALLOW_PREFLIGHT,
            )?,
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

        Ok(Config {
            revocation,
            pools,
            leeway,
            max_token_bytes,
            token_cache_entries,
            jwks,
            server,
            routes,
        })
    }
}

/// `[jwks]` and its variables: the key store's timing and bounds.
fn jwks_settings(
    var: &dyn Fn(&str) -> Option<String>,
    file_jwks: FileJwks,
) -> Result<JwksSettings, ConfigError> {
    let jwks = JwksSettings {
        refresh_interval: Duration::from_secs(positive(
            ENV_JWKS_REFRESH,
            pick_u64(
                var,
                ENV_JWKS_REFRESH,
                file_jwks.refresh_seconds,
                DEFAULT_JWKS_REFRESH_SECS,
            )?,
        )?),
        // Zero would switch off the unknown-`kid` flood protection: every token with a made-up
        // `kid` would cost a fetch from the IdP.
        min_refetch_interval: Duration::from_secs(nonzero(pick_u64_keyed(
            var,
            ENV_JWKS_MIN_REFETCH,
            "jwks.min_refetch_seconds",
            file_jwks.min_refetch_seconds,
            DEFAULT_JWKS_MIN_REFETCH_SECS,
        )?)?),
        fetch_timeout: Duration::from_millis(positive(
            ENV_JWKS_TIMEOUT_MS,
            pick_u64(
                var,
                ENV_JWKS_TIMEOUT_MS,
                file_jwks.timeout_ms,
                DEFAULT_JWKS_TIMEOUT_MS,
            )?,
        )?),
        max_body_bytes: file_jwks.max_bytes.unwrap_or(DEFAULT_JWKS_MAX_BYTES),
        retry_min: Duration::from_millis(positive(
            "jwks.retry_min_ms",
            file_jwks.retry_min_ms.unwrap_or(DEFAULT_JWKS_RETRY_MIN_MS),
        )?),
        retry_max: Duration::from_millis(positive(
            "jwks.retry_max_ms",
            file_jwks.retry_max_ms.unwrap_or(DEFAULT_JWKS_RETRY_MAX_MS),
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

/// `[server]` and its variables: listeners, logging, Redis, secrets, the revocation cap.
fn server_config(
    var: &dyn Fn(&str) -> Option<String>,
    file_server: FileServer,
) -> Result<ServerConfig, ConfigError> {
    let json_logs = pick_choice(
        var,
        ENV_LOG_FORMAT,
        "server.log_format",
        file_server.log_format,
        &[("text", false), ("json", true)],
        false,
    )?;
    let mut server = ServerConfig {
        grpc_addr: var(ENV_GRPC_ADDR)
            .or(file_server.grpc_addr)
            .unwrap_or_else(|| DEFAULT_GRPC_ADDR.to_string()),
        admin_addr: var(ENV_ADMIN_ADDR)
            .or(file_server.admin_addr)
            .unwrap_or_else(|| DEFAULT_ADMIN_ADDR.to_string()),
        shutdown_grace: Duration::from_secs(
            file_server
                .shutdown_grace_seconds
                .unwrap_or(DEFAULT_SHUTDOWN_GRACE_SECS),
        ),
        json_logs,
        worker_threads: match var(ENV_WORKER_THREADS) {
            Some(_) => Some(positive(
                ENV_WORKER_THREADS,
                pick_u64(var, ENV_WORKER_THREADS, None, 0)?,
            )? as usize),
            None => file_server
                .worker_threads
                .map(|n| positive("server.worker_threads", n).map(|n| n as usize))
                .transpose()?,
        },
        dry_run: pick_bool(var, ENV_DRY_RUN, file_server.dry_run, false)?,
        http_addr: var(ENV_HTTP_ADDR).or(file_server.http_addr),
        redis_url: redis_url(pick_text(
            var,
            ENV_REDIS_URL,
            "server.redis_url",
            file_server.redis_url,
        ))?,
        redis_required: pick_bool(var, ENV_REDIS_REQUIRED, file_server.redis_required, false)?,
        full_metadata: pick_choice(
            var,
            ENV_DECISION_METADATA,
            "server.decision_metadata",
            file_server.decision_metadata,
            &[("minimal", false), ("full", true)],
            false,
        )?,
        tls: tls_files(
            var,
            file_server.tls_cert,
            file_server.tls_key,
            file_server.tls_client_ca,
        )?,
        admin_token: admin_token(var, file_server.admin_token_file)?,
        redis_signing_key: secret_file(
            var,
            ENV_REDIS_SIGNING_KEY_FILE,
            "server.redis_signing_key_file",
            file_server.redis_signing_key_file,
            MIN_SIGNING_KEY_BYTES,
        )?,
        // Set below, once the gRPC address is known.
        diagnostics: false,
        max_revocations: match var(ENV_MAX_REVOCATIONS) {
            Some(_) => positive(
                ENV_MAX_REVOCATIONS,
                pick_u64(var, ENV_MAX_REVOCATIONS, None, 0)?,
            )? as usize,
            None => file_server
                .max_revocations
                .map(|n| positive("server.max_revocations", n))
                .transpose()?
                .map_or(crate::revocation::DEFAULT_MAX_REVOCATIONS, |n| n as usize),
        },
    };
    server.diagnostics = diagnostics(var, file_server.diagnostics, &server.grpc_addr)?;
    validate_listen_addr(ENV_GRPC_ADDR, &server.grpc_addr, true)?;
    validate_listen_addr(ENV_ADMIN_ADDR, &server.admin_addr, false)?;
    if let Some(addr) = &server.http_addr {
        validate_listen_addr(ENV_HTTP_ADDR, addr, true)?;
    }

    Ok(server)
}

/// `[revocation]` and its variables: the service-wide mode and on-unavailable policy (route
/// defaults), and the tuning of the checks with Cognito.
fn revocation_settings(
    var: &dyn Fn(&str) -> Option<String>,
    file_revocation: FileRevocation,
) -> Result<(RevocationSettings, RevocationMode, OnUnavailable), ConfigError> {
    let revocation_mode = pick_choice(
        var,
        ENV_REVOCATION,
        "revocation.mode",
        file_revocation.mode,
        &RevocationMode::CHOICES,
        RevocationMode::Off,
    )?;
    let on_unavailable = pick_choice(
        var,
        ENV_REVOCATION_ON_UNAVAILABLE,
        "revocation.on_unavailable",
        file_revocation.on_unavailable,
        &OnUnavailable::CHOICES,
        OnUnavailable::Deny,
    )?;
    let allow_unverifiable = pick_choice(
        var,
        ENV_REVOCATION_UNVERIFIABLE,
        "revocation.unverifiable",
        file_revocation.unverifiable,
        &[("deny", false), ("allow", true)],
        false,
    )?;
    let revocation = RevocationSettings {
        ttl: Duration::from_secs(nonzero(pick_u64_keyed(
            var,
            ENV_REVOCATION_TTL,
            "revocation.ttl_seconds",
            file_revocation.ttl_seconds,
            revocation_check::DEFAULT_TTL_SECS,
        )?)?),
        grace: Duration::from_secs(pick_u64(
            var,
            ENV_REVOCATION_GRACE,
            file_revocation.grace_seconds,
            revocation_check::DEFAULT_GRACE_SECS,
        )?),
        timeout: Duration::from_millis(nonzero(pick_u64_keyed(
            var,
            ENV_REVOCATION_TIMEOUT_MS,
            "revocation.timeout_ms",
            file_revocation.timeout_ms,
            revocation_check::DEFAULT_TIMEOUT_MS,
        )?)?),
        max_concurrent: nonzero(pick_u64_keyed(
            var,
            ENV_REVOCATION_MAX_CONCURRENT,
            "revocation.max_concurrent",
            file_revocation.max_concurrent,
            revocation_check::DEFAULT_MAX_CONCURRENT as u64,
        )?)? as usize,
        allow_unverifiable,
    };
    Ok((revocation, revocation_mode, on_unavailable))
}

/// What only the whole configuration shows: every pool that revocation checks may ask has an
/// endpoint, and no issuer belongs to two pools.
fn check_pools(
    var: &dyn Fn(&str) -> Option<String>,
    pools: &[PoolConfig],
    routes: &RouteConfig,
) -> Result<(), ConfigError> {
    let checks_cognito = routes.fallback.revocation == RevocationMode::Cognito
        || routes
            .rules
            .iter()
            .any(|r| r.requirements.revocation == RevocationMode::Cognito);
    if checks_cognito {
        if let Some((i, pool)) = pools
            .iter()
            .enumerate()
            .find(|(_, p)| p.idp_endpoint.is_none())
        {
            return Err(ConfigError::invalid(
                if i + 1 == pools.len() && var(ENV_POOL_ID).as_deref() == Some(pool.id.as_str())
                {
                    ENV_IDP_ENDPOINT.to_string()
                } else {
                    format!("pools[{i}].idp_endpoint")
                },
                format!(
                    "revocation checks ask Cognito, and pool {} has no region to derive its endpoint from",
                    pool.id
                ),
            ));
        }
    }
    let mut seen = HashSet::new();
    for (i, pool) in pools.iter().enumerate() {
        for issuer in &pool.issuers {
            if !seen.insert(issuer.clone()) {
                return Err(ConfigError::invalid(
                    format!("pools[{i}].issuer"),
                    format!("issuer {issuer} is claimed by two pools"),
                ));
            }
        }
    }

    Ok(())
}

/// A Redis URL, named by where it came from: `redis://` or `rediss://` only.
fn redis_url(picked: Option<(String, String)>) -> Result<Option<String>, ConfigError> {
    let Some((key, url)) = picked else {
        return Ok(None);
    };
    let url = url.trim().to_string();
    if url.starts_with("redis://") || url.starts_with("rediss://") {
        Ok(Some(url))
    } else {
        Err(ConfigError::invalid(
            key,
            "must be a redis:// or rediss:// URL",
        ))
    }
}

/// A listen address is `host:port` (an IP literal) or, where allowed, `unix:/absolute/path`.
fn validate_listen_addr(key: &str, addr: &str, allow_unix: bool) -> Result<(), ConfigError> {
    if let Some(path) = addr.strip_prefix("unix:") {
        return if !allow_unix {
            Err(ConfigError::invalid(
                key,
                "a Unix socket is not supported here",
            ))
        } else if path.starts_with('/') {
            Ok(())
        } else {
            Err(ConfigError::invalid(
                key,
                format!("'{addr}' must be unix: followed by an absolute path"),
            ))
        };
    }
    addr.parse::<std::net::SocketAddr>()
        .map(|_| ())
        .map_err(|_| {
            ConfigError::invalid(key, format!("'{addr}' is not an IP address with a port"))
        })
}

/// TLS settings from the environment (which wins) or the file; each named file must hold PEM.
fn tls_files(
    var: &dyn Fn(&str) -> Option<String>,
    file_cert: Option<PathBuf>,
    file_key: Option<PathBuf>,
    file_ca: Option<PathBuf>,
) -> Result<Option<TlsFiles>, ConfigError> {
    let pick = |env: &str, file: Option<PathBuf>, key: &str| {
        var(env)
            .map(|v| (env.to_string(), PathBuf::from(v)))
            .or_else(|| file.map(|p| (key.to_string(), p)))
    };
    let cert = pick(ENV_TLS_CERT, file_cert, "server.tls_cert");
    let key = pick(ENV_TLS_KEY, file_key, "server.tls_key");
    let ca = pick(ENV_TLS_CLIENT_CA, file_ca, "server.tls_client_ca");
    let (cert, key) = match (cert, key, &ca) {
        (None, None, None) => return Ok(None),
        (Some(cert), Some(key), _) => (cert, key),
        (None, _, _) => {
            return Err(ConfigError::invalid(
                ENV_TLS_CERT,
                "TLS needs a certificate (and a key)",
            ))
        }
        (Some(_), None, _) => {
            return Err(ConfigError::invalid(ENV_TLS_KEY, "TLS needs a private key"))
        }
    };
    for (key_name, path) in [Some(&cert), Some(&key), ca.as_ref()].into_iter().flatten() {
        let text = std::fs::read_to_string(path).map_err(|err| {
            ConfigError::invalid(key_name.clone(), format!("{}: {err}", path.display()))
        })?;
        if !text.contains("-----BEGIN ") {
            return Err(ConfigError::invalid(
                key_name.clone(),
                format!("{} holds no PEM", path.display()),
            ));
        }
    }
    Ok(Some(TlsFiles {
        cert: cert.1,
        key: key.1,
        client_ca: ca.map(|c| c.1),
    }))
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_file(path, &text)
}

fn parse_file(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
    toml::from_str(text).map_err(|err| ConfigError::Parse {
        path: path.to_path_buf(),
        message: err.to_string().trim_end().replace('\n', " | "),
    })
}

/// A text setting from its variable, else its file key: the value with the name it came under,
/// so an error names the right place.
fn pick_text(
    var: &dyn Fn(&str) -> Option<String>,
    env_key: &str,
    file_key: &str,
    file_value: Option<String>,
) -> Option<(String, String)> {
    var(env_key)
        .map(|v| (env_key.to_string(), v))
        .or_else(|| file_value.map(|v| (file_key.to_string(), v)))
}

/// A word setting (any letter case) mapped through `choices`; unset is `default`, anything else
/// an error listing the choices.
fn pick_choice<T: Copy>(
    var: &dyn Fn(&str) -> Option<String>,
    env_key: &str,
    file_key: &str,
    file_value: Option<String>,
    choices: &[(&str, T)],
    default: T,
) -> Result<T, ConfigError> {
    let Some((key, value)) = pick_text(var, env_key, file_key, file_value) else {
        return Ok(default);
    };
    let word = value.trim();
    choices
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(word))
        .map(|(_, choice)| *choice)
        .ok_or_else(|| {
            let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
            ConfigError::invalid(key, format!("'{word}' is not one of {}", names.join(", ")))
        })
}

/// A switch from its variable, else its file key, else `default`.
fn pick_bool(
    var: &dyn Fn(&str) -> Option<String>,
    env_key: &str,
    file_value: Option<bool>,
    default: bool,
) -> Result<bool, ConfigError> {
    match var(env_key) {
        Some(value) => parse_bool(env_key, &value),
        None => Ok(file_value.unwrap_or(default)),
    }
}

fn pick_u64(
    var: &dyn Fn(&str) -> Option<String>,
    env_key: &str,
    file_value: Option<u64>,
    default: u64,
) -> Result<u64, ConfigError> {
    match var(env_key) {
        Some(text) => text.trim().parse::<u64>().map_err(|_| {
            ConfigError::invalid(
                env_key,
                format!("'{text}' is not a whole number of the expected unit"),
            )
        }),
        None => Ok(file_value.unwrap_or(default)),
    }
}

/// Like [`pick_u64`], also naming where the value came from (the variable, the file key, or the
/// variable for a default), so a later range check names the right place.
fn pick_u64_keyed(
    var: &dyn Fn(&str) -> Option<String>,
    env_key: &str,
    file_key: &str,
    file_value: Option<u64>,
    default: u64,
) -> Result<(String, u64), ConfigError> {
    let key = match (var(env_key), file_value) {
        (None, Some(_)) => file_key,
        _ => env_key,
    };
    Ok((
        key.to_string(),
        pick_u64(var, env_key, file_value, default)?,
    ))
}

fn nonzero((key, value): (String, u64)) -> Result<u64, ConfigError> {
    positive(&key, value)
}

fn at_most((key, value): (String, u64), max: u64) -> Result<u64, ConfigError> {
    if value > max {
        Err(ConfigError::invalid(
            key,
            format!("{value} is more than the largest accepted, {max}"),
        ))
    } else {
        Ok(value)
    }
}

/// A Redis URL as `check-config` and `/config` show it: the password replaced.
fn redacted_url<S: serde::Serializer>(url: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match url {
        None => s.serialize_none(),
        Some(url) => {
            let shown = match reqwest::Url::parse(url) {
                Ok(mut parsed) if parsed.password().is_some() => {
                    let _ = parsed.set_password(Some("redacted"));
                    parsed.to_string()
                }
                Ok(parsed) => parsed.to_string(),
                Err(_) => "<unparsable>".to_string(),
            };
            s.serialize_some(&shown)
        }
    }
}

fn parse_bool(key: &str, value: &str) -> Result<bool, ConfigError> {
    crate::parse_bool(value).map_err(|problem| ConfigError::invalid(key, problem))
}

fn positive(key: &str, value: u64) -> Result<u64, ConfigError> {
    if value == 0 {
        Err(ConfigError::invalid(key, "must be greater than zero"))
    } else {
        Ok(value)
    }
}

fn split_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Joins the file's pools with the environment's one pool (see the module docs for the order).
fn merge_pools(
    var: &dyn Fn(&str) -> Option<String>,
    file_pools: Vec<FilePool>,
) -> Result<Vec<RawPool>, ConfigError> {
    let mut pools = Vec::with_capacity(file_pools.len() + 1);
    for (i, pool) in file_pools.into_iter().enumerate() {
        let key = format!("pools[{i}]");
        let id = pool
            .id
            .filter(|id| !id.trim().is_empty())
            .ok_or_else(|| ConfigError::invalid(format!("{key}.id"), "missing pool id"))?;
        pools.push(RawPool {
            id: id.trim().to_string(),
            region: pool.region.map(|v| (format!("{key}.region"), v)),
            client_ids: (format!("{key}.client_ids"), pool.client_ids),
            token_use: pool.token_use.map(|v| (format!("{key}.token_use"), v)),
            issuer: pool.issuer.map(|v| (format!("{key}.issuer"), v)),
            jwks_uri: pool.jwks_uri.map(|v| (format!("{key}.jwks_uri"), v)),
            idp_endpoint: pool
                .idp_endpoint
                .map(|v| (format!("{key}.idp_endpoint"), v)),
            key,
        });
    }

    let env_only = [
        ENV_CLIENT_IDS,
        ENV_ISSUER,
        ENV_JWKS_URI,
        ENV_TOKEN_USE,
        ENV_IDP_ENDPOINT,
    ];
    let Some(env_id) = var(ENV_POOL_ID) else {
        if let Some(stray) = env_only.iter().find(|k| var(k).is_some()) {
            return Err(ConfigError::invalid(
                *stray,
                format!("is set but {ENV_POOL_ID} is not: it describes the environment's pool"),
            ));
        }
        return Ok(pools);
    };
    let env_id = env_id.trim().to_string();
    let with_key = |k: &str| var(k).map(|v| (k.to_string(), v));
    let existing = pools.iter_mut().find(|p| p.id == env_id);
    match existing {
        Some(pool) => {
            if let Some(ids) = var(ENV_CLIENT_IDS) {
                pool.client_ids = (ENV_CLIENT_IDS.to_string(), split_list(&ids));
            }
            pool.token_use = with_key(ENV_TOKEN_USE).or(pool.token_use.take());
            pool.issuer = with_key(ENV_ISSUER).or(pool.issuer.take());
            pool.jwks_uri = with_key(ENV_JWKS_URI).or(pool.jwks_uri.take());
            pool.idp_endpoint = with_key(ENV_IDP_ENDPOINT).or(pool.idp_endpoint.take());
        }
        None => pools.push(RawPool {
            key: ENV_POOL_ID.to_string(),
            id: env_id,
            region: None,
            client_ids: (
                ENV_CLIENT_IDS.to_string(),
                var(ENV_CLIENT_IDS)
                    .map(|ids| split_list(&ids))
                    .unwrap_or_default(),
            ),
            token_use: with_key(ENV_TOKEN_USE),
            issuer: with_key(ENV_ISSUER),
            jwks_uri: with_key(ENV_JWKS_URI),
            idp_endpoint: with_key(ENV_IDP_ENDPOINT),
        }),
    }
    Ok(pools)
}

/// `us-east-1_AbC` -> `us-east-1`; `None` for ids not in the AWS shape (`local_abc`).
pub fn region_from_pool_id(pool_id: &str) -> Option<&str> {
    let (prefix, rest) = pool_id.split_once('_')?;
    (is_region(prefix) && !rest.is_empty()).then_some(prefix)
}

fn is_region(text: &str) -> bool {
    let parts: Vec<&str> = text.split('-').collect();
    parts.len() >= 3
        && parts[0].len() == 2
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1].bytes().all(|b| b.is_ascii_digit())
        && !parts[parts.len() - 1].is_empty()
}

fn validate_url(key: &str, value: &str) -> Result<String, ConfigError> {
    let value = value.trim().trim_end_matches('/');
    let url = reqwest::Url::parse(value)
        .map_err(|err| ConfigError::invalid(key, format!("'{value}' is not a URL: {err}")))?;
    if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
        return Err(ConfigError::invalid(
            key,
            format!("'{value}' must be an http(s) URL with a host"),
        ));
    }
    Ok(value.to_string())
}

fn validate_pool(raw: RawPool, default_region: Option<String>) -> Result<PoolConfig, ConfigError> {
    let derived = region_from_pool_id(&raw.id).map(str::to_string);
    let region = match (&derived, raw.region) {
        (Some(derived), Some((key, given))) if given.trim() != derived => {
            return Err(ConfigError::invalid(
                key,
                format!("'{given}' contradicts the pool id's region '{derived}'"),
            ))
        }
        (Some(derived), _) => Some(derived.clone()),
        (None, Some((key, given))) => {
            if !is_region(given.trim()) {
                return Err(ConfigError::invalid(
                    key,
                    format!("'{given}' is not an AWS region"),
                ));
            }
            Some(given.trim().to_string())
        }
        (None, None) => default_region
            .map(|r| r.trim().to_string())
            .filter(|r| is_region(r)),
    };

    let (clients_key, client_ids) = raw.client_ids;
    let mut unique = Vec::new();
    for id in client_ids
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
    {
        if !unique.iter().any(|u: &String| u == id) {
            unique.push(id.to_string());
        }
    }
    if unique.is_empty() {
        return Err(ConfigError::invalid(
            clients_key,
            format!(
                "pool {} needs at least one app client id: a token for any other client must be refused",
                raw.id
            ),
        ));
    }

    let token_use = match raw.token_use {
        Some((key, value)) => {
            TokenUsePolicy::parse(&value).map_err(|p| ConfigError::invalid(key, p))?
        }
        None => TokenUsePolicy::Access,
    };

    let issuers = match (raw.issuer, &region) {
        (Some((key, issuer)), _) => vec![validate_url(&key, &issuer)?],
        (None, Some(region)) => vec![
            format!("https://cognito-idp.{region}.amazonaws.com/{}", raw.id),
            format!(
                "https://issuer-cognito-idp.{region}.amazonaws.com/{}",
                raw.id
            ),
        ],
        (None, None) => {
            let key = if raw.key == ENV_POOL_ID {
                ENV_ISSUER.to_string()
            } else {
                format!("{}.issuer", raw.key)
            };
            return Err(ConfigError::invalid(
                key,
                format!(
                    "pool {} has no region in its id and none is configured: set the expected issuer",
                    raw.id
                ),
            ));
        }
    };

    let jwks_uri = match raw.jwks_uri {
        Some((key, uri)) => validate_url(&key, &uri)?,
        None => format!("{}/.well-known/jwks.json", issuers[0]),
    };

    let idp_endpoint = match (raw.idp_endpoint, &region) {
        (Some((key, endpoint)), _) => Some(format!("{}/", validate_url(&key, &endpoint)?)),
        (None, Some(region)) => Some(format!("https://cognito-idp.{region}.amazonaws.com/")),
        (None, None) => None,
    };

    Ok(PoolConfig {
        idp_endpoint,
        id: raw.id,
        region,
        client_ids: unique,
        token_use,
        issuers,
        jwks_uri,
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
}
