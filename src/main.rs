//! The `cognito-authz` command: parses the command line, installs tracing, loads the
//! configuration and hands over to the library. Exit codes: 0 success, 1 invalid token (or a
//! refused request: for `revoke`, any answer but the control API's "recorded and shared", or
//! with `--redis`, Redis not storing and announcing it), 2
//! configuration or I/O error (a token on the command line among them), 3 (`verify`) the
//! token's revocation status could not be learned.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cognito_authz::config::Config;
use cognito_authz::credential::pasted_token;
use cognito_authz::jwks::KeyStore;
use cognito_authz::revocation_check::RevocationStatus;
use cognito_authz::server;
use cognito_authz::trace::export::Tracing;
use cognito_authz::verify::unverified_payload;
use serde_json::{json, Value};

/// Verifies Amazon Cognito tokens for Envoy's ext_authz filter.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// TOML config file (overrides COGNITO_AUTHZ_CONFIG).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Verify one token against the configured pools and print the verdict as JSON.
    ///
    /// Exit 0 when valid, 1 when invalid, 2 on a configuration or I/O error, 3 when the
    /// revocation check could not run (Cognito unavailable: the token is not known valid).
    Verify {
        /// `-` or nothing: the token (or `Bearer <token>`) is read from stdin. A token given
        /// here is refused: the command line shows in /proc and shell history.
        #[arg(value_name = "-")]
        token: Option<String>,
        /// Read the token from this file instead.
        #[arg(long, value_name = "FILE", conflicts_with = "token")]
        token_file: Option<PathBuf>,
    },
    /// Print the effective configuration as JSON, or exit 2 naming the problem.
    CheckConfig {
        /// Print instead the settings reference as Markdown (every variable and file key with
        /// its default, bounds and meaning); needs no configuration.
        #[arg(long)]
        settings: bool,
    },
    /// Revoke a token's session, a session, one token or a user's tokens through a running
    /// server's admin API; exit 0 once the control API answers that it recorded and shared it.
    Revoke(RevokeArgs),
    /// Re-issue through one replica every live revocation another lists: how revocations are
    /// carried over when Redis signing is turned on (from a replica without the key, to one
    /// with it). Exit 0 once each is recorded and shared, 1 when one is not, 2 when the list
    /// cannot be read.
    CopyRevocations {
        /// The admin URL of the replica that lists them (`GET /revocations`).
        #[arg(long, value_name = "URL")]
        from: String,
        /// The admin URL of the replica that re-issues them (`POST /revocations`).
        #[arg(long, value_name = "URL")]
        to: String,
        /// A file holding the control API's secret, the same on both (default:
        /// AUTHZ_ADMIN_TOKEN_FILE, else AUTHZ_ADMIN_TOKEN).
        #[arg(long, value_name = "FILE")]
        admin_token_file: Option<PathBuf>,
    },
    /// Ask a running server whether it is ready (`/readyz`) or alive (`--live`, `/healthz`):
    /// exit 0 when it is, 1 when not. For container health checks in images without a shell.
    Health {
        /// The admin address (`host:port`); default: AUTHZ_ADMIN_ADDR, else 127.0.0.1:9002.
        #[arg(long, value_name = "HOST:PORT")]
        admin: Option<String>,
        /// Liveness only: the process answers, keys or not.
        #[arg(long)]
        live: bool,
    },
    /// Serve Envoy's ext_authz Check, health, reflection and diagnostics on AUTHZ_GRPC_ADDR,
    /// and /metrics, /healthz, /readyz on AUTHZ_ADMIN_ADDR, until SIGTERM or SIGINT.
    Serve,
}

/// What `revoke` is asked to revoke, and where: a replica's admin listener, or the shared
/// Redis itself.
#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("through").required(true).args(["admin", "redis"])))]
struct RevokeArgs {
    /// The admin listener's URL (`http://127.0.0.1:9002`), reached directly: proxy
    /// variables (`http_proxy`, `ALL_PROXY`, ...) are ignored.
    #[arg(long, value_name = "URL")]
    admin: Option<String>,
    /// Write the revocation straight to the shared Redis, as a replica's control API would
    /// (no sidecar needed): this URL without a password, or alone for AUTHZ_REDIS_URL (or
    /// the config file's server.redis_url). The signing keys and the leeway are read as
    /// `serve` reads them.
    #[arg(long, value_name = "URL", num_args = 0..=1)]
    redis: Option<Option<String>>,
    /// Reach the admin listener through this proxy (it sees the operator's secret).
    #[arg(long, value_name = "URL", requires = "admin")]
    proxy: Option<String>,
    /// `-`: a token read from stdin; its sign-in session (`origin_jti`) is revoked (its
    /// `jti` if it has none). A token given here is refused: the command line shows in
    /// /proc and shell history.
    #[arg(long, group = "what", value_name = "-")]
    token: Option<String>,
    /// A token read from this file, as `--token -`.
    #[arg(long, group = "what", value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// One sign-in session.
    #[arg(long, group = "what")]
    origin_jti: Option<String>,
    /// One token by `jti`.
    #[arg(long, group = "what")]
    jti: Option<String>,
    /// One user (`sub`): tokens issued before `--before` (default: now).
    #[arg(long, group = "what")]
    sub: Option<String>,
    /// Unix seconds, with `--sub`.
    #[arg(long, requires = "sub", value_name = "UNIX_SECONDS")]
    before: Option<i64>,
    /// A file holding the control API's secret (default: AUTHZ_ADMIN_TOKEN_FILE, else
    /// AUTHZ_ADMIN_TOKEN).
    #[arg(long, value_name = "FILE", requires = "admin")]
    admin_token_file: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The reference describes every setting, so it cannot need any of them.
    if let Command::CheckConfig { settings: true } = &cli.command {
        print!("{}", cognito_authz::config::settings::markdown());
        return ExitCode::SUCCESS;
    }
    // Health and revoking need only the admin address: no pool configuration.
    if let Command::Health { admin, live } = &cli.command {
        return health(admin.as_deref(), *live);
    }
    if let Command::Revoke(args) = &cli.command {
        return match (&args.admin, &args.redis) {
            (_, Some(url)) => revoke_in_redis(args, url.as_deref(), cli.config.as_deref()),
            (Some(admin), None) => revoke(args, admin),
            (None, None) => unreachable!("clap requires --admin or --redis"),
        };
    }
    if let Command::CopyRevocations {
        from,
        to,
        admin_token_file,
    } = &cli.command
    {
        return match admin_secret(admin_token_file.as_deref()) {
            Ok(secret) => copy_revocations(from, to, secret.as_deref()),
            Err(problem) => {
                eprintln!("cognito-authz: {problem}");
                ExitCode::from(2)
            }
        };
    }
    // The token first: one on the command line is refused whatever the configuration.
    let token = match &cli.command {
        Command::Verify { token, token_file } => {
            let input = TokenInput::from_args(token.as_deref(), token_file.as_deref(), "verify -")
                .map(|input| input.unwrap_or(TokenInput::Stdin))
                .and_then(|input| input.read());
            match input {
                Ok(token) => token,
                Err(problem) => {
                    eprintln!("cognito-authz: {problem}");
                    return ExitCode::from(2);
                }
            }
        }
        _ => String::new(),
    };
    let config = match Config::from_env(cli.config.as_deref()) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("cognito-authz: configuration error: {err}");
            return ExitCode::from(2);
        }
    };
    let (_log_guard, tracing) = match init_logs(&config, &cli.command) {
        Ok(installed) => installed,
        Err(problem) => {
            eprintln!("cognito-authz: {problem}");
            return ExitCode::from(2);
        }
    };

    match cli.command {
        Command::Serve => {
            let code = serve(config, cli.config);
            if let Some(tracing) = tracing {
                // What is queued goes out, within a bound: a dead collector cannot hold the
                // exit.
                tracing.shutdown(std::time::Duration::from_secs(5));
            }
            code
        }
        Command::CheckConfig { .. } => check_config(&config),
        Command::Verify { .. } => verify(config, &token),
        Command::Revoke(_) | Command::Health { .. } | Command::CopyRevocations { .. } => {
            unreachable!("handled before the configuration is read")
        }
    }
}

/// Installs the log subscriber for `command` (`RUST_LOG` wins) and, for `serve` with an
/// `OTEL_EXPORTER_OTLP_ENDPOINT`, the trace pipeline beside it; the guard flushes the logs at
/// exit. Our spans (target `cognito_authz_otel`) go to traces only, never to the logs.
fn init_logs(
    config: &Config,
    command: &Command,
) -> Result<(cognito_authz::log_writer::FlushGuard, Option<Tracing>), String> {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::Layer as _;
    let default_level = match command {
        Command::Serve => "info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level))
        .add_directive(
            format!("{}=off", cognito_authz::trace::TARGET)
                .parse()
                .map_err(|err| format!("the log filter: {err}"))?,
        );
    // A background thread does the writing: one log line per decision must cost the request
    // neither a write syscall nor a wake-up. Lines wait in one buffer for at most
    // `FLUSH_INTERVAL` and go out together; they are dropped (and counted), not waited for, if
    // the output is stuck; the guard writes the rest at exit.
    let (writer, guard) = cognito_authz::log_writer::batched(std::io::stderr())
        .map_err(|err| format!("the log writer thread: {err}"))?;
    let logs = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .fmt_fields(cognito_authz::log_writer::PlainFields)
        .with_writer(writer);
    let logs = if config.server.json_logs {
        logs.json().flatten_event(true).with_filter(filter).boxed()
    } else {
        logs.with_filter(filter).boxed()
    };
    let tracing = match (command, &config.tracing.endpoint) {
        (Command::Serve, Some(_)) => Some(Tracing::start(&config.tracing)?),
        _ => None,
    };
    // Without a trace pipeline no trace layer at all: an absent (`None`) layer counts as
    // interested in everything, which would make every check span and its records live work
    // for nothing.
    let registry = tracing_subscriber::registry().with(logs);
    match &tracing {
        Some(tracing) => registry.with(tracing.layer()).try_init(),
        None => registry.try_init(),
    }
    .map_err(|err| format!("the log subscriber: {err}"))?;
    Ok((guard, tracing))
}

/// `check-config`: the effective configuration as JSON, warnings on stderr.
fn check_config(config: &Config) -> ExitCode {
    match serde_json::to_string_pretty(config) {
        Ok(text) => {
            for warning in config.routes.envoy_forwarding_warnings() {
                eprintln!("cognito-authz: warning: {warning}");
            }
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("cognito-authz: {err}");
            ExitCode::from(2)
        }
    }
}

/// A single-threaded runtime for a one-shot command; exit 2 when it cannot start.
fn one_thread_runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| {
            eprintln!("cognito-authz: cannot start the runtime: {err}");
            ExitCode::from(2)
        })
}

fn health(admin: Option<&str>, live: bool) -> ExitCode {
    use std::io::Write as _;
    let addr = admin
        .map(str::to_string)
        .or_else(|| std::env::var(cognito_authz::config::ENV_ADMIN_ADDR).ok())
        .unwrap_or_else(|| cognito_authz::config::DEFAULT_ADMIN_ADDR.to_string())
        // A server listening on every interface answers on loopback too.
        .replace("0.0.0.0:", "127.0.0.1:");
    let path = if live { "/healthz" } else { "/readyz" };
    let timeout = std::time::Duration::from_secs(2);
    let answer = (|| {
        let socket: std::net::SocketAddr = addr
            .parse()
            .map_err(|_| std::io::Error::other(format!("'{addr}' is not host:port")))?;
        let mut stream = std::net::TcpStream::connect_timeout(&socket, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok::<_, std::io::Error>(response)
    })();
    match answer {
        Ok(response)
            if response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200") =>
        {
            ExitCode::SUCCESS
        }
        Ok(response) => {
            eprintln!(
                "cognito-authz: {path}: {}",
                response.lines().next().unwrap_or("")
            );
            ExitCode::from(1)
        }
        Err(err) => {
            eprintln!("cognito-authz: {addr}{path}: {err}");
            ExitCode::from(1)
        }
    }
}

/// The control API's secret for `revoke`: the file given, else AUTHZ_ADMIN_TOKEN_FILE, else
/// AUTHZ_ADMIN_TOKEN; none is fine (the server then answers 401 or 404, and says so).
fn admin_secret(file: Option<&std::path::Path>) -> Result<Option<String>, String> {
    use cognito_authz::config::{ENV_ADMIN_TOKEN, ENV_ADMIN_TOKEN_FILE};
    let file = file
        .map(std::path::Path::to_path_buf)
        .or_else(|| std::env::var_os(ENV_ADMIN_TOKEN_FILE).map(PathBuf::from));
    match file {
        Some(path) => std::fs::File::open(&path)
            .map_err(|e| e.to_string())
            .and_then(|file| read_bounded(file, MAX_SECRET_INPUT_BYTES))
            .map(|s| Some(s.trim().to_string()))
            .map_err(|e| format!("cannot read the admin secret {}: {e}", path.display())),
        None => Ok(std::env::var(ENV_ADMIN_TOKEN)
            .ok()
            .map(|s| s.trim().to_string())),
    }
}

/// The most read as a token (stdin or a file) or an admin secret: a Cognito token is a few
/// KiB, so more is a wrong file or a stray stream, not a token.
const MAX_TOKEN_INPUT_BYTES: u64 = 64 * 1024;
/// The admin secret's bound (the server asks at least 32 bytes).
const MAX_SECRET_INPUT_BYTES: u64 = MAX_TOKEN_INPUT_BYTES;

/// Where `verify` and `revoke` read a token: never the command line itself, where
/// `/proc/*/cmdline` and shell history show it to others.
enum TokenInput {
    Stdin,
    File(PathBuf),
}

impl TokenInput {
    /// From `-` (stdin) or `--token-file FILE`; `None` when neither is given. A token given as
    /// the argument is refused, and not repeated in the refusal, which names `stdin_form`.
    fn from_args(
        argument: Option<&str>,
        file: Option<&Path>,
        stdin_form: &str,
    ) -> Result<Option<Self>, String> {
        match (argument, file) {
            (Some("-"), _) => Ok(Some(TokenInput::Stdin)),
            (Some(_), _) => Err(format!(
                "a token on the command line shows in /proc/*/cmdline and in shell history: \
                 give `{stdin_form}` and the token on stdin, or `--token-file FILE`"
            )),
            (None, Some(file)) => Ok(Some(TokenInput::File(file.to_path_buf()))),
            (None, None) => Ok(None),
        }
    }

    /// The token as read (still to be trimmed of `Bearer `), within `MAX_TOKEN_INPUT_BYTES`.
    fn read(&self) -> Result<String, String> {
        match self {
            TokenInput::Stdin => read_bounded(std::io::stdin().lock(), MAX_TOKEN_INPUT_BYTES)
                .map_err(|e| format!("cannot read the token from stdin: {e}")),
            TokenInput::File(path) => std::fs::File::open(path)
                .map_err(|e| e.to_string())
                .and_then(|file| read_bounded(file, MAX_TOKEN_INPUT_BYTES))
                .map_err(|e| format!("cannot read the token from {}: {e}", path.display())),
        }
    }
}

/// All of `reader` as UTF-8, refused past `limit` bytes.
fn read_bounded(reader: impl std::io::Read, limit: u64) -> Result<String, String> {
    let mut bytes = Vec::new();
    reader
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > limit {
        return Err(format!("more than {} KiB", limit / 1024));
    }
    String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_string())
}

/// How long `revoke` waits for the control API: it answers within Redis's timeouts.
const CONTROL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// The most of an answer `revoke` reads: the control API's is under 200 bytes.
const MAX_ANSWER_BYTES: usize = 16 * 1024;

/// The HTTP client for the control API. It goes directly, whatever the environment's proxy
/// variables say: a proxy would see the operator's secret (in clear text over http) and could
/// answer for the server. Only `--proxy` sends it through one. No redirect is followed: the
/// secret stays with the URL the operator gave.
fn control_client(proxy: Option<&str>) -> Result<reqwest::Client, String> {
    let builder = reqwest::Client::builder()
        .timeout(CONTROL_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none());
    let builder = match proxy {
        Some(url) => builder.proxy(
            reqwest::Proxy::all(url).map_err(|e| format!("the --proxy URL is not usable: {e}"))?,
        ),
        None => builder.no_proxy(),
    };
    builder
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// The request body: what `args` names, `token` being the token read for `--token -` or
/// `--token-file`.
fn revocation_body(args: &RevokeArgs, token: Option<&str>) -> Result<Value, String> {
    if let Some(token) = token {
        let token = pasted_token(token);
        // Unverified on purpose: a revocation can only refuse tokens, never admit one.
        let payload = unverified_payload(token).unwrap_or_default();
        match (payload.get("origin_jti"), payload.get("jti")) {
            (Some(Value::String(session)), _) => Ok(json!({ "origin_jti": session })),
            (_, Some(Value::String(jti))) => Ok(json!({ "jti": jti })),
            _ => Err("the token has neither origin_jti nor jti".to_string()),
        }
    } else if let Some(session) = &args.origin_jti {
        Ok(json!({ "origin_jti": session }))
    } else if let Some(jti) = &args.jti {
        Ok(json!({ "jti": jti }))
    } else if let Some(sub) = &args.sub {
        Ok(json!({ "sub": sub, "before": args.before }))
    } else {
        Err("say what to revoke: --token -, --token-file, --origin-jti, --jti or --sub".into())
    }
}

/// The request body for what `args` names, the token read from stdin or a file if so asked.
fn revocation_request(args: &RevokeArgs) -> Result<Value, String> {
    let input = TokenInput::from_args(
        args.token.as_deref(),
        args.token_file.as_deref(),
        "--token -",
    )?;
    let token = input.map(|input| input.read()).transpose()?;
    revocation_body(args, token.as_deref())
}

fn revoke(args: &RevokeArgs, admin: &str) -> ExitCode {
    let prepared = (|| {
        let body = revocation_request(args)?;
        let secret = admin_secret(args.admin_token_file.as_deref())?;
        Ok::<_, String>((body, secret, control_client(args.proxy.as_deref())?))
    })();
    let (body, secret, client) = match prepared {
        Ok(prepared) => prepared,
        Err(problem) => {
            eprintln!("cognito-authz: {problem}");
            return ExitCode::from(2);
        }
    };
    let runtime = match one_thread_runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let url = format!("{}/revocations", admin.trim_end_matches('/'));
    let result = runtime.block_on(async {
        let mut request = client
            .post(&url)
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(secret) = &secret {
            request = request.bearer_auth(secret);
        }
        let response = request.send().await?;
        let status = response.status();
        let answer = bounded_body(response, MAX_ANSWER_BYTES).await?;
        Ok::<_, reqwest::Error>((status, answer))
    });
    match result {
        Ok((status, answer)) => judge(&url, status, &answer),
        Err(err) => {
            // reqwest's message names the step; its sources say why (refused, timed out).
            let mut why = err.to_string();
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                why = format!("{why}: {cause}");
                source = cause.source();
            }
            eprintln!("cognito-authz: {url}: {why}");
            ExitCode::from(2)
        }
    }
}

/// `revoke --redis`: the entry a replica's control API would record, stored and announced in
/// the shared Redis with the same key, JSON and signatures. Exit 0 once Redis took it and
/// announced it, 1 when it did not (nothing is queued: this command has no later), 2 on a
/// configuration error. Neither the password nor a key is ever printed.
fn revoke_in_redis(args: &RevokeArgs, url: Option<&str>, file: Option<&Path>) -> ExitCode {
    use cognito_authz::config::SharedWriterConfig;
    use cognito_authz::shared::{PublishError, Shared};
    let runtime = match one_thread_runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    // The link's connection manager starts its task as it is made.
    let _in_runtime = runtime.enter();
    // Two rustls providers are linked; rediss:// needs one chosen, as `serve` chooses it.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let prepared = (|| {
        let body = revocation_request(args)?;
        let config = SharedWriterConfig::from_env(file, url)
            .map_err(|err| format!("configuration error: {err}"))?;
        let keys = config
            .redis_signing_key
            .as_ref()
            .map(|keys| keys.as_bytes())
            .unwrap_or_default();
        // redis-rs's messages name the problem, never the URL.
        let shared = Shared::writer(config.redis_target(), &keys)
            .map_err(|err| format!("configuration error: {}: {err}", config.redis_url_from))?;
        Ok::<_, String>((body, config, shared))
    })();
    let (body, config, shared) = match prepared {
        Ok(prepared) => prepared,
        Err(problem) => {
            eprintln!("cognito-authz: {problem}");
            return ExitCode::from(2);
        }
    };
    let now = cognito_authz::clock::Clock::system().now();
    let entry = serde_json::from_value::<server::RevokeRequest>(body)
        .map_err(|_| server::BadRevocation::Malformed("not a revocation request"))
        .and_then(|request| request.entry(now, config.leeway));
    let entry = match entry {
        Ok(entry) => entry,
        Err(bad) => {
            eprintln!("cognito-authz: the revocation was not recorded: {bad}");
            return ExitCode::from(1);
        }
    };
    let shown = config.shown_url();
    if config.redis_signing_key.is_none() {
        eprintln!(
            "cognito-authz: no {}: the revocation is written unsigned, and replicas and \
             modules that sign (that set it) ignore it",
            cognito_authz::config::ENV_REDIS_SIGNING_KEY_FILE
        );
    }
    match runtime.block_on(shared.publish_once(&entry)) {
        Ok(published) => {
            println!(
                "{}",
                json!(server::RevocationRecorded {
                    recorded: true,
                    expires: entry.expires,
                    shared: Some(true),
                })
            );
            if published.heard == 0 {
                eprintln!(
                    "cognito-authz: stored in {shown}; no replica or module follows it right \
                     now: each loads it when it starts or reconnects"
                );
            }
            if published.replicated == Some(false) {
                eprintln!(
                    "cognito-authz: stored on the cluster's primary, but no replica of it \
                     confirmed it in time: should that primary fail now, run the command again \
                     once its replica took over"
                );
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            let what = match &err {
                PublishError::NotStored(_) => "the revocation was not recorded",
                PublishError::NotAnnounced(_) => {
                    "the revocation is stored but not announced: replicas and modules load it \
                     only when they next start or reconnect"
                }
            };
            eprintln!(
                "cognito-authz: {what} ({shown}: {err}); nothing is queued: run the command \
                 again once Redis answers, or revoke through a replica (--admin), which keeps it \
                 and shares it when Redis returns"
            );
            ExitCode::from(1)
        }
    }
}

/// What answered may be anything (a proxy, a web page, a hostile server): a short, printable
/// excerpt of it.
fn excerpt(answer: &[u8]) -> String {
    String::from_utf8_lossy(answer)
        .trim()
        .chars()
        .take(200)
        .flat_map(char::escape_default)
        .collect()
}

/// A response's body, up to `max` bytes (what comes after is not read).
async fn bounded_body(
    mut response: reqwest::Response,
    max: usize,
) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > max {
            body.extend_from_slice(&chunk[..max - body.len()]);
            break;
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `revoke`'s exit code from what `url` answered: success only on the control API's own
/// answer, and only once the revocation is shared (or there is no Redis to share it with).
fn judge(url: &str, status: reqwest::StatusCode, answer: &[u8]) -> ExitCode {
    use cognito_authz::server::RevocationRecorded;
    let recorded = serde_json::from_slice::<RevocationRecorded>(answer)
        .ok()
        .filter(|answer| status.is_success() && answer.recorded);
    let Some(recorded) = recorded else {
        eprintln!(
            "cognito-authz: the revocation was not recorded: {url} answered {status} {}, not \
             the control API's \"recorded\"",
            excerpt(answer)
        );
        return ExitCode::from(1);
    };
    println!("{}", json!(recorded));
    match recorded.shared {
        Some(true) => ExitCode::SUCCESS,
        None => {
            eprintln!(
                "cognito-authz: recorded; this server shares revocations with no other replica \
                 (no AUTHZ_REDIS_URL): revoke through each one"
            );
            ExitCode::SUCCESS
        }
        // Redis is down: enforced here, queued, and published to the others when it returns.
        Some(false) => {
            eprintln!(
                "cognito-authz: recorded on this replica only, not shared: Redis is down; it \
                 is queued and the other replicas learn of it when Redis returns"
            );
            ExitCode::from(1)
        }
    }
}

/// Largest list `copy-revocations` reads: `AUTHZ_MAX_REVOCATIONS` entries of up to about 330
/// bytes at the default cap of 100,000.
const MAX_LISTING_BYTES: usize = 64 << 20;

/// `copy-revocations`: lists from `from`, re-issues each through `to`, prints what happened.
fn copy_revocations(from: &str, to: &str, secret: Option<&str>) -> ExitCode {
    let runtime = match one_thread_runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    // The operator's secret goes to the replicas named: no proxy, no redirect.
    let http = match control_client(None) {
        Ok(http) => http,
        Err(problem) => {
            eprintln!("cognito-authz: {problem}");
            return ExitCode::from(2);
        }
    };
    let authorized = |request: reqwest::RequestBuilder| match secret {
        Some(secret) => request.bearer_auth(secret),
        None => request,
    };
    let list_url = format!("{}/revocations", from.trim_end_matches('/'));
    let listing = runtime.block_on(async {
        let mut response = authorized(http.get(&list_url))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
            if body.len() + chunk.len() > MAX_LISTING_BYTES {
                return Err(format!("the list is over {MAX_LISTING_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        let text = String::from_utf8_lossy(&body);
        if status != reqwest::StatusCode::OK {
            return Err(format!("answered {status}: {}", excerpt(&body)));
        }
        serde_json::from_str::<Value>(&text).map_err(|_| "the answer is not a list".to_string())
    });
    let listing = match listing {
        Ok(listing) => listing,
        Err(problem) => {
            eprintln!("cognito-authz: {list_url}: {problem}");
            return ExitCode::from(2);
        }
    };
    let items = listing["revocations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let truncated = listing["truncated"].as_bool() != Some(false);
    let post_url = format!("{}/revocations", to.trim_end_matches('/'));
    let (mut recorded, mut not_shared, mut refused) = (0, 0, 0);
    runtime.block_on(async {
        for mut item in items.iter().cloned() {
            // `expires` is the listing's; the replica that re-issues sets its own.
            if let Some(fields) = item.as_object_mut() {
                fields.remove("expires");
            }
            let answer = authorized(http.post(&post_url))
                .header("content-type", "application/json")
                .body(item.to_string())
                .send()
                .await;
            // Recorded only on the control API's own answer, as `revoke` judges it.
            let judged = match answer {
                Ok(r) => {
                    let status = r.status();
                    let body = bounded_body(r, MAX_ANSWER_BYTES).await.unwrap_or_default();
                    serde_json::from_slice::<cognito_authz::server::RevocationRecorded>(&body)
                        .ok()
                        .filter(|answer| status.is_success() && answer.recorded)
                        .ok_or_else(|| {
                            format!(
                                "answered {status} {}, not the control API's \"recorded\"",
                                excerpt(&body)
                            )
                        })
                }
                Err(err) => Err(err.to_string()),
            };
            match judged {
                Ok(answer) => {
                    recorded += 1;
                    if answer.shared == Some(false) {
                        not_shared += 1;
                    }
                }
                Err(problem) => {
                    refused += 1;
                    eprintln!("cognito-authz: {post_url}: {problem}");
                }
            }
        }
    });
    println!(
        "{}",
        json!({
            "listed": items.len(),
            "recorded": recorded,
            "not_shared": not_shared,
            "refused": refused,
            "truncated": truncated,
        })
    );
    if truncated {
        eprintln!(
            "cognito-authz: {from} listed only part of what Redis holds (AUTHZ_MAX_REVOCATIONS)"
        );
    }
    if recorded == items.len() && not_shared == 0 && !truncated {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The name of the serving runtime's worker threads (tests count them).
const WORKER_THREAD_NAME: &str = "authz-worker";

fn serve(config: Config, file: Option<PathBuf>) -> ExitCode {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all().thread_name(WORKER_THREAD_NAME);
    // AUTHZ_WORKER_THREADS: one per core when unset.
    if let Some(threads) = config.server.worker_threads {
        builder.worker_threads(threads);
    }
    let runtime = match builder.build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("cognito-authz: cannot start the runtime: {err}");
            return ExitCode::from(2);
        }
    };
    let reload = move || Config::from_env(file.as_deref());
    match runtime.block_on(server::run(config, server::shutdown_signal(), reload)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("cognito-authz: {err}");
            ExitCode::from(2)
        }
    }
}

/// What `verify` found, for its exit code.
enum Outcome {
    /// Exit 0.
    Valid,
    /// Exit 1.
    Invalid,
    /// Exit 3: the signature and claims hold, but the revocation check could not run.
    Unknown,
}

/// What Cognito says of a verified token, when the configuration asks it service-wide.
async fn revocation_status(
    config: &Config,
    token: &str,
    claims: &cognito_authz::verify::Claims,
) -> RevocationStatus {
    let ask = config.routes.fallback.revocation
        == cognito_authz::revocation_check::RevocationMode::Cognito;
    match cognito_authz::revocation_check::RevocationChecker::new(
        config.revocation.clone(),
        config.idp_endpoints(),
        std::sync::Arc::default(),
        None,
        cognito_authz::verify::MAX_TOKEN_LIFETIME_SECS,
        None,
    ) {
        Ok(checker) => {
            checker
                .diagnose(token, claims, &Default::default(), ask)
                .await
        }
        Err(_) => {
            RevocationStatus::Unavailable(cognito_authz::revocation::Unavailable::Unreachable)
        }
    }
}

fn verify(config: Config, token: &str) -> ExitCode {
    let token = pasted_token(token);

    let runtime = match one_thread_runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    runtime.block_on(async {
        let keys = match KeyStore::new(&config.pools, &config.jwks) {
            Ok(keys) => keys,
            Err(err) => {
                eprintln!("cognito-authz: {err}");
                return ExitCode::from(2);
            }
        };
        keys.refresh_all().await;
        let verifier = config.verifier(keys);
        let (outcome, output) = match verifier.verify(token).await {
            Ok(claims) => {
                let revocation = revocation_status(&config, token, &claims).await;
                let outcome = match revocation {
                    r if r.is_valid() => Outcome::Valid,
                    RevocationStatus::Unavailable(_) => Outcome::Unknown,
                    _ => Outcome::Invalid,
                };
                (
                    outcome,
                    json!({
                        "valid": revocation.is_valid(),
                        "reason": revocation.reason(),
                        "pool": claims.pool_id,
                        "revocation": {
                            "checked": revocation != RevocationStatus::Off,
                            "answer": revocation.as_str(),
                        },
                        "claims": claims.raw,
                    }),
                )
            }
            Err(rejection) => {
                let mut output = json!({
                    "valid": false,
                    "reason": rejection.reason.as_str(),
                    "detail": rejection.detail,
                    "claims": unverified_payload(token).map_or(Value::Null, Value::Object),
                });
                if rejection.reason == cognito_authz::verify::Reason::KeysUnavailable {
                    output["key_status"] = json!(verifier
                        .keys()
                        .status()
                        .iter()
                        .map(|s| json!({"pool": s.pool_id, "jwks_uri": s.jwks_uri, "last_error": s.last_error}))
                        .collect::<Vec<_>>());
                }
                (Outcome::Invalid, output)
            }
        };
        println!("{output}");
        match outcome {
            Outcome::Valid => ExitCode::SUCCESS,
            Outcome::Invalid => ExitCode::from(1),
            Outcome::Unknown => ExitCode::from(3),
        }
    })
}
