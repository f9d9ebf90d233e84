//! Revocation state shared by every replica through Redis (`AUTHZ_REDIS_URL`): revocations as
//! expiring keys plus a publish/subscribe channel, Cognito verdicts as expiring keys, and a
//! short lock so replicas checking one token make one `GetUser` call between them.
//!
//! Redis is a helper, never a dependency of a decision: every operation has a short timeout,
//! and while Redis is down (the subscriber says so) nothing waits on it and decisions go on from
//! local state. The subscriber reloads every live revocation after each (re)subscription, so a
//! replica that missed messages while disconnected catches up.
//!
//! Keys (each expires on its own):
//! - `cognito-authz:rev:{jti|session}:{id}` and `cognito-authz:rev:cut:{before}:{sub}` (a key
//!   per cut-off, so that an earlier one never replaces a later one): a revocation entry as
//!   JSON, until it can match no valid token (about 150 bytes with the key); on a cluster
//!   `cognito-authz:{rev}:...`, one hash tag, so that every revocation lives in one slot: the
//!   start-up load is that slot's primary's `SCAN` (in a script naming a key of the slot),
//!   and every multi-key operation stays in it;
//! - `cognito-authz:verdict:{sha256 prefix of the token, hex}`: `valid:{unix}` or
//!   `revoked:{unix}`, for the verdict TTL plus the grace (about 90 bytes);
//! - `cognito-authz:lock:{same}`: held by the replica asking Cognito, for the call's timeout.
//!
//! Channel: `cognito-authz:revocations`, one JSON entry per message; on a cluster, the sharded
//! channel `cognito-authz:{rev}:revocations` (`SSUBSCRIBE`/`SPUBLISH`), served by the node that
//! holds the revocations, so that one shard's failover moves both together.
//!
//! On a cluster (`AUTHZ_REDIS_CLUSTER`), redis-rs's cluster client routes each command by its
//! key and follows failovers, and re-subscribes by itself wherever the channel's slot moved
//! (RESP3 pushes). Redis counts as up while the node holding the revocations answers (a probe
//! every [`PROBE_INTERVAL`]); each time it comes back, and each time the client re-subscribes,
//! the subscriber catches up as after a reconnect. An operator's revocation waits (`WAIT`) for
//! a replica to hold it before it is announced, so that a failover right after it cannot lose
//! it.
//!
//! With signing keys (`AUTHZ_REDIS_SIGNING_KEY_FILE`), each value is `{tag hex}.{value}` with a
//! tag per key, and opens with any: a replica adds its keys' tags to every entry one of its keys
//! signed that lacks one (at each load, and as such entries are announced), so the old key can
//! be dropped once every replica holds the new one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{PushInfo, PushKind};
use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt as _;
use tracing::{info, warn, Instrument as _};

use crate::clock::Clock;
use crate::lock;
use crate::revocation::{
    CognitoVerdict, Entry, Refused, Revocation, RevocationList, MAX_ENTRY_BYTES,
};

/// Every Redis operation an error is counted under (the `op` label of `redis_errors`).
pub const OPERATIONS: [&str; 7] = ["get", "set", "publish", "lock", "load", "resign", "wait"];
/// The channel revocations are announced on.
pub const CHANNEL: &str = "cognito-authz:revocations";
/// The sharded channel revocations are announced on in a cluster: its hash tag is the
/// revocations' own, so one node serves both.
pub const CLUSTER_CHANNEL: &str = "cognito-authz:{rev}:revocations";
/// Where revocations are stored on one Redis. Unchanged since the first release, so that
/// replicas of every version share them.
const REVOKED_PREFIX: &str = "cognito-authz:rev:";
/// Where revocations are stored in a cluster: under one hash tag, so in one slot. Still
/// `cognito-authz:`-prefixed, so one ACL key pattern (`~cognito-authz:*`) covers both layouts.
const CLUSTER_REVOKED_PREFIX: &str = "cognito-authz:{rev}:";
/// How often a cluster subscriber asks the node holding the revocations whether it answers:
/// a failover is noticed, and caught up on, within about this much of the promotion.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(250);
/// How long an operator's revocation waits for a replica of its primary to hold it.
const REPLICATION_WAIT: Duration = Duration::from_millis(150);
/// Most cluster pushes (messages, re-subscriptions) queued for the subscriber; past it one is
/// dropped and the subscriber reloads every revocation instead.
const MAX_QUEUED_PUSHES: usize = 4096;
const VERDICT_PREFIX: &str = "cognito-authz:verdict:";
const LOCK_PREFIX: &str = "cognito-authz:lock:";
/// How long one Redis operation may take before the decision goes on without it.
pub const OPERATION_TIMEOUT: Duration = Duration::from_millis(250);
/// How long one operation of a one-shot writer ([`Shared::writer`]) may take: no request waits
/// on it, and the Redis it reaches may be across a network, behind TLS.
pub const WRITER_TIMEOUT: Duration = Duration::from_secs(3);

/// A Redis operation that did not happen.
#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    /// Redis is known to be down: not even tried.
    #[error("redis is down")]
    Down,
    /// The operation failed or timed out.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// No answer within the link's timeout ([`OPERATION_TIMEOUT`] for a replica).
    #[error("redis: timeout")]
    Timeout,
}

impl SharedError {
    /// A stable label for traces.
    pub fn as_str(&self) -> &'static str {
        match self {
            SharedError::Down => "down",
            SharedError::Redis(_) => "error",
            SharedError::Timeout => "timeout",
        }
    }
}

/// Counts Redis state changes and failures; the server plugs its metrics in.
pub trait SharedObserver: Send + Sync {
    /// Redis went up (`true`) or down.
    fn redis_up(&self, up: bool);
    /// An operation failed (`op` is a small closed set: get, set, lock, publish, load).
    fn redis_error(&self, op: &'static str);
}

/// Where the shared state lives: one Redis, or a cluster reached through seed nodes. Its
/// `Debug` shows the URLs without their passwords.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisTarget {
    /// `redis://` or `rediss://` URLs: one Redis, or one or more seed nodes of a cluster (the
    /// same scheme, user and password on each).
    pub urls: Vec<String>,
    /// A Redis Cluster (ElastiCache Serverless, MemoryDB, cluster-mode ElastiCache, Valkey or
    /// Redis Cluster): the cluster client, keys under one hash tag, sharded pub/sub.
    pub cluster: bool,
}

/// A URL (or a cluster's comma-separated seed nodes) with each password replaced
/// (`<unparsable>` for a URL that does not parse).
pub fn redacted_urls(urls: &str) -> String {
    urls.split(',')
        .map(|url| redacted_one(url.trim()))
        .collect::<Vec<_>>()
        .join(",")
}

fn redacted_one(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("redacted"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => "<unparsable>".to_string(),
    }
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let urls: Vec<String> = self.urls.iter().map(|url| redacted_urls(url)).collect();
        f.debug_struct("RedisTarget")
            .field("urls", &urls)
            .field("cluster", &self.cluster)
            .finish()
    }
}

impl From<&str> for RedisTarget {
    fn from(url: &str) -> RedisTarget {
        RedisTarget {
            urls: vec![url.to_string()],
            cluster: false,
        }
    }
}

impl From<&String> for RedisTarget {
    fn from(url: &String) -> RedisTarget {
        RedisTarget::from(url.as_str())
    }
}

/// The connection commands go through.
enum Link {
    /// One Redis: a reconnecting connection, and a client for the subscriber's own.
    Single {
        client: Box<redis::Client>,
        manager: ConnectionManager,
    },
    /// A cluster: one connection per node, routed by slot; its pushes (sharded messages,
    /// re-subscriptions, disconnections) reach the subscriber through `pushes`.
    Cluster {
        connection: ClusterConnection,
        pushes: std::sync::Mutex<Option<mpsc::Receiver<PushInfo>>>,
        overflowed: Arc<AtomicBool>,
    },
}

/// Hands the cluster connection's pushes to the subscriber without blocking the connection:
/// past [`MAX_QUEUED_PUSHES`] one is dropped, and the subscriber reloads every revocation.
struct Pushes {
    sender: mpsc::Sender<PushInfo>,
    overflowed: Arc<AtomicBool>,
}

impl redis::aio::AsyncPushSender for Pushes {
    fn send(&self, info: PushInfo) -> Result<(), redis::aio::SendError> {
        match self.sender.try_send(info) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.overflowed.store(true, Ordering::Relaxed);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(redis::aio::SendError),
        }
    }
}

struct Inner {
    link: Link,
    up: AtomicBool,
    /// The first connection was tried: revocations loaded, or Redis unreachable.
    settled: AtomicBool,
    observer: Arc<dyn SharedObserver>,
    /// Revocations recorded here that Redis did not take: published when it returns.
    pending: std::sync::Mutex<Vec<Entry>>,
    /// Signs what we write and checks what we read (`AUTHZ_REDIS_SIGNING_KEY_FILE`), for a
    /// Redis that others can write to.
    signer: Option<Signer>,
    /// How long one operation may take.
    timeout: Duration,
}

/// A one-shot writer's observer: it has no metrics to count into.
struct Unobserved;

impl SharedObserver for Unobserved {
    fn redis_up(&self, _: bool) {}
    fn redis_error(&self, _: &'static str) {}
}

/// What a one-shot publish ([`Shared::publish_once`]) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// How many subscribers (replicas and modules following Redis right now) heard it.
    pub heard: usize,
    /// In a cluster, whether a replica of the primary confirmed it holds it (`WAIT`): when not,
    /// a failover right now could lose it. None on one Redis, or when the ask failed.
    pub replicated: Option<bool>,
}

/// How far a one-shot publish ([`Shared::publish_once`]) got when it failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Redis did not take the entry: nothing changed.
    #[error("redis did not store it: {0}")]
    NotStored(#[source] SharedError),
    /// Stored, but not announced: subscribers learn of it only when they next load every
    /// revocation (at start-up or after a reconnect).
    #[error("redis stored it but did not announce it: {0}")]
    NotAnnounced(#[source] SharedError),
}

/// HMAC-SHA256 over shared values, one tag per configured key: `{tag hex}.{tag hex}.{value}`
/// (with one key, `{tag hex}.{value}`). A value opens when any of its tags is one of our keys';
/// one with no such tag is ignored, as is an unsigned one while keys are configured.
///
/// Every key signs, not only the first: during a rotation, replicas on `[old, new]` and on
/// `[new, old]` run side by side, and each writes what the other reads. Re-signing only adds the
/// tags a value lacks, so no replica ever takes off a tag another one still needs (with one
/// signing key, a replica still on `[old, new]` would re-sign with `old` what one on `[new, old]`
/// had just re-signed with `new`, and dropping `old` would then forget it).
struct Signer {
    keys: Vec<aws_lc_rs::hmac::Key>,
}

/// A value's content and whether it lacks the tag of one of our keys (to be re-signed).
type Opened<'a> = (&'a str, bool);

/// The hex length of one tag.
const TAG_HEX: usize = 64;
/// Most tags read off one value: twice what the largest key file makes (four keys).
const MAX_TAGS: usize = 8;

/// A value's leading tags (hex, `.`-terminated) and the rest.
fn tags(sealed: &str) -> (Vec<&str>, &str) {
    let mut found = Vec::new();
    let mut rest = sealed;
    while found.len() < MAX_TAGS {
        match rest.split_once('.') {
            Some((tag, after))
                if tag.len() == TAG_HEX && tag.bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                found.push(tag);
                rest = after;
            }
            _ => break,
        }
    }
    (found, rest)
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

impl Signer {
    /// A signer over `keys`; none without keys.
    fn new(keys: &[&[u8]]) -> Option<Signer> {
        if keys.is_empty() {
            return None;
        }
        Some(Signer {
            keys: keys
                .iter()
                .map(|k| aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, k))
                .collect(),
        })
    }

    fn seal(&self, context: &str, value: &str) -> String {
        let signed = format!("{context}|{value}");
        let mut out = String::with_capacity(self.keys.len() * (TAG_HEX + 1) + value.len());
        for key in &self.keys {
            let tag = aws_lc_rs::hmac::sign(key, signed.as_bytes());
            for b in tag.as_ref() {
                out.push_str(&format!("{b:02x}"));
            }
            out.push('.');
        }
        out.push_str(value);
        out
    }

    /// `sealed` with a tag of each of our keys, keeping the tags it carries that none of our
    /// keys made (another replica's keys: a tag is never taken off), within [`MAX_TAGS`].
    fn reseal(&self, context: &str, sealed: &str) -> String {
        let (tags, value) = tags(sealed);
        let signed = format!("{context}|{value}");
        let ours_made = |tag: &&str| {
            decode_hex(tag).is_some_and(|tag| {
                self.keys
                    .iter()
                    .any(|key| aws_lc_rs::hmac::verify(key, signed.as_bytes(), &tag).is_ok())
            })
        };
        let mut out = self.seal(context, value);
        let mut kept = self.keys.len();
        for tag in tags.iter().filter(|tag| !ours_made(tag)) {
            if kept == MAX_TAGS || out.contains(tag) {
                continue;
            }
            out.insert_str(0, &format!("{tag}."));
            kept += 1;
        }
        out
    }

    fn open<'a>(&self, context: &str, sealed: &'a str) -> Option<Opened<'a>> {
        if sealed.len() > MAX_STORED_BYTES {
            return None;
        }
        let (tags, value) = tags(sealed);
        let signed = format!("{context}|{value}");
        let tags: Vec<Vec<u8>> = tags.into_iter().filter_map(decode_hex).collect();
        let held = |key: &aws_lc_rs::hmac::Key| {
            tags.iter()
                .any(|tag| aws_lc_rs::hmac::verify(key, signed.as_bytes(), tag).is_ok())
        };
        let held: Vec<bool> = self.keys.iter().map(held).collect();
        if !held.contains(&true) {
            return None;
        }
        Some((value, held.contains(&false)))
    }
}

/// A value as a replica without keys reads it: its tags, if any, taken off unchecked. Such a
/// replica trusts whatever is in Redis anyway, and so keeps reading what replicas with a key
/// write while signing is being turned on.
fn unsealed(value: &str) -> &str {
    tags(value).1
}

/// The longest value read from Redis: an entry and the most tags it can carry. A longer one is
/// ignored unread (a writer's huge values cost neither memory nor a MAC).
const MAX_STORED_BYTES: usize = MAX_ENTRY_BYTES + MAX_TAGS * (TAG_HEX + 1);

/// `MGET` of string values no longer than `ARGV[1]`; a longer one, or another type, reads as
/// missing (as `MGET` reads another type).
const BOUNDED_MGET_SCRIPT: &str = "local out = {} \
    for i, key in ipairs(KEYS) do out[i] = false \
    if redis.call('TYPE', key).ok == 'string' \
    and redis.call('STRLEN', key) <= tonumber(ARGV[1]) then out[i] = redis.call('GET', key) end \
    end return out";

/// One page of a cluster's revocations with their values, bounded as [`BOUNDED_MGET_SCRIPT`]:
/// `SCAN` run in a script that names a key of the revocations' slot, so the cluster client
/// sends it to that slot's primary, and any other node refuses it (`MOVED`) instead of
/// answering for keys it does not hold. `{cursor, keys, values}`.
const CLUSTER_SCAN_SCRIPT: &str = "local page = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], \
    'COUNT', ARGV[3]) local keys, values = page[2], {} \
    for i, key in ipairs(keys) do values[i] = false \
    if redis.call('TYPE', key).ok == 'string' \
    and redis.call('STRLEN', key) <= tonumber(ARGV[4]) then values[i] = redis.call('GET', key) end \
    end return {page[1], keys, values}";

/// Replaces a revocation with its re-signed value, keeping its expiry, only if it still holds
/// what was read: a later revocation written meanwhile is never replaced by an older one.
const RESEAL_SCRIPT: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
    redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL') return 1 end return 0";

/// Live revocations as a replica reads them from Redis, for the control API's listing.
#[derive(Debug)]
pub struct Listing {
    /// The entries, at most the bound asked for.
    pub entries: Vec<Entry>,
    /// Whether Redis holds more than the bound.
    pub truncated: bool,
}

/// What a revocation is signed over: nothing but itself (the subscriber reads no key name).
const ENTRY_CONTEXT: &str = "revocation";

/// Most revocations kept for publishing later while Redis is down (the list's own cap bounds
/// what can be recorded; this bounds the copy).
const MAX_PENDING: usize = 10_000;

/// A cheap-to-clone handle on the shared state.
#[derive(Clone)]
pub struct Shared {
    inner: Arc<Inner>,
    clock: Clock,
}

/// A revocation's key. A user's cut-off is keyed with its `before` too: revoking the user again
/// with an earlier one (a replayed sign-out, a slower call arriving second) adds a key rather
/// than replacing the later cut-off, and a replica loading them all keeps the latest. `before`
/// (digits, perhaps a sign) comes first and holds no `:`, so no two revocations share a key.
fn key_of(prefix: &str, revocation: &Revocation) -> String {
    match revocation {
        Revocation::Jti(jti) => format!("{prefix}jti:{jti}"),
        Revocation::Session(id) => format!("{prefix}session:{id}"),
        Revocation::Sub { sub, before } => format!("{prefix}cut:{before}:{sub}"),
    }
}

fn hex(key: &[u8; 16]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

impl Shared {
    /// A share over `target` (one Redis, or a cluster's seed nodes). Connects lazily: Redis
    /// may be down at start-up. Call [`Shared::spawn_subscriber`] to follow revocations.
    pub fn new(
        target: impl Into<RedisTarget>,
        observer: Arc<dyn SharedObserver>,
        signing_keys: &[&[u8]],
    ) -> Result<Shared, redis::RedisError> {
        Shared::link(
            &target.into(),
            observer,
            signing_keys,
            OPERATION_TIMEOUT,
            false,
        )
    }

    /// A link for a one-shot writer (`cognito-authz revoke --redis`): the same keys, values and
    /// signing as a replica's, no subscriber, and each operation tried (within
    /// [`WRITER_TIMEOUT`]) since nothing follows whether Redis is up. Publish with
    /// [`Shared::publish_once`].
    pub fn writer(
        target: impl Into<RedisTarget>,
        signing_keys: &[&[u8]],
    ) -> Result<Shared, redis::RedisError> {
        Shared::link(
            &target.into(),
            Arc::new(Unobserved),
            signing_keys,
            WRITER_TIMEOUT,
            true,
        )
    }

    fn link(
        target: &RedisTarget,
        observer: Arc<dyn SharedObserver>,
        signing_keys: &[&[u8]],
        timeout: Duration,
        up: bool,
    ) -> Result<Shared, redis::RedisError> {
        let link = if target.cluster {
            // A one-shot writer (`up` from the start) follows nothing: no pushes.
            Shared::cluster_link(&target.urls, timeout, !up)?
        } else {
            let [url] = target.urls.as_slice() else {
                return Err(redis::RedisError::from((
                    redis::ErrorKind::InvalidClientConfig,
                    "one Redis URL, or cluster mode for several",
                )));
            };
            let client = redis::Client::open(url.as_str())?;
            let config = redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout))
                .set_number_of_retries(1);
            let manager = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
            Link::Single {
                client: Box::new(client),
                manager,
            }
        };
        Ok(Shared {
            inner: Arc::new(Inner {
                link,
                up: AtomicBool::new(up),
                settled: AtomicBool::new(up),
                observer,
                pending: std::sync::Mutex::default(),
                signer: Signer::new(signing_keys),
                timeout,
            }),
            clock: Clock::system(),
        })
    }

    /// A cluster connection over `seeds`, connecting in the background (the cluster may be
    /// down at start-up), with its pushes kept for the subscriber when it `follows`. RESP3,
    /// which the cluster client's pub/sub needs (Redis 7 and Valkey speak it, as ElastiCache
    /// and MemoryDB do).
    fn cluster_link(
        seeds: &[String],
        timeout: Duration,
        follows: bool,
    ) -> Result<Link, redis::RedisError> {
        let client = redis::cluster::ClusterClientBuilder::new(seeds.iter().map(String::as_str))
            .use_protocol(redis::ProtocolVersion::RESP3)
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .retries(1)
            .build()?;
        let overflowed = Arc::new(AtomicBool::new(false));
        let mut config = redis::cluster::ClusterConfig::new()
            .set_connection_timeout(timeout)
            .set_response_timeout(timeout);
        let mut pushes = None;
        if follows {
            let (sender, receiver) = mpsc::channel(MAX_QUEUED_PUSHES);
            config = config.set_push_sender(Pushes {
                sender,
                overflowed: overflowed.clone(),
            });
            pushes = Some(receiver);
        }
        Ok(Link::Cluster {
            connection: client.get_pending_async_connection_with_config(config),
            pushes: std::sync::Mutex::new(pushes),
            overflowed,
        })
    }

    /// Whether this link is to a cluster.
    fn clustered(&self) -> bool {
        matches!(self.inner.link, Link::Cluster { .. })
    }

    /// Where revocations are stored, in this link's layout.
    fn revoked_prefix(&self) -> &'static str {
        if self.clustered() {
            CLUSTER_REVOKED_PREFIX
        } else {
            REVOKED_PREFIX
        }
    }

    /// A revocation's key, in this link's layout.
    fn revocation_key(&self, revocation: &Revocation) -> String {
        key_of(self.revoked_prefix(), revocation)
    }

    /// The same link judging expiry by `clock` (a manual one in tests).
    pub fn with_clock(mut self, clock: Clock) -> Shared {
        self.clock = clock;
        self
    }

    /// Whether Redis is reachable, as the subscriber last saw it.
    pub fn is_up(&self) -> bool {
        self.inner.up.load(Ordering::Relaxed)
    }

    /// Whether the first connection was tried: the revocations in Redis are loaded, or Redis
    /// could not be reached. Until then a replica is not ready: serving before the load would
    /// admit, for a moment, tokens revoked elsewhere.
    pub fn settled(&self) -> bool {
        self.inner.settled.load(Ordering::Relaxed)
    }

    fn set_up(&self, up: bool) {
        if self.inner.up.swap(up, Ordering::Relaxed) != up {
            if up {
                info!("redis is up: revocations and verdicts are shared");
            } else {
                warn!("redis is down: deciding from local state");
            }
            self.inner.observer.redis_up(up);
        }
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        command: &redis::Cmd,
    ) -> Result<T, SharedError> {
        self.run_on(op, command, None).await
    }

    /// Runs `command` on the primary of the revocations' slot (in a cluster; on the one Redis
    /// otherwise): `WAIT`, which names no key, and `SPUBLISH`. The client sends it to a replica
    /// or another node when that primary is not connected: `SPUBLISH` is then redirected
    /// (`MOVED`), `WAIT` answers wrongly or fails, which only changes what is said about it.
    async fn run_at_revocations<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        command: &redis::Cmd,
    ) -> Result<T, SharedError> {
        self.run_on(op, command, Some(CLUSTER_REVOKED_PREFIX)).await
    }

    async fn run_on<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        command: &redis::Cmd,
        slot_of: Option<&str>,
    ) -> Result<T, SharedError> {
        if !self.is_up() {
            return Err(SharedError::Down);
        }
        let span = crate::trace::redis_span(op);
        let result = tokio::time::timeout(self.inner.timeout, self.query(command, slot_of))
            .instrument(span.clone())
            .await
            .map_err(|_| SharedError::Timeout)
            .and_then(|r| r.map_err(SharedError::from));
        if let Err(err) = &result {
            self.inner.observer.redis_error(op);
            crate::trace::record_failure(&span, err.as_str());
        }
        result
    }

    /// `command`'s answer, over either link; in a cluster, from the primary of `slot_of`'s slot
    /// when given, else wherever the client routes it (by its key).
    async fn query<T: redis::FromRedisValue>(
        &self,
        command: &redis::Cmd,
        slot_of: Option<&str>,
    ) -> redis::RedisResult<T> {
        match (&self.inner.link, slot_of) {
            (Link::Single { manager, .. }, _) => command.query_async(&mut manager.clone()).await,
            (Link::Cluster { connection, .. }, None) => {
                command.query_async(&mut connection.clone()).await
            }
            (Link::Cluster { connection, .. }, Some(key)) => {
                let route = SingleNodeRoutingInfo::SpecificNode(Route::with_key(
                    key.as_bytes(),
                    SlotAddr::Master,
                ));
                let value = connection
                    .clone()
                    .route_command(command.clone(), RoutingInfo::SingleNode(route))
                    .await?;
                Ok(T::from_redis_value(value)?)
            }
        }
    }

    /// Stores a revocation until it expires and announces it to every replica. When Redis does
    /// not take it, it is kept and published when Redis returns (the error still says it was
    /// not shared now).
    pub async fn publish(&self, entry: &Entry) -> Result<(), SharedError> {
        let result = self.publish_now(entry).await;
        if result.is_err() {
            let mut pending = lock(&self.inner.pending);
            if pending.len() < MAX_PENDING {
                pending.push(entry.clone());
            } else {
                warn!("too many revocations wait for redis: this one stays local");
            }
        }
        result
    }

    /// Publishes what waited for Redis; what fails again waits on. All are stored first, then
    /// one wait for a replica covers them all (`WAIT` counts every write before it), then each
    /// is announced: a wait each would keep the subscriber from its peers' revocations for
    /// 150 ms a revocation after a failover, when the promoted primary has no replica yet.
    async fn flush_pending(&self) -> Result<usize, SharedError> {
        let waiting = std::mem::take(&mut *lock(&self.inner.pending));
        let now = self.clock.now();
        let waiting: Vec<Entry> = waiting.into_iter().filter(|e| e.expires > now).collect();
        let wait_on = |from: usize| lock(&self.inner.pending).extend_from_slice(&waiting[from..]);
        let mut stored = Vec::with_capacity(waiting.len());
        for entry in &waiting {
            match self.store(entry).await {
                Ok(value) => stored.push(value),
                Err(err) => {
                    // Those stored are not announced yet: they wait too.
                    wait_on(0);
                    return Err(err);
                }
            }
        }
        if !stored.is_empty() {
            self.replicate().await;
        }
        for (announced, value) in stored.iter().enumerate() {
            if let Err(err) = self.announce(value).await {
                wait_on(announced);
                return Err(err);
            }
        }
        Ok(stored.len())
    }

    /// A value as written: sealed when a key is configured.
    fn seal(&self, context: &str, value: String) -> String {
        match &self.inner.signer {
            Some(signer) => signer.seal(context, &value),
            None => value,
        }
    }

    /// A value as read: its content if one of our keys sealed it (or none is configured), and
    /// whether that was a key other than the signing one.
    fn open<'a>(&self, context: &str, value: &'a str) -> Option<Opened<'a>> {
        match &self.inner.signer {
            Some(signer) => {
                let opened = signer.open(context, value);
                if opened.is_none() {
                    warn!("ignoring a redis value that is not signed with our keys");
                }
                opened
            }
            None => Some((unsealed(value), false)),
        }
    }

    /// Writes the revocation `sealed` (as read at `key`) back with our keys' tags added,
    /// keeping its expiry, unless `key` changed since it was read. Whether it was written.
    async fn reseal(&self, key: &str, sealed: &str) -> Result<bool, SharedError> {
        let Some(signer) = &self.inner.signer else {
            return Ok(false);
        };
        let resealed = signer.reseal(ENTRY_CONTEXT, sealed);
        let written: i64 = self
            .run(
                "resign",
                redis::cmd("EVAL")
                    .arg(RESEAL_SCRIPT)
                    .arg(1)
                    .arg(key)
                    .arg(sealed)
                    .arg(resealed),
            )
            .await?;
        Ok(written == 1)
    }

    /// Re-signs an announced revocation an older key signed; the message is the stored value.
    async fn reseal_message(&self, sealed: &str, content: &str) {
        if content.len() > MAX_ENTRY_BYTES {
            return;
        }
        let Ok(entry) = serde_json::from_str::<Entry>(content) else {
            return;
        };
        match self
            .reseal(&self.revocation_key(&entry.revocation), sealed)
            .await
        {
            Ok(true) => info!(
                resigned = 1,
                "a revocation signed with an older key is re-signed"
            ),
            Ok(false) => {}
            Err(err) => warn!(cause = %err, "re-signing a revocation failed"),
        }
    }

    async fn publish_now(&self, entry: &Entry) -> Result<(), SharedError> {
        let stored = self.store(entry).await?;
        self.replicate().await;
        self.announce(&stored).await?;
        Ok(())
    }

    /// In a cluster, waits (up to [`REPLICATION_WAIT`]) until a replica of the revocations'
    /// primary holds what it just took: replication is asynchronous, and a primary that failed
    /// right after acknowledging a revocation would otherwise take it along, unseen by any
    /// replica started after the promotion. A replica that does not confirm in time (or a
    /// service without `WAIT`) is logged, not an error: the primary holds the revocation, and
    /// the replicas that hear it hold it too.
    ///
    /// Whether a replica confirmed it; none when not asked (one Redis) or the ask failed.
    async fn replicate(&self) -> Option<bool> {
        if !self.clustered() {
            return None;
        }
        let millis = u64::try_from(REPLICATION_WAIT.as_millis()).unwrap_or(u64::MAX);
        let command = redis::cmd("WAIT").arg(1).arg(millis).clone();
        match self.run_at_revocations::<i64>("wait", &command).await {
            Ok(0) => {
                warn!(
                    "no replica confirmed a revocation in time: a failover now could lose it \
                     from redis (replicas that heard it keep it)"
                );
                Some(false)
            }
            Ok(_) => Some(true),
            Err(err) => {
                warn!(cause = %err, "waiting for a replica to hold a revocation failed");
                None
            }
        }
    }

    /// Stores `entry` under its key until it expires; the value as stored.
    async fn store(&self, entry: &Entry) -> Result<String, SharedError> {
        let json = self.seal(
            ENTRY_CONTEXT,
            serde_json::to_string(entry).unwrap_or_default(),
        );
        let expires = u64::try_from(entry.expires).unwrap_or(0);
        self.run::<()>(
            "set",
            redis::cmd("SET")
                .arg(self.revocation_key(&entry.revocation))
                .arg(&json)
                .arg("EXAT")
                .arg(expires),
        )
        .await?;
        Ok(json)
    }

    /// Announces a stored value on the channel; how many subscribers heard it.
    async fn announce(&self, stored: &str) -> Result<usize, SharedError> {
        let heard: i64 = if self.clustered() {
            let command = redis::cmd("SPUBLISH")
                .arg(CLUSTER_CHANNEL)
                .arg(stored)
                .clone();
            self.run_at_revocations("publish", &command).await?
        } else {
            self.run("publish", redis::cmd("PUBLISH").arg(CHANNEL).arg(stored))
                .await?
        };
        Ok(usize::try_from(heard).unwrap_or(0))
    }

    /// Stores and announces a revocation as [`Shared::publish`] does, once: nothing is kept to
    /// retry (a one-shot writer has no later). How many subscribers (replicas and modules
    /// following Redis right now) heard it.
    pub async fn publish_once(&self, entry: &Entry) -> Result<Published, PublishError> {
        let stored = self.store(entry).await.map_err(PublishError::NotStored)?;
        let replicated = self.replicate().await;
        let heard = self
            .announce(&stored)
            .await
            .map_err(PublishError::NotAnnounced)?;
        Ok(Published { heard, replicated })
    }

    /// A verdict another replica (or this one) stored for a token: the verdict and when Cognito
    /// gave it.
    pub async fn verdict(
        &self,
        key: &[u8; 16],
    ) -> Result<Option<(CognitoVerdict, i64)>, SharedError> {
        // At most one byte more than a verdict could be: a longer value is not one.
        let value: String = self
            .run(
                "get",
                redis::cmd("GETRANGE")
                    .arg(format!("{VERDICT_PREFIX}{}", hex(key)))
                    .arg(0)
                    .arg(MAX_STORED_BYTES),
            )
            .await?;
        let value = Some(value).filter(|v| !v.is_empty() && v.len() <= MAX_STORED_BYTES);
        // Bound to the token's key: a verdict cannot be moved onto another token.
        let context = hex(key);
        Ok(value.and_then(|v| parse_verdict(self.open(&context, &v)?.0, self.clock.now())))
    }

    /// Stores a verdict for `keep`.
    pub async fn store_verdict(
        &self,
        key: &[u8; 16],
        verdict: CognitoVerdict,
        checked_at: i64,
        keep: Duration,
    ) -> Result<(), SharedError> {
        let value = self.seal(
            &hex(key),
            match verdict {
                CognitoVerdict::Valid => format!("valid:{checked_at}"),
                CognitoVerdict::Revoked => format!("revoked:{checked_at}"),
            },
        );
        self.run::<()>(
            "set",
            redis::cmd("SET")
                .arg(format!("{VERDICT_PREFIX}{}", hex(key)))
                .arg(value)
                .arg("PX")
                .arg(u64::try_from(keep.as_millis()).unwrap_or(u64::MAX).max(1)),
        )
        .await
    }

    /// Takes the lock on asking Cognito about a token for `hold`; `false` when another replica
    /// holds it.
    pub async fn try_lock(&self, key: &[u8; 16], hold: Duration) -> Result<bool, SharedError> {
        let set: Option<String> = self
            .run(
                "lock",
                redis::cmd("SET")
                    .arg(format!("{LOCK_PREFIX}{}", hex(key)))
                    .arg("1")
                    .arg("NX")
                    .arg("PX")
                    .arg(u64::try_from(hold.as_millis()).unwrap_or(u64::MAX).max(1)),
            )
            .await?;
        Ok(set.is_some())
    }

    /// One step of a scan over the revocations in Redis: the next cursor (0: done) and each
    /// key found with its value.
    async fn scan_revocations(
        &self,
        cursor: u64,
    ) -> Result<(u64, Vec<(String, String)>), SharedError> {
        if self.clustered() {
            return self.scan_cluster_revocations(cursor).await;
        }
        let (next, keys): (u64, Vec<Bytes>) = self
            .run(
                "load",
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(format!("{}*", self.revoked_prefix()))
                    .arg("COUNT")
                    .arg(500),
            )
            .await?;
        if keys.is_empty() {
            return Ok((next, Vec::new()));
        }
        // Only values a revocation could be: a writer's 200 MB value is never read into memory.
        let values: Vec<Option<Bytes>> = self
            .run(
                "load",
                redis::cmd("EVAL")
                    .arg(BOUNDED_MGET_SCRIPT)
                    .arg(keys.len())
                    .arg(&keys)
                    .arg(MAX_STORED_BYTES),
            )
            .await?;
        Ok((next, texts(keys, values)))
    }

    /// [`Shared::scan_revocations`] in a cluster: every revocation is in one slot, so its
    /// primary's `SCAN` finds them all.
    async fn scan_cluster_revocations(
        &self,
        cursor: u64,
    ) -> Result<(u64, Vec<(String, String)>), SharedError> {
        let (next, keys, values): (String, Vec<Bytes>, Vec<Option<Bytes>>) = self
            .run(
                "load",
                redis::cmd("EVAL")
                    .arg(CLUSTER_SCAN_SCRIPT)
                    .arg(1)
                    .arg(format!("{CLUSTER_REVOKED_PREFIX}probe"))
                    .arg(cursor)
                    .arg(format!("{CLUSTER_REVOKED_PREFIX}*"))
                    .arg(500)
                    .arg(MAX_STORED_BYTES),
            )
            .await?;
        let next = next.parse().map_err(|_| {
            redis::RedisError::from((redis::ErrorKind::Parse, "a SCAN cursor that is no number"))
        })?;
        Ok((next, texts(keys, values)))
    }

    /// Takes every live revocation in Redis into `list`, and re-signs with the signing key what
    /// an older key signed. How many were taken, and how many re-signed.
    async fn load_all(&self, list: &RevocationList) -> Result<(usize, usize), SharedError> {
        let (mut cursor, mut loaded, mut resigned) = (0, 0, 0);
        loop {
            let (next, found) = self.scan_revocations(cursor).await?;
            for (key, value) in &found {
                let Some((content, stale)) = self.open(ENTRY_CONTEXT, value) else {
                    continue;
                };
                if admit(list, content, self.clock.now()) {
                    loaded += 1;
                }
                if stale {
                    match self.reseal(key, value).await {
                        Ok(written) => resigned += usize::from(written),
                        Err(err) => warn!(cause = %err, "re-signing a revocation failed"),
                    }
                }
            }
            if next == 0 {
                return Ok((loaded, resigned));
            }
            cursor = next;
        }
    }

    /// The live revocations in Redis this replica would take (signed with one of its keys, or
    /// any while it has none; within the control API's bounds), at most `max`. A user's
    /// cut-offs (a key each) are one revocation, as a replica holds them: listed once, with the
    /// latest `before` and expiry. Past `max` the scan goes on, so that a user listed already
    /// still shows the latest cut-off Redis holds.
    pub async fn live_revocations(&self, max: usize) -> Result<Listing, SharedError> {
        let mut listing = Listing {
            entries: Vec::new(),
            truncated: false,
        };
        // Where each user's cut-off is in `entries`.
        let mut users: HashMap<String, usize> = HashMap::new();
        let mut cursor = 0;
        loop {
            let (next, found) = self.scan_revocations(cursor).await?;
            let now = self.clock.now();
            for (_, value) in &found {
                let entry = self
                    .open(ENTRY_CONTEXT, value)
                    .filter(|(content, _)| content.len() <= MAX_ENTRY_BYTES)
                    .and_then(|(content, _)| serde_json::from_str::<Entry>(content).ok())
                    .filter(|entry| entry.admissible(now, MAX_SKEW_SECS).is_ok());
                let Some(entry) = entry else { continue };
                if let Revocation::Sub { sub, before } = &entry.revocation {
                    if let Some(listed) = users.get(sub).and_then(|&at| listing.entries.get_mut(at))
                    {
                        keep_latest_cut_off(listed, *before, entry.expires);
                        continue;
                    }
                }
                if listing.entries.len() == max {
                    listing.truncated = true;
                    continue;
                }
                if let Revocation::Sub { sub, .. } = &entry.revocation {
                    users.insert(sub.clone(), listing.entries.len());
                }
                listing.entries.push(entry);
            }
            if next == 0 {
                return Ok(listing);
            }
            cursor = next;
        }
    }

    /// Follows the revocation channel into `list` until `stop` turns true: subscribe, load every
    /// live revocation, apply messages; on a disconnect, mark Redis down and start over. In a
    /// cluster, the cluster client re-subscribes by itself: see [`Shared::follow_cluster`].
    pub fn spawn_subscriber(
        &self,
        list: Arc<RevocationList>,
        mut stop: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let shared = self.clone();
        // Until the first load (or the first failure to reach Redis), no token is admitted.
        list.set_loading(!self.settled());
        tokio::spawn(async move {
            match &shared.inner.link {
                Link::Single { client, .. } => shared.follow(client, &list, &mut stop).await,
                Link::Cluster { .. } => shared.follow_cluster(&list, &mut stop).await,
            }
        })
    }

    /// What a (re)subscription catches up on: first what was revoked here while Redis was
    /// down, then every live revocation in Redis (what was announced while this replica was not
    /// subscribed is stored there). The replica is settled after the first.
    async fn catch_up(&self, list: &RevocationList) {
        // The command connection may still hold the socket Redis dropped: its first use fails
        // and reconnects, so try a few times.
        for attempt in 1..=3 {
            match self.flush_pending().await {
                Ok(0) => break,
                Ok(published) => {
                    info!(
                        published,
                        "revocations made while redis was down are shared"
                    );
                    break;
                }
                Err(err) if attempt == 3 => {
                    warn!(cause = %err, "sharing revocations made while redis was down failed");
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        match self.load_all(list).await {
            Ok((loaded, resigned)) => {
                info!(loaded, resigned, "revocations loaded from redis");
            }
            Err(err) => warn!(cause = %err, "loading revocations from redis failed"),
        }
        self.settle(list);
    }

    /// The first connection was tried: the revocations are loaded, or Redis is unreachable and
    /// decisions go on from local state.
    fn settle(&self, list: &RevocationList) {
        self.inner.settled.store(true, Ordering::Relaxed);
        list.set_loading(false);
    }

    /// Takes one announced revocation into `list`, re-signing it when an older key signed it.
    async fn take_message(&self, list: &RevocationList, payload: &str) {
        if let Some((value, stale)) = self.open(ENTRY_CONTEXT, payload) {
            admit(list, value, self.clock.now());
            if stale {
                self.reseal_message(payload, value).await;
            }
        }
    }

    /// One Redis's subscriber: a pub/sub connection of its own; each time it is made, catch up.
    async fn follow(
        &self,
        client: &redis::Client,
        list: &RevocationList,
        stop: &mut watch::Receiver<bool>,
    ) {
        let mut backoff = Duration::from_millis(100);
        while !*stop.borrow() {
            let session = async {
                let mut pubsub = tokio::time::timeout(OPERATION_TIMEOUT, client.get_async_pubsub())
                    .await
                    .map_err(|_| SharedError::Timeout)??;
                pubsub.subscribe(CHANNEL).await?;
                // Subscribed first, then loaded: nothing published in between is missed.
                self.set_up(true);
                self.catch_up(list).await;
                let mut messages = pubsub.on_message();
                while let Some(message) = messages.next().await {
                    let payload: String = message.get_payload().unwrap_or_default();
                    self.take_message(list, &payload).await;
                }
                Ok::<(), SharedError>(())
            };
            tokio::select! {
                result = session => {
                    self.settle(list);
                    if let Err(err) = result {
                        warn!(cause = %err, "redis subscription failed");
                    } else {
                        backoff = Duration::from_millis(100);
                    }
                }
                _ = stop.wait_for(|s| *s) => break,
            }
            self.set_up(false);
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// A cluster's subscriber. The cluster client keeps the sharded subscription itself: after
    /// a reconnect or a failover it re-subscribes on whichever node now holds the channel's
    /// slot, and says so with an `ssubscribe` push. Each such push, and each time the node
    /// holding the revocations answers the probe again after it did not, the subscriber
    /// catches up. Redis is up while that node answers: a cluster with another shard down is
    /// up (verdicts and locks on that shard fail on their own, counted, and decisions go on).
    async fn follow_cluster(&self, list: &RevocationList, stop: &mut watch::Receiver<bool>) {
        let Link::Cluster {
            connection,
            pushes,
            overflowed,
        } = &self.inner.link
        else {
            return;
        };
        let Some(mut pushes) = lock(pushes).take() else {
            warn!("this cluster link is followed already");
            return;
        };
        let mut probe = tokio::time::interval(PROBE_INTERVAL);
        probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stopped(stop) => return,
                push = pushes.recv() => {
                    let Some(push) = push else { return };
                    match push.kind {
                        PushKind::SMessage => {
                            let payload = push.data.into_iter().nth(1).and_then(|value| {
                                <String as redis::FromRedisValue>::from_redis_value(value).ok()
                            });
                            self.take_message(list, &payload.unwrap_or_default()).await;
                        }
                        // A (re-)subscription, wherever the slot is now: what was announced
                        // before it is in Redis.
                        PushKind::SSubscribe if self.is_up() => self.catch_up(list).await,
                        // The node dropped the subscription: never asked for here, so the
                        // channel's slot moved away from it (a resharding). The client does not
                        // follow that by itself, and the probe, redirected, still answers:
                        // subscribe where the slot is now, or count Redis down until it can.
                        PushKind::SUnsubscribe => {
                            warn!("redis dropped the subscription: subscribing again");
                            if !self.subscribe_cluster(connection, list).await {
                                self.set_up(false);
                            }
                        }
                        _ => {}
                    }
                }
                _ = probe.tick() => {
                    if !self.probe().await {
                        self.set_up(false);
                        // Unreachable at start-up: settled, deciding from local state.
                        self.settle(list);
                        continue;
                    }
                    if self.is_up() {
                        continue;
                    }
                    // Back (or up for the first time): subscribe where the slot is now, even
                    // if the client says it did so itself, then catch up.
                    self.subscribe_cluster(connection, list).await;
                }
            }
            if overflowed.swap(false, Ordering::Relaxed) && self.is_up() {
                warn!("too many redis messages at once: reloading every revocation");
                self.catch_up(list).await;
            }
        }
    }

    /// Subscribes to the sharded channel wherever its slot is now, then catches up (subscribed
    /// first, then loaded: nothing announced in between is missed). Whether it subscribed.
    async fn subscribe_cluster(
        &self,
        connection: &ClusterConnection,
        list: &RevocationList,
    ) -> bool {
        let mut connection = connection.clone();
        let subscribe = connection.ssubscribe(CLUSTER_CHANNEL);
        match tokio::time::timeout(OPERATION_TIMEOUT, subscribe).await {
            Ok(Ok(())) => {
                self.set_up(true);
                self.catch_up(list).await;
                return true;
            }
            // Refused (an ACL without the sharded channel, say) or silent: as on one Redis,
            // Redis is unavailable and decisions go on from local state, rather than the
            // loading gate refusing every valid token for ever.
            Ok(Err(err)) => warn!(cause = %err, "redis subscription failed"),
            Err(_) => warn!("redis subscription timed out"),
        }
        self.settle(list);
        false
    }

    /// Whether the primary of the revocations' slot answers, tried even while Redis is down. A
    /// key's command, not `PING`: the client answers a key's command from its slot's primary
    /// only, where it would send a `PING` for a node it cannot reach to another.
    async fn probe(&self) -> bool {
        let exists = redis::cmd("EXISTS")
            .arg(format!("{CLUSTER_REVOKED_PREFIX}probe"))
            .clone();
        let answer = self.query::<i64>(&exists, None);
        matches!(
            tokio::time::timeout(self.inner.timeout, answer).await,
            Ok(Ok(_))
        )
    }
}

/// A key or value as Redis holds it: not necessarily UTF-8.
type Bytes = Vec<u8>;

/// A page of keys and their values (none when too long), read as bytes: what is not UTF-8 (a
/// writer's junk) is skipped on its own, rather than failing the whole load.
fn texts(keys: Vec<Bytes>, values: Vec<Option<Bytes>>) -> Vec<(String, String)> {
    keys.into_iter()
        .zip(values)
        .filter_map(|(key, value)| {
            Some((
                String::from_utf8(key).ok()?,
                String::from_utf8(value?).ok()?,
            ))
        })
        .collect()
}

/// Makes a listed user's cut-off the later of it and another (`before`, `expires`), as
/// [`RevocationList`] keeps them.
fn keep_latest_cut_off(listed: &mut Entry, later: i64, expires: i64) {
    if let Revocation::Sub { before, .. } = &mut listed.revocation {
        *before = (*before).max(later);
    }
    listed.expires = listed.expires.max(expires);
}

/// Returns once `stop` turns true (holding no borrow of it across the wait's end).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// How far in the future a shared time may lie: the largest clock leeway. A verdict stamped
/// later would stay fresh for ever; a `before` later would revoke tokens not yet issued.
const MAX_SKEW_SECS: i64 = crate::clock::MAX_LEEWAY_SECS as i64;

/// A verdict as stored (`valid:{unix}` or `revoked:{unix}`), unless it is malformed or stamped
/// in the future: whoever can write to Redis must not make a verdict fresh for ever.
fn parse_verdict(value: &str, now: i64) -> Option<(CognitoVerdict, i64)> {
    let (verdict, at) = value.split_once(':')?;
    let verdict = match verdict {
        "valid" => CognitoVerdict::Valid,
        "revoked" => CognitoVerdict::Revoked,
        _ => return None,
    };
    let at: i64 = at.parse().ok()?;
    (at <= now.saturating_add(MAX_SKEW_SECS)).then_some((verdict, at))
}

/// Takes one revocation from Redis into `list` under the same bounds as the admin API: at most
/// [`MAX_ENTRY_BYTES`], well-formed, ids bounded, `before` not in the future, and the share of
/// the list's cap that entries learned from Redis may fill
/// ([`RevocationList::insert_learned`]). Whether it was taken.
fn admit(list: &RevocationList, value: &str, now: i64) -> bool {
    if value.len() > MAX_ENTRY_BYTES {
        warn!(
            bytes = value.len(),
            "ignoring an oversized revocation from redis"
        );
        list.refused(Refused::TooLarge);
        return false;
    }
    let Ok(entry) = serde_json::from_str::<Entry>(value) else {
        warn!("ignoring a malformed revocation from redis");
        return false;
    };
    match entry
        .admissible(now, MAX_SKEW_SECS)
        .and_then(|()| list.insert_learned(&entry))
    {
        Ok(()) => true,
        Err(why) => {
            if why != Refused::Full {
                list.refused(why);
            }
            warn!(cause = %why, "ignoring a revocation from redis");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    /// Every operation an error is counted under is in [`OPERATIONS`], the list the dynamic
    /// module defines its Envoy stats from (one it lacks is counted as `other`).
    #[test]
    fn every_redis_operation_is_listed() {
        let source = include_str!("shared.rs");
        let ops: Vec<&str> = source
            // Spelt in two, so that this line is not one of the calls it finds.
            .split(concat!(".ru", "n("))
            .skip(1)
            .filter_map(|rest| rest.trim_start().strip_prefix('"')?.split('"').next())
            .collect();
        assert!(ops.len() >= 5, "{ops:?}");
        for op in ops {
            assert!(OPERATIONS.contains(&op), "{op} is not in OPERATIONS");
        }
    }

    use super::*;

    #[test]
    fn a_redis_target_shows_no_password_in_debug() {
        let target = RedisTarget {
            urls: vec![
                "rediss://app:s3cret-pw@a.example:6379".to_string(),
                "redis://:0ther-pw@b.example".to_string(),
            ],
            cluster: true,
        };
        let shown = format!("{target:?}");
        assert!(
            !shown.contains("s3cret-pw") && !shown.contains("0ther-pw"),
            "{shown}"
        );
        assert!(
            shown.contains("a.example") && shown.contains("redacted"),
            "{shown}"
        );
    }

    #[test]
    fn keys_name_the_kind_and_the_id() {
        assert_eq!(
            key_of(REVOKED_PREFIX, &Revocation::Session("s-1".into())),
            "cognito-authz:rev:session:s-1"
        );
        assert_eq!(
            key_of(CLUSTER_REVOKED_PREFIX, &Revocation::Jti("j".into())),
            "cognito-authz:{rev}:jti:j"
        );
        assert_eq!(
            key_of(
                REVOKED_PREFIX,
                &Revocation::Sub {
                    sub: "u".into(),
                    before: 5
                }
            ),
            "cognito-authz:rev:cut:5:u"
        );
        // A later and an earlier cut-off for one user: two keys, neither replacing the other.
        let sub = |before| Revocation::Sub {
            sub: "u".into(),
            before,
        };
        assert_ne!(
            key_of(REVOKED_PREFIX, &sub(5)),
            key_of(REVOKED_PREFIX, &sub(4))
        );
        assert_eq!(hex(&[0xab; 16]).len(), 32);
    }

    #[test]
    fn shared_entries_are_bounded_like_the_admin_apis() {
        // Three: entries learned from Redis fill two of them.
        let list = RevocationList::new(3, None);
        let now = 1_000_000;
        let jti = |id: &str| {
            format!(
                r#"{{"revocation":{{"jti":"{id}"}},"expires":{}}}"#,
                now + 100
            )
        };
        assert!(admit(&list, &jti("a"), now));
        assert!(!admit(&list, &jti(&"x".repeat(300)), now), "an id too long");
        assert!(
            !admit(&list, &"x".repeat(MAX_ENTRY_BYTES + 1), now),
            "a message too large"
        );
        assert!(!admit(&list, "{not json", now));
        let sub = |before: i64| {
            format!(
                r#"{{"revocation":{{"sub":{{"sub":"u","before":{before}}}}},"expires":{}}}"#,
                now + 100
            )
        };
        assert!(
            !admit(&list, &sub(now + 3_600), now),
            "before in the future"
        );
        assert!(admit(&list, &sub(now), now));
        assert!(!admit(&list, &jti("b"), now), "past the cap");
        assert_eq!(list.len(), 2);
    }

    /// A module has no readiness: until the first load from Redis (or the first failure to
    /// reach it), its list says it is loading, and the decision core admits no token.
    #[tokio::test]
    async fn the_list_is_loading_until_the_subscriber_settles() {
        // Takes connections and never answers: the subscriber waits its timeout out.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("redis://{}/", silent.local_addr().unwrap());
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((socket, _)) = silent.accept().await {
                open.push(socket);
            }
        });
        let shared = Shared::new(url.as_str(), Arc::new(Unobserved), &[]).unwrap();
        let list = Arc::new(RevocationList::new(10, None));
        let (_stop, stop) = watch::channel(false);
        let _subscriber = shared.spawn_subscriber(list.clone(), stop);
        assert!(list.loading(), "loading from the start");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while list.loading() {
            assert!(std::time::Instant::now() < deadline, "never settled");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Unreachable: deciding from local state, as a replica then is ready.
        assert!(shared.settled());
        held.abort();
    }

    /// A cluster whose seeds take connections and never answer (or refuse them): the
    /// subscriber settles within about a second, deciding from local state, and keeps no
    /// module refusing every valid token.
    #[tokio::test]
    async fn a_cluster_that_never_answers_settles_the_loading_gate() {
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let urls = vec![
            format!("redis://u:pw@{}/", silent.local_addr().unwrap()),
            format!("redis://u:pw@{}/", closed.local_addr().unwrap()),
        ];
        drop(closed);
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((socket, _)) = silent.accept().await {
                open.push(socket);
            }
        });
        let target = RedisTarget {
            urls,
            cluster: true,
        };
        let shared = Shared::new(target, Arc::new(Unobserved), &[]).unwrap();
        let list = Arc::new(RevocationList::new(10, None));
        let (_stop, stop) = watch::channel(false);
        let _subscriber = shared.spawn_subscriber(list.clone(), stop);
        assert!(list.loading(), "loading from the start");
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while list.loading() {
            assert!(std::time::Instant::now() < deadline, "never settled");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!shared.is_up());
        held.abort();
    }

    #[test]
    fn a_cluster_push_past_the_queue_is_dropped_and_asks_for_a_reload() {
        use redis::aio::AsyncPushSender as _;
        let (sender, mut receiver) = mpsc::channel(1);
        let overflowed = Arc::new(AtomicBool::new(false));
        let pushes = Pushes {
            sender,
            overflowed: overflowed.clone(),
        };
        let push = || PushInfo {
            kind: PushKind::SMessage,
            data: Vec::new(),
        };
        assert!(pushes.send(push()).is_ok());
        assert!(!overflowed.load(Ordering::Relaxed));
        // Full: never blocks the connection; the subscriber reloads instead.
        assert!(pushes.send(push()).is_ok());
        assert!(overflowed.load(Ordering::Relaxed));
        assert!(receiver.try_recv().is_ok());
        assert!(receiver.try_recv().is_err(), "the second was dropped");
        drop(receiver);
        assert!(pushes.send(push()).is_err(), "nobody follows any more");
    }

    /// No two revocations share a key, whatever a `sub` holds (`:`, digits, a sign, a newline,
    /// braces, what looks like another key) and whatever `before` is: one cut-off never lands
    /// on another's key, nor on a token's or a session's.
    #[test]
    fn no_two_revocations_share_a_key() {
        let ids = [
            "u",
            "5u",
            "5:u",
            ":u",
            "u:",
            "-5:u",
            "1:2:3",
            "5",
            "-",
            "u\n5",
            "{rev}",
            "ü:ñ",
            "sub:5:u",
            "jti:x",
            "session:x",
        ];
        let befores = [i64::MIN, -5, -1, 0, 5, 55, 1_796_000_000, i64::MAX];
        let mut revocations = Vec::new();
        for id in ids {
            revocations.push(Revocation::Jti(id.into()));
            revocations.push(Revocation::Session(id.into()));
            for before in befores {
                revocations.push(Revocation::Sub {
                    sub: id.into(),
                    before,
                });
            }
        }
        for prefix in [REVOKED_PREFIX, CLUSTER_REVOKED_PREFIX] {
            let mut seen = HashMap::new();
            for revocation in &revocations {
                if let Some(other) = seen.insert(key_of(prefix, revocation), revocation) {
                    panic!("{other:?} and {revocation:?} share a key");
                }
            }
            // Nor a key the previous release wrote for a user's cut-off (`sub:{sub}`, which a
            // rolling deploy leaves beside these): writing one would replace the other.
            for id in ids {
                let old = format!("{prefix}sub:{id}");
                assert!(
                    !seen.contains_key(&old),
                    "{old} is also a key of this release"
                );
            }
        }
    }

    #[tokio::test]
    async fn cluster_keys_share_one_slot_and_one_redis_keeps_its_names() {
        // The hash tag is `rev` for every revocation and the channel: one slot.
        for key in [
            key_of(CLUSTER_REVOKED_PREFIX, &Revocation::Jti("a".into())),
            key_of(CLUSTER_REVOKED_PREFIX, &Revocation::Session("b".into())),
            // A cut-off, with a `sub` holding a hash tag of its own: the first tag decides.
            key_of(
                CLUSTER_REVOKED_PREFIX,
                &Revocation::Sub {
                    sub: "{other}".into(),
                    before: -5,
                },
            ),
            CLUSTER_CHANNEL.to_string(),
            format!("{CLUSTER_REVOKED_PREFIX}probe"),
        ] {
            assert_eq!(
                key.split_once('{')
                    .and_then(|(_, rest)| rest.split_once('}'))
                    .map(|t| t.0),
                Some("rev"),
                "{key}"
            );
            assert!(key.starts_with("cognito-authz:"), "one ACL pattern: {key}");
        }
        assert_eq!(REVOKED_PREFIX, "cognito-authz:rev:");
        assert_eq!(CHANNEL, "cognito-authz:revocations");
        let single = Shared::writer("redis://127.0.0.1:1/", &[]).unwrap();
        assert!(!single.clustered());
        assert!(
            Shared::writer(
                RedisTarget {
                    urls: vec!["redis://a:1/".into(), "redis://b:1/".into()],
                    cluster: false,
                },
                &[]
            )
            .is_err(),
            "several URLs are a cluster's"
        );
    }

    #[test]
    fn a_verdict_stamped_in_the_future_is_no_verdict() {
        let now = 1_000_000;
        assert_eq!(
            parse_verdict(&format!("valid:{now}"), now),
            Some((CognitoVerdict::Valid, now))
        );
        assert_eq!(parse_verdict(&format!("valid:{}", now + 3_600), now), None);
        assert_eq!(parse_verdict("revoked:x", now), None);
        assert_eq!(parse_verdict("maybe:1", now), None);
    }

    const KEY_A: &[u8] = b"0123456789abcdef0123456789abcdef";
    const KEY_B: &[u8] = b"another key of thirty-two bytes!";

    #[test]
    fn a_signed_value_opens_only_with_its_key_and_context() {
        let signer = Signer::new(&[KEY_A]).unwrap();
        let other = Signer::new(&[KEY_B]).unwrap();
        let sealed = signer.seal("k1", "valid:100");
        assert_eq!(signer.open("k1", &sealed), Some(("valid:100", false)));
        assert_eq!(signer.open("k2", &sealed), None, "moved onto another token");
        assert_eq!(other.open("k1", &sealed), None, "another key");
        assert_eq!(signer.open("k1", "valid:100"), None, "unsigned");
        let forged = sealed.replace("valid:100", "valid:999");
        assert_eq!(signer.open("k1", &forged), None, "altered");
        assert_eq!(signer.open("k1", "zz.valid:100"), None);
        assert!(Signer::new(&[]).is_none(), "no keys, no signing");
    }

    #[test]
    fn every_key_signs_any_opens_and_a_missing_tag_marks_the_value_for_re_signing() {
        let old = Signer::new(&[KEY_A]).unwrap();
        let new = Signer::new(&[KEY_B]).unwrap();
        let before = old.seal("revocation", "{}");
        // Step 1 of a rotation: the new key second. Signs with both; an old value lacks a tag.
        let adding = Signer::new(&[KEY_A, KEY_B]).unwrap();
        let both = adding.seal("revocation", "{}");
        assert_eq!(adding.open("revocation", &both), Some(("{}", false)));
        assert_eq!(adding.open("revocation", &before), Some(("{}", true)));
        assert_eq!(
            adding.open("revocation", &new.seal("revocation", "{}")),
            Some(("{}", true))
        );
        // Step 2: the new key first. What step 1 wrote is complete for it too: replicas of both
        // steps side by side re-sign nothing of each other's.
        let moved = Signer::new(&[KEY_B, KEY_A]).unwrap();
        assert_eq!(moved.open("revocation", &both), Some(("{}", false)));
        assert_eq!(
            adding.open("revocation", &moved.seal("revocation", "{}")),
            Some(("{}", false))
        );
        assert_eq!(moved.open("revocation", &before), Some(("{}", true)));
        // Step 3: the old key dropped. What steps 1 and 2 wrote still opens; the old alone not.
        assert_eq!(new.open("revocation", &both), Some(("{}", false)));
        assert_eq!(new.open("revocation", &before), None);
        // With one key, the format is the single tag it always was.
        assert_eq!(before.matches('.').count(), 1);
        // Never a value no key sealed, however many tags it carries.
        assert_eq!(moved.open("revocation", "{}"), None);
        let fake = format!("{}.{{}}", "ab".repeat(32));
        assert_eq!(moved.open("revocation", &fake), None);
        let many = format!("{}{}", format!("{}.", "ab".repeat(32)).repeat(1000), both);
        assert_eq!(
            moved.open("revocation", &many),
            None,
            "tags past the bound are not read"
        );
    }

    #[test]
    fn re_signing_adds_our_tags_and_keeps_the_ones_we_cannot_check() {
        const KEY_C: &[u8] = b"a third key, also thirty-two b!!";
        let a = Signer::new(&[KEY_A]).unwrap();
        let ab = Signer::new(&[KEY_A, KEY_B]).unwrap();
        let bc = Signer::new(&[KEY_B, KEY_C]).unwrap();
        // [A, B] adds B's tag to what A signed; [B, C] then adds C's and keeps A's.
        let by_ab = ab.reseal("revocation", &a.seal("revocation", "{}"));
        assert_eq!(ab.open("revocation", &by_ab), Some(("{}", false)));
        let by_bc = bc.reseal("revocation", &by_ab);
        assert_eq!(bc.open("revocation", &by_bc), Some(("{}", false)));
        assert_eq!(
            a.open("revocation", &by_bc),
            Some(("{}", false)),
            "A's tag kept"
        );
        assert_eq!(
            ab.open("revocation", &by_bc),
            Some(("{}", false)),
            "nothing to add back"
        );
        assert_eq!(tags(&by_bc).0.len(), 3);
        // Junk tags take no more than the bound, and never the place of ours.
        let junk: String = (0..6).map(|i| format!("{i:064x}.")).collect();
        let padded = format!("{junk}{by_ab}");
        assert_eq!(tags(&padded).0.len(), MAX_TAGS);
        let resealed = bc.reseal("revocation", &padded);
        assert_eq!(tags(&resealed).0.len(), MAX_TAGS);
        assert_eq!(bc.open("revocation", &resealed), Some(("{}", false)));
    }

    #[test]
    fn a_replica_without_keys_reads_a_sealed_value_as_its_content() {
        let sealed = Signer::new(&[KEY_A])
            .unwrap()
            .seal("revocation", r#"{"a":"b.c"}"#);
        assert_eq!(unsealed(&sealed), r#"{"a":"b.c"}"#);
        assert_eq!(unsealed(r#"{"a":"b.c"}"#), r#"{"a":"b.c"}"#);
        assert_eq!(unsealed("valid:100"), "valid:100");
        assert_eq!(unsealed("zz.valid:100"), "zz.valid:100");
        let twice = Signer::new(&[KEY_A, KEY_B])
            .unwrap()
            .seal("revocation", "{}");
        assert_eq!(unsealed(&twice), "{}");
    }
}
