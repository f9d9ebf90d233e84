//! A Redis that others can write to: with `AUTHZ_REDIS_SIGNING_KEY_FILE`, replicas sign what
//! they share and ignore whatever is not signed with their key. Two real servers and Debian's
//! `redis-server`; a third party writes to Redis directly.
//!
//! Needs `redis-server` (the README's test command installs it); fails naming it when missing.

use crate::common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cognito_authz::server::{self, Running};
use cognito_authz::shared::CHANNEL;
use cognito_authz::testkit::{jwks, Behaviour, JwksServer, TestKey};
use common::{serve_config, Redis};

const ADMIN: &str = "signing-test-admin-secret";
/// The replicas' signing key in the tests that need only one.
const SIGNING_KEY: &str = "0123456789abcdef0123456789abcdef0123";

fn file(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// Fails, naming it, when Debian's `redis-server` is missing.
fn needs_redis_server() {
    assert!(
        std::path::Path::new("/usr/bin/redis-server").is_file(),
        "redis-server is missing: the README's test command installs it (Debian redis-server)"
    );
}

/// A fresh folder for one test's key and token files.
fn scratch(name: &str) -> PathBuf {
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn replica(idp: &JwksServer, url: &str, key: &str, admin: &str) -> Running {
    let vars = [
        ("AUTHZ_REDIS_URL", url),
        ("AUTHZ_REDIS_SIGNING_KEY_FILE", key),
        ("AUTHZ_ADMIN_TOKEN_FILE", admin),
    ];
    let running = server::start(serve_config(&idp.url("/j"), &vars, ""))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // Ready, not only Redis up: up comes once subscribed, ready once the revocations
        // already in Redis are loaded.
        let (_, body) = common::http_get(running.admin_addr, "/readyz").await;
        if body.starts_with("ready\n") && body.contains("redis: up") {
            return running;
        }
        assert!(Instant::now() < deadline, "redis never came up: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_take_only_what_is_signed_with_their_key() {
    needs_redis_server();
    let dir = scratch("redis-signing");
    let (_redis, url) = Redis::start();
    let key = file(&dir, "signing-key", SIGNING_KEY);
    let admin = file(&dir, "admin-token", ADMIN);
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let a = replica(&idp, &url, &key, &admin).await;
    let b = replica(&idp, &url, &key, &admin).await;

    // A revocation through A reaches B: signed and verified.
    let revoked = reqwest::Client::new()
        .post(format!("http://{}/revocations", a.admin_addr))
        .bearer_auth(ADMIN)
        .body(r#"{"jti": "through-the-api"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status().as_u16(), 200);
    let deadline = Instant::now() + Duration::from_secs(2);
    while b.authorizer().revocations().is_empty() {
        assert!(
            Instant::now() < deadline,
            "B never took A's signed revocation"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Someone else who can write to Redis: an unsigned entry, and one signed with another key,
    // published and stored. Neither is taken, now or when a replica reloads the list.
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let expires = cognito_authz::unix_now() + 3600;
    let unsigned = format!(
        r#"{{"revocation":{{"sub":{{"sub":"victim","before":{}}}}},"expires":{expires}}}"#,
        expires - 3600
    );
    let wrong_key = format!("{}.{unsigned}", "ab".repeat(32));
    for value in [&unsigned, &wrong_key] {
        let _: i64 = redis::cmd("PUBLISH")
            .arg(CHANNEL)
            .arg(value)
            .query_async(&mut conn)
            .await
            .unwrap();
        let _: () = redis::cmd("SET")
            .arg("cognito-authz:rev:sub:victim")
            .arg(value)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(b.authorizer().revocations().len(), 1, "only the signed one");
    let c = replica(&idp, &url, &key, &admin).await;
    assert_eq!(
        c.authorizer().revocations().len(),
        1,
        "loading from Redis takes only the signed one"
    );
    for r in [a, b, c] {
        r.stop().await.unwrap();
    }
}

/// Whoever holds the lock on asking Cognito about a token (another replica, or anyone who can
/// write to Redis) cannot make an old verdict good again: a replica waiting on the lock takes
/// only a verdict as fresh as the TTL, else asks Cognito itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_lock_does_not_revive_a_stale_verdict() {
    use cognito_authz::testkit::{access_claims, now};
    use common::{Answer, CLIENT, ISS};
    let (_redis, url) = Redis::start();
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    // Cognito: this token's session was signed out.
    let get_user = JwksServer::start(Behaviour::Answer(
        400,
        serde_json::json!({"__type": "NotAuthorizedException", "message": "Access Token has been revoked"}),
    ))
    .await;
    let endpoint = get_user.url("/");
    let vars = [
        ("AUTHZ_REDIS_URL", url.as_str()),
        ("COGNITO_REVOCATION", "cognito"),
        ("COGNITO_IDP_ENDPOINT", endpoint.as_str()),
        ("COGNITO_REVOCATION_TTL_SECONDS", "2"),
        ("COGNITO_REVOCATION_GRACE_SECONDS", "600"),
    ];
    let running = server::start(serve_config(&idp.url("/j"), &vars, ""))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !common::http_get(running.admin_addr, "/readyz")
        .await
        .1
        .starts_with("ready\nredis: up")
    {
        assert!(Instant::now() < deadline, "redis never came up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let token = TestKey::shared(0).token(&access_claims(ISS, CLIENT, now()));
    let key: String = cognito_authz::cache::token_key(&token)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    // A lock nobody releases and a `valid` verdict 100 s old (past the TTL, within the grace).
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    for (name, value) in [
        (format!("cognito-authz:lock:{key}"), "x".to_string()),
        (
            format!("cognito-authz:verdict:{key}"),
            format!("valid:{}", now() - 100),
        ),
    ] {
        let _: () = redis::cmd("SET")
            .arg(name)
            .arg(value)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let cognito_authz::server::GrpcAddr::Tcp(addr) = running.grpc_addr.clone() else {
        unreachable!()
    };
    match common::check_bearer(addr, &token).await {
        Answer::Denied { status, body, .. } => {
            assert_eq!((status, body["reason"].as_str()), (401, Some("revoked")));
        }
        other => panic!("a stale verdict let a signed-out token through: {other:?}"),
    }
    assert_eq!(get_user.hits(), 1, "asked Cognito itself");
    running.stop().await.unwrap();
}

/// A throwaway `redis-server` where only the ACL user `revoker` (password `S3CRET_PW`) may do
/// anything, and only on cognito-authz's keys and channel, as docs/revocation.md advises.
struct AclRedis(std::process::Child);

const S3CRET_PW: &str = "s3cret-acl-pw";

impl Drop for AclRedis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl AclRedis {
    /// The server and the URL that signs in as `revoker`.
    fn start() -> (AclRedis, String) {
        let port = cruddur_demo::stack::Ports::ephemeral().unwrap().app;
        let child = std::process::Command::new("/usr/bin/redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--user", "default", "off"])
            .args(["--user", "revoker", "on", &format!(">{S3CRET_PW}")])
            .args(["~cognito-authz:*", "&cognito-authz:revocations", "+@all"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (the README's test command installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
        let url = format!("redis://revoker:{S3CRET_PW}@127.0.0.1:{port}/");
        (AclRedis(child), url)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_in_redis_writes_the_entry_the_control_api_writes() {
    use cognito_authz::revocation::{Entry, Revocation};
    use cognito_authz::shared::Shared;
    const KEY_A: &str = SIGNING_KEY;
    const KEY_B: &str = "another-key-of-more-than-thirty-two-bytes";
    let dir = scratch("revoke-in-redis");
    let (_redis, url) = AclRedis::start();
    let keys = file(&dir, "signing-keys", &format!("{KEY_A}\n{KEY_B}\n"));
    let admin = file(&dir, "admin-token", ADMIN);
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let vars = [
        ("AUTHZ_REDIS_URL", url.as_str()),
        ("AUTHZ_REDIS_SIGNING_KEY_FILE", keys.as_str()),
        ("AUTHZ_ADMIN_TOKEN_FILE", admin.as_str()),
        ("COGNITO_CLOCK_LEEWAY_SECONDS", "7"),
    ];
    let replica = server::start(serve_config(&idp.url("/j"), &vars, ""))
        .await
        .unwrap();

    // The command, its settings from `serve`'s variables (the ACL user's URL, both keys, the
    // leeway); no pool, no sidecar.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cognito-authz"))
        .args(["revoke", "--redis", "--jti", "via-redis"])
        .env_clear()
        .envs(vars)
        .output()
        .unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{printed}");
    assert!(
        !printed.contains(S3CRET_PW),
        "the password was printed: {printed}"
    );
    assert!(
        !printed.contains(KEY_A) && !printed.contains(KEY_B),
        "{printed}"
    );
    let deadline = Instant::now() + Duration::from_secs(1);
    while replica.authorizer().revocations().is_empty() {
        assert!(Instant::now() < deadline, "the replica never took it");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let revoked = reqwest::Client::new()
        .post(format!("http://{}/revocations", replica.admin_addr))
        .bearer_auth(ADMIN)
        .body(r#"{"jti": "via-api"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status().as_u16(), 200);

    // Stored alike: the same key layout, two tags (one a key), the same JSON, kept a day plus
    // the leeway.
    let mut redis = redis::Client::open(url.as_str())
        .and_then(|c| c.get_connection())
        .unwrap();
    let stored = |id: &str, redis: &mut redis::Connection| {
        let key = format!("cognito-authz:rev:jti:{id}");
        let value: String = redis::cmd("GET").arg(&key).query(redis).unwrap();
        let ttl: i64 = redis::cmd("TTL").arg(&key).query(redis).unwrap();
        let parts: Vec<&str> = value.splitn(3, '.').collect();
        assert_eq!(parts.len(), 3, "two tags: {value}");
        assert!(parts[..2].iter().all(|t| t.len() == 64), "{value}");
        let entry: Entry = serde_json::from_str(parts[2]).unwrap();
        (entry, ttl)
    };
    let (cli, cli_ttl) = stored("via-redis", &mut redis);
    let (api, api_ttl) = stored("via-api", &mut redis);
    assert_eq!(cli.revocation, Revocation::Jti("via-redis".into()));
    assert_eq!(api.revocation, Revocation::Jti("via-api".into()));
    let lifetime = 86_400 + 7;
    assert!((cli.expires - api.expires).abs() <= 2, "{cli:?} {api:?}");
    assert!((cli.expires - (cognito_authz::testkit::now() + lifetime)).abs() <= 2);
    assert!(
        (cli_ttl - api_ttl).abs() <= 2 && cli_ttl > lifetime - 5,
        "{cli_ttl} {api_ttl}"
    );
    // Every key signed it: a replica holding either one alone reads both.
    for key in [KEY_A, KEY_B] {
        let reader = Shared::writer(&url, &[key.as_bytes()]).unwrap();
        let listing = reader.live_revocations(10).await.unwrap();
        let mut ids: Vec<String> = listing
            .entries
            .iter()
            .map(|e| format!("{:?}", e.revocation))
            .collect();
        ids.sort();
        assert_eq!(ids, [r#"Jti("via-api")"#, r#"Jti("via-redis")"#], "{key}");
    }
    std::fs::remove_dir_all(dir).ok();
}

/// A user's revocation cut-off only moves later. Revoking the same user again with an earlier
/// `before` (an operator's script replaying an old sign-out, or a slower call arriving second)
/// must not replace the later cut-off in Redis: a replica that starts afterwards loads both and
/// still refuses the tokens issued between the two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_earlier_cut_off_for_a_user_never_replaces_a_later_one_in_redis() {
    needs_redis_server();
    let dir = scratch("redis-cut-off");
    let (_redis, url) = Redis::start();
    let key = file(&dir, "signing-key", SIGNING_KEY);
    let admin = file(&dir, "admin-token", ADMIN);
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let a = replica(&idp, &url, &key, &admin).await;

    let now = cognito_authz::unix_now();
    let (later, earlier) = (now - 10, now - 2000);
    for before in [later, earlier] {
        let revoked = reqwest::Client::new()
            .post(format!("http://{}/revocations", a.admin_addr))
            .bearer_auth(ADMIN)
            .body(format!(r#"{{"sub": "user-1", "before": {before}}}"#))
            .send()
            .await
            .unwrap();
        assert_eq!(revoked.status().as_u16(), 200, "before {before}");
    }
    // Issued between the two cut-offs.
    let between = cognito_authz::revocation::TokenIds {
        jti: None,
        origin_jti: None,
        sub: "user-1",
        iat: now - 1000,
    };
    assert!(
        a.authorizer().revocations().is_revoked(&between, now),
        "the replica that took both keeps the later cut-off"
    );
    let b = replica(&idp, &url, &key, &admin).await;
    assert!(
        b.authorizer().revocations().is_revoked(&between, now),
        "a replica loading from Redis lost the later cut-off"
    );
    for r in [a, b] {
        r.stop().await.unwrap();
    }
}

/// Waits until the Redis at `url` answers.
async fn answering(url: &str) {
    let client = redis::Client::open(url).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while client.get_multiplexed_async_connection().await.is_err() {
        assert!(Instant::now() < deadline, "redis-server never answered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A user revoked with several cut-offs holds a key per cut-off in Redis, yet is one
/// revocation: the listing (`GET /revocations`, what `copy-revocations` carries over when
/// signing is turned on) names the user once, with the latest cut-off, and counts the user once
/// against its bound (`AUTHZ_MAX_REVOCATIONS`). Counting keys, a user revoked again and again
/// filled the bound, the listing came back truncated, and the later cut-off could be the one
/// left out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_cut_offs_are_listed_once_with_the_latest() {
    use cognito_authz::revocation::{entry_lifetime, Entry, Revocation};
    use cognito_authz::shared::Shared;
    needs_redis_server();
    let (_redis, url) = Redis::start();
    answering(&url).await;
    let writer = Shared::writer(url.as_str(), &[]).unwrap();
    let now = cognito_authz::unix_now();
    let lifetime = entry_lifetime(Duration::from_secs(5));
    let latest = now - 10;
    // Written in no order: the latest neither first nor last.
    for before in [now - 3000, latest, now - 2000, now - 1000] {
        let sub = Revocation::Sub {
            sub: "user-1".into(),
            before,
        };
        writer
            .publish_once(&Entry::new(sub, now, lifetime))
            .await
            .unwrap();
    }
    let other = Entry::new(Revocation::Jti("other".into()), now, lifetime);
    writer.publish_once(&other).await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("cognito-authz:rev:cut:*")
        .query_async(
            &mut redis::Client::open(url.as_str())
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(keys.len(), 4, "a key per cut-off: {keys:?}");

    let listing = writer.live_revocations(2).await.unwrap();
    assert!(!listing.truncated, "two revocations fit a bound of two");
    let mut entries = listing.entries;
    entries.sort_by_key(|e| e.revocation.kind());
    let latest_entry = Entry::new(
        Revocation::Sub {
            sub: "user-1".into(),
            before: latest,
        },
        now,
        lifetime,
    );
    assert_eq!(entries, [other, latest_entry]);
}

/// Redis written by the previous release held a user's cut-off at `sub:{sub}`; this one keys
/// it `cut:{before}:{sub}` (another word, so no key of one layout can be a key of the other).
/// While both layouts live side by side (a rolling deploy, and for a day after), a replica that starts takes the latest cut-off whichever layout holds it, and
/// the listing names the user once with it: what a key is called never decides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_latest_cut_off_wins_across_the_old_and_the_new_key_layout() {
    use cognito_authz::revocation::{entry_lifetime, Entry, Revocation, TokenIds};
    use cognito_authz::shared::Shared;
    needs_redis_server();
    let dir = scratch("redis-cut-off-layouts");
    let secret = SIGNING_KEY;
    let key = file(&dir, "signing-key", secret);
    let admin = file(&dir, "admin-token", ADMIN);
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let now = cognito_authz::unix_now();
    let lifetime = entry_lifetime(Duration::from_secs(5));
    let (later, earlier) = (now - 10, now - 2000);
    // Issued between the two cut-offs: refused only under the later one.
    let between = TokenIds {
        jti: None,
        origin_jti: None,
        sub: "user-1",
        iat: now - 1000,
    };
    for old_layout_holds in [later, earlier] {
        let (_redis, url) = Redis::start();
        answering(&url).await;
        let writer = Shared::writer(url.as_str(), &[secret.as_bytes()]).unwrap();
        let cut_off = |before| {
            let sub = Revocation::Sub {
                sub: "user-1".into(),
                before,
            };
            Entry::new(sub, now, lifetime)
        };
        // The previous release stored the same signed value, under the user's name alone.
        writer
            .publish_once(&cut_off(old_layout_holds))
            .await
            .unwrap();
        let mut conn = redis::Client::open(url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let () = redis::cmd("RENAME")
            .arg(format!("cognito-authz:rev:cut:{old_layout_holds}:user-1"))
            .arg("cognito-authz:rev:sub:user-1")
            .query_async(&mut conn)
            .await
            .unwrap();
        let other = if old_layout_holds == later {
            earlier
        } else {
            later
        };
        writer.publish_once(&cut_off(other)).await.unwrap();

        let replica = replica(&idp, &url, &key, &admin).await;
        assert!(
            replica.authorizer().revocations().is_revoked(&between, now),
            "the old layout held {old_layout_holds}: the later cut-off was lost"
        );
        let listing = writer.live_revocations(10).await.unwrap();
        assert_eq!(listing.entries, [cut_off(later)], "{old_layout_holds}");
        replica.stop().await.unwrap();
    }
    std::fs::remove_dir_all(dir).ok();
}

/// `cognito-authz revoke --redis`, which writes Redis without a replica, keys a user's cut-off
/// as a replica does: revoking the user again with an earlier `--before` adds a key, and a
/// replica that starts afterwards still refuses the tokens issued between the two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_in_redis_never_replaces_a_later_cut_off_with_an_earlier_one() {
    needs_redis_server();
    let dir = scratch("revoke-cut-offs");
    let (_redis, url) = Redis::start();
    answering(&url).await;
    let key = file(&dir, "signing-key", SIGNING_KEY);
    let admin = file(&dir, "admin-token", ADMIN);
    let now = cognito_authz::unix_now();
    let (later, earlier) = (now - 10, now - 2000);
    for before in [later, earlier] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cognito-authz"))
            .args(["revoke", "--redis", "--sub", "user-1", "--before"])
            .arg(before.to_string())
            .env_clear()
            .envs([
                ("AUTHZ_REDIS_URL", url.as_str()),
                ("AUTHZ_REDIS_SIGNING_KEY_FILE", key.as_str()),
            ])
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let replica = replica(&idp, &url, &key, &admin).await;
    let between = cognito_authz::revocation::TokenIds {
        jti: None,
        origin_jti: None,
        sub: "user-1",
        iat: now - 1000,
    };
    assert!(
        replica.authorizer().revocations().is_revoked(&between, now),
        "the earlier cut-off replaced the later one in redis"
    );
    replica.stop().await.unwrap();
    std::fs::remove_dir_all(dir).ok();
}

/// A listing cut short by its bound still shows each user it names with the latest cut-off
/// Redis holds for them, wherever the scan met that key (after the bound was reached too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_listing_shows_each_listed_user_with_the_latest_cut_off() {
    use cognito_authz::revocation::{entry_lifetime, Entry, Revocation};
    use cognito_authz::shared::Shared;
    needs_redis_server();
    let (_redis, url) = Redis::start();
    answering(&url).await;
    let writer = Shared::writer(url.as_str(), &[]).unwrap();
    let now = cognito_authz::unix_now();
    let lifetime = entry_lifetime(Duration::from_secs(5));
    // Twenty users, five cut-offs each, the latest `now - 10`.
    for user in 0..20 {
        for step in 0..5 {
            let sub = Revocation::Sub {
                sub: format!("user-{user}"),
                before: now - 10 - 500 * step,
            };
            writer
                .publish_once(&Entry::new(sub, now, lifetime))
                .await
                .unwrap();
        }
    }
    let listing = writer.live_revocations(10).await.unwrap();
    assert!(listing.truncated, "twenty users over a bound of ten");
    assert_eq!(listing.entries.len(), 10);
    for entry in &listing.entries {
        let Revocation::Sub { before, .. } = &entry.revocation else {
            panic!("{entry:?}")
        };
        assert_eq!(*before, now - 10, "{entry:?}");
    }
}
