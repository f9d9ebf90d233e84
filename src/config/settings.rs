//! Every scalar setting, declared once: its variable, its file key, its default, its bounds and
//! its doc line. Reading a value (variable first, then the file, then the default), checking it
//! against its bounds, and naming the right variable or key in an exit-2 message all go through
//! these entries; [`markdown`] renders them as the reference in `docs/configuration.md` (a test
//! holds that page to it), and another test holds the file schema's fields to them one to one.
//!
//! Why no crate: clap's `env` covers variables but not the file, and figment or config map
//! variable names to keys by a rule, while ours are the app's own names beside our own. What is
//! left is a table and five small readers.

use super::*;

/// A setting's default, as it is used and as the reference states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultValue {
    /// A number.
    Number(u64),
    /// `true` or `false`.
    Switch(bool),
    /// A word or an address, used as if it had been given.
    Word(&'static str),
    /// No value; the text says what that means (`none`, `off`, `one per core`).
    Unset(&'static str),
}

impl std::fmt::Display for DefaultValue {
    /// The default as the reference table shows it: a value in backticks, or the prose of
    /// [`DefaultValue::Unset`] as it is.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DefaultValue::Number(n) => write!(f, "`{n}`"),
            DefaultValue::Switch(b) => write!(f, "`{b}`"),
            DefaultValue::Word(w) => write!(f, "`{w}`"),
            DefaultValue::Unset(text) => f.write_str(text),
        }
    }
}

/// One setting.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// The environment variable, when there is one.
    pub env: Option<&'static str>,
    /// The config file key (dotted: `jwks.refresh_seconds`), when there is one. Pool settings
    /// are per pool: `pools[].id`.
    pub key: Option<&'static str>,
    /// The default.
    pub default: DefaultValue,
    /// The smallest number accepted (numbers only; 0 means any).
    pub min: u64,
    /// The largest number accepted (numbers only).
    pub max: Option<u64>,
    /// What it does, in one line of Markdown.
    pub doc: &'static str,
}

impl Setting {
    const fn new(
        env: &'static str,
        key: &'static str,
        default: DefaultValue,
        doc: &'static str,
    ) -> Self {
        Setting {
            env: Some(env),
            key: Some(key),
            default,
            min: 0,
            max: None,
            doc,
        }
    }

    const fn file_only(key: &'static str, default: DefaultValue, doc: &'static str) -> Self {
        Setting {
            env: None,
            key: Some(key),
            default,
            min: 0,
            max: None,
            doc,
        }
    }

    const fn env_only(env: &'static str, default: DefaultValue, doc: &'static str) -> Self {
        Setting {
            env: Some(env),
            key: None,
            default,
            min: 0,
            max: None,
            doc,
        }
    }

    const fn at_least(mut self, min: u64) -> Self {
        self.min = min;
        self
    }

    const fn at_most(mut self, max: u64) -> Self {
        self.max = Some(max);
        self
    }

    /// The name a problem is reported under when nothing was given: the variable, else the key.
    fn name(&self) -> &'static str {
        self.env.or(self.key).unwrap_or("?")
    }
}

use DefaultValue::{Number, Switch, Unset, Word};

/// `COGNITO_CLOCK_LEEWAY_SECONDS`.
pub const LEEWAY: Setting = Setting::new(
    ENV_LEEWAY,
    "leeway_seconds",
    Number(DEFAULT_LEEWAY_SECS),
    "clock-skew leeway in seconds for `exp`, `nbf` and `iat`",
)
.at_most(MAX_LEEWAY_SECS);
/// `max_token_bytes`.
pub const MAX_TOKEN_BYTES: Setting = Setting::file_only(
    "max_token_bytes",
    Number(DEFAULT_MAX_TOKEN_BYTES as u64),
    "largest token accepted, in bytes; a larger one is `malformed` (the default leaves room for hundreds of groups; no Cognito token is under 1 KiB)",
)
.at_least(1024);
/// `COGNITO_TOKEN_CACHE_SIZE`.
pub const TOKEN_CACHE_SIZE: Setting = Setting::new(
    ENV_TOKEN_CACHE_SIZE,
    "token_cache_entries",
    Number(crate::cache::DEFAULT_CACHE_ENTRIES as u64),
    "verified tokens cached (about 250 bytes each; `0` disables the cache)",
);
/// `AUTHZ_ALLOW_PREFLIGHT`.
pub const ALLOW_PREFLIGHT: Setting = Setting::new(
    ENV_ALLOW_PREFLIGHT,
    "allow_preflight",
    Switch(DEFAULT_ALLOW_PREFLIGHT),
    "let CORS preflights through as anonymous on every route that does not say otherwise; off, since the shipped Envoy configs answer preflights at the edge",
);
/// `COGNITO_AUTHZ_CONFIG`.
pub const CONFIG_FILE: Setting = Setting::env_only(
    ENV_CONFIG_FILE,
    Unset("none"),
    "path of a TOML config file (or `--config FILE`)",
);

/// `COGNITO_JWKS_REFRESH_SECONDS`.
pub const JWKS_REFRESH: Setting = Setting::new(
    ENV_JWKS_REFRESH,
    "jwks.refresh_seconds",
    Number(DEFAULT_JWKS_REFRESH_SECS),
    "background key refresh interval, in seconds",
)
.at_least(1);
/// `COGNITO_JWKS_MIN_REFETCH_SECONDS`: zero would switch off the unknown-`kid` flood
/// protection (every token with a made-up `kid` would cost a fetch from the IdP).
pub const JWKS_MIN_REFETCH: Setting = Setting::new(
    ENV_JWKS_MIN_REFETCH,
    "jwks.min_refetch_seconds",
    Number(DEFAULT_JWKS_MIN_REFETCH_SECS),
    "penalty window in seconds: at most one unknown-`kid` refetch per pool within it; `0` is refused (it would switch the flood protection off)",
)
.at_least(1);
/// `COGNITO_JWKS_TIMEOUT_MS`.
pub const JWKS_TIMEOUT: Setting = Setting::new(
    ENV_JWKS_TIMEOUT_MS,
    "jwks.timeout_ms",
    Number(DEFAULT_JWKS_TIMEOUT_MS),
    "timeout of one JWKS fetch in milliseconds (also the longest a request waits on a refetch)",
)
.at_least(1);
/// `jwks.max_bytes`.
pub const JWKS_MAX_BYTES: Setting = Setting::file_only(
    "jwks.max_bytes",
    Number(DEFAULT_JWKS_MAX_BYTES as u64),
    "largest JWKS body accepted, in bytes (a Cognito JWKS is about 1 KiB)",
)
.at_least(1);
/// `jwks.retry_min_ms`.
pub const JWKS_RETRY_MIN: Setting = Setting::file_only(
    "jwks.retry_min_ms",
    Number(DEFAULT_JWKS_RETRY_MIN_MS),
    "first retry after a failed fetch, in milliseconds; the delay doubles after each failure",
)
.at_least(1);
/// `jwks.retry_max_ms`.
pub const JWKS_RETRY_MAX: Setting = Setting::file_only(
    "jwks.retry_max_ms",
    Number(DEFAULT_JWKS_RETRY_MAX_MS),
    "longest retry delay, in milliseconds (not below `jwks.retry_min_ms`)",
)
.at_least(1);

/// `AUTHZ_GRPC_ADDR`.
pub const GRPC_ADDR: Setting = Setting::new(
    ENV_GRPC_ADDR,
    "server.grpc_addr",
    Word(DEFAULT_GRPC_ADDR),
    "gRPC listener (Check, diagnostics, reflection): `host:port` or `unix:/absolute/path`. Loopback by default, since a sidecar's Envoy shares its host, pod or task; the container image and compose set `0.0.0.0:9001` because there Envoy is another container",
);
/// `AUTHZ_ADMIN_ADDR`.
pub const ADMIN_ADDR: Setting = Setting::new(
    ENV_ADMIN_ADDR,
    "server.admin_addr",
    Word(DEFAULT_ADMIN_ADDR),
    "admin HTTP: `/metrics`, `/healthz` (alive), `/readyz` (keys loaded) for anyone who can reach it; the control API, `/revocations` and `/config` (the configuration in force, reloads included), for the operator only",
);
/// `AUTHZ_HTTP_ADDR`.
pub const HTTP_ADDR: Setting = Setting::new(
    ENV_HTTP_ADDR,
    "server.http_addr",
    Unset("off"),
    "Envoy's HTTP ext_authz protocol (`http_service`): `host:port` or `unix:/absolute/path`, HTTP/1.1 and HTTP/2 with prior knowledge",
);
/// `AUTHZ_HTTP_TRUST_TRACEPARENT`.
pub const HTTP_TRUST_TRACEPARENT: Setting = Setting::new(
    ENV_HTTP_TRUST_TRACEPARENT,
    "server.http_trust_traceparent",
    Switch(false),
    "`true` only when the Envoy in front traces (its tracer writes its own `traceparent` on every HTTP check, replacing a client's): the HTTP check then joins Envoy's trace and follows its sampling. `false`: a `traceparent` there may be a client's, so the check starts a trace of its own, sampled by `OTEL_TRACES_SAMPLER`, and only links to it ([tracing](operations.md#tracing))",
);
/// `server.shutdown_grace_seconds`.
pub const SHUTDOWN_GRACE: Setting = Setting::file_only(
    "server.shutdown_grace_seconds",
    Number(DEFAULT_SHUTDOWN_GRACE_SECS),
    "seconds in-flight checks get to finish after SIGTERM",
);
/// `AUTHZ_HEADER_READ_TIMEOUT_SECONDS`.
pub const HEADER_READ_TIMEOUT: Setting = Setting::new(
    ENV_HEADER_READ_TIMEOUT,
    "server.header_read_timeout_seconds",
    Number(limits::DEFAULT_HEADER_READ_TIMEOUT_SECS),
    "seconds a new connection has, on every listener, to finish its TLS handshake and send its first request, and an HTTP/1.1 request its headers; a slow or silent client is closed",
)
.at_least(1)
.at_most(300);
/// `AUTHZ_IDLE_TIMEOUT_SECONDS`.
pub const IDLE_TIMEOUT: Setting = Setting::new(
    ENV_IDLE_TIMEOUT,
    "server.idle_timeout_seconds",
    Number(limits::DEFAULT_IDLE_TIMEOUT_SECS),
    "seconds a connection may hold no request before it is closed (gracefully: HTTP/2 says GOAWAY); longer than the 60 s after which the shipped Envoy configs drop their idle connections",
)
.at_least(1)
.at_most(86_400);
/// `AUTHZ_KEEPALIVE_SECONDS`.
pub const KEEPALIVE: Setting = Setting::new(
    ENV_KEEPALIVE,
    "server.keepalive_seconds",
    Number(limits::DEFAULT_KEEPALIVE_SECS),
    "HTTP/2 keep-alive on the gRPC and HTTP listeners: a quiet connection is pinged this often",
)
.at_least(1)
.at_most(3_600);
/// `AUTHZ_KEEPALIVE_TIMEOUT_SECONDS`.
pub const KEEPALIVE_TIMEOUT: Setting = Setting::new(
    ENV_KEEPALIVE_TIMEOUT,
    "server.keepalive_timeout_seconds",
    Number(limits::DEFAULT_KEEPALIVE_TIMEOUT_SECS),
    "seconds a keep-alive ping has to be answered before the connection is closed",
)
.at_least(1)
.at_most(3_600);
/// `AUTHZ_REQUEST_TIMEOUT_SECONDS`.
pub const REQUEST_TIMEOUT: Setting = Setting::new(
    ENV_REQUEST_TIMEOUT,
    "server.request_timeout_seconds",
    Number(limits::DEFAULT_REQUEST_TIMEOUT_SECS),
    "the longest one request may take on any listener (a check is bounded by its own JWKS and revocation timeouts long before; this is the backstop)",
)
.at_least(1)
.at_most(3_600);
/// `AUTHZ_GRPC_MAX_CONNECTIONS`.
pub const GRPC_MAX_CONNECTIONS: Setting = Setting::new(
    ENV_GRPC_MAX_CONNECTIONS,
    "server.grpc_max_connections",
    Number(limits::DEFAULT_GRPC_MAX_CONNECTIONS as u64),
    "connections open at once on the gRPC listener; one more is closed at once and counted (Envoy multiplexes its checks over a few HTTP/2 connections)",
)
.at_least(1);
/// `AUTHZ_HTTP_MAX_CONNECTIONS`.
pub const HTTP_MAX_CONNECTIONS: Setting = Setting::new(
    ENV_HTTP_MAX_CONNECTIONS,
    "server.http_max_connections",
    Number(limits::DEFAULT_HTTP_MAX_CONNECTIONS as u64),
    "connections open at once on the HTTP ext_authz listener; above the 512 the shipped Envoy configs open at most (HTTP/1.1 takes one connection per check in flight)",
)
.at_least(1);
/// `AUTHZ_ADMIN_MAX_CONNECTIONS`.
pub const ADMIN_MAX_CONNECTIONS: Setting = Setting::new(
    ENV_ADMIN_MAX_CONNECTIONS,
    "server.admin_max_connections",
    Number(limits::DEFAULT_ADMIN_MAX_CONNECTIONS as u64),
    "connections open at once on the admin listener (probes, scrapes, the operator)",
)
.at_least(1);
/// `AUTHZ_LOG_FORMAT`.
pub const LOG_FORMAT: Setting = Setting::new(
    ENV_LOG_FORMAT,
    "server.log_format",
    Word("text"),
    "`text` or `json` (one JSON object per line)",
);
/// `AUTHZ_WORKER_THREADS`.
pub const WORKER_THREADS: Setting = Setting::new(
    ENV_WORKER_THREADS,
    "server.worker_threads",
    Unset("one per core"),
    "`serve`'s runtime worker threads (BENCHMARKS.md measures `1` against the default)",
)
.at_least(1)
.at_most(1_024);
/// `AUTHZ_DRY_RUN`.
pub const DRY_RUN: Setting = Setting::new(
    ENV_DRY_RUN,
    "server.dry_run",
    Switch(false),
    "shadow mode: every decision is computed, logged and counted (metadata `dry_run: true`), every request is allowed; identity headers are still set only for valid tokens and stripped otherwise",
);
/// `AUTHZ_DECISION_METADATA`.
pub const DECISION_METADATA: Setting = Setting::new(
    ENV_DECISION_METADATA,
    "server.decision_metadata",
    Word("minimal"),
    "dynamic metadata per decision: `minimal` (`decision`, `reason`, `sub`; `dry_run` when on) or `full` (also `rule`, `pool`, `token_use`)",
);
/// `AUTHZ_REDIS_URL`.
pub const REDIS_URL: Setting = Setting::new(
    ENV_REDIS_URL,
    "server.redis_url",
    Unset("none"),
    "`redis://` or `rediss://`: revocations and verdicts shared by every replica (the password never shows in `check-config` or `/config`; `#insecure`, which would skip the certificate check, is refused); in cluster mode, one or more seed nodes, comma-separated, with the same scheme, user and password",
);
/// `AUTHZ_REDIS_CLUSTER`.
pub const REDIS_CLUSTER: Setting = Setting::new(
    ENV_REDIS_CLUSTER,
    "server.redis_cluster",
    Switch(false),
    "the Redis is a cluster (ElastiCache Serverless, MemoryDB, cluster-mode ElastiCache, Valkey or Redis Cluster, Redis 7+): slot routing, failover, revocations under one hash tag, sharded pub/sub ([cluster mode](revocation.md#redis-cluster))",
);
/// `AUTHZ_REDIS_REQUIRED`.
pub const REDIS_REQUIRED: Setting = Setting::new(
    ENV_REDIS_REQUIRED,
    "server.redis_required",
    Switch(false),
    "`/readyz` fails while Redis is down (by default it only reports it)",
);
/// `AUTHZ_REDIS_SIGNING_KEY_FILE`.
pub const REDIS_SIGNING_KEY_FILE: Setting = Setting::new(
    ENV_REDIS_SIGNING_KEY_FILE,
    "server.redis_signing_key_file",
    Unset("none"),
    "a file holding up to 4 keys, one a line, each 32 to 256 bytes without spaces: replicas sign what they share with each (HMAC-SHA256), accept what any of them signed, add the tags a value lacks, and ignore the rest, for a Redis others can write ([rotation](revocation.md#rotating-the-signing-key))",
)
.at_least(MIN_SIGNING_KEY_BYTES as u64)
.at_most(MAX_SIGNING_KEY_BYTES as u64);
/// `AUTHZ_TLS_CERT`.
pub const TLS_CERT: Setting = Setting::new(
    ENV_TLS_CERT,
    "server.tls_cert",
    Unset("none"),
    "PEM certificate chain (with `AUTHZ_TLS_KEY`): the gRPC listener and the HTTP listener (on TCP) speak TLS (rustls; HTTP/2 and HTTP/1.1 by ALPN)",
);
/// `AUTHZ_TLS_KEY`.
pub const TLS_KEY: Setting = Setting::new(
    ENV_TLS_KEY,
    "server.tls_key",
    Unset("none"),
    "PEM private key of that certificate",
);
/// `AUTHZ_TLS_CLIENT_CA`.
pub const TLS_CLIENT_CA: Setting = Setting::new(
    ENV_TLS_CLIENT_CA,
    "server.tls_client_ca",
    Unset("none"),
    "PEM CA bundle: clients (Envoy) must present a certificate it signed (mutual TLS), on both listeners",
);
/// `AUTHZ_ADMIN_TOKEN_FILE`.
pub const ADMIN_TOKEN_FILE: Setting = Setting::new(
    ENV_ADMIN_TOKEN_FILE,
    "server.admin_token_file",
    Unset("none"),
    "a file holding the control API's bearer secret, at least 16 bytes; without one the control API is off (404)",
)
.at_least(MIN_ADMIN_TOKEN_BYTES as u64);
/// `AUTHZ_ADMIN_TOKEN`.
pub const ADMIN_TOKEN: Setting = Setting::env_only(
    ENV_ADMIN_TOKEN,
    Unset("none"),
    "the secret itself (at least 16 bytes), for platforms that inject secrets as variables (ECS task `secrets`); not with `AUTHZ_ADMIN_TOKEN_FILE`",
)
.at_least(MIN_ADMIN_TOKEN_BYTES as u64);
/// `AUTHZ_MAX_REVOCATIONS`.
pub const MAX_REVOCATIONS: Setting = Setting::new(
    ENV_MAX_REVOCATIONS,
    "server.max_revocations",
    Number(crate::revocation::DEFAULT_MAX_REVOCATIONS as u64),
    "explicit revocations held (about 100 bytes each); one more is refused with 503 and counted. Entries learned from Redis fill at most three quarters: the last quarter is kept for revocations made through this replica",
)
.at_least(1);
/// `AUTHZ_DIAGNOSTICS`.
pub const DIAGNOSTICS: Setting = Setting::new(
    ENV_DIAGNOSTICS,
    "server.diagnostics",
    Word("auto"),
    "our diagnostics service (`VerifyToken`, `KeyStatus`) and reflection on the gRPC listener: `auto` (on only when it listens on loopback or a Unix socket), `on` or `off`",
);

/// `COGNITO_REVOCATION`.
pub const REVOCATION: Setting = Setting::new(
    ENV_REVOCATION,
    "revocation.mode",
    Word("off"),
    "`cognito`: confirm locally valid access tokens with Cognito's `GetUser` on every route that does not say otherwise; `off`: only explicit revocations",
);
/// `COGNITO_REVOCATION_TTL_SECONDS`.
pub const REVOCATION_TTL: Setting = Setting::new(
    ENV_REVOCATION_TTL,
    "revocation.ttl_seconds",
    Number(revocation_check::DEFAULT_TTL_SECS),
    "how long a Cognito verdict on a token is trusted, in seconds: at most one `GetUser` per token per TTL",
)
.at_least(1);
/// `COGNITO_REVOCATION_ON_UNAVAILABLE`.
pub const REVOCATION_ON_UNAVAILABLE: Setting = Setting::new(
    ENV_REVOCATION_ON_UNAVAILABLE,
    "revocation.on_unavailable",
    Word("deny"),
    "Cognito unreachable, slow, throttling or answering garbage: `deny` (503 `revocation_unavailable`) or `grace` (accept the last verdict if younger than the grace)",
);
/// `COGNITO_REVOCATION_GRACE_SECONDS`.
pub const REVOCATION_GRACE: Setting = Setting::new(
    ENV_REVOCATION_GRACE,
    "revocation.grace_seconds",
    Number(revocation_check::DEFAULT_GRACE_SECS),
    "how old a verdict `grace` accepts, in seconds",
);
/// `COGNITO_REVOCATION_TIMEOUT_MS`.
pub const REVOCATION_TIMEOUT: Setting = Setting::new(
    ENV_REVOCATION_TIMEOUT_MS,
    "revocation.timeout_ms",
    Number(revocation_check::DEFAULT_TIMEOUT_MS),
    "one token's whole revocation check, in milliseconds: waiting for another replica's answer (half of it at most), a turn in the queue and the `GetUser` call; inside the shipped Envoy configs' 500 ms",
)
.at_least(1);
/// `COGNITO_REVOCATION_MAX_CONCURRENT`.
pub const REVOCATION_MAX_CONCURRENT: Setting = Setting::new(
    ENV_REVOCATION_MAX_CONCURRENT,
    "revocation.max_concurrent",
    Number(revocation_check::DEFAULT_MAX_CONCURRENT as u64),
    "`GetUser` calls in flight per pool; eight times as many wait for a turn, more get `revocation_unavailable` at once",
)
.at_least(1)
.at_most(10_000);
/// `COGNITO_REVOCATION_UNVERIFIABLE`.
pub const REVOCATION_UNVERIFIABLE: Setting = Setting::new(
    ENV_REVOCATION_UNVERIFIABLE,
    "revocation.unverifiable",
    Word("deny"),
    "tokens `GetUser` cannot judge (ID tokens, access tokens without `aws.cognito.signin.user.admin`) on routes that require the check: `deny` (403) or `allow`",
);

/// `AWS_COGNITO_USER_POOL_ID`.
pub const POOL_ID: Setting = Setting::new(
    ENV_POOL_ID,
    "pools[].id",
    Unset("(required unless the file lists pools)"),
    "the user pool; ids are not format-checked (`local_abc` works with an explicit issuer)",
);
/// `AWS_COGNITO_USER_POOL_CLIENT_ID`.
pub const CLIENT_IDS: Setting = Setting::new(
    ENV_CLIENT_IDS,
    "pools[].client_ids",
    Unset("(required with the pool)"),
    "the app client id, or a comma-separated list",
);
/// `AWS_DEFAULT_REGION`.
pub const REGION: Setting = Setting::new(
    ENV_REGION,
    "pools[].region",
    Unset("none"),
    "used only when the pool id carries no region (`us-east-1_AbC` carries `us-east-1`)",
);
/// `COGNITO_ISSUER`.
pub const ISSUER: Setting = Setting::new(
    ENV_ISSUER,
    "pools[].issuer",
    Unset("both AWS forms"),
    "the expected `iss`, replacing both AWS forms: `https://cognito-idp.{region}.amazonaws.com/{poolId}` and `https://issuer-cognito-idp.{region}.amazonaws.com/{poolId}`",
);
/// `COGNITO_JWKS_URI`.
pub const JWKS_URI: Setting = Setting::new(
    ENV_JWKS_URI,
    "pools[].jwks_uri",
    Unset("`{issuer}/.well-known/jwks.json`"),
    "where keys are fetched (emulators, VPC endpoints, proxies, a mirror in an air gap)",
);
/// `COGNITO_TOKEN_USE`.
pub const TOKEN_USE: Setting = Setting::new(
    ENV_TOKEN_USE,
    "pools[].token_use",
    Word("access"),
    "`access`, `id` or `any`",
);
/// `COGNITO_IDP_ENDPOINT`.
pub const IDP_ENDPOINT: Setting = Setting::new(
    ENV_IDP_ENDPOINT,
    "pools[].idp_endpoint",
    Unset("`https://cognito-idp.{region}.amazonaws.com/`"),
    "Cognito's API for `GetUser` (emulators, VPC endpoints)",
);

/// `OTEL_EXPORTER_OTLP_ENDPOINT`.
pub const OTEL_ENDPOINT: Setting = Setting::env_only(
    ENV_OTEL_ENDPOINT,
    Unset("off"),
    "the collector's OTLP/gRPC endpoint (`http://host:4317`); traces are made only when it is set. `https://` is refused: send to a collector beside the service, which forwards over TLS",
);
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`.
pub const OTEL_TRACES_ENDPOINT: Setting = Setting::env_only(
    ENV_OTEL_TRACES_ENDPOINT,
    Unset("none"),
    "the same for traces alone, overriding `OTEL_EXPORTER_OTLP_ENDPOINT`",
);
/// `OTEL_SERVICE_NAME`.
pub const OTEL_SERVICE_NAME: Setting = Setting::env_only(
    ENV_OTEL_SERVICE_NAME,
    Word("cognito-authz"),
    "`service.name` on our spans",
);
/// `OTEL_TRACES_SAMPLER`.
pub const OTEL_SAMPLER: Setting = Setting::env_only(
    ENV_OTEL_SAMPLER,
    Word("parentbased_always_on"),
    "which traces are kept: `always_on`, `always_off`, `traceidratio`, `parentbased_always_on`, `parentbased_always_off` or `parentbased_traceidratio`",
);
/// `OTEL_TRACES_SAMPLER_ARG`: a ratio, read as a number in `[0, 1]` by the tracing reader.
pub const OTEL_SAMPLER_ARG: Setting = Setting::env_only(
    ENV_OTEL_SAMPLER_ARG,
    Word("1.0"),
    "the ratio of the `traceidratio` samplers, 0 to 1",
);
/// `OTEL_BSP_MAX_QUEUE_SIZE`.
pub const OTEL_QUEUE: Setting = Setting::env_only(
    ENV_OTEL_QUEUE,
    Number(2048),
    "spans waiting for export; one more is dropped and counted",
)
.at_least(1)
.at_most(1 << 16);
/// `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`.
pub const OTEL_BATCH: Setting = Setting::env_only(ENV_OTEL_BATCH, Number(512), "spans per export")
    .at_least(1)
    .at_most(1 << 16);
/// `OTEL_BSP_SCHEDULE_DELAY`.
pub const OTEL_DELAY: Setting = Setting::env_only(
    ENV_OTEL_DELAY,
    Number(5000),
    "the longest a span waits for its batch, in milliseconds",
)
.at_least(1)
.at_most(3_600_000);
/// `OTEL_BSP_EXPORT_TIMEOUT`.
pub const OTEL_EXPORT_TIMEOUT: Setting = Setting::env_only(
    ENV_OTEL_EXPORT_TIMEOUT,
    Number(30000),
    "one export's limit in milliseconds; its spans are dropped after it",
)
.at_least(1)
.at_most(3_600_000);

/// Every setting, in the reference's order: pools, verification, keys, server, revocation, traces.
pub const SETTINGS: [&Setting; 62] = [
    &POOL_ID,
    &CLIENT_IDS,
    &REGION,
    &ISSUER,
    &JWKS_URI,
    &TOKEN_USE,
    &LEEWAY,
    &MAX_TOKEN_BYTES,
    &TOKEN_CACHE_SIZE,
    &ALLOW_PREFLIGHT,
    &CONFIG_FILE,
    &JWKS_REFRESH,
    &JWKS_MIN_REFETCH,
    &JWKS_TIMEOUT,
    &JWKS_MAX_BYTES,
    &JWKS_RETRY_MIN,
    &JWKS_RETRY_MAX,
    &GRPC_ADDR,
    &ADMIN_ADDR,
    &HTTP_ADDR,
    &HTTP_TRUST_TRACEPARENT,
    &SHUTDOWN_GRACE,
    &HEADER_READ_TIMEOUT,
    &IDLE_TIMEOUT,
    &KEEPALIVE,
    &KEEPALIVE_TIMEOUT,
    &REQUEST_TIMEOUT,
    &GRPC_MAX_CONNECTIONS,
    &HTTP_MAX_CONNECTIONS,
    &ADMIN_MAX_CONNECTIONS,
    &LOG_FORMAT,
    &WORKER_THREADS,
    &DRY_RUN,
    &DECISION_METADATA,
    &REDIS_URL,
    &REDIS_CLUSTER,
    &REDIS_REQUIRED,
    &REDIS_SIGNING_KEY_FILE,
    &TLS_CERT,
    &TLS_KEY,
    &TLS_CLIENT_CA,
    &ADMIN_TOKEN_FILE,
    &ADMIN_TOKEN,
    &MAX_REVOCATIONS,
    &DIAGNOSTICS,
    &REVOCATION,
    &REVOCATION_TTL,
    &REVOCATION_ON_UNAVAILABLE,
    &REVOCATION_GRACE,
    &REVOCATION_TIMEOUT,
    &REVOCATION_MAX_CONCURRENT,
    &REVOCATION_UNVERIFIABLE,
    &IDP_ENDPOINT,
    &OTEL_ENDPOINT,
    &OTEL_TRACES_ENDPOINT,
    &OTEL_SERVICE_NAME,
    &OTEL_SAMPLER,
    &OTEL_SAMPLER_ARG,
    &OTEL_QUEUE,
    &OTEL_BATCH,
    &OTEL_DELAY,
    &OTEL_EXPORT_TIMEOUT,
];

/// The settings reference as Markdown: one table row per entry of [`SETTINGS`], with its
/// variable, file key, default, bounds and doc line. `cognito-authz check-config --settings`
/// prints it and `docs/configuration.md` holds it.
pub fn markdown() -> String {
    table(&SETTINGS)
}

/// The reference table of `settings`.
fn table(settings: &[&Setting]) -> String {
    let mut out = String::from("| variable | file key | default | bounds | meaning |\n");
    out.push_str("|---|---|---|---|---|\n");
    for setting in settings {
        let code = |name: Option<&str>, missing: &str| {
            name.map_or_else(|| missing.to_string(), |n| format!("`{n}`"))
        };
        let cells = [
            code(setting.env, "(file only)"),
            code(setting.key, "(variable only)"),
            setting.default.to_string(),
            bounds(setting),
            setting.doc.to_string(),
        ];
        out.push('|');
        for cell in cells {
            // A `|` inside a cell would end it, backticks or not (GitHub's tables).
            out.push_str(&format!(" {} |", cell.replace('|', "\\|")));
        }
        out.push('\n');
    }
    out
}

/// A number's accepted range in words; empty when any value goes.
fn bounds(setting: &Setting) -> String {
    match (setting.min, setting.max) {
        (0, None) => String::new(),
        (min, None) => format!("at least {min}"),
        (0, Some(max)) => format!("at most {max}"),
        (min, Some(max)) => format!("{min} to {max}"),
    }
}

/// The variable lookup every reader takes: empty variables already count as unset.
pub(super) type Vars<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Where a value came from and the value: the variable when it is set, else the file key.
fn given<T>(
    var: Vars<'_>,
    setting: &Setting,
    file: Option<T>,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<Option<(&'static str, T)>, ConfigError> {
    if let Some(name) = setting.env {
        if let Some(text) = var(name) {
            return parse(&text)
                .map(|value| Some((name, value)))
                .map_err(|problem| ConfigError::invalid(name, problem));
        }
    }
    Ok(file.map(|value| (setting.key.unwrap_or("?"), value)))
}

fn whole_number(text: &str) -> Result<u64, String> {
    text.trim()
        .parse::<u64>()
        .map_err(|_| format!("'{text}' is not a whole number of the expected unit"))
}

/// `value` within the setting's bounds, or an error under `name`.
fn bounded(setting: &Setting, name: &str, value: u64) -> Result<u64, ConfigError> {
    if value < setting.min {
        let problem = if setting.min == 1 {
            "must be greater than zero".to_string()
        } else {
            format!(
                "{value} is less than the smallest accepted, {}",
                setting.min
            )
        };
        return Err(ConfigError::invalid(name, problem));
    }
    match setting.max {
        Some(max) if value > max => Err(ConfigError::invalid(
            name,
            format!("{value} is more than the largest accepted, {max}"),
        )),
        _ => Ok(value),
    }
}

/// A number: the variable, else the file, else the default; within bounds either way.
pub(super) fn number(
    var: Vars<'_>,
    setting: &Setting,
    file: Option<u64>,
) -> Result<u64, ConfigError> {
    match given(var, setting, file, whole_number)? {
        Some((name, value)) => bounded(setting, name, value),
        None => match setting.default {
            Number(n) => Ok(n),
            other => Err(ConfigError::invalid(
                setting.name(),
                format!("has no numeric default ({other})"),
            )),
        },
    }
}

/// A number that may be left unset (its default is [`DefaultValue::Unset`]).
pub(super) fn optional_number(
    var: Vars<'_>,
    setting: &Setting,
    file: Option<u64>,
) -> Result<Option<u64>, ConfigError> {
    given(var, setting, file, whole_number)?
        .map(|(name, value)| bounded(setting, name, value))
        .transpose()
}

/// A number that counts things in memory.
pub(super) fn count(
    var: Vars<'_>,
    setting: &Setting,
    file: Option<u64>,
) -> Result<usize, ConfigError> {
    let value = number(var, setting, file)?;
    usize::try_from(value)
        .map_err(|_| ConfigError::invalid(setting.name(), format!("{value} is too large")))
}

/// A switch: `true` or `false` in any letter case.
pub(super) fn switch(
    var: Vars<'_>,
    setting: &Setting,
    file: Option<bool>,
) -> Result<bool, ConfigError> {
    match given(var, setting, file, crate::parse_bool)? {
        Some((_, value)) => Ok(value),
        None => match setting.default {
            Switch(b) => Ok(b),
            _ => Ok(false),
        },
    }
}

/// Text (an address, a URL, a path), with the name it came under; the default when it is a
/// [`DefaultValue::Word`], nothing when it is [`DefaultValue::Unset`].
pub(super) fn text(
    var: Vars<'_>,
    setting: &Setting,
    file: Option<String>,
) -> Option<(&'static str, String)> {
    let text = |t: &str| Ok::<_, String>(t.to_string());
    match given(var, setting, file, text) {
        Ok(Some(found)) => Some(found),
        _ => match setting.default {
            Word(w) => Some((setting.name(), w.to_string())),
            _ => None,
        },
    }
}

/// A word (any letter case) mapped through `choices`; the default is the setting's
/// [`DefaultValue::Word`], which must be one of them.
pub(super) fn choice<T: Copy>(
    var: Vars<'_>,
    setting: &Setting,
    file: Option<String>,
    choices: &[(&str, T)],
) -> Result<T, ConfigError> {
    let (name, word) = text(var, setting, file).unwrap_or((setting.name(), String::new()));
    let word = word.trim();
    choices
        .iter()
        .find(|(choice, _)| choice.eq_ignore_ascii_case(word))
        .map(|(_, value)| *value)
        .ok_or_else(|| {
            let names: Vec<&str> = choices.iter().map(|(choice, _)| *choice).collect();
            ConfigError::invalid(name, format!("'{word}' is not one of {}", names.join(", ")))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_default_is_one_of_its_choices_and_every_number_within_its_bounds() {
        let none = |_: &str| None;
        for setting in SETTINGS {
            if let Number(n) = setting.default {
                assert_eq!(
                    bounded(setting, setting.name(), n).ok(),
                    Some(n),
                    "{setting:?}"
                );
            }
        }
        assert!(!choice(&none, &LOG_FORMAT, None, &[("text", false), ("json", true)]).unwrap());
        assert_eq!(
            choice(&none, &REVOCATION, None, &RevocationMode::CHOICES).unwrap(),
            RevocationMode::Off
        );
        assert_eq!(
            choice(
                &none,
                &REVOCATION_ON_UNAVAILABLE,
                None,
                &OnUnavailable::CHOICES
            )
            .unwrap(),
            OnUnavailable::Deny
        );
    }

    #[test]
    fn a_value_is_named_by_where_it_came_from() {
        let vars = |k: &str| (k == ENV_JWKS_REFRESH).then(|| "0".to_string());
        let none = |_: &str| None;
        let from_env = number(&vars, &JWKS_REFRESH, Some(5)).unwrap_err();
        assert!(from_env
            .to_string()
            .starts_with("COGNITO_JWKS_REFRESH_SECONDS:"));
        let from_file = number(&none, &JWKS_REFRESH, Some(0)).unwrap_err();
        assert!(
            from_file.to_string().starts_with("jwks.refresh_seconds:"),
            "{from_file}"
        );
        assert_eq!(
            number(&none, &JWKS_REFRESH, None).unwrap(),
            DEFAULT_JWKS_REFRESH_SECS
        );
        let leeway = number(&none, &LEEWAY, Some(301)).unwrap_err();
        assert!(
            leeway.to_string().contains("largest accepted, 300"),
            "{leeway}"
        );
    }

    #[test]
    fn the_reference_has_a_row_per_setting_with_its_bounds_and_escaped_cells() {
        let text = markdown();
        let rows: Vec<&str> = text.lines().skip(2).collect();
        assert_eq!(rows.len(), SETTINGS.len());
        let leeway = rows
            .iter()
            .find(|r| r.starts_with("| `COGNITO_CLOCK_LEEWAY_SECONDS` |"))
            .expect("a row for the leeway");
        assert!(
            leeway.contains("| `leeway_seconds` | `30` | at most 300 |"),
            "{leeway}"
        );
        assert!(text.contains("| (file only) | `max_token_bytes` | `16384` | at least 1024 |"));
        assert!(
            text.contains("| `OTEL_BSP_MAX_QUEUE_SIZE` | (variable only) | `2048` | 1 to 65536 |")
        );
        let piped = Setting::file_only("a.b", Word("x|y"), "one | two");
        let row = table(&[&piped]);
        let row = row.lines().nth(2).unwrap();
        assert_eq!(row, "| (file only) | `a.b` | `x\\|y` |  | one \\| two |");
        // Every cell boundary is an unescaped `|`: five cells, six bars.
        assert_eq!(row.replace("\\|", "").matches('|').count(), 6);
    }

    #[test]
    fn every_variable_is_in_the_table_once() {
        let mut vars: Vec<&str> = SETTINGS.iter().filter_map(|s| s.env).collect();
        vars.sort_unstable();
        vars.dedup();
        let with_env = SETTINGS.iter().filter(|s| s.env.is_some()).count();
        assert_eq!(vars.len(), with_env, "a variable listed twice");
    }
}
