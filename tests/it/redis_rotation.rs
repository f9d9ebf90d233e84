//! Changing what guards the revocations replicas share, with live revocations throughout: the
//! signing key rotated in its documented steps, signing turned on as documented, and a writer
//! to an unsigned Redis trying to crowd out the operator's revocations. Real `cognito-authz
//! serve` replicas restarted as a rolling deploy would, the Cognito emulator's tokens, and
//! Debian's `redis-server`.
//!
//! Needs `scripts/setup-venv`, `cargo build --workspace` and `redis-server` (the README's test
//! command installs all three); without them it fails, naming what is missing.

use crate::common;
use crate::revocation::{layout, sign_in, user, wait_redis};

use std::time::{Duration, Instant};

use cruddur_demo::stack::{Options, Ports, Stack};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;

const OLD_KEY: &str = "0ld0ld0ld0ld0ld0ld0ld0ld0ld0ld0ld0ld0ld0ld0ld0ld0ld0ld0ld0ld0ld0";
const NEW_KEY: &str = "2e5e2e5e2e5e2e5e2e5e2e5e2e5e2e5e2e5e2e5e2e5e2e5e2e5e2e5e2e5e2e5e";

/// Whether replica `port` allows `token` on a required route (explicit revocations apply on
/// every route), and the reason when it does not.
async fn decision(port: u16, token: &str) -> Result<(), String> {
    let auth = format!("Bearer {token}");
    let channel = common::channel(std::net::SocketAddr::from(([127, 0, 0, 1], port))).await;
    let response = AuthorizationClient::new(channel)
        .check(common::check_request(
            "GET",
            "/api/echo",
            &[("authorization", &auth)],
            &[("cognito_authz.mode", "required")],
        ))
        .await
        .expect("Check answers")
        .into_inner();
    match common::answer(&response) {
        common::Answer::Allowed { .. } => Ok(()),
        common::Answer::Denied { body, .. } => {
            Err(body["reason"].as_str().unwrap_or_default().to_string())
        }
    }
}

/// Every replica in `replicas` refuses every token in `revoked` as revoked (each within a
/// second of asking: a revocation made a moment ago is still on its way), and allows `live`.
async fn all_refuse(stack: &Stack, replicas: &[usize], revoked: &[String], live: &str, when: &str) {
    for &replica in replicas {
        let port = stack.replicas[replica].grpc;
        for (index, token) in revoked.iter().enumerate() {
            let deadline = Instant::now() + Duration::from_secs(1);
            loop {
                match decision(port, token).await {
                    Err(reason) if reason == "revoked" => break,
                    seen => assert!(
                        Instant::now() < deadline,
                        "{when}: replica {replica} answers {seen:?} for revoked token {index}"
                    ),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        assert_eq!(
            decision(port, live).await,
            Ok(()),
            "{when}: replica {replica} refuses a live token"
        );
    }
}

/// Revokes `token`'s session through replica `replica`'s control API: recorded and shared.
async fn revoke(stack: &Stack, replica: usize, token: &str) {
    let payload = cruddur_demo::walkthrough::payload(token);
    let body = match (payload["origin_jti"].as_str(), payload["jti"].as_str()) {
        (Some(session), _) => serde_json::json!({ "origin_jti": session }),
        (None, Some(jti)) => serde_json::json!({ "jti": jti }),
        (None, None) => panic!("the emulator's token has neither origin_jti nor jti"),
    };
    let secret = std::fs::read_to_string(stack.admin_token_file().unwrap()).unwrap();
    let answer = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(format!(
            "http://127.0.0.1:{}/revocations",
            stack.replicas[replica].admin
        ))
        .bearer_auth(secret.trim())
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 200, "revoking through {replica}");
    let answer: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(
        (&answer["recorded"], &answer["shared"]),
        (&serde_json::json!(true), &serde_json::json!(true))
    );
}

/// Restarts replica `replica` with `env` (a rolling deploy's new settings) and waits until it
/// is ready and subscribed.
async fn roll(stack: &mut Stack, replica: usize, env: &[(&str, &str)]) {
    stack.kill_replica(replica).unwrap();
    stack.set_replica_env(replica, env);
    stack
        .start_replica(replica)
        .await
        .unwrap_or_else(|e| panic!("replica {replica} did not start: {e}"));
    wait_redis(stack.replicas[replica].admin, true).await;
}

/// A file in the stack's work folder holding `keys`, one a line.
fn key_file(stack_dir: &std::path::Path, name: &str, keys: &[&str]) -> String {
    std::fs::create_dir_all(stack_dir).unwrap();
    let path = stack_dir.join(name);
    std::fs::write(&path, format!("{}\n", keys.join("\n\n"))).unwrap();
    path.display().to_string()
}

async fn stack(name: &str, replicas: usize, env: Vec<(String, String)>) -> Stack {
    let options = Options {
        replicas,
        redis: true,
        authz_env: env,
        ..Options::default()
    };
    let stack = Stack::start_options(layout(name), Ports::ephemeral().unwrap(), options)
        .await
        .unwrap_or_else(|e| panic!("the stack did not start: {e}"));
    for replica in &stack.replicas {
        wait_redis(replica.admin, true).await;
    }
    stack
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_signing_key_in_the_documented_steps_unrevokes_nothing() {
    const KEY: &str = "AUTHZ_REDIS_SIGNING_KEY_FILE";
    let dir = layout("rotation").work_dir;
    let only_old = key_file(&dir, "key-0", &[OLD_KEY]);
    let steps = [
        (
            "the new key added",
            key_file(&dir, "key-1", &[OLD_KEY, NEW_KEY]),
        ),
        ("the old key dropped", key_file(&dir, "key-2", &[NEW_KEY])),
    ];
    let mut stack = stack("rotation", 3, vec![(KEY.into(), only_old)]).await;
    user(&stack, "rotate@example.com").await;
    let live = sign_in(&stack, "rotate@example.com").await;
    let mut revoked = Vec::new();
    let token = sign_in(&stack, "rotate@example.com").await;
    revoke(&stack, 0, &token).await;
    revoked.push(token);
    all_refuse(&stack, &[0, 1, 2], &revoked, &live, "before the rotation").await;

    for (number, (step, file)) in steps.iter().enumerate() {
        // A rolling deploy: one replica at a time; a revocation through one not yet rolled
        // after the first restart, and through another once all are.
        for replica in 0..3 {
            roll(&mut stack, replica, &[(KEY, file)]).await;
            let when = format!("step {} ({step}), replica {replica} rolled", number + 1);
            all_refuse(&stack, &[0, 1, 2], &revoked, &live, &when).await;
            if replica == 0 {
                let token = sign_in(&stack, "rotate@example.com").await;
                revoke(&stack, 2, &token).await;
                revoked.push(token);
                all_refuse(&stack, &[0, 1, 2], &revoked, &live, &when).await;
            }
        }
        let token = sign_in(&stack, "rotate@example.com").await;
        revoke(&stack, number % 3, &token).await;
        revoked.push(token);
        let when = format!("step {} ({step}) done", number + 1);
        all_refuse(&stack, &[0, 1, 2], &revoked, &live, &when).await;
    }

    // A replica that joins now holds the new key alone: it replays everything from Redis,
    // including what the old key signed before and during the rotation.
    let later = stack.add_replica().unwrap();
    stack.set_replica_env(later, &[(KEY, &steps[1].1)]);
    stack.start_replica(later).await.unwrap();
    wait_redis(stack.replicas[later].admin, true).await;
    all_refuse(&stack, &[later], &revoked, &live, "a replica started later").await;
    let log = std::fs::read_to_string(stack.log_path("cognito-authz")).unwrap();
    assert!(
        !log.contains(OLD_KEY) && !log.contains(NEW_KEY),
        "a key reached the log"
    );
}

/// The sh block of docs/revocation.md that carries revocations over, run as written (its
/// `export` lines replaced by the test's own values).
fn run_documented_carry_over(stack: &Stack, unsigned: usize, signed: usize) {
    let page = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/revocation.md"),
    )
    .unwrap();
    let block = page
        .split("```sh\n")
        .skip(1)
        .filter_map(|rest| rest.split_once("```").map(|(block, _)| block))
        .find(|block| block.contains("copy-revocations"))
        .expect("docs/revocation.md shows the carry-over in an sh block");
    let script: String = block
        .lines()
        .filter(|line| !line.starts_with("export "))
        .map(|line| format!("{line}\n"))
        .collect();
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_cognito-authz"))
        .parent()
        .unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let admin = |replica: usize| format!("http://127.0.0.1:{}", stack.replicas[replica].admin);
    let out = std::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .env("PATH", path)
        .env("AUTHZ_ADMIN_TOKEN_FILE", stack.admin_token_file().unwrap())
        .env("UNSIGNED", admin(unsigned))
        .env("SIGNED", admin(signed))
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("all_proxy")
        .env_remove("ALL_PROXY")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the documented carry-over failed:\n{script}\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turning_signing_on_as_documented_keeps_every_revocation() {
    const KEY: &str = "AUTHZ_REDIS_SIGNING_KEY_FILE";
    let mut stack = stack("signing-on", 2, Vec::new()).await;
    let key = key_file(&stack.layout.work_dir, "signing-key", &[NEW_KEY]);
    user(&stack, "sign-on@example.com").await;
    let live = sign_in(&stack, "sign-on@example.com").await;
    let mut revoked = Vec::new();
    for replica in [0, 1] {
        let token = sign_in(&stack, "sign-on@example.com").await;
        revoke(&stack, replica, &token).await;
        revoked.push(token);
    }
    all_refuse(&stack, &[0, 1], &revoked, &live, "unsigned").await;

    // 1. One replica with the key beside the fleet, taking no traffic.
    let one_off = stack.add_replica().unwrap();
    stack.set_replica_env(one_off, &[(KEY, &key)]);
    stack.start_replica(one_off).await.unwrap();
    wait_redis(stack.replicas[one_off].admin, true).await;
    // 2. The live revocations listed from a replica without the key, re-issued through it.
    run_documented_carry_over(&stack, 1, one_off);
    all_refuse(&stack, &[0, 1, one_off], &revoked, &live, "carried over").await;
    // A replica without the key that restarts now still reads what Redis holds, signed.
    roll(&mut stack, 1, &[]).await;
    all_refuse(
        &stack,
        &[0, 1],
        &revoked,
        &live,
        "an unsigned replica restarted",
    )
    .await;

    // 3. The key rolled out; meanwhile revocations go through a replica with the key, and
    // reach the replicas still without it.
    roll(&mut stack, 0, &[(KEY, &key)]).await;
    let token = sign_in(&stack, "sign-on@example.com").await;
    revoke(&stack, one_off, &token).await;
    revoked.push(token);
    all_refuse(&stack, &[0, 1, one_off], &revoked, &live, "half rolled").await;
    roll(&mut stack, 1, &[(KEY, &key)]).await;
    all_refuse(&stack, &[0, 1, one_off], &revoked, &live, "rolled").await;

    // 4. The one-off stopped; a replica that joins later replays everything.
    stack.kill_replica(one_off).unwrap();
    let later = stack.add_replica().unwrap();
    stack.set_replica_env(later, &[(KEY, &key)]);
    stack.start_replica(later).await.unwrap();
    wait_redis(stack.replicas[later].admin, true).await;
    all_refuse(&stack, &[0, 1, later], &revoked, &live, "signing on").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_to_an_unsigned_redis_cannot_crowd_out_the_operators_revocations() {
    const CAP: usize = 100;
    const BOGUS: usize = 4 * CAP;
    let stack = stack(
        "crowding",
        1,
        vec![("AUTHZ_MAX_REVOCATIONS".into(), CAP.to_string())],
    )
    .await;
    user(&stack, "crowd@example.com").await;
    let token = sign_in(&stack, "crowd@example.com").await;
    assert_eq!(decision(stack.replicas[0].grpc, &token).await, Ok(()));

    // Someone who can write to Redis stores and announces far more entries than the cap.
    let url = format!("redis://127.0.0.1:{}/", stack.redis_port.unwrap());
    let mut conn = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let expires = cognito_authz::unix_now() + 3_600;
    let mut pipe = redis::pipe();
    for i in 0..BOGUS {
        let entry = format!(r#"{{"revocation":{{"jti":"bogus-{i}"}},"expires":{expires}}}"#);
        pipe.cmd("SET")
            .arg(format!("cognito-authz:rev:jti:bogus-{i}"))
            .arg(&entry)
            .arg("EXAT")
            .arg(expires)
            .ignore();
        pipe.cmd("PUBLISH")
            .arg(cognito_authz::shared::CHANNEL)
            .arg(&entry)
            .ignore();
    }
    let () = pipe.query_async(&mut conn).await.unwrap();
    // Every announcement read: held plus refused as full reaches what was sent.
    let admin = std::net::SocketAddr::from(([127, 0, 0, 1], stack.replicas[0].admin));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, metrics) = common::http_get(admin, "/metrics").await;
        let value = |prefix: &str| {
            metrics
                .lines()
                .find_map(|l| l.strip_prefix(prefix)?.trim().parse::<f64>().ok())
                .unwrap_or(0.0) as usize
        };
        let held = value("cognito_authz_revocations ");
        let full = value("cognito_authz_revocations_refused_total{reason=\"full\"} ");
        if held + full >= BOGUS {
            assert!(held < CAP, "Redis filled the whole list: {held}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replica read {held} + {full} of {BOGUS}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The operator's revocation through this replica is still taken, and enforced.
    revoke(&stack, 0, &token).await;
    assert_eq!(
        decision(stack.replicas[0].grpc, &token).await,
        Err("revoked".to_string())
    );

    // Listing what Redis holds is the operator's alone, and bounded by the cap.
    let url = format!("http://{admin}/revocations");
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    assert_eq!(http.get(&url).send().await.unwrap().status().as_u16(), 401);
    let secret = std::fs::read_to_string(stack.admin_token_file().unwrap()).unwrap();
    let listing: serde_json::Value = http
        .get(&url)
        .bearer_auth(secret.trim())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listing["revocations"].as_array().unwrap().len(), CAP);
    assert_eq!(listing["truncated"], true);
}

/// A rolling deploy with a surge (the new pod is ready before the old one stops, Kubernetes'
/// default), replicas holding both keys in both orders side by side: none re-signs away a tag
/// another needs, so dropping the old key forgets nothing. (With the first key alone signing,
/// a replica on `[old, new]` re-signed with `old` what one on `[new, old]` had signed with
/// `new`, and the last step forgot it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_with_the_keys_in_either_order_side_by_side_forget_nothing() {
    const KEY: &str = "AUTHZ_REDIS_SIGNING_KEY_FILE";
    let dir = layout("rotation-surge").work_dir;
    std::fs::create_dir_all(&dir).unwrap();
    let step1 = key_file(&dir, "key-1", &[OLD_KEY, NEW_KEY]);
    let step2 = key_file(&dir, "key-2", &[NEW_KEY, OLD_KEY]);
    let step3 = key_file(&dir, "key-3", &[NEW_KEY]);
    let mut stack = stack("rotation-surge", 2, vec![(KEY.into(), step1)]).await;
    user(&stack, "surge@example.com").await;
    let live = sign_in(&stack, "surge@example.com").await;

    // Step 2: replica 0 rolled; replica 1's replacement (2) is up while replica 1 still runs.
    roll(&mut stack, 0, &[(KEY, &step2)]).await;
    let surge = stack.add_replica().unwrap();
    stack.set_replica_env(surge, &[(KEY, &step2)]);
    stack.start_replica(surge).await.unwrap();
    wait_redis(stack.replicas[surge].admin, true).await;
    let token = sign_in(&stack, "surge@example.com").await;
    revoke(&stack, 0, &token).await;
    let revoked = vec![token];
    all_refuse(&stack, &[0, 1, surge], &revoked, &live, "step 2, surge").await;
    // The old pod stops: step 2 is done, every replica signs with the new key.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stack.kill_replica(1).unwrap();
    all_refuse(&stack, &[0, surge], &revoked, &live, "step 2 done").await;

    // Step 3: the old key dropped.
    roll(&mut stack, 0, &[(KEY, &step3)]).await;
    all_refuse(&stack, &[0], &revoked, &live, "step 3").await;
}

/// The quarter of the cap kept for the operator lasts only as long as the process: after a
/// restart the revocation comes back from Redis as a learned entry, among a writer's (the
/// threat model says so). Signing is the remedy it names: the writer's unsigned entries take
/// no room, and the operator's revocation survives the restart however many there are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_signing_a_writers_flood_cannot_crowd_out_a_revocation_across_a_restart() {
    const CAP: usize = 100;
    const BOGUS: usize = 20 * CAP;
    let dir = layout("crowding-restart").work_dir;
    let key = key_file(&dir, "key", &[NEW_KEY]);
    let mut stack = stack(
        "crowding-restart",
        1,
        vec![
            ("AUTHZ_MAX_REVOCATIONS".into(), CAP.to_string()),
            ("AUTHZ_REDIS_SIGNING_KEY_FILE".into(), key),
        ],
    )
    .await;
    user(&stack, "crowd-restart@example.com").await;
    let token = sign_in(&stack, "crowd-restart@example.com").await;
    let url = format!("redis://127.0.0.1:{}/", stack.redis_port.unwrap());
    let mut conn = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let expires = cognito_authz::unix_now() + 3_600;
    let mut pipe = redis::pipe();
    for i in 0..BOGUS {
        let entry = format!(r#"{{"revocation":{{"jti":"bogus-{i}"}},"expires":{expires}}}"#);
        pipe.cmd("SET")
            .arg(format!("cognito-authz:rev:jti:bogus-{i}"))
            .arg(&entry)
            .arg("EXAT")
            .arg(expires)
            .ignore();
    }
    let () = pipe.query_async(&mut conn).await.unwrap();
    revoke(&stack, 0, &token).await;
    assert_eq!(
        decision(stack.replicas[0].grpc, &token).await,
        Err("revoked".to_string())
    );
    stack.kill_replica(0).unwrap();
    stack.start_replica(0).await.unwrap();
    wait_redis(stack.replicas[0].admin, true).await;
    assert_eq!(
        decision(stack.replicas[0].grpc, &token).await,
        Err("revoked".to_string()),
        "the replica the operator revoked through forgot it on restart"
    );
}

/// A tag is never taken off: with key sets that are not nested (a second rotation begun before
/// the first is finished: `[A, B]`, `[B, C]` and `[A]` side by side), a replica on `[B, C]`
/// keeps `A`'s tag when it adds `C`'s, so the one on `[A]` still refuses the token. (Re-signing
/// with only the re-signer's own tags forgot it, and flipped the tags at every start.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_signing_takes_off_no_tag_another_replica_needs() {
    const KEY: &str = "AUTHZ_REDIS_SIGNING_KEY_FILE";
    const THIRD_KEY: &str = "7h1rd7h1rd7h1rd7h1rd7h1rd7h1rd7h1rd7h1rd7h1rd7h1rd7h1rd7h1rd7h1r";
    let dir = layout("rotation-overlap").work_dir;
    let a_b = key_file(&dir, "key-ab", &[OLD_KEY, NEW_KEY]);
    let b_c = key_file(&dir, "key-bc", &[NEW_KEY, THIRD_KEY]);
    let a = key_file(&dir, "key-a", &[OLD_KEY]);
    let mut stack = stack("rotation-overlap", 3, vec![(KEY.into(), a_b)]).await;
    user(&stack, "overlap@example.com").await;
    let live = sign_in(&stack, "overlap@example.com").await;
    let token = sign_in(&stack, "overlap@example.com").await;
    revoke(&stack, 0, &token).await;
    let revoked = vec![token];
    all_refuse(&stack, &[0, 1, 2], &revoked, &live, "signed with [A, B]").await;
    roll(&mut stack, 1, &[(KEY, &b_c)]).await;
    roll(&mut stack, 2, &[(KEY, &a)]).await;
    all_refuse(
        &stack,
        &[0, 1, 2],
        &revoked,
        &live,
        "[A, B], [B, C] and [A] side by side",
    )
    .await;
}

/// A writer's huge values under the revocations' prefix are never read into memory: a replica
/// restarts beside three 64 MB values (a 200 MB one was seen to push a replica past 900 MB at
/// start) with its peak memory far below them, and still loads the genuine revocation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writers_huge_values_are_never_read_into_memory() {
    const HUGE: usize = 64 << 20;
    let mut stack = stack("huge-values", 1, Vec::new()).await;
    user(&stack, "huge@example.com").await;
    let token = sign_in(&stack, "huge@example.com").await;
    revoke(&stack, 0, &token).await;
    let url = format!("redis://127.0.0.1:{}/", stack.redis_port.unwrap());
    let mut conn = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let huge = "x".repeat(HUGE);
    for i in 0..3 {
        let () = redis::cmd("SET")
            .arg(format!("cognito-authz:rev:jti:huge-{i}"))
            .arg(&huge)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    drop(huge);
    stack.kill_replica(0).unwrap();
    stack.start_replica(0).await.unwrap();
    wait_redis(stack.replicas[0].admin, true).await;
    assert_eq!(
        decision(stack.replicas[0].grpc, &token).await,
        Err("revoked".to_string()),
        "the genuine revocation was not loaded beside the huge values"
    );
    let pid = stack.replica_pid(0).expect("replica 0 runs");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let peak_kb: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    assert!(
        peak_kb * 1024 < HUGE,
        "the replica peaked at {peak_kb} kB beside three values of {HUGE} bytes"
    );
}

/// A replica is ready only once it has loaded the revocations its peers shared: one that
/// restarts beside many entries refuses a revoked token the moment it says ready, not after
/// its load catches up (it used to serve, and admit, for that moment).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_is_ready_only_once_it_has_loaded_the_shared_revocations() {
    const OTHERS: usize = 30_000;
    let mut stack = stack("ready-after-load", 1, Vec::new()).await;
    user(&stack, "ready@example.com").await;
    let token = sign_in(&stack, "ready@example.com").await;
    let url = format!("redis://127.0.0.1:{}/", stack.redis_port.unwrap());
    let mut conn = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let expires = cognito_authz::unix_now() + 3_600;
    let mut pipe = redis::pipe();
    for i in 0..OTHERS {
        let entry = format!(r#"{{"revocation":{{"jti":"other-{i}"}},"expires":{expires}}}"#);
        pipe.cmd("SET")
            .arg(format!("cognito-authz:rev:jti:other-{i}"))
            .arg(&entry)
            .arg("EXAT")
            .arg(expires)
            .ignore();
    }
    let () = pipe.query_async(&mut conn).await.unwrap();
    revoke(&stack, 0, &token).await;
    stack.kill_replica(0).unwrap();
    // `start_replica` returns once `/readyz` says ready: the first check must already know.
    stack.start_replica(0).await.unwrap();
    assert_eq!(
        decision(stack.replicas[0].grpc, &token).await,
        Err("revoked".to_string()),
        "a replica said ready before it knew what its peers revoked"
    );
}
