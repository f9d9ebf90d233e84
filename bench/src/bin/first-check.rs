//! The first check of each of N tokens with revocation on, one Redis against a Redis Cluster,
//! side by side in one run (issue 30's bench): starts the Cognito emulator (moto, from `.venv`)
//! with the bootcamp pool, signs one user in N times (N distinct access tokens), starts one Redis
//! and a six-node cluster, then, interleaved and twice each, the release `cognito-authz serve`
//! with `COGNITO_REVOCATION=cognito` against one of them, and sends it every token once over
//! gRPC, one after another. Each check is a verdict lookup (a miss), the lock, `GetUser` at the
//! emulator and the verdict write. Redis is emptied and the sidecar restarted before each round.
//!
//! Prints one JSON object per round. Run from the repository root after
//! `cargo build --release --bin cognito-authz`.
//! Usage: first-check [--tokens N]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cognito_authz::shared::RedisTarget;
use cognito_authz_bench::redis_nodes::{flush_all, free_port, start, Processes};
use cruddur_demo::cognito::Cognito;
use envoy_types::ext_authz::v3::pb::{CheckRequest, HttpResponse};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use hdrhistogram::Histogram;
use tonic::transport::Endpoint;

const PASSWORD: &str = "Bench-Passw0rd!";

fn request(token: &str) -> CheckRequest {
    let headers = [("authorization".to_string(), format!("Bearer {token}"))];
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: "GET".into(),
                    path: "/api/bench".into(),
                    host: "bench.local".into(),
                    headers: headers.into_iter().collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// The pool's ids from `scripts/cognito_setup.py`: pool id, client id, JWKS URI.
fn create_pool(endpoint: &str) -> (String, String, String) {
    let out = Command::new(".venv/bin/python")
        .args([
            "scripts/cognito_setup.py",
            "--wait",
            "30",
            "--endpoint",
            endpoint,
        ])
        .output()
        .expect(".venv/bin/python (scripts/setup-venv)");
    assert!(out.status.success(), "cognito_setup.py failed");
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).expect("its JSON");
    let field = |name: &str| value[name].as_str().expect(name).to_string();
    (field("pool_id"), field("client_id"), field("jwks_uri"))
}

/// `count` access tokens, from signing one user in `count` times, four sign-ins in flight.
async fn tokens(cognito: &Cognito, count: usize) -> Vec<String> {
    let email = "bench@example.com";
    cognito
        .sign_up(email, PASSWORD, "Bench", "bench")
        .await
        .expect("sign-up");
    cognito
        .confirm_sign_up(email, "000000")
        .await
        .expect("confirmation");
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..4 {
        let cognito = cognito.clone();
        let share = count / 4 + usize::from(worker < count % 4);
        tasks.spawn(async move {
            let mut mine = Vec::with_capacity(share);
            for _ in 0..share {
                mine.push(
                    cognito
                        .sign_in(email, PASSWORD)
                        .await
                        .expect("sign-in")
                        .access,
                );
            }
            mine
        });
    }
    let mut all = Vec::with_capacity(count);
    while let Some(mine) = tasks.join_next().await {
        all.extend(mine.expect("a sign-in task"));
    }
    let distinct: std::collections::HashSet<&String> = all.iter().collect();
    assert_eq!(distinct.len(), count, "the emulator issued a token twice");
    all
}

/// The answer to `GET path` on the admin port (empty if it cannot be had).
async fn get(admin: u16, path: &str) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut answer = Vec::new();
    if let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", admin)).await {
        let request = format!("GET {path} HTTP/1.0\r\n\r\n");
        if stream.write_all(request.as_bytes()).await.is_ok() {
            let _ = stream.read_to_end(&mut answer).await;
        }
    }
    answer
}

/// How many checks asked Cognito (`GetUser`) and heard the token is valid.
async fn asked_cognito(admin: u16) -> u64 {
    let metrics = String::from_utf8_lossy(&get(admin, "/metrics").await).into_owned();
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("cognito_authz_revocation_checks_total{") && l.contains("\"valid\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// The sidecar against `target`, ready; its gRPC and admin ports.
async fn sidecar(
    env: &[(&str, String)],
    target: &RedisTarget,
    log: &std::path::Path,
) -> (Child, u16, u16) {
    let (grpc, admin) = (free_port(), free_port());
    let child = Command::new("target/release/cognito-authz")
        .arg("serve")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("AUTHZ_REDIS_URL", target.urls.join(","))
        .env("AUTHZ_REDIS_CLUSTER", target.cluster.to_string())
        .env("AUTHZ_GRPC_ADDR", format!("127.0.0.1:{grpc}"))
        .env("AUTHZ_ADMIN_ADDR", format!("127.0.0.1:{admin}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("a log file"))
        .spawn()
        .expect("target/release/cognito-authz (cargo build --release)");
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(admin, "/readyz").await.get(9..12) != Some(b"200".as_slice()) {
        assert!(Instant::now() < deadline, "the sidecar never got ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (child, grpc, admin)
}

async fn first_checks(label: &str, (grpc, admin): (u16, u16), tokens: &[String]) {
    let channel = Endpoint::from_shared(format!("http://127.0.0.1:{grpc}"))
        .expect("an endpoint")
        .tcp_nodelay(true)
        .connect()
        .await
        .expect("a gRPC connection");
    let mut client = AuthorizationClient::new(channel);
    let mut histogram = Histogram::<u64>::new(3).expect("histogram");
    let mut denied = 0u64;
    let started = Instant::now();
    for token in tokens {
        let one = Instant::now();
        let answer = client.check(request(token)).await.expect("a check");
        histogram
            .record(u64::try_from(one.elapsed().as_micros()).unwrap_or(u64::MAX))
            .expect("record");
        if !matches!(
            answer.into_inner().http_response,
            Some(HttpResponse::OkResponse(_))
        ) {
            denied += 1;
        }
    }
    println!(
        "{}",
        serde_json::json!({
            "mode": label,
            "count": histogram.len(),
            "denied": denied,
            "asked_cognito": asked_cognito(admin).await,
            "total_ms": started.elapsed().as_secs_f64() * 1000.0,
            "p50_us": histogram.value_at_quantile(0.5),
            "p99_us": histogram.value_at_quantile(0.99),
            "max_us": histogram.max(),
        })
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let count = args
        .iter()
        .position(|a| a == "--tokens")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(10_000);
    let dir = std::env::temp_dir().join(format!("first-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut processes = Processes(Vec::new());
    let moto = free_port();
    processes.0.push(
        Command::new(".venv/bin/moto_server")
            .args(["-H", "127.0.0.1", "-p", &moto.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(".venv/bin/moto_server (scripts/setup-venv)"),
    );
    let endpoint = format!("http://127.0.0.1:{moto}");
    let (pool_id, client_id, jwks_uri) = create_pool(&endpoint);
    let signing_in = Instant::now();
    let tokens = tokens(&Cognito::new(&endpoint, &pool_id, &client_id), count).await;
    eprintln!("{count} tokens in {:?}", signing_in.elapsed());
    let env = [
        ("AWS_COGNITO_USER_POOL_ID", pool_id),
        ("AWS_COGNITO_USER_POOL_CLIENT_ID", client_id),
        ("AWS_DEFAULT_REGION", "us-east-1".to_string()),
        ("COGNITO_JWKS_URI", jwks_uri),
        ("COGNITO_IDP_ENDPOINT", format!("{endpoint}/")),
        ("COGNITO_REVOCATION", "cognito".to_string()),
    ];
    let (single, cluster) = start(&dir, &mut processes);
    for _round in 0..2 {
        for (label, target) in [("single", &single), ("cluster", &cluster)] {
            flush_all(target);
            let (child, grpc, admin) =
                sidecar(&env, target, &dir.join(format!("{label}.log"))).await;
            let running = Processes(vec![child]);
            first_checks(label, (grpc, admin), &tokens).await;
            drop(running);
        }
    }
    drop(processes);
    let _ = std::fs::remove_dir_all(&dir);
}
