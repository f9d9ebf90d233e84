//! What sharing through a Redis Cluster costs against one Redis, side by side in one run (issue
//! 30's bench): starts one Debian `redis-server` and a six-node cluster (three primaries, three
//! replicas, `redis-cli --cluster create`) on loopback, then, for each, interleaved and twice:
//!
//! - the Redis part of the first check of each of N tokens with revocation on, as a replica
//!   makes it: the verdict lookup (a miss), the lock, the verdict write (`GetUser` between the
//!   lock and the write is the same call in both modes, and left out);
//! - the time a revocation written by one link takes to reach three subscribed replicas' lists.
//!
//! Prints one JSON object per measurement. Usage: redis-share [--tokens N] [--revocations R]

use std::sync::Arc;
use std::time::{Duration, Instant};

use cognito_authz::clock::Clock;
use cognito_authz::revocation::{CognitoVerdict, Entry, Revocation, RevocationList};
use cognito_authz::shared::{RedisTarget, Shared, SharedObserver};
use hdrhistogram::Histogram;

use cognito_authz_bench::redis_nodes::{start, Processes};

struct Unobserved;

impl SharedObserver for Unobserved {
    fn redis_up(&self, _: bool) {}
    fn redis_error(&self, _: &'static str) {}
}

fn link(target: &RedisTarget) -> Shared {
    Shared::new(target.clone(), Arc::new(Unobserved), &[]).expect("a link")
}

/// A subscribed replica's list (its subscriber runs until `stop`).
async fn follower(
    target: &RedisTarget,
    stop: tokio::sync::watch::Receiver<bool>,
) -> (Shared, Arc<RevocationList>) {
    let shared = link(target);
    let list = Arc::new(RevocationList::new(1_000_000, None));
    shared.spawn_subscriber(list.clone(), stop);
    while !shared.is_up() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (shared, list)
}

fn report(label: &str, what: &str, histogram: &Histogram<u64>, total: Duration) {
    println!(
        "{}",
        serde_json::json!({
            "mode": label,
            "what": what,
            "count": histogram.len(),
            "total_ms": total.as_secs_f64() * 1000.0,
            "p50_us": histogram.value_at_quantile(0.5),
            "p99_us": histogram.value_at_quantile(0.99),
            "max_us": histogram.max(),
        })
    );
}

/// The Redis part of `tokens` first checks, one after another.
async fn first_checks(label: &str, target: &RedisTarget, tokens: usize, round: u64) {
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let (shared, _list) = follower(target, stop).await;
    let mut histogram = Histogram::<u64>::new(3).expect("histogram");
    let started = Instant::now();
    for i in 0..tokens as u64 {
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&round.to_be_bytes());
        key[8..].copy_from_slice(&i.to_be_bytes());
        let one = Instant::now();
        let verdict = shared.verdict(&key).await.expect("verdict lookup");
        assert!(verdict.is_none(), "a first check finds no verdict");
        assert!(shared
            .try_lock(&key, Duration::from_secs(2))
            .await
            .expect("lock"));
        shared
            .store_verdict(
                &key,
                CognitoVerdict::Valid,
                Clock::system().now(),
                Duration::from_secs(60),
            )
            .await
            .expect("verdict write");
        histogram
            .record(u64::try_from(one.elapsed().as_micros()).unwrap_or(u64::MAX))
            .expect("record");
    }
    report(label, "first_check_redis", &histogram, started.elapsed());
    let _ = stop_tx.send(true);
}

/// How long `revocations` revocations, one at a time, take to reach three replicas' lists.
async fn propagation(label: &str, target: &RedisTarget, revocations: usize, round: u64) {
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let mut lists = Vec::new();
    for _ in 0..3 {
        lists.push(follower(target, stop.clone()).await.1);
    }
    // A replica's own link writes (up once its subscriber is).
    let (writer, _) = follower(target, stop.clone()).await;
    let mut histogram = Histogram::<u64>::new(3).expect("histogram");
    let started = Instant::now();
    for i in 0..revocations {
        let before: Vec<usize> = lists.iter().map(|l| l.len()).collect();
        let entry = Entry::new(
            Revocation::Jti(format!("bench-{round}-{i}")),
            Clock::system().now(),
            3_600,
        );
        let one = Instant::now();
        writer.publish(&entry).await.expect("published");
        while lists.iter().zip(&before).any(|(l, b)| l.len() <= *b) {
            assert!(one.elapsed() < Duration::from_secs(5), "never reached");
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        histogram
            .record(u64::try_from(one.elapsed().as_micros()).unwrap_or(u64::MAX))
            .expect("record");
    }
    report(label, "revocation_reaches_3", &histogram, started.elapsed());
    let _ = stop_tx.send(true);
}

fn flag(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let tokens = flag(&args, "--tokens", 10_000);
    let revocations = flag(&args, "--revocations", 50);
    let dir = std::env::temp_dir().join(format!("redis-share-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut processes = Processes(Vec::new());
    let (single, cluster) = start(&dir, &mut processes);
    for round in 0..2u64 {
        for (label, target) in [("single", &single), ("cluster", &cluster)] {
            first_checks(label, target, tokens, round * 2 + u64::from(target.cluster)).await;
            propagation(
                label,
                target,
                revocations,
                round * 2 + u64::from(target.cluster),
            )
            .await;
        }
    }
    drop(processes);
    let _ = std::fs::remove_dir_all(&dir);
}
