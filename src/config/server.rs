//! `[server]` and its variables: the listeners, logging, Redis, the secrets (the control API's
//! and Redis's signing key, never shown), TLS files, the revocation cap and diagnostics.

use super::limits::Limits;
use super::*;
use crate::shared::redacted_urls as redacted;

/// Listener and logging settings for `serve`.
#[derive(Clone, Serialize)]
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
    /// A `traceparent` at the HTTP listener is Envoy's (its tracer is on), not a client's.
    pub http_trust_traceparent: bool,
    /// Full dynamic metadata (rule, pool, token_use besides decision, reason, sub).
    pub full_metadata: bool,
    /// Redis shared by the replicas, when configured (shown without its password).
    #[serde(serialize_with = "redacted_url")]
    pub redis_url: Option<String>,
    /// The Redis is a cluster: `redis_url` lists its seed nodes.
    pub redis_cluster: bool,
    /// `/readyz` fails while Redis is down.
    pub redis_required: bool,
    /// TLS for the gRPC listener, when configured.
    pub tls: Option<TlsFiles>,
    /// The control API's secret, when configured (never shown).
    pub admin_token: Option<AdminToken>,
    /// The keys signing shared Redis values, when configured (never shown).
    pub redis_signing_key: Option<SigningKeys>,
    /// Most explicit revocations held.
    pub max_revocations: usize,
    /// Serve the diagnostics service and reflection on the gRPC listener.
    pub diagnostics: bool,
    /// What the listeners allow a connection, and how many at once.
    pub limits: Limits,
}

/// Every field, the Redis URL without its password.
impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("grpc_addr", &self.grpc_addr)
            .field("admin_addr", &self.admin_addr)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("json_logs", &self.json_logs)
            .field("worker_threads", &self.worker_threads)
            .field("dry_run", &self.dry_run)
            .field("http_addr", &self.http_addr)
            .field("http_trust_traceparent", &self.http_trust_traceparent)
            .field("full_metadata", &self.full_metadata)
            .field("redis_url", &self.redis_url.as_deref().map(redacted))
            .field("redis_cluster", &self.redis_cluster)
            .field("redis_required", &self.redis_required)
            .field("tls", &self.tls)
            .field("admin_token", &self.admin_token)
            .field("redis_signing_key", &self.redis_signing_key)
            .field("max_revocations", &self.max_revocations)
            .field("diagnostics", &self.diagnostics)
            .field("limits", &self.limits)
            .finish()
    }
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

/// The keys of [`ENV_REDIS_SIGNING_KEY_FILE`], in the file's order: each signs, any verifies.
/// Shown as their count only.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKeys(std::sync::Arc<[Box<str>]>);

impl SigningKeys {
    /// Each key's bytes, the signing one first.
    pub fn as_bytes(&self) -> Vec<&[u8]> {
        self.0.iter().map(|k| k.as_bytes()).collect()
    }
}

impl std::fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKeys(<{} redacted>)", self.0.len())
    }
}

impl Serialize for SigningKeys {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("<{} redacted>", self.0.len()))
    }
}

/// Largest signing-key file read: [`MAX_SIGNING_KEYS`] of the longest keys with room for
/// blank lines; anything larger is not a key file.
const MAX_SIGNING_KEY_FILE_BYTES: u64 = 4096;

/// The keys in the file [`ENV_REDIS_SIGNING_KEY_FILE`] (or the file key) names.
pub(super) fn signing_keys(
    var: &dyn Fn(&str) -> Option<String>,
    file: Option<PathBuf>,
) -> Result<Option<SigningKeys>, ConfigError> {
    use std::io::Read as _;
    let file = file.map(|p| p.to_string_lossy().into_owned());
    let Some((key, path)) = settings::text(var, &REDIS_SIGNING_KEY_FILE, file) else {
        return Ok(None);
    };
    let mut text = String::new();
    std::fs::File::open(&path)
        .and_then(|f| {
            f.take(MAX_SIGNING_KEY_FILE_BYTES + 1)
                .read_to_string(&mut text)
        })
        .map_err(|e| ConfigError::invalid(key, format!("cannot read {path}: {e}")))?;
    if text.len() as u64 > MAX_SIGNING_KEY_FILE_BYTES {
        return Err(ConfigError::invalid(
            key,
            format!("{path} is over {MAX_SIGNING_KEY_FILE_BYTES} bytes: not a key file"),
        ));
    }
    signing_keys_text(key, &text).map(Some)
}

/// One key a line, blank lines ignored: 1 to [`MAX_SIGNING_KEYS`] distinct keys, each
/// [`MIN_SIGNING_KEY_BYTES`] to [`MAX_SIGNING_KEY_BYTES`] without spaces. A problem names the
/// line, never the key.
pub(super) fn signing_keys_text(key: &str, text: &str) -> Result<SigningKeys, ConfigError> {
    let mut keys: Vec<Box<str>> = Vec::new();
    let mut lines: Vec<usize> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let (number, line) = (index + 1, line.trim());
        if line.is_empty() {
            continue;
        }
        if !(MIN_SIGNING_KEY_BYTES..=MAX_SIGNING_KEY_BYTES).contains(&line.len())
            || line.chars().any(char::is_whitespace)
        {
            return Err(ConfigError::invalid(
                key,
                format!(
                    "line {number}: a key is {MIN_SIGNING_KEY_BYTES} to {MAX_SIGNING_KEY_BYTES} \
                     bytes without spaces (for example: openssl rand -hex 32)"
                ),
            ));
        }
        if let Some(first) = keys.iter().position(|k| **k == *line) {
            return Err(ConfigError::invalid(
                key,
                format!("line {number} repeats the key of line {}", lines[first]),
            ));
        }
        if keys.len() == MAX_SIGNING_KEYS {
            return Err(ConfigError::invalid(
                key,
                format!(
                    "more than {MAX_SIGNING_KEYS} keys: a rotation needs two, the new and the old"
                ),
            ));
        }
        keys.push(line.into());
        lines.push(number);
    }
    if keys.is_empty() {
        return Err(ConfigError::invalid(
            key,
            format!(
                "the file holds no key (one a line, at least {MIN_SIGNING_KEY_BYTES} bytes; for \
                 example: openssl rand -hex 32)"
            ),
        ));
    }
    Ok(SigningKeys(keys.into()))
}

/// Whether the gRPC listener serves diagnostics and reflection: as configured, or (`auto`)
/// only where nothing but this host can reach it.
pub(super) fn diagnostics(
    var: &dyn Fn(&str) -> Option<String>,
    file: Option<String>,
    grpc_addr: &str,
) -> Result<bool, ConfigError> {
    let (key, value) =
        settings::text(var, &DIAGNOSTICS, file).unwrap_or((ENV_DIAGNOSTICS, String::new()));
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

/// A secret read from the file the setting's variable (or file key) names: trimmed, at least
/// the setting's minimum in bytes, no spaces.
pub(super) fn secret_file(
    var: &dyn Fn(&str) -> Option<String>,
    setting: &Setting,
    file: Option<PathBuf>,
) -> Result<Option<AdminToken>, ConfigError> {
    let file = file.map(|p| p.to_string_lossy().into_owned());
    let Some((key, path)) = settings::text(var, setting, file) else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| ConfigError::invalid(key, format!("cannot read {path}: {e}")))?;
    secret_text(key, &text, setting.min as usize).map(Some)
}

pub(super) fn secret_text(
    key: &str,
    text: &str,
    min_bytes: usize,
) -> Result<AdminToken, ConfigError> {
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
pub(super) fn admin_token(
    var: &dyn Fn(&str) -> Option<String>,
    file: Option<PathBuf>,
) -> Result<Option<AdminToken>, ConfigError> {
    let from_file = secret_file(var, &ADMIN_TOKEN_FILE, file)?;
    match (from_file, settings::text(var, &ADMIN_TOKEN, None)) {
        (Some(_), Some(_)) => Err(ConfigError::invalid(
            ENV_ADMIN_TOKEN,
            format!("set {ENV_ADMIN_TOKEN_FILE} or {ENV_ADMIN_TOKEN}, not both"),
        )),
        (Some(secret), None) => Ok(Some(secret)),
        (None, Some((key, text))) => secret_text(key, &text, ADMIN_TOKEN.min as usize).map(Some),
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
            http_trust_traceparent: false,
            full_metadata: false,
            redis_url: None,
            redis_cluster: false,
            redis_required: false,
            tls: None,
            admin_token: None,
            redis_signing_key: None,
            max_revocations: crate::revocation::DEFAULT_MAX_REVOCATIONS,
            diagnostics: true,
            limits: Limits::default(),
        }
    }
}

/// `[server]` and its variables: listeners, logging, Redis, secrets, the revocation cap.
pub(super) fn server_config(
    var: &dyn Fn(&str) -> Option<String>,
    file_server: FileServer,
) -> Result<ServerConfig, ConfigError> {
    let address = |setting: &Setting, file: Option<String>| {
        settings::text(var, setting, file).map_or_else(String::new, |(_, addr)| addr)
    };
    let limits = listener_limits(var, &file_server)?;
    let redis_cluster = settings::switch(var, &REDIS_CLUSTER, file_server.redis_cluster)?;
    let mut server = ServerConfig {
        grpc_addr: address(&GRPC_ADDR, file_server.grpc_addr),
        admin_addr: address(&ADMIN_ADDR, file_server.admin_addr),
        shutdown_grace: Duration::from_secs(settings::number(
            var,
            &SHUTDOWN_GRACE,
            file_server.shutdown_grace_seconds,
        )?),
        json_logs: settings::choice(
            var,
            &LOG_FORMAT,
            file_server.log_format,
            &[("text", false), ("json", true)],
        )?,
        worker_threads: settings::optional_number(
            var,
            &WORKER_THREADS,
            file_server.worker_threads,
        )?
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        dry_run: settings::switch(var, &DRY_RUN, file_server.dry_run)?,
        http_addr: settings::text(var, &HTTP_ADDR, file_server.http_addr).map(|(_, addr)| addr),
        http_trust_traceparent: settings::switch(
            var,
            &HTTP_TRUST_TRACEPARENT,
            file_server.http_trust_traceparent,
        )?,
        redis_url: redis_url(
            settings::text(var, &REDIS_URL, file_server.redis_url),
            redis_cluster,
        )?,
        redis_cluster,
        redis_required: settings::switch(var, &REDIS_REQUIRED, file_server.redis_required)?,
        full_metadata: settings::choice(
            var,
            &DECISION_METADATA,
            file_server.decision_metadata,
            &[("minimal", false), ("full", true)],
        )?,
        tls: tls_files(
            var,
            file_server.tls_cert,
            file_server.tls_key,
            file_server.tls_client_ca,
        )?,
        admin_token: admin_token(var, file_server.admin_token_file)?,
        redis_signing_key: signing_keys(var, file_server.redis_signing_key_file)?,
        // Set below, once the gRPC address is known.
        diagnostics: false,
        max_revocations: settings::count(var, &MAX_REVOCATIONS, file_server.max_revocations)?,
        limits,
    };
    server.diagnostics = diagnostics(var, file_server.diagnostics, &server.grpc_addr)?;
    validate_listen_addr(ENV_GRPC_ADDR, &server.grpc_addr, true)?;
    validate_listen_addr(ENV_ADMIN_ADDR, &server.admin_addr, false)?;
    if let Some(addr) = &server.http_addr {
        validate_listen_addr(ENV_HTTP_ADDR, addr, true)?;
    }

    Ok(server)
}

/// The listeners' timeouts and caps.
fn listener_limits(
    var: &dyn Fn(&str) -> Option<String>,
    file: &FileServer,
) -> Result<Limits, ConfigError> {
    let secs = |setting: &Setting, given: Option<u64>| {
        settings::number(var, setting, given).map(Duration::from_secs)
    };
    Ok(Limits {
        header_read_timeout: secs(&HEADER_READ_TIMEOUT, file.header_read_timeout_seconds)?,
        idle_timeout: secs(&IDLE_TIMEOUT, file.idle_timeout_seconds)?,
        keepalive: secs(&KEEPALIVE, file.keepalive_seconds)?,
        keepalive_timeout: secs(&KEEPALIVE_TIMEOUT, file.keepalive_timeout_seconds)?,
        request_timeout: secs(&REQUEST_TIMEOUT, file.request_timeout_seconds)?,
        grpc_max_connections: settings::count(
            var,
            &GRPC_MAX_CONNECTIONS,
            file.grpc_max_connections,
        )?,
        http_max_connections: settings::count(
            var,
            &HTTP_MAX_CONNECTIONS,
            file.http_max_connections,
        )?,
        admin_max_connections: settings::count(
            var,
            &ADMIN_MAX_CONNECTIONS,
            file.admin_max_connections,
        )?,
    })
}

/// A Redis URL, named by where it came from: `redis://` or `rediss://` only; in cluster mode,
/// one or more seed nodes' URLs, comma-separated, with one scheme (TLS on each or on none).
pub(super) fn redis_url(
    picked: Option<(&str, String)>,
    cluster: bool,
) -> Result<Option<String>, ConfigError> {
    let Some((key, url)) = picked else {
        return Ok(None);
    };
    let urls = redis_urls(&url);
    if urls.len() > 1 && !cluster {
        return Err(ConfigError::invalid(
            key,
            format!("one URL, or several seed nodes with {ENV_REDIS_CLUSTER}=true"),
        ));
    }
    if urls.iter().any(String::is_empty) {
        return Err(ConfigError::invalid(key, "an empty URL in the list"));
    }
    let tls = |url: &String| url.starts_with("rediss://");
    if !urls
        .iter()
        .all(|url| url.starts_with("redis://") || tls(url))
    {
        return Err(ConfigError::invalid(
            key,
            "must be a redis:// or rediss:// URL",
        ));
    }
    if urls.iter().any(tls) && !urls.iter().all(tls) {
        return Err(ConfigError::invalid(
            key,
            "seed nodes must all use rediss:// or all redis://",
        ));
    }
    // The Redis client reads `#insecure` as "do not check the server's certificate": no
    // setting that turns TLS into a formality may hide in a URL.
    let insecure = |url: &String| {
        reqwest::Url::parse(url)
            .ok()
            .and_then(|parsed| {
                parsed
                    .fragment()
                    .map(|f| f.eq_ignore_ascii_case("insecure"))
            })
            .unwrap_or(false)
    };
    if urls.iter().any(insecure) {
        return Err(ConfigError::invalid(
            key,
            "`#insecure` (no check of Redis's certificate) is refused",
        ));
    }
    // Parsed as the client will at start-up (no connection made), so that `check-config` and a
    // reload refuse what `serve` would: seeds separated by spaces, no host, a bad port.
    let mut signed_in = None;
    for url in &urls {
        let info = redis::IntoConnectionInfo::into_connection_info(url.as_str())
            .map_err(|err| ConfigError::invalid(key, format!("not a usable Redis URL: {err}")))?;
        let settings = info.redis_settings();
        let user = (
            settings.username().map(str::to_string),
            settings.password().map(str::to_string),
        );
        // The cluster client signs in to every node as one user (never shown).
        if signed_in.get_or_insert_with(|| user.clone()) != &user {
            return Err(ConfigError::invalid(
                key,
                "seed nodes must all carry the same user and password",
            ));
        }
    }
    Ok(Some(urls.join(",")))
}

/// The URLs of a Redis setting: one, or a cluster's seed nodes, comma-separated.
pub(super) fn redis_urls(setting: &str) -> Vec<String> {
    setting
        .split(',')
        .map(|url| url.trim().to_string())
        .collect()
}

impl ServerConfig {
    /// Where the replicas' shared state lives, when a Redis is configured.
    pub fn redis_target(&self) -> Option<crate::shared::RedisTarget> {
        self.redis_url
            .as_deref()
            .map(|url| crate::shared::RedisTarget {
                urls: redis_urls(url),
                cluster: self.redis_cluster,
            })
    }
}

/// A listen address is `host:port` (an IP literal) or, where allowed, `unix:/absolute/path`.
pub(super) fn validate_listen_addr(
    key: &str,
    addr: &str,
    allow_unix: bool,
) -> Result<(), ConfigError> {
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
pub(super) fn tls_files(
    var: &dyn Fn(&str) -> Option<String>,
    file_cert: Option<PathBuf>,
    file_key: Option<PathBuf>,
    file_ca: Option<PathBuf>,
) -> Result<Option<TlsFiles>, ConfigError> {
    let pick = |setting: &Setting, file: Option<PathBuf>| {
        let file = file.map(|p| p.to_string_lossy().into_owned());
        settings::text(var, setting, file).map(|(key, path)| (key, PathBuf::from(path)))
    };
    let cert = pick(&TLS_CERT, file_cert);
    let key = pick(&TLS_KEY, file_key);
    let ca = pick(&TLS_CLIENT_CA, file_ca);
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
        let text = std::fs::read_to_string(path)
            .map_err(|err| ConfigError::invalid(*key_name, format!("{}: {err}", path.display())))?;
        if !text.contains("-----BEGIN ") {
            return Err(ConfigError::invalid(
                *key_name,
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

/// A Redis URL as `check-config` and `/config` show it: the password replaced.
pub(super) fn redacted_url<S: serde::Serializer>(
    url: &Option<String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match url {
        None => s.serialize_none(),
        Some(url) => s.serialize_some(&redacted(url)),
    }
}

/// Whether a URL carries a password (or cannot be parsed well enough to tell: then it may).
pub(super) fn password_in(urls: &str) -> bool {
    urls.split(',').any(|url| {
        let url = url.trim();
        reqwest::Url::parse(url).map_or(url.contains('@'), |parsed| parsed.password().is_some())
    })
}
