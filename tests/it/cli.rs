//! The command line as a user runs it: `verify` and `check-config`, their output and exit codes.

use crate::common;

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

use cognito_authz::testkit::{access_claims, jwks, now, Behaviour, JwksServer, TestKey};
use common::{env_for, CLIENT, ISS};

const BIN: &str = env!("CARGO_BIN_EXE_cognito-authz");

fn run(args: &[&str], vars: &std::collections::HashMap<String, String>, stdin: &str) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env_clear()
        .envs(vars)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run cognito-authz");
    // The command may stop before it reads (a refused argument): a closed pipe is its answer.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

fn json_out(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

#[tokio::test]
async fn verify_prints_a_verdict_and_exits_by_it() {
    let server = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let vars = env_for(&server.url("/jwks.json"), &[]);
    let good = TestKey::shared(0).token(&access_claims(ISS, CLIENT, now()));

    let out = tokio::task::spawn_blocking({
        let (vars, good) = (vars.clone(), good.clone());
        move || run(&["verify", "-"], &vars, &good)
    })
    .await
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verdict = json_out(&out);
    assert_eq!(verdict["valid"], true);
    assert_eq!(verdict["reason"], serde_json::Value::Null);
    assert_eq!(verdict["claims"]["client_id"], CLIENT);

    let mut expired = access_claims(ISS, CLIENT, now() - 7200);
    expired["exp"] = serde_json::json!(now() - 3600);
    let expired = TestKey::shared(0).token(&expired);
    let out = tokio::task::spawn_blocking({
        let vars = vars.clone();
        move || run(&["verify"], &vars, &format!("Bearer {expired}\n"))
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let verdict = json_out(&out);
    assert_eq!(verdict["valid"], false);
    assert_eq!(verdict["reason"], "expired");
    assert_eq!(
        verdict["claims"]["iss"], ISS,
        "unverified claims shown for diagnosis"
    );

    let out = tokio::task::spawn_blocking(move || run(&["verify"], &vars, "not.a.jwt"))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json_out(&out)["reason"], "malformed");
}

/// A token never goes on the command line, where `/proc/*/cmdline` and shell history show it:
/// `verify -` (or no argument) reads stdin, `--token-file FILE` a file, and a literal token is
/// refused with exit 2 without echoing it. What is read is bounded.
#[tokio::test]
async fn verify_reads_the_token_from_stdin_or_a_file_never_the_command_line() {
    let server = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let vars = env_for(&server.url("/jwks.json"), &[]);
    let good = TestKey::shared(0).token(&access_claims(ISS, CLIENT, now()));
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("cli-token-file-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("token");
    std::fs::write(&file, format!("Bearer {good}\n")).unwrap();
    let absurd = dir.join("absurd");
    std::fs::write(&absurd, "a".repeat(64 * 1024 + 1)).unwrap();
    let verify = |args: Vec<String>, stdin: String| {
        let vars = vars.clone();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run(&args, &vars, &stdin)
        })
    };
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    let from_file = args(&["verify", "--token-file", file.to_str().unwrap()]);
    let out = verify(from_file, String::new()).await.unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json_out(&out)["valid"], true);
    let out = verify(args(&["verify", "-"]), format!("{good}\n"))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0));

    for literal in [good.clone(), format!("Bearer {good}")] {
        let out = verify(args(&["verify", &literal]), String::new())
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert!(out.stdout.is_empty(), "no verdict");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(said.contains("--token-file"), "{said}");
        for part in good.split('.') {
            assert!(!said.contains(part), "the token is echoed: {said}");
        }
    }
    let out = verify(args(&["verify"]), "a".repeat(64 * 1024 + 1))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "more than 64 KiB on stdin");
    let too_big = args(&["verify", "--token-file", absurd.to_str().unwrap()]);
    let out = verify(too_big, String::new()).await.unwrap();
    assert_eq!(out.status.code(), Some(2), "more than 64 KiB in a file");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_bad_configuration_exits_2_naming_the_variable() {
    let mut vars = env_for("http://127.0.0.1:9/jwks.json", &[]);
    vars.insert("COGNITO_TOKEN_USE".into(), "refresh".into());
    for args in [&["verify", "-"][..], &["check-config"][..]] {
        let out = run(args, &vars, "x.y.z");
        assert_eq!(out.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("COGNITO_TOKEN_USE"), "{stderr}");
    }
    let out = run(&["check-config"], &Default::default(), "");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("AWS_COGNITO_USER_POOL_ID"));
}

#[test]
fn check_config_prints_the_effective_configuration() {
    let dir = std::env::temp_dir().join(format!("cognito-authz-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("config.toml");
    std::fs::write(
        &file,
        "leeway_seconds = 3\n[[pools]]\nid = \"local_pool\"\nclient_ids = [\"c1\"]\nissuer = \"http://127.0.0.1:5000/local_pool\"\n",
    )
    .unwrap();
    let vars = env_for("http://127.0.0.1:9/jwks.json", &[]);
    let out = run(
        &["--config", file.to_str().unwrap(), "check-config"],
        &vars,
        "",
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = json_out(&out);
    assert_eq!(config["leeway"], 3.0);
    assert_eq!(config["pools"].as_array().unwrap().len(), 2);
    assert_eq!(config["pools"][0]["id"], "local_pool");
    assert_eq!(config["pools"][1]["client_ids"][0], CLIENT);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn every_subcommand_has_help() {
    for args in [
        &["--help"][..],
        &["verify", "--help"],
        &["check-config", "--help"],
    ] {
        let out = run(args, &Default::default(), "");
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("Usage"));
    }
}

#[test]
fn check_config_warns_about_a_token_source_the_shipped_envoy_would_not_send() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("cli-warn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("cognito-authz.toml");
    std::fs::write(&file, "[identity]\ntoken_cookie = \"jwt\"\n").unwrap();
    let vars = env_for("http://127.0.0.1:9/jwks.json", &[]);
    let out = run(
        &["--config", file.to_str().unwrap(), "check-config"],
        &vars,
        "",
    );
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning") && stderr.contains("- exact: cookie"),
        "{stderr}"
    );
    assert_eq!(json_out(&out)["routes"]["token_cookie"], "jwt");

    let plain = run(&["check-config"], &vars, "");
    assert!(
        plain.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&plain.stderr)
    );
}

#[tokio::test]
async fn health_answers_for_a_running_server_and_fails_for_none() {
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let running = cognito_authz::server::start(common::serve_config(&idp.url("/j"), &[], ""))
        .await
        .unwrap();
    let admin = running.admin_addr.to_string();
    let vars = std::collections::HashMap::new();
    let mut ready = false;
    for _ in 0..50 {
        let out = tokio::task::spawn_blocking({
            let (admin, vars) = (admin.clone(), vars.clone());
            move || run(&["health", "--admin", &admin], &vars, "")
        })
        .await
        .unwrap();
        if out.status.code() == Some(0) {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(ready, "health never saw the server ready");
    let live = tokio::task::spawn_blocking({
        let (admin, vars) = (admin.clone(), vars.clone());
        move || run(&["health", "--live", "--admin", &admin], &vars, "")
    })
    .await
    .unwrap();
    assert_eq!(live.status.code(), Some(0));
    running.stop().await.unwrap();
    let gone = tokio::task::spawn_blocking(move || run(&["health", "--admin", &admin], &vars, ""))
        .await
        .unwrap();
    assert_eq!(gone.status.code(), Some(1), "nothing listens any more");
}

/// `serve`'s runtime workers, counted by name in `/proc`, for `AUTHZ_WORKER_THREADS` = `threads`
/// (unset: one per core).
async fn serve_workers(idp: &JwksServer, threads: Option<&str>) -> usize {
    let mut vars = env_for(&idp.url("/j"), &[]);
    vars.insert("AUTHZ_GRPC_ADDR".into(), "127.0.0.1:0".into());
    vars.insert("AUTHZ_ADMIN_ADDR".into(), "127.0.0.1:0".into());
    if let Some(threads) = threads {
        vars.insert("AUTHZ_WORKER_THREADS".into(), threads.into());
    }
    let mut child = Command::new(BIN)
        .arg("serve")
        .env_clear()
        .envs(&vars)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run cognito-authz serve");
    let tasks = format!("/proc/{}/task", child.id());
    let count = || {
        std::fs::read_dir(&tasks)
            .map(|dir| {
                dir.filter_map(Result::ok)
                    .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
                    .filter(|name| name.trim() == "authz-worker")
                    .count()
            })
            .unwrap_or(0)
    };
    // Tokio starts its workers with the runtime; wait until the count is steady.
    let mut seen = 0;
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let now = count();
        if now > 0 && now == seen {
            break;
        }
        seen = now;
    }
    let _ = child.kill();
    let _ = child.wait();
    seen
}

#[tokio::test]
async fn serve_runs_as_many_workers_as_authz_worker_threads_says() {
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    assert_eq!(serve_workers(&idp, Some("1")).await, 1);
    assert_eq!(serve_workers(&idp, Some("3")).await, 3);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(serve_workers(&idp, None).await, cores);
}

/// A duration past what `Instant` can hold, taken by check-config, made `serve` panic in every
/// connection task that added it to an instant (the idle deadline; hyper's keep-alive
/// schedule) while the process reported ready. A setting no instant can hold is an exit 2
/// naming the variable.
#[test]
fn a_duration_no_instant_can_hold_is_refused_naming_the_variable() {
    for name in [
        "AUTHZ_IDLE_TIMEOUT_SECONDS",
        "AUTHZ_KEEPALIVE_SECONDS",
        "AUTHZ_KEEPALIVE_TIMEOUT_SECONDS",
    ] {
        let vars = env_for(
            "http://127.0.0.1:9/jwks.json",
            &[(name, "18446744073709551615")],
        );
        let out = run(&["check-config"], &vars, "");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.code() == Some(2) && stderr.contains(name),
            "{name}=u64::MAX: exit {:?}, {stderr}",
            out.status.code()
        );
    }
}

/// A hostile "admin listener" on loopback: answers `GET` with `listing` (200) and `POST` with a
/// 500 whose body is `post_body_bytes` of `filler`. Its port.
async fn hostile_admin(
    listing: &'static str,
    filler: &'static [u8],
    post_body_bytes: usize,
) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut head = [0u8; 4096];
                let n = socket.read(&mut head).await.unwrap_or(0);
                if head[..n].starts_with(b"GET") {
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{listing}",
                        listing.len()
                    );
                    let _ = socket.write_all(answer.as_bytes()).await;
                    return;
                }
                let head =
                    format!("HTTP/1.1 500 Oops\r\ncontent-length: {post_body_bytes}\r\n\r\n");
                let _ = socket.write_all(head.as_bytes()).await;
                let chunk = filler.repeat((1 << 20) / filler.len());
                let mut sent = 0;
                while sent < post_body_bytes {
                    let n = chunk.len().min(post_body_bytes - sent);
                    if socket.write_all(&chunk[..n]).await.is_err() {
                        return;
                    }
                    sent += n;
                }
            });
        }
    });
    port
}

/// `copy-revocations` read a POST's answer whole where `revoke` stops at 16 KiB: whatever
/// answered at `--to` (or a man in the middle on plain http) made it allocate gigabytes (8 GB
/// seen for a 4 GiB answer). Under a 1 GiB address-space limit it exits 1 saying the revocation
/// was not recorded, and is not killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_revocations_reads_a_bounded_answer() {
    let port = hostile_admin(
        r#"{"revocations":[{"jti":"a"}],"truncated":false}"#,
        b"B",
        2 << 30,
    )
    .await;
    let secret = std::env::temp_dir().join(format!("copy-secret-{}", std::process::id()));
    std::fs::write(&secret, "an-admin-secret-of-enough-bytes-0123").unwrap();
    let admin = format!("http://127.0.0.1:{port}");
    let script = format!(
        "ulimit -v 1048576; exec {BIN} copy-revocations --from {admin} --to {admin} \
         --admin-token-file {}",
        secret.display()
    );
    let out = tokio::process::Command::new("bash")
        .args(["-c", &script])
        .env_clear()
        .output()
        .await
        .unwrap();
    let _ = std::fs::remove_file(&secret);
    assert_eq!(
        out.status.code(),
        Some(1),
        "killed or failed otherwise: {:?}, stderr ends {:?}",
        out.status,
        String::from_utf8_lossy(&out.stderr[out.stderr.len().saturating_sub(300)..])
    );
}

/// When the listing is refused, `copy-revocations` printed the whole answer (up to 64 MiB) raw
/// to the terminal, escape sequences included; it prints a 200-character escaped excerpt, as
/// `revoke` does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_revocations_prints_a_refused_listing_as_a_short_escaped_excerpt() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut head = [0u8; 4096];
            let _ = socket.read(&mut head).await;
            let body = b"\x1b]0;owned\x07\x1b[2J".repeat(100_000);
            let head = format!(
                "HTTP/1.1 500 Oops\r\ncontent-length: {}\r\n\r\n",
                body.len()
            );
            let _ = socket.write_all(head.as_bytes()).await;
            let _ = socket.write_all(&body).await;
        }
    });
    let admin = format!("http://127.0.0.1:{port}");
    let mut vars = std::collections::HashMap::new();
    vars.insert(
        "AUTHZ_ADMIN_TOKEN".to_string(),
        "an-admin-secret-of-enough-bytes-0123".to_string(),
    );
    let out = tokio::task::spawn_blocking(move || {
        run(
            &["copy-revocations", "--from", &admin, "--to", &admin],
            &vars,
            "",
        )
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        out.stderr.len() < 4096 && !out.stderr.contains(&0x1b),
        "{} bytes on stderr, escape sequences included",
        out.stderr.len()
    );
}

#[test]
fn revoke_in_redis_exits_2_naming_a_bad_setting_and_never_prints_the_password() {
    const PW: &str = "s3cret-redis-pw";
    let vars = |pairs: &[(&str, &str)]| -> std::collections::HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let good = "redis://127.0.0.1:1/".to_string();
    let cases: Vec<(Vec<String>, std::collections::HashMap<String, String>, &str)> = vec![
        (
            vec!["--redis".into(), "http://127.0.0.1:6379/".into()],
            vars(&[]),
            "--redis: must be a redis:// or rediss:// URL",
        ),
        (
            vec!["--redis".into(), format!("redis://:{PW}@127.0.0.1:1/")],
            vars(&[]),
            "--redis: a password on the command line shows in /proc",
        ),
        (
            vec!["--redis".into(), format!("rediss://revoker:{PW}@[bad/")],
            vars(&[]),
            "--redis: a password on the command line shows in /proc",
        ),
        (
            vec!["--redis".into()],
            vars(&[(
                "AUTHZ_REDIS_URL",
                &format!("http://revoker:{PW}@127.0.0.1:1/"),
            )]),
            "AUTHZ_REDIS_URL: must be a redis:// or rediss:// URL",
        ),
        (
            vec!["--redis".into()],
            vars(&[]),
            "AUTHZ_REDIS_URL: not set",
        ),
        (
            vec!["--redis".into(), good.clone()],
            vars(&[("AUTHZ_REDIS_SIGNING_KEY_FILE", "/nonexistent/keys")]),
            "AUTHZ_REDIS_SIGNING_KEY_FILE: cannot read",
        ),
        (
            vec!["--redis".into(), good.clone()],
            vars(&[("COGNITO_CLOCK_LEEWAY_SECONDS", "ten")]),
            "COGNITO_CLOCK_LEEWAY_SECONDS",
        ),
        (
            vec!["--redis".into(), good.clone()],
            vars(&[("COGNITO_AUTHZ_CONFIG", "/nonexistent/cognito-authz.toml")]),
            "/nonexistent/cognito-authz.toml: cannot read config file",
        ),
        (
            vec![
                "--redis".into(),
                good.clone(),
                "--admin".into(),
                "http://127.0.0.1:1".into(),
            ],
            vars(&[]),
            "cannot be used with",
        ),
    ];
    for (through, vars, named) in cases {
        let mut args = vec!["revoke".to_string()];
        args.extend(through);
        args.extend(["--jti".to_string(), "some-jti".to_string()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run(&args, &vars, "");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(named), "{args:?}: {stderr}");
        assert!(
            !stderr.contains(PW),
            "{args:?} printed the password: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn revoke_in_redis_exits_1_when_redis_is_down_saying_nothing_is_queued() {
    const PW: &str = "s3cret-redis-pw";
    // Nothing listens there: ports from this range are held for the test process alone.
    let port = cruddur_demo::stack::Ports::ephemeral().unwrap().app;
    let mut vars = std::collections::HashMap::new();
    vars.insert(
        "AUTHZ_REDIS_URL".to_string(),
        format!("redis://revoker:{PW}@127.0.0.1:{port}/"),
    );
    let out = run(
        &["revoke", "--redis", "--origin-jti", "a-session"],
        &vars,
        "",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("was not recorded"), "{stderr}");
    assert!(stderr.contains("nothing is queued"), "{stderr}");
    assert!(
        stderr.contains(&format!("redis://revoker:redacted@127.0.0.1:{port}/")),
        "{stderr}"
    );
    assert!(!stderr.contains(PW), "the password was printed: {stderr}");
    assert!(out.stdout.is_empty());
}
