//! What an operator (or whatever answers them) can get wrong, held to a clear answer: the
//! second review of issue 28's first changes (`revoke --redis`, the module's JSON config), each
//! a reproduction first. Real `cognito-authz` binary, real `redis-server`, loopback only.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use cognito_authz::config::Config;
use cognito_authz::shared::Shared;

const BIN: &str = env!("CARGO_BIN_EXE_cognito-authz");
const PW: &str = "s3cret-attack-pw";
const KEY: &str = "0123456789abcdef0123456789abcdef0123";

/// A throwaway `redis-server` (no password: the tests judge what it stores).
struct Redis(std::process::Child, u16);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Redis {
    fn start() -> Redis {
        let port = cruddur_demo::stack::Ports::ephemeral().unwrap().app;
        let child = Command::new("/usr/bin/redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis(child, port)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.1)
    }
}

fn revoke(args: &[&str], vars: &[(&str, &str)]) -> Output {
    Command::new(BIN)
        .arg("revoke")
        .args(args)
        .env_clear()
        .envs(vars.iter().copied())
        .output()
        .expect("run cognito-authz")
}

fn printed(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn key_file(name: &str, text: &str) -> String {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("attack-i28-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// The docs' own example is `rediss://`: the command must not panic on it (no rustls provider
/// is installed on this path; `serve` installs one). A Redis that takes the TCP connection and
/// never answers stands in for the TLS one: the handshake is where it panicked.
#[test]
fn revoke_in_redis_over_rediss_fails_cleanly_instead_of_panicking() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let url = format!("rediss://revoker:{PW}@127.0.0.1:{port}/");
    let started = Instant::now();
    let out = revoke(
        &["--redis", "--jti", "over-tls"],
        &[("AUTHZ_REDIS_URL", url.as_str())],
    );
    let shown = printed(&out);
    assert!(!shown.contains("panicked"), "{shown}");
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(started.elapsed() < Duration::from_secs(10), "{shown}");
    assert!(!shown.contains(PW), "{shown}");
    drop(silent);
}

/// An id of 200 control characters is within MAX_ID_BYTES (256) but its JSON (`\u0001` each)
/// is over MAX_ENTRY_BYTES (1024): every replica and module ignores it as too large, yet the
/// command says `recorded` and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn revoke_in_redis_never_reports_an_entry_no_replica_reads() {
    let redis = Redis::start();
    let url = redis.url();
    let jti = "\u{1}".repeat(200);
    let out = revoke(
        &["--redis", "--jti", &jti],
        &[("AUTHZ_REDIS_URL", url.as_str())],
    );
    // What a replica would take from Redis.
    let reader = Shared::writer(&url, &[]).unwrap();
    let listed = reader.live_revocations(10).await.unwrap();
    assert!(
        out.status.code() != Some(0) || !listed.entries.is_empty(),
        "exit 0 and `recorded: true`, but no replica reads it: {}",
        printed(&out)
    );
}

/// Forgetting AUTHZ_REDIS_SIGNING_KEY_FILE where the replicas sign: the entry is written
/// unsigned, every replica ignores it, and the command exits 0 saying nothing about it.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn revoke_in_redis_without_a_key_where_replicas_sign_is_not_a_silent_success() {
    let redis = Redis::start();
    let url = redis.url();
    let keys = key_file("signing-keys", &format!("{KEY}\n"));
    // A replica that signs has already shared a revocation.
    let signed = revoke(
        &["--redis", "--jti", "signed-before"],
        &[
            ("AUTHZ_REDIS_URL", url.as_str()),
            ("AUTHZ_REDIS_SIGNING_KEY_FILE", keys.as_str()),
        ],
    );
    assert_eq!(signed.status.code(), Some(0), "{}", printed(&signed));
    // The operator forgets the key file.
    let out = revoke(
        &["--redis", "--jti", "unsigned-now"],
        &[("AUTHZ_REDIS_URL", url.as_str())],
    );
    let reader = Shared::writer(&url, &[KEY.as_bytes()]).unwrap();
    let listed = reader.live_revocations(10).await.unwrap();
    let taken = listed
        .entries
        .iter()
        .any(|e| format!("{:?}", e.revocation).contains("unsigned-now"));
    assert!(!taken, "a signing replica took an unsigned entry");
    let shown = printed(&out);
    assert!(
        out.status.code() != Some(0) || shown.contains("AUTHZ_REDIS_SIGNING_KEY_FILE"),
        "exit 0, `recorded: true`, and no replica will ever enforce it: {shown}"
    );
}

/// `revoke --redis` reads the config file; a TOML mistake on the line that holds the Redis URL
/// prints that line, password and all.
#[test]
fn revoke_in_redis_config_file_error_never_prints_the_password() {
    let config = key_file(
        "cognito-authz.toml",
        &format!("[server]\nredis_url = \"rediss://revoker:{PW}@redis.internal:6380/0\" x\n"),
    );
    let out = revoke(
        &["--redis", "--jti", "x"],
        &[("COGNITO_AUTHZ_CONFIG", config.as_str())],
    );
    let shown = printed(&out);
    assert_eq!(out.status.code(), Some(2), "{shown}");
    assert!(!shown.contains(PW), "the password was printed: {shown}");
}

fn pool_env(key: &str) -> Option<String> {
    match key {
        "AWS_COGNITO_USER_POOL_ID" => Some("us-east-1_AbC123".into()),
        "AWS_COGNITO_USER_POOL_CLIENT_ID" => Some("client-a".into()),
        _ => None,
    }
}

/// `from_json` strips double-quoted values from serde's messages, but serde quotes an unknown
/// enum variant in backticks: a secret pasted as a `mode` is repeated (to Envoy's log).
#[test]
fn json_config_never_repeats_a_value_given_as_an_enum() {
    let secret = format!("rediss://u:{PW}@redis.internal:6380");
    for field in [
        "mode",
        "revocation",
        "revocation_on_unavailable",
        "token_use",
    ] {
        let json =
            format!(r#"{{"routes": [{{"name": "x", "path": "/", "{field}": "{secret}"}}]}}"#);
        let err = Config::from_json(pool_env, &json).unwrap_err().to_string();
        assert!(!err.contains(PW), "{field}: {err}");
    }
}

/// A value holding a `"` is printed escaped (`\"`), which flips the stripper's quote state:
/// what follows the quote is repeated.
#[test]
fn json_config_never_repeats_a_value_holding_a_quote() {
    let json = format!(r#"{{"leeway_seconds": "pw\"{PW}"}}"#);
    let err = Config::from_json(pool_env, &json).unwrap_err().to_string();
    assert!(!err.contains(PW), "{err}");
}

/// A URL from the config file that redis-rs cannot parse is blamed on AUTHZ_REDIS_URL, which
/// is not set: the error must name the file key it came from (docs/revocation.md: "naming the
/// variable, file key or flag").
#[test]
fn revoke_in_redis_names_the_file_key_a_bad_url_came_from() {
    let config = key_file(
        "bad-url.toml",
        "[server]\nredis_url = \"redis://127.0.0.1:bad/\"\n",
    );
    let out = revoke(
        &["--redis", "--jti", "x"],
        &[("COGNITO_AUTHZ_CONFIG", config.as_str())],
    );
    let shown = printed(&out);
    assert_eq!(out.status.code(), Some(2), "{shown}");
    assert!(shown.contains("server.redis_url"), "{shown}");
}

/// `revocation.max_concurrent` (and COGNITO_REVOCATION_MAX_CONCURRENT) has no upper bound:
/// above tokio's semaphore limit (usize::MAX >> 3) `serve` panics at start (exit 101) and the
/// module's config hook panics (caught: "a configuration hook panicked"). It must be refused
/// as a configuration error, naming the setting.
#[test]
fn an_unbounded_revocation_max_concurrent_is_refused_not_a_panic_later() {
    let huge = "4611686018427387904";
    let json = format!(r#"{{"revocation": {{"mode": "cognito", "max_concurrent": {huge}}}}}"#);
    let err = Config::from_json(pool_env, &json).map(|_| ());
    assert!(err.is_err(), "accepted max_concurrent = {huge}");
    let env = |key: &str| match key {
        "COGNITO_REVOCATION_MAX_CONCURRENT" => Some(huge.to_string()),
        "COGNITO_REVOCATION" => Some("cognito".to_string()),
        _ => pool_env(key),
    };
    let err = Config::from_toml(env, "").map(|_| ());
    assert!(
        err.is_err(),
        "accepted COGNITO_REVOCATION_MAX_CONCURRENT={huge}"
    );
}

/// AUTHZ_WORKER_THREADS has no upper bound: `serve` panics building its runtime ("capacity
/// overflow") instead of naming the setting.
#[test]
fn an_unbounded_worker_thread_count_is_refused_not_a_panic_later() {
    let env = |key: &str| match key {
        "AUTHZ_WORKER_THREADS" => Some("9223372036854775807".to_string()),
        _ => pool_env(key),
    };
    assert!(
        Config::from_toml(env, "").is_err(),
        "accepted AUTHZ_WORKER_THREADS=9223372036854775807"
    );
}

/// One Redis: a writer's key or value that is not UTF-8 among the revocations is skipped on
/// its own; the revocations beside it are still read (one bad entry failing the whole load
/// would let a restarted replica admit every revoked token).
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn redis_a_value_that_is_not_text_spoils_only_itself() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt as _;
    let redis = Redis::start();
    let url = redis.url();
    let out = revoke(
        &["--redis", "--jti", "kept"],
        &[("AUTHZ_REDIS_URL", url.as_str())],
    );
    assert!(out.status.success(), "{}", printed(&out));
    for (key, value) in [
        (&b"cognito-authz:rev:jti:junk-value"[..], &b"\xff\xfe"[..]),
        (&b"cognito-authz:rev:jti:\xff"[..], &b"{}"[..]),
    ] {
        let out = Command::new("/usr/bin/redis-cli")
            .args(["-p", &redis.1.to_string()])
            .args([
                OsStr::new("SET"),
                OsStr::from_bytes(key),
                OsStr::from_bytes(value),
            ])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "OK");
    }
    let reader = Shared::writer(&url, &[]).unwrap();
    let listed = reader.live_revocations(10).await.unwrap();
    assert_eq!(listed.entries.len(), 1, "{listed:?}");
}
