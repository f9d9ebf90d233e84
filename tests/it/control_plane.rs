//! The control API (`/revocations`, `/config`) answers only to the operator: a bearer secret
//! from `AUTHZ_ADMIN_TOKEN_FILE`, compared in constant time, and off without one. Probes and
//! scrapers (`/metrics`, `/healthz`, `/readyz`) need nothing. What the API accepts is bounded:
//! the body, each id, `before`, and the number of revocations held.

use crate::common;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use cognito_authz::server::{self, Running};
use cognito_authz::testkit::{jwks, now, Behaviour, JwksServer, TestKey};
use common::serve_config;

const SECRET: &str = "an-operator-secret-of-32-bytes!!";

fn secret_file(name: &str, text: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("control-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("admin-token");
    std::fs::write(&path, text).unwrap();
    path
}

async fn start(idp: &JwksServer, extra: &[(&str, &str)]) -> Running {
    server::start(serve_config(&idp.url("/j"), extra, ""))
        .await
        .unwrap()
}

/// One request to the admin listener: (status, body).
async fn call(
    running: &Running,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: &str,
) -> (u16, String) {
    let mut request = reqwest::Client::new().request(
        method.parse().unwrap(),
        format!("http://{}{path}", running.admin_addr),
    );
    if let Some(bearer) = bearer {
        request = request.bearer_auth(bearer);
    }
    let response = request.body(body.to_string()).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

#[tokio::test]
async fn the_control_api_answers_only_to_the_secret_and_probes_need_none() {
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let file = secret_file("auth", &format!("{SECRET}\n"));
    let running = start(&idp, &[("AUTHZ_ADMIN_TOKEN_FILE", file.to_str().unwrap())]).await;
    let revoke = r#"{"sub": "8f1e2d3c-0000-4000-8000-00000000abcd"}"#;
    // Another process on the same network: no secret, a wrong one, another scheme.
    for bearer in [None, Some("wrong"), Some(&SECRET[..31]), Some("")] {
        let (status, _) = call(&running, "POST", "/revocations", bearer, revoke).await;
        assert_eq!(status, 401, "{bearer:?}");
        let (status, _) = call(&running, "GET", "/config", bearer, "").await;
        assert_eq!(status, 401, "{bearer:?}");
    }
    let basic = reqwest::Client::new()
        .get(format!("http://{}/config", running.admin_addr))
        .basic_auth("admin", Some(SECRET))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status().as_u16(), 401);
    assert_eq!(
        running.authorizer().revocations().len(),
        0,
        "nothing recorded"
    );
    // The same process with the secret.
    let (status, body) = call(&running, "POST", "/revocations", Some(SECRET), revoke).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(&running, "GET", "/config", Some(SECRET), "").await;
    assert_eq!(status, 200);
    assert!(!body.contains(SECRET), "the secret never shows: {body}");
    // Probes and scrapers need no secret.
    for path in ["/metrics", "/healthz"] {
        assert_eq!(call(&running, "GET", path, None, "").await.0, 200, "{path}");
    }
    running.stop().await.unwrap();
}

#[tokio::test]
async fn without_a_secret_the_control_api_is_off() {
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let running = start(&idp, &[]).await;
    let (status, body) = call(
        &running,
        "POST",
        "/revocations",
        None,
        r#"{"sub": "someone"}"#,
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("AUTHZ_ADMIN_TOKEN_FILE"), "{body}");
    assert_eq!(call(&running, "GET", "/config", None, "").await.0, 404);
    assert_eq!(running.authorizer().revocations().len(), 0);
    assert_eq!(call(&running, "GET", "/metrics", None, "").await.0, 200);
    running.stop().await.unwrap();
}

#[test]
fn a_secret_that_is_missing_or_short_is_a_configuration_error() {
    let short = secret_file("short", "tooshort\n");
    for (vars, named) in [
        (
            vec![("AUTHZ_ADMIN_TOKEN_FILE", "/nonexistent/admin-token")],
            "AUTHZ_ADMIN_TOKEN_FILE",
        ),
        (
            vec![("AUTHZ_ADMIN_TOKEN_FILE", short.to_str().unwrap())],
            "AUTHZ_ADMIN_TOKEN_FILE",
        ),
    ] {
        let mut env = common::env_for("http://127.0.0.1:9/j", &vars);
        env.insert("AUTHZ_GRPC_ADDR".into(), "127.0.0.1:0".into());
        let out = Command::new(env!("CARGO_BIN_EXE_cognito-authz"))
            .arg("check-config")
            .env_clear()
            .envs(&env)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{vars:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(named), "{stderr}");
        assert!(
            !stderr.contains("tooshort"),
            "the secret never shows: {stderr}"
        );
    }
}

#[tokio::test]
async fn the_revoke_command_takes_the_secret_from_a_file() {
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let file = secret_file("cli", SECRET);
    let running = start(&idp, &[("AUTHZ_ADMIN_TOKEN_FILE", file.to_str().unwrap())]).await;
    let admin = format!("http://{}", running.admin_addr);
    let run = |with_secret: bool| {
        let (admin, file) = (admin.clone(), file.clone());
        tokio::task::spawn_blocking(move || {
            let mut command = Command::new(env!("CARGO_BIN_EXE_cognito-authz"));
            command
                .args(["revoke", "--admin", &admin, "--sub", "someone"])
                .env_clear();
            if with_secret {
                command.arg("--admin-token-file").arg(&file);
            }
            command.output().unwrap()
        })
    };
    let refused = run(false).await.unwrap();
    assert_ne!(refused.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("401"));
    let accepted = run(true).await.unwrap();
    assert_eq!(
        accepted.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&accepted.stderr)
    );
    assert_eq!(running.authorizer().revocations().len(), 1);
    running.stop().await.unwrap();
}

/// `cognito-authz ARGS` with only `env` set and `stdin` written to it, off the test's runtime
/// (the server under test answers on it).
async fn cognito_authz(args: &[impl AsRef<str>], env: &[(&str, &str)], stdin: &[u8]) -> Output {
    let args: Vec<String> = args.iter().map(|a| a.as_ref().to_string()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let stdin = stdin.to_vec();
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cognito-authz"))
            .args(&args)
            .env_clear()
            .envs(env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run cognito-authz");
        // The command may refuse before it reads: a closed pipe is its answer, not ours.
        let _ = child.stdin.take().unwrap().write_all(&stdin);
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A stand-in on 127.0.0.1 for an HTTP proxy, or for any server that is not the control API:
/// it keeps every byte it receives and answers every request `200` with `body`.
struct Recorder {
    addr: std::net::SocketAddr,
    received: Arc<Mutex<Vec<u8>>>,
}

impl Recorder {
    async fn start(body: &'static str) -> Recorder {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::<Mutex<Vec<u8>>>::default();
        let log = received.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !whole_request(&request) {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                log.lock().unwrap().extend_from_slice(&buf[..n]);
                                request.extend_from_slice(&buf[..n]);
                            }
                        }
                    }
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(answer.as_bytes()).await;
                });
            }
        });
        Recorder { addr, received }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn received(&self) -> String {
        String::from_utf8_lossy(&self.received.lock().unwrap()).into_owned()
    }
}

/// Whether `request` holds a request's head and all the body its `content-length` announces.
fn whole_request(request: &[u8]) -> bool {
    let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&request[..end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    request.len() >= end + 4 + length
}

/// Every proxy variable an operator's shell may carry, all pointing at `proxy`.
fn proxy_variables(proxy: &str) -> Vec<(&'static str, &str)> {
    [
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ]
    .into_iter()
    .map(|name| (name, proxy))
    .collect()
}

/// The operator's secret goes to the admin listener and nowhere else, whatever proxy the
/// shell has configured (no `NO_PROXY`).
#[tokio::test]
async fn the_revoke_command_ignores_every_proxy_variable() {
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let file = secret_file("no-proxy", SECRET);
    let running = start(&idp, &[("AUTHZ_ADMIN_TOKEN_FILE", file.to_str().unwrap())]).await;
    let proxy = Recorder::start("{}").await;
    let admin = format!("http://{}", running.admin_addr);
    let out = cognito_authz(
        &[
            "revoke",
            "--admin",
            &admin,
            "--sub",
            "someone",
            "--admin-token-file",
            file.to_str().unwrap(),
        ],
        &proxy_variables(&proxy.url()),
        b"",
    )
    .await;
    let received = proxy.received();
    assert!(
        received.is_empty(),
        "the proxy received {} bytes: {received}",
        received.len()
    );
    assert!(!received.contains(SECRET));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(running.authorizer().revocations().len(), 1, "recorded");
    running.stop().await.unwrap();
}

/// Only the control API's own answer is a success: a proxy's or another server's `{}`, HTML,
/// another shape, `recorded: false`, or any status but 2xx exits 1 and says nothing was
/// recorded.
#[tokio::test]
async fn the_revoke_command_succeeds_only_on_the_control_apis_answer() {
    let recorded = serde_json::json!({"recorded": true, "expires": now() + 90_000, "shared": true});
    let impostor = JwksServer::start(Behaviour::Json(serde_json::json!({}))).await;
    for answer in [
        Behaviour::Json(serde_json::json!({})),
        Behaviour::Json(serde_json::json!({"recorded": false})),
        Behaviour::Json(serde_json::json!({"recorded": false, "expires": now(), "shared": null})),
        Behaviour::Json(serde_json::json!({"recorded": true})),
        Behaviour::Json(serde_json::json!({"recorded": "true", "expires": now(), "shared": true})),
        Behaviour::Json(serde_json::json!({"ok": true})),
        Behaviour::Json(serde_json::json!([recorded.clone()])),
        Behaviour::Raw("<html><body>Welcome</body></html>".into()),
        Behaviour::Raw(String::new()),
        Behaviour::Status(404),
        Behaviour::Answer(500, recorded.clone()),
        Behaviour::Answer(307, recorded.clone()),
    ] {
        let shown = format!("{answer:?}");
        impostor.set(answer);
        let out = cognito_authz(
            &["revoke", "--admin", &impostor.url(""), "--sub", "someone"],
            &[],
            b"",
        )
        .await;
        assert_eq!(out.status.code(), Some(1), "{shown}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("not recorded"),
            "{shown}: {}",
            stderr(&out)
        );
    }
    // The control API's own answer, with a 200: a success.
    impostor.set(Behaviour::Json(recorded));
    let out = cognito_authz(
        &["revoke", "--admin", &impostor.url(""), "--sub", "someone"],
        &[],
        b"",
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// `--proxy URL` is the one way through a proxy, and the proxy's `{}` is still no success.
#[tokio::test]
async fn an_explicit_proxy_carries_the_revocation_and_its_answer_is_judged() {
    let proxy = Recorder::start("{}").await;
    let unused = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let admin = format!("http://{unused}");
    let out = cognito_authz(
        &[
            "revoke",
            "--admin",
            &admin,
            "--proxy",
            &proxy.url(),
            "--sub",
            "someone",
        ],
        &[],
        b"",
    )
    .await;
    let received = proxy.received();
    assert!(
        received.starts_with(&format!("POST {admin}/revocations HTTP/1.1")),
        "{received}"
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("not recorded"), "{}", stderr(&out));
}

/// A token never goes on the command line, where `/proc/*/cmdline` and shell history show it:
/// `--token -` reads it from stdin (pasted as `bearer ...` in any letter case),
/// `--token-file FILE` from a file, and a literal `--token` is refused without echoing it.
#[tokio::test]
async fn the_revoke_command_reads_the_token_from_stdin_or_a_file_never_the_command_line() {
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let file = secret_file("token-input", SECRET);
    let running = start(&idp, &[("AUTHZ_ADMIN_TOKEN_FILE", file.to_str().unwrap())]).await;
    let admin = format!("http://{}", running.admin_addr);
    let revoke = |token: &[&str]| {
        let mut args = vec!["revoke", "--admin", &admin];
        args.extend(token);
        args.extend(["--admin-token-file", file.to_str().unwrap()]);
        args.into_iter().map(str::to_string).collect::<Vec<_>>()
    };
    let token_with = |session: &str| {
        let mut claims = cognito_authz::testkit::access_claims(common::ISS, common::CLIENT, now());
        claims["origin_jti"] = serde_json::json!(session);
        TestKey::shared(0).token(&claims)
    };

    let pasted = format!("bearer {}\n", token_with("session-from-stdin"));
    let on_stdin = revoke(&["--token", "-"]);
    let out = cognito_authz(&on_stdin, &[], pasted.as_bytes()).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(running.authorizer().revocations().len(), 1, "the session");

    let token_file = secret_file("token-file", &token_with("session-from-a-file"));
    let from_file = revoke(&["--token-file", token_file.to_str().unwrap()]);
    let out = cognito_authz(&from_file, &[], b"").await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(running.authorizer().revocations().len(), 2, "the second");

    let token = token_with("session-on-the-command-line");
    for literal in [token.clone(), format!("Bearer {token}")] {
        let on_command_line = revoke(&["--token", &literal]);
        let out = cognito_authz(&on_command_line, &[], b"").await;
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        let said = stderr(&out);
        assert!(
            said.contains("--token -") && said.contains("--token-file"),
            "{said}"
        );
        for part in token.split('.') {
            assert!(!said.contains(part), "the token is echoed: {said}");
        }
    }
    // Bounded: a token is a few KiB, and 64 KiB is no token.
    let absurd = format!("bearer {}", "a".repeat(64 * 1024));
    let out = cognito_authz(&on_stdin, &[], absurd.as_bytes()).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let big_file = secret_file("token-big", &absurd);
    let big = revoke(&["--token-file", big_file.to_str().unwrap()]);
    let out = cognito_authz(&big, &[], b"").await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(running.authorizer().revocations().len(), 2, "nothing more");
    running.stop().await.unwrap();
}

#[tokio::test]
async fn what_the_control_api_accepts_is_bounded() {
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let file = secret_file("bounds", SECRET);
    let running = start(
        &idp,
        &[
            ("AUTHZ_ADMIN_TOKEN_FILE", file.to_str().unwrap()),
            ("AUTHZ_MAX_REVOCATIONS", "3"),
        ],
    )
    .await;
    let post = |body: String| {
        let running = &running;
        async move { call(running, "POST", "/revocations", Some(SECRET), &body).await }
    };
    // A body over 16 KiB, an id over 256 bytes, `before` in the future.
    let (status, _) = post(format!(r#"{{"sub": "{}"}}"#, "a".repeat(17 * 1024))).await;
    assert_eq!(status, 413);
    let (status, body) = post(format!(r#"{{"sub": "{}"}}"#, "a".repeat(257))).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = post(format!(r#"{{"jti": "{}"}}"#, "a".repeat(300))).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = post(format!(r#"{{"sub": "u", "before": {}}}"#, now() + 3600)).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(running.authorizer().revocations().len(), 0);
    // The list is capped: the fourth is refused with 503, and the metric says how full it is.
    for i in 0..3 {
        let (status, body) = post(format!(r#"{{"jti": "j{i}"}}"#)).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = post(r#"{"jti": "one-too-many"}"#.to_string()).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(running.authorizer().revocations().len(), 3);
    let (_, metrics) = call(&running, "GET", "/metrics", None, "").await;
    assert!(metrics.contains("cognito_authz_revocations 3"), "{metrics}");
    assert!(
        metrics.contains("cognito_authz_revocations_refused_total{reason=\"full\"} 1"),
        "{metrics}"
    );
    running.stop().await.unwrap();
}

#[test]
fn diagnostics_are_off_by_default_wherever_the_grpc_listener_is_not_local() {
    let config = |addr: &str, diagnostics: Option<&str>| {
        let mut vars = vec![("AUTHZ_GRPC_ADDR", addr)];
        vars.extend(diagnostics.map(|d| ("AUTHZ_DIAGNOSTICS", d)));
        common::config_for("http://127.0.0.1:9/j", &vars)
            .server
            .diagnostics
    };
    assert!(config("127.0.0.1:9001", None));
    assert!(config("[::1]:9001", None));
    assert!(config("unix:/run/cognito-authz/authz.sock", None));
    assert!(!config("0.0.0.0:9001", None), "a shared service's listener");
    assert!(!config("10.0.0.5:9001", None));
    assert!(config("0.0.0.0:9001", Some("on")), "unless configured");
    assert!(!config("127.0.0.1:9001", Some("off")));
}

#[tokio::test]
async fn with_diagnostics_off_verify_token_and_reflection_are_not_served() {
    use cognito_authz::generated::diagnostics::diagnostics_client::DiagnosticsClient;
    use cognito_authz::generated::diagnostics::VerifyTokenRequest;
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let running = start(&idp, &[("AUTHZ_DIAGNOSTICS", "off")]).await;
    let cognito_authz::server::GrpcAddr::Tcp(addr) = running.grpc_addr.clone() else {
        unreachable!()
    };
    let status = DiagnosticsClient::new(common::channel(addr).await)
        .verify_token(VerifyTokenRequest { token: "x".into() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented);
    // Envoy's Check is still served.
    let check =
        envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient::new(
            common::channel(addr).await,
        )
        .check(common::check_request("GET", "/x", &[], &[]))
        .await;
    assert!(check.is_ok());
    running.stop().await.unwrap();
}
