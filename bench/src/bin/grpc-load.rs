//! Direct gRPC load on `Check`, without Envoy: several HTTP/2 connections, several requests in
//! flight on each, tokens cycled from a file. Prints one JSON object: requests, checks per
//! second, p50/p99 latency in microseconds, allowed and denied counts, errors.
//!
//! Usage: grpc-load ADDR TOKENS_FILE [--connections N] [--concurrency C] [--seconds S]
//!        [--rate R] [--warmup]
//! ADDR is host:port or unix:/path. --rate R spreads R checks a second over the workers
//! (0: as fast as possible). --warmup first sends every token once, unmeasured.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use envoy_types::ext_authz::v3::pb::{CheckRequest, HttpResponse};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use hdrhistogram::Histogram;
use tonic::transport::{Channel, Endpoint};

fn request(token: &str) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: "GET".into(),
                    path: "/api/bench".into(),
                    host: "bench.local".into(),
                    headers: [
                        ("authorization".to_string(), format!("Bearer {token}")),
                        ("x-request-id".to_string(), "bench".to_string()),
                    ]
                    .into_iter()
                    .collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

async fn connect(addr: &str) -> Result<Channel, Box<dyn std::error::Error>> {
    if let Some(path) = addr.strip_prefix("unix:") {
        let path = path.to_string();
        Ok(Endpoint::from_static("http://uds.invalid")
            .connect_with_connector(tower_service(path))
            .await?)
    } else {
        Ok(Endpoint::from_shared(format!("http://{addr}"))?
            .tcp_nodelay(true)
            .connect()
            .await?)
    }
}

fn tower_service(
    path: String,
) -> impl tower::Service<
    tonic::transport::Uri,
    Response = hyper_util::rt::TokioIo<tokio::net::UnixStream>,
    Error = std::io::Error,
    Future = impl Send,
> + Clone {
    tower::service_fn(move |_| {
        let path = path.clone();
        async move {
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                tokio::net::UnixStream::connect(path).await?,
            ))
        }
    })
}

#[derive(Default)]
struct Tally {
    allowed: u64,
    denied: u64,
    errors: u64,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str, default: f64| -> f64 {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let addr = args
        .first()
        .ok_or("usage: grpc-load ADDR TOKENS_FILE ...")?
        .clone();
    let tokens_file = args.get(1).ok_or("usage: grpc-load ADDR TOKENS_FILE ...")?;
    let connections = flag("--connections", 4.0) as usize;
    let concurrency = flag("--concurrency", 8.0) as usize;
    let seconds = flag("--seconds", 5.0);
    let rate = flag("--rate", 0.0);
    let warmup = args.iter().any(|a| a == "--warmup");

    let requests: Arc<Vec<CheckRequest>> = Arc::new(
        std::fs::read_to_string(tokens_file)?
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|t| request(t.trim()))
            .collect(),
    );
    if requests.is_empty() {
        return Err("no tokens".into());
    }
    let mut channels = Vec::new();
    for _ in 0..connections {
        channels.push(connect(&addr).await?);
    }

    if warmup {
        let next = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for w in 0..connections * concurrency {
            let mut client = AuthorizationClient::new(channels[w % connections].clone());
            let (requests, next) = (Arc::clone(&requests), Arc::clone(&next));
            tasks.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= requests.len() {
                        break;
                    }
                    let _ = client.check(requests[i].clone()).await;
                }
            }));
        }
        for t in tasks {
            t.await?;
        }
    }

    let workers = connections * concurrency;
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for w in 0..workers {
        let mut client = AuthorizationClient::new(channels[w % connections].clone());
        let (requests, next) = (Arc::clone(&requests), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            let mut histogram = Histogram::<u64>::new(3).expect("histogram");
            let mut tally = Tally::default();
            let mut ticker = (rate > 0.0).then(|| {
                let period = Duration::from_secs_f64(workers as f64 / rate);
                let mut t = tokio::time::interval_at(
                    tokio::time::Instant::now() + period.mul_f64(w as f64 / workers as f64),
                    period,
                );
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                t
            });
            while Instant::now() < deadline {
                if let Some(t) = ticker.as_mut() {
                    t.tick().await;
                }
                let i = next.fetch_add(1, Ordering::Relaxed) % requests.len();
                let sent = Instant::now();
                match client.check(requests[i].clone()).await {
                    Ok(response) => {
                        let _ = histogram.record(sent.elapsed().as_micros() as u64);
                        match response.into_inner().http_response {
                            Some(HttpResponse::OkResponse(_)) => tally.allowed += 1,
                            _ => tally.denied += 1,
                        }
                    }
                    Err(_) => tally.errors += 1,
                }
            }
            (histogram, tally)
        }));
    }
    let mut histogram = Histogram::<u64>::new(3)?;
    let mut total = Tally::default();
    for t in tasks {
        let (h, tally) = t.await?;
        histogram.add(h)?;
        total.allowed += tally.allowed;
        total.denied += tally.denied;
        total.errors += tally.errors;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let requests_done = total.allowed + total.denied;
    println!(
        "{}",
        serde_json::json!({
            "requests": requests_done,
            "rps": requests_done as f64 / elapsed,
            "p50_us": histogram.value_at_quantile(0.5),
            "p99_us": histogram.value_at_quantile(0.99),
            "allowed": total.allowed,
            "denied": total.denied,
            "errors": total.errors,
            "connections": connections,
            "concurrency": concurrency,
            "rate": rate,
        })
    );
    Ok(())
}
