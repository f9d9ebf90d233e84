//! Replicas sharing a real Redis Cluster (`AUTHZ_REDIS_CLUSTER=true`): six Debian
//! `redis-server` processes on loopback, three primaries and three replicas, an ACL user with a
//! password; three cognito-authz processes behind Envoy, the Cognito emulator, and
//! `cognito-authz revoke --redis`. One cluster serves every step, failover included.
//!
//! Needs `scripts/setup-venv`, `cargo build --workspace` and Debian's `redis-server` and
//! `redis-tools` (the README's test command installs them); without them it fails, naming
//! what is missing.

use crate::common;
use crate::common::redis_cluster::{RedisCluster, PASSWORD};
use crate::revocation::{
    check, layout, revoke_cli, revoke_cli_output, sign_in, until_revoked, user, wait_redis,
};

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cruddur_demo::stack::{Options, Ports, Stack};
use cruddur_demo::walkthrough::get;

/// What `revoke --redis` says when no replica of the primary confirmed the revocation.
const NOT_REPLICATED: &str = "no replica of it confirmed it in time";

/// A key in the revocations' slot: the primary serving it holds every revocation.
const REVOCATIONS_SLOT: &str = "cognito-authz:{rev}:probe";

/// `cognito-authz revoke --redis --token -` against the cluster, the URL (with its password)
/// and cluster mode from the environment, as an operator would run it.
fn revoke_in_cluster(cluster: &RedisCluster, token: &str) -> std::process::Output {
    revoke_in_cluster_with(cluster, token, &[])
}

/// [`revoke_in_cluster`] with more variables (the signing keys).
fn revoke_in_cluster_with(
    cluster: &RedisCluster,
    token: &str,
    vars: &[(&str, &str)],
) -> std::process::Output {
    use std::io::Write as _;
    let mut child = Command::new(env!("CARGO_BIN_EXE_cognito-authz"))
        .args(["revoke", "--redis", "--token", "-"])
        .env_clear()
        .env("AUTHZ_REDIS_URL", cluster.url())
        .env("AUTHZ_REDIS_CLUSTER", "true")
        .envs(vars.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(token.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_replicas_share_revocations_through_a_failover_and_lose_none() {
    let mut cluster = RedisCluster::start("replicas");
    let options = Options {
        replicas: 3,
        authz_env: vec![
            ("AUTHZ_REDIS_URL".into(), cluster.url()),
            ("AUTHZ_REDIS_CLUSTER".into(), "true".into()),
        ],
        ..Options::default()
    };
    let mut stack = Stack::start_options(layout("cluster"), Ports::ephemeral().unwrap(), options)
        .await
        .unwrap_or_else(|e| panic!("the stack did not start: {e}"));
    let replicas = stack.replicas.clone();
    for r in &replicas {
        wait_redis(r.admin, true).await;
    }
    user(&stack, "cluster@example.com").await;

    // Verdicts and locks in the cluster: three replicas checking one token at once make one
    // GetUser between them.
    let token = sign_in(&stack, "cluster@example.com").await;
    let calls = stack.get_user_calls();
    let checks: Vec<_> = replicas
        .iter()
        .map(|r| {
            let (port, token) = (r.grpc, token.clone());
            tokio::spawn(async move { check(port, &token).await })
        })
        .collect();
    for c in checks {
        assert_eq!(c.await.unwrap(), (true, "allowed".to_string()));
    }
    assert_eq!(stack.get_user_calls(), calls + 1, "one call across three");

    // Revoked through one replica, refused by every one within a second.
    revoke_cli(&stack, replicas[0].admin, &token);
    for r in &replicas[1..] {
        until_revoked(r.grpc, &token, Duration::from_secs(1)).await;
    }

    // `revoke --redis` in cluster mode: stored in the revocations' slot, heard by every
    // replica within a second; the password shows nowhere.
    let by_cli = sign_in(&stack, "cluster@example.com").await;
    let out = revoke_in_cluster(&cluster, &by_cli);
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{printed}");
    assert!(!printed.contains(PASSWORD), "{printed}");
    assert!(!printed.contains(NOT_REPLICATED), "{printed}");
    for r in &replicas {
        until_revoked(r.grpc, &by_cli, Duration::from_secs(1)).await;
    }
    let stored = cluster.cli(
        cluster.primary_of(REVOCATIONS_SLOT),
        &["--scan", "--pattern", "cognito-authz:{rev}:*"],
    );
    assert_eq!(stored.lines().count(), 2, "{stored}");

    // One replica requires Redis (AUTHZ_REDIS_REQUIRED): restarted so.
    stack.kill_replica(2).unwrap();
    stack.set_replica_env(2, &[("AUTHZ_REDIS_REQUIRED", "true")]);
    stack.start_replica(2).await.unwrap();
    wait_redis(replicas[2].admin, true).await;

    // Under load through Envoy, a revocation, then at once the primary holding the
    // revocations dies.
    let live = sign_in(&stack, "cluster@example.com").await;
    let load = {
        let (url, live) = (stack.url("/api/echo"), live.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let deadline = Instant::now() + Duration::from_secs(6);
            let mut statuses = Vec::new();
            while Instant::now() < deadline {
                if let Ok(r) = http.get(&url).bearer_auth(&live).send().await {
                    statuses.push(r.status().as_u16());
                }
            }
            statuses
        })
    };
    let before_failover = sign_in(&stack, "cluster@example.com").await;
    let during_failover = sign_in(&stack, "cluster@example.com").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    revoke_cli(&stack, replicas[1].admin, &before_failover);
    let old = cluster.primary_of(REVOCATIONS_SLOT);
    cluster.kill(old);
    for r in &replicas {
        wait_redis(r.admin, false).await;
    }
    // Not required (the default): still ready, saying Redis is down; required: not ready while
    // the revocations' slot has no primary.
    let readyz = |r: usize| {
        common::http_get(
            std::net::SocketAddr::from(([127, 0, 0, 1], replicas[r].admin)),
            "/readyz",
        )
    };
    let (status, body) = readyz(0).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = readyz(2).await;
    assert_eq!(status, 503, "{body}");
    // Revoked while the slot has no primary: refused here at once, shared once it has one.
    let out = revoke_cli_output(&stack, replicas[2].admin, &during_failover);
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["recorded"], true, "{answer}");
    until_revoked(replicas[2].grpc, &during_failover, Duration::from_secs(1)).await;
    let promoted = tokio::task::block_in_place(|| {
        cluster.wait_promoted(REVOCATIONS_SLOT, old, Duration::from_secs(15))
    });
    let promoted_at = Instant::now();
    assert_ne!(promoted, old);
    // Within a second of the promotion, on every replica.
    for r in &replicas {
        let left = Duration::from_secs(1).saturating_sub(promoted_at.elapsed());
        until_revoked(r.grpc, &during_failover, left).await;
    }
    wait_redis(replicas[2].admin, true).await;
    assert_eq!(readyz(2).await.0, 200);
    let statuses = load.await.unwrap();
    assert!(statuses.len() > 20, "{} requests", statuses.len());
    assert!(
        statuses.iter().all(|s| *s == 200),
        "a valid token was refused during the failover: {:?}",
        statuses.iter().filter(|s| **s != 200).collect::<Vec<_>>()
    );

    // A replica started after the promotion loads the revocation the old primary took just
    // before it died, and the others.
    let late = stack.add_replica().unwrap();
    stack.start_replica(late).await.unwrap();
    let late = stack.replicas[late];
    for revoked in [&token, &by_cli, &before_failover, &during_failover] {
        assert_eq!(check(late.grpc, revoked).await, (false, "revoked".into()));
    }
    let seen = get(&stack, "/api/echo", Some(&live), &[]).await;
    assert_eq!(seen.status.as_u16(), 200);

    // The promoted primary has no replica left: `revoke --redis` stores and announces, and
    // says that no replica confirmed it (its WAIT for one ran out).
    let unreplicated = sign_in(&stack, "cluster@example.com").await;
    let out = revoke_in_cluster(&cluster, &unreplicated);
    let printed = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{printed}");
    assert!(printed.contains(NOT_REPLICATED), "{printed}");
    for r in &replicas {
        until_revoked(r.grpc, &unreplicated, Duration::from_secs(1)).await;
    }

    // Every replica restarted: each loads every live revocation from the cluster.
    for (i, r) in replicas.iter().enumerate() {
        stack.kill_replica(i).unwrap();
        stack.start_replica(i).await.unwrap();
        for revoked in [&token, &by_cli, &before_failover, &during_failover] {
            assert_eq!(check(r.grpc, revoked).await, (false, "revoked".into()));
        }
        assert_eq!(check(r.grpc, &live).await, (true, "allowed".into()));
    }

    // The control API lists what the cluster holds (one slot's scan), and /config shows the
    // seed nodes without the password.
    let secret = std::fs::read_to_string(stack.admin_token_file().unwrap()).unwrap();
    let admin = |path: &str| {
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(format!("http://127.0.0.1:{}{path}", replicas[0].admin))
            .bearer_auth(secret.trim())
            .send()
    };
    let listing: serde_json::Value = admin("/revocations").await.unwrap().json().await.unwrap();
    assert_eq!(
        listing["revocations"].as_array().map(Vec::len),
        Some(5),
        "{listing}"
    );
    let config = admin("/config").await.unwrap().text().await.unwrap();
    assert!(!config.contains(PASSWORD), "{config}");
    assert!(config.contains("authz:redacted@127.0.0.1"), "{config}");

    // The password shows in no replica's log.
    for i in 0..stack.replicas.len() {
        let name = match i {
            0 => "cognito-authz".to_string(),
            i => format!("cognito-authz-{i}"),
        };
        let log = std::fs::read_to_string(stack.log_path(&name)).unwrap();
        assert!(log.contains("redis is up"), "replica {i}: {log}");
        assert!(!log.contains(PASSWORD), "replica {i} logged the password");
    }
}

/// Two Envoys running the module follow the cluster as a replica does (the same code), signing
/// with two keys as during a rotation: a revocation written by `revoke --redis` in cluster mode
/// is refused by both within a second, and an Envoy started afterwards loads it from the
/// cluster; an unsigned one is ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_modules_follow_revocations_written_by_revoke_in_redis() {
    use crate::module_revocation::{first_answer_is, refused_within, Checker};
    use cognito_authz::testkit::{access_claims, jwks, now, Behaviour, JwksServer, TestKey};
    use cruddur_demo::stack::Protocol;

    let cluster = RedisCluster::start("modules");
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let layout = common::stack_layout("cluster-module");
    assert!(
        layout.bin_dir.join("libcognito_authz_envoy.so").exists(),
        "the module is missing: build it with `cargo build -p cognito-authz-envoy`"
    );
    std::fs::create_dir_all(&layout.work_dir).unwrap();
    let keys = layout.work_dir.join("signing-keys");
    std::fs::write(
        &keys,
        "0123456789abcdef0123456789abcdef01\nfedcba9876543210fedcba9876543210fe\n",
    )
    .unwrap();
    let keys = keys.display().to_string();
    let options = Options {
        protocol: Protocol::Module,
        authz_env: vec![
            ("AUTHZ_REDIS_SIGNING_KEY_FILE".into(), keys.clone()),
            ("COGNITO_JWKS_URI".into(), idp.url("/jwks.json")),
            ("AUTHZ_REDIS_URL".into(), cluster.url()),
            ("AUTHZ_REDIS_CLUSTER".into(), "true".into()),
        ],
        ..Options::default()
    };
    let mut stack = Stack::start_options(layout, Ports::ephemeral().unwrap(), options)
        .await
        .unwrap_or_else(|e| panic!("the stack did not start: {e}"));
    let second = stack.start_module_envoy().await.unwrap();
    let modules = [Checker::Module(stack.ports.envoy), Checker::Module(second)];
    let issuer = format!(
        "https://cognito-idp.us-east-1.amazonaws.com/{}",
        stack.pool.pool_id
    );
    let token = |user: &str| {
        let mut claims = access_claims(&issuer, &stack.pool.client_id, now() - 30);
        claims["sub"] = serde_json::json!(format!("{user}-sub"));
        claims["origin_jti"] = serde_json::json!(format!("{user}-session"));
        claims["jti"] = serde_json::json!(format!("{user}-jti"));
        TestKey::shared(0).token(&claims)
    };
    let (revoked, kept) = (token("revoked"), token("kept"));
    let signing = [("AUTHZ_REDIS_SIGNING_KEY_FILE", keys.as_str())];
    for at in modules {
        first_answer_is(at, &revoked, (200, "")).await;
        first_answer_is(at, &kept, (200, "")).await;
    }
    // Both modules subscribed to the sharded channel, on the revocations' primary.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let primary = cluster.primary_of(REVOCATIONS_SLOT);
        let counts = cluster.cli(
            primary,
            &[
                "PUBSUB",
                "SHARDNUMSUB",
                cognito_authz::shared::CLUSTER_CHANNEL,
            ],
        );
        let subscribed: i64 = counts
            .lines()
            .last()
            .unwrap_or("0")
            .trim()
            .parse()
            .unwrap_or(0);
        if subscribed >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the modules never subscribed: {counts}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Unsigned (no keys given to the command): every module ignores it.
    let out = revoke_in_cluster(&cluster, &kept);
    assert!(out.status.success());
    let out = revoke_in_cluster_with(&cluster, &revoked, &signing);
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{printed}");
    assert!(
        !printed.contains("no replica or module follows it"),
        "{printed}"
    );
    let revoked_at = Instant::now();
    for at in modules {
        refused_within(at, &revoked, revoked_at, Duration::from_secs(1)).await;
        assert_eq!(crate::module_revocation::check(at, &kept).await.0, 200);
    }
    let third = Checker::Module(stack.start_module_envoy().await.unwrap());
    first_answer_is(third, &revoked, (401, "revoked")).await;
    first_answer_is(third, &kept, (200, "")).await;

    // The password shows in no log of the stack (Envoys, the module, the emulator, the app).
    for file in std::fs::read_dir(&stack.layout.work_dir).unwrap() {
        let path = file.unwrap().path();
        if path.extension().is_some_and(|e| e == "log") {
            let log = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                !log.contains(PASSWORD),
                "{} shows the password",
                path.display()
            );
        }
    }
}

/// Over TLS with an ACL user, as ElastiCache Serverless and MemoryDB are reached: a cluster
/// speaking TLS only (to clients and between nodes) takes `revoke --redis`'s entry in the
/// revocations' slot, its replica confirms it, and the password shows nowhere.
#[test]
fn redis_cluster_over_tls_takes_a_revocation_from_revoke_in_redis() {
    let cluster = RedisCluster::start_tls("tls");
    assert!(cluster.url().starts_with("rediss://"));
    let out = Command::new(env!("CARGO_BIN_EXE_cognito-authz"))
        .args(["revoke", "--redis", "--jti", "over-tls"])
        .env_clear()
        .env("AUTHZ_REDIS_URL", cluster.url())
        .env("AUTHZ_REDIS_CLUSTER", "true")
        // The test CA, trusted as a system's roots are (rustls-native-certs reads it).
        .env("SSL_CERT_FILE", cluster.ca())
        .output()
        .unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{printed}");
    assert!(!printed.contains(PASSWORD), "{printed}");
    assert!(!printed.contains(NOT_REPLICATED), "{printed}");
    let key = "cognito-authz:{rev}:jti:over-tls";
    let stored = cluster.cli(cluster.primary_of(key), &["GET", key]);
    assert!(stored.contains("over-tls"), "{stored}");
    // The nodes' certificates are checked: without their CA among the trusted roots, nothing
    // is written, and the command says so (exit 1) without the password.
    let untrusted = Command::new(env!("CARGO_BIN_EXE_cognito-authz"))
        .args(["revoke", "--redis", "--jti", "untrusted"])
        .env_clear()
        .env("AUTHZ_REDIS_URL", cluster.url())
        .env("AUTHZ_REDIS_CLUSTER", "true")
        .output()
        .unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&untrusted.stdout),
        String::from_utf8_lossy(&untrusted.stderr)
    );
    assert_eq!(untrusted.status.code(), Some(1), "{printed}");
    assert!(!printed.contains(PASSWORD), "{printed}");
    let key = "cognito-authz:{rev}:jti:untrusted";
    let stored = cluster.cli(cluster.primary_of(key), &["EXISTS", key]);
    assert_eq!(stored.trim(), "0", "{stored}");
}

/// A replica or module whose ACL user may not subscribe to the sharded channel (an ACL written
/// for one Redis, `&cognito-authz:revocations`, kept when moving to a cluster) still settles:
/// as on one Redis, a refused subscription is Redis unavailable, and decisions go on from local
/// state; the loading gate never stays shut, refusing every valid token for ever.
#[tokio::test]
async fn redis_cluster_a_refused_subscription_does_not_keep_the_revocations_loading() {
    use cognito_authz::revocation::RevocationList;
    use cognito_authz::shared::{RedisTarget, Shared};
    use std::sync::Arc;
    let cluster = RedisCluster::start("refused-channel");
    for answer in cluster.cli_all(&[
        "ACL",
        "SETUSER",
        common::redis_cluster::USER,
        "resetchannels",
        "&cognito-authz:revocations",
    ]) {
        assert!(answer.contains("OK"), "{answer}");
    }
    let target = RedisTarget {
        urls: cluster.url().split(',').map(str::to_string).collect(),
        cluster: true,
    };
    let shared = Shared::new(
        target,
        Arc::new(cognito_authz::metrics::Metrics::new()),
        &[],
    )
    .unwrap();
    let list = Arc::new(RevocationList::new(100, None));
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let subscriber = shared.spawn_subscriber(list.clone(), stop);
    let deadline = Instant::now() + Duration::from_secs(5);
    while list.loading() {
        assert!(
            Instant::now() < deadline,
            "still loading 5 s after start: every valid token is refused"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(shared.settled());
    stop_tx.send(true).unwrap();
    subscriber.await.unwrap();
}

/// A resharding (as ElastiCache Serverless does as it scales) moves the revocations' slot to
/// another primary: that node now holds the sharded channel, and a replica still hears every
/// revocation announced there, within about a second, as it does after a failover.
#[tokio::test]
async fn redis_cluster_a_replica_follows_the_revocations_slot_to_another_primary() {
    use cognito_authz::revocation::{Entry, Revocation, RevocationList};
    use cognito_authz::shared::{RedisTarget, Shared};
    use std::sync::Arc;
    let cluster = RedisCluster::start("resharded");
    let target = RedisTarget {
        urls: cluster.url().split(',').map(str::to_string).collect(),
        cluster: true,
    };
    let shared = Shared::new(
        target.clone(),
        Arc::new(cognito_authz::metrics::Metrics::new()),
        &[],
    )
    .unwrap();
    let list = Arc::new(RevocationList::new(100, None));
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let subscriber = shared.spawn_subscriber(list.clone(), stop);
    let writer = Shared::writer(target, &[]).unwrap();
    let now = || {
        i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        )
        .unwrap()
    };
    let heard_within = |expected: usize, within: Duration| {
        let list = list.clone();
        async move {
            let deadline = Instant::now() + within;
            while list.len() < expected {
                assert!(
                    Instant::now() < deadline,
                    "{} of {expected} revocations heard",
                    list.len()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    // Subscribed and loaded: a revocation reaches it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while list.loading() || !shared.is_up() {
        assert!(Instant::now() < deadline, "never subscribed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let entry = |jti: &str| Entry::new(Revocation::Jti(jti.into()), now(), 3600);
    writer
        .publish_once(&entry("before-the-move"))
        .await
        .unwrap();
    heard_within(1, Duration::from_secs(1)).await;

    let from = cluster.primary_of(REVOCATIONS_SLOT);
    let to = *cluster
        .primaries()
        .iter()
        .find(|&&port| port != from)
        .unwrap();
    cluster.move_slot(REVOCATIONS_SLOT, to);
    assert_eq!(cluster.primary_of(REVOCATIONS_SLOT), to);
    // Announced right after the move: heard, or loaded once subscribed where the slot is now.
    writer
        .publish_once(&entry("during-the-move"))
        .await
        .unwrap();
    heard_within(2, Duration::from_secs(2)).await;
    // And the subscription is live again on the new primary: the next one is heard at once.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cluster
        .cli(
            to,
            &[
                "PUBSUB",
                "SHARDNUMSUB",
                cognito_authz::shared::CLUSTER_CHANNEL,
            ],
        )
        .ends_with("1\n")
    {
        assert!(
            Instant::now() < deadline,
            "never subscribed on the new primary"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let published = writer.publish_once(&entry("after-the-move")).await.unwrap();
    assert_eq!(published.heard, 1, "{published:?}");
    heard_within(3, Duration::from_secs(1)).await;
    stop_tx.send(true).unwrap();
    subscriber.await.unwrap();
}

/// The node holding the revocations drops the subscriber's connection (as `CLIENT KILL`, or a
/// writer's oversized message past the output buffer limit, does): the replica reconnects,
/// subscribes again and hears the next revocation within about a second.
#[tokio::test]
async fn redis_cluster_a_replica_whose_connection_is_killed_hears_again() {
    use cognito_authz::revocation::{Entry, Revocation, RevocationList};
    use cognito_authz::shared::{RedisTarget, Shared};
    use std::sync::Arc;
    let cluster = RedisCluster::start("killed-client");
    let target = RedisTarget {
        urls: cluster.url().split(',').map(str::to_string).collect(),
        cluster: true,
    };
    let shared = Shared::new(
        target.clone(),
        Arc::new(cognito_authz::metrics::Metrics::new()),
        &[],
    )
    .unwrap();
    let list = Arc::new(RevocationList::new(100, None));
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let subscriber = shared.spawn_subscriber(list.clone(), stop);
    let writer = Shared::writer(target, &[]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while list.loading() || !shared.is_up() {
        assert!(Instant::now() < deadline, "never subscribed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let primary = cluster.primary_of(REVOCATIONS_SLOT);
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    for round in 1..=3 {
        let killed = cluster.cli(primary, &["CLIENT", "KILL", "TYPE", "pubsub"]);
        assert_eq!(killed.trim(), "1", "round {round}: {killed}");
        let entry = Entry::new(Revocation::Jti(format!("after-kill-{round}")), now, 3600);
        writer.publish_once(&entry).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(2);
        while list.len() < round {
            assert!(
                Instant::now() < deadline,
                "round {round}: the revocation was not heard"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    stop_tx.send(true).unwrap();
    subscriber.await.unwrap();
}

/// The redis crate logs through `log`, which reaches our logs: at `RUST_LOG=trace`, with a
/// first seed that answers nothing and a second that does, a replica (`serve`) and
/// `revoke --redis` show the cluster's addresses and slots but never the password.
#[test]
fn redis_cluster_traces_show_no_password() {
    let cluster = RedisCluster::start("traced");
    let ports = Ports::ephemeral().unwrap();
    let seeds = format!(
        "redis://{}:{PASSWORD}@127.0.0.1:{},{}",
        common::redis_cluster::USER,
        ports.app,
        cluster.url()
    );
    let run = |args: &[&str], stop_after: Option<Duration>| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cognito-authz"))
            .args(args)
            .env_clear()
            .env("RUST_LOG", "trace")
            .env("AWS_COGNITO_USER_POOL_ID", "us-east-1_AbC123")
            .env("AWS_COGNITO_USER_POOL_CLIENT_ID", "client-a")
            .env("AUTHZ_GRPC_ADDR", format!("127.0.0.1:{}", ports.authz))
            .env(
                "AUTHZ_ADMIN_ADDR",
                format!("127.0.0.1:{}", ports.authz_admin),
            )
            .env("AUTHZ_REDIS_URL", &seeds)
            .env("AUTHZ_REDIS_CLUSTER", "true")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(after) = stop_after {
            std::thread::sleep(after);
            let _ = child.kill();
        }
        let out = child.wait_with_output().unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let served = run(&["serve"], Some(Duration::from_secs(3)));
    // The redis crate's own lines are there: this is the level that would show it.
    assert!(served.contains("redis::"), "{served}");
    assert!(!served.contains(PASSWORD), "{served}");
    let revoked = run(&["revoke", "--redis", "--jti", "traced"], None);
    assert!(revoked.contains("\"shared\":true"), "{revoked}");
    assert!(!revoked.contains(PASSWORD), "{revoked}");
}

/// After a failover the promoted primary has no replica, so each `WAIT` for one takes its full
/// 150 ms. A replica sharing the revocations made through it while the slot had no primary
/// must not wait that long for each of them before it reloads and hears its peers' again: a
/// revocation announced by another replica meanwhile is taken within a second.
#[tokio::test]
async fn redis_cluster_revocations_held_during_a_failover_do_not_deafen_the_replica() {
    use cognito_authz::revocation::{Entry, Revocation, RevocationList};
    use cognito_authz::shared::{RedisTarget, Shared};
    use std::sync::Arc;
    const HELD: usize = 40;
    let mut cluster = RedisCluster::start("held");
    // The revocations' primary without a replica, as a promoted one is: no WAIT is confirmed.
    let primary = cluster.primary_of(REVOCATIONS_SLOT);
    cluster.kill(cluster.replica_of(primary));
    let target = RedisTarget {
        urls: cluster.url().split(',').map(str::to_string).collect(),
        cluster: true,
    };
    let shared = Shared::new(
        target.clone(),
        Arc::new(cognito_authz::metrics::Metrics::new()),
        &[],
    )
    .unwrap();
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    // Not following Redis yet, so Redis counts as down: each waits to be shared.
    for i in 0..HELD {
        let entry = Entry::new(Revocation::Jti(format!("held-{i}")), now, 3600);
        assert!(shared.publish(&entry).await.is_err());
    }
    let list = Arc::new(RevocationList::new(1000, None));
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let subscriber = shared.spawn_subscriber(list.clone(), stop);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !shared.is_up() {
        assert!(Instant::now() < deadline, "never subscribed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let writer = Shared::writer(target, &[]).unwrap();
    let entry = Entry::new(Revocation::Jti("from-a-peer".into()), now, 3600);
    writer.publish_once(&entry).await.unwrap();
    let announced = Instant::now();
    while list.len() < HELD + 1 {
        assert!(
            announced.elapsed() < Duration::from_secs(1),
            "{} of {} revocations taken 1 s after a peer's announcement",
            list.len(),
            HELD + 1
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop_tx.send(true).unwrap();
    subscriber.await.unwrap();
}

/// A writer who stores one key or value that is not UTF-8 among the revocations spoils that
/// entry alone: every other revocation is still loaded at start-up (one bad entry failing the
/// whole load would let a restarted replica admit every revoked token).
#[tokio::test]
async fn redis_cluster_a_value_that_is_not_text_spoils_only_itself_in_the_load() {
    use cognito_authz::revocation::{Entry, Revocation, RevocationList};
    use cognito_authz::shared::{RedisTarget, Shared};
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt as _;
    use std::sync::Arc;
    let cluster = RedisCluster::start("not-text");
    let target = RedisTarget {
        urls: cluster.url().split(',').map(str::to_string).collect(),
        cluster: true,
    };
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    let writer = Shared::writer(target.clone(), &[]).unwrap();
    let entry = Entry::new(Revocation::Jti("kept".into()), now, 3600);
    writer.publish_once(&entry).await.unwrap();
    let primary = cluster.primary_of(REVOCATIONS_SLOT);
    for (key, value) in [
        (&b"cognito-authz:{rev}:jti:junk-value"[..], &b"\xff\xfe"[..]),
        (&b"cognito-authz:{rev}:jti:\xff"[..], &b"{}"[..]),
    ] {
        let out = Command::new("/usr/bin/redis-cli")
            .args(["-p", &primary.to_string(), "--no-auth-warning"])
            .args(["--user", common::redis_cluster::USER, "--pass", PASSWORD])
            .args([
                OsStr::new("SET"),
                OsStr::from_bytes(key),
                OsStr::from_bytes(value),
            ])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "OK");
    }
    let shared = Shared::new(
        target,
        Arc::new(cognito_authz::metrics::Metrics::new()),
        &[],
    )
    .unwrap();
    let list = Arc::new(RevocationList::new(100, None));
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let subscriber = shared.spawn_subscriber(list.clone(), stop);
    let deadline = Instant::now() + Duration::from_secs(10);
    while list.loading() || !shared.is_up() {
        assert!(Instant::now() < deadline, "never loaded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        list.len(),
        1,
        "the revocation beside the junk was not loaded"
    );
    stop_tx.send(true).unwrap();
    subscriber.await.unwrap();
}
