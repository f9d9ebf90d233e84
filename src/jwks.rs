//! The key store: each pool's JWKS, fetched at start-up, refreshed in the background, refetched
//! once on an unknown `kid` (at most once per pool per penalty window), and kept when the IdP
//! fails.
//!
//! Keys are parsed into ready-to-verify RSA keys when a JWKS arrives, never per request; readers
//! take a lock-free snapshot ([`arc_swap`]) of the current set.

use foldhash::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tracing::Instrument as _;

use arc_swap::ArcSwap;
use aws_lc_rs::signature::{ParsedPublicKey, RsaPublicKeyComponents, RSA_PKCS1_2048_8192_SHA256};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, KeyAlgorithm, PublicKeyUse};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::lock;
use crate::pool::PoolConfig;

/// Default refresh: Cognito rotates keys rarely and an unknown `kid` refetches at once anyway.
pub const DEFAULT_JWKS_REFRESH_SECS: u64 = 900;
/// Default penalty window: the value AWS's own `aws-jwt-verify` uses.
pub const DEFAULT_JWKS_MIN_REFETCH_SECS: u64 = 10;
/// Default fetch timeout: generous for a cross-region fetch, short enough that a request
/// waiting on an unknown-`kid` refetch is answered well inside a client's patience.
pub const DEFAULT_JWKS_TIMEOUT_MS: u64 = 5_000;
/// Default cap on a JWKS body: a Cognito JWKS is about 1 KiB.
pub const DEFAULT_JWKS_MAX_BYTES: usize = 256 * 1024;
/// First retry delay after a failed fetch; doubles up to [`DEFAULT_JWKS_RETRY_MAX_MS`].
pub const DEFAULT_JWKS_RETRY_MIN_MS: u64 = 1_000;
/// Longest retry delay after repeated failures.
pub const DEFAULT_JWKS_RETRY_MAX_MS: u64 = 60_000;
/// Key-store tuning.
#[derive(Debug, Clone, Serialize)]
pub struct JwksSettings {
    /// Interval between background refreshes.
    #[serde(with = "crate::secs")]
    pub refresh_interval: Duration,
    /// Penalty window: at most one on-demand fetch per pool within it.
    #[serde(with = "crate::secs")]
    pub min_refetch_interval: Duration,
    /// Timeout of one fetch.
    #[serde(with = "crate::secs")]
    pub fetch_timeout: Duration,
    /// Largest JWKS body accepted.
    pub max_body_bytes: usize,
    /// First retry delay after a failure.
    #[serde(with = "crate::secs")]
    pub retry_min: Duration,
    /// Longest retry delay after repeated failures.
    #[serde(with = "crate::secs")]
    pub retry_max: Duration,
}

impl Default for JwksSettings {
    fn default() -> Self {
        JwksSettings {
            refresh_interval: Duration::from_secs(DEFAULT_JWKS_REFRESH_SECS),
            min_refetch_interval: Duration::from_secs(DEFAULT_JWKS_MIN_REFETCH_SECS),
            fetch_timeout: Duration::from_millis(DEFAULT_JWKS_TIMEOUT_MS),
            max_body_bytes: DEFAULT_JWKS_MAX_BYTES,
            retry_min: Duration::from_millis(DEFAULT_JWKS_RETRY_MIN_MS),
            retry_max: Duration::from_millis(DEFAULT_JWKS_RETRY_MAX_MS),
        }
    }
}

/// Why a JWKS fetch did not produce keys.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The request failed (connect, TLS, timeout, reading the body).
    #[error("request failed: {}", error_chain(.0))]
    Http(#[source] reqwest::Error),
    /// The IdP answered with a non-success status.
    #[error("answered HTTP {0}")]
    Status(u16),
    /// The body exceeded the configured cap.
    #[error("body exceeds {0} bytes")]
    TooLarge(usize),
    /// The body is not a JWKS document.
    #[error("body is not a JWKS document: {0}")]
    NotJwks(#[source] serde_json::Error),
    /// The JWKS held no RSA signing key we can use.
    #[error("no usable RS256 key in the JWKS ({skipped} skipped)")]
    NoUsableKeys {
        /// How many entries were skipped.
        skipped: usize,
    },
}

impl FetchError {
    /// Every label [`FetchError::as_str`] returns.
    pub const LABELS: [&'static str; 6] = [
        "timeout",
        "http_error",
        "bad_status",
        "too_large",
        "not_jwks",
        "no_usable_keys",
    ];

    /// A short stable label for metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            FetchError::Http(err) if err.is_timeout() => "timeout",
            FetchError::Http(_) => "http_error",
            FetchError::Status(_) => "bad_status",
            FetchError::TooLarge(_) => "too_large",
            FetchError::NotJwks(_) => "not_jwks",
            FetchError::NoUsableKeys { .. } => "no_usable_keys",
        }
    }
}

/// Why no key was found for a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyError {
    /// The pool has keys, but none with this `kid`, even after a refetch (or within the
    /// penalty window).
    UnknownKid,
    /// The pool has never obtained any keys.
    Unavailable,
}

/// One verification key, parsed once.
pub struct VerificationKey {
    kid: Arc<str>,
    key: ParsedPublicKey,
}

impl VerificationKey {
    /// Parses an RSA public key from its big-endian modulus and exponent.
    pub fn from_components(kid: &str, n: &[u8], e: &[u8]) -> Result<Self, String> {
        // aws-lc checks the size only when verifying; refuse a weak key when it arrives.
        let significant = n.iter().position(|&b| b != 0).map_or(0, |i| n.len() - i);
        if !(256..=1024).contains(&significant) {
            return Err(format!(
                "modulus of {} bits is outside 2048..=8192",
                significant * 8
            ));
        }
        let key = RsaPublicKeyComponents { n, e }
            .to_parsed_public_key(&RSA_PKCS1_2048_8192_SHA256)
            .map_err(|err| format!("not a usable RSA key: {err}"))?;
        Ok(VerificationKey {
            kid: Arc::from(kid),
            key,
        })
    }

    /// The key's id (shared, so cached identities can hold it for nothing).
    pub fn kid(&self) -> &Arc<str> {
        &self.kid
    }

    /// Checks an RS256 signature over `message`.
    pub fn verify_rs256(&self, message: &[u8], signature: &[u8]) -> bool {
        self.key.verify_sig(message, signature).is_ok()
    }
}

impl std::fmt::Debug for VerificationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerificationKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// An immutable set of keys, swapped whole on every successful fetch.
#[derive(Debug, Default)]
pub struct KeySet {
    /// By kid: looked up on every check (a cached token's key still there), with foldhash, not
    /// SipHash; the kids come from the JWKS, a lookup's from a token.
    keys: HashMap<String, Arc<VerificationKey>>,
}

impl KeySet {
    /// The key with this id.
    pub fn get(&self, kid: &str) -> Option<&Arc<VerificationKey>> {
        self.keys.get(kid)
    }

    /// Whether the set holds no key (a pool that never got keys).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key ids, sorted.
    pub fn kids(&self) -> Vec<String> {
        let mut kids: Vec<String> = self.keys.keys().cloned().collect();
        kids.sort();
        kids
    }

    /// Parses a JWKS document, keeping the RSA keys usable for RS256 and skipping the rest.
    /// Each entry is read with jsonwebtoken's `Jwk` model on its own, so one entry of a kind
    /// we do not know (a new key type, an encryption key) costs that entry, not the set.
    pub fn from_jwks(body: &[u8]) -> Result<KeySet, FetchError> {
        #[derive(Deserialize)]
        struct Jwks {
            keys: Vec<serde_json::Value>,
        }

        let jwks: Jwks = serde_json::from_slice(body).map_err(FetchError::NotJwks)?;
        let mut keys = HashMap::default();
        let mut skipped = 0;
        for entry in jwks.keys {
            let parsed = serde_json::from_value::<Jwk>(entry)
                .map_err(|err| err.to_string())
                .and_then(|jwk| {
                    let AlgorithmParameters::RSA(rsa) = &jwk.algorithm else {
                        return Err("kty is not RSA".to_string());
                    };
                    if !matches!(
                        jwk.common.public_key_use,
                        None | Some(PublicKeyUse::Signature)
                    ) {
                        return Err("use is not sig".to_string());
                    }
                    if !matches!(jwk.common.key_algorithm, None | Some(KeyAlgorithm::RS256)) {
                        return Err("alg is not RS256".to_string());
                    }
                    let kid = jwk.common.key_id.as_deref().ok_or("no kid")?;
                    let n = decode_component(&rsa.n, "n")?;
                    let e = decode_component(&rsa.e, "e")?;
                    VerificationKey::from_components(kid, &n, &e)
                });
            match parsed {
                Ok(key) => {
                    keys.insert(key.kid.to_string(), Arc::new(key));
                }
                Err(problem) => {
                    skipped += 1;
                    warn!(%problem, "skipping a JWKS entry");
                }
            }
        }
        if keys.is_empty() {
            return Err(FetchError::NoUsableKeys { skipped });
        }
        Ok(KeySet { keys })
    }
}

/// An error and its sources, `: `-joined (reqwest hides "connection refused" in a source).
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn decode_component(value: &str, name: &str) -> Result<Vec<u8>, String> {
    URL_SAFE_NO_PAD
        .decode(value)
        .map_err(|_| format!("{name} is not base64url"))
}

/// A pool's key-store state, for health and diagnostics.
#[derive(Debug, Clone, Serialize)]
pub struct PoolStatus {
    /// The pool id.
    pub pool_id: String,
    /// Accepted issuers.
    pub issuers: Vec<String>,
    /// Where keys come from.
    pub jwks_uri: String,
    /// Key ids currently held.
    pub kids: Vec<String>,
    /// When a fetch last succeeded.
    pub last_success: Option<SystemTime>,
    /// The last fetch's error, if the last fetch failed.
    pub last_error: Option<String>,
    /// Successful fetches since start.
    pub fetches_ok: u64,
    /// Failed fetches since start.
    pub fetches_failed: u64,
}

#[derive(Debug, Default)]
struct FetchRecord {
    last_success: Option<SystemTime>,
    last_error: Option<String>,
    fetches_ok: u64,
    fetches_failed: u64,
}

struct PoolKeys {
    pool_id: String,
    issuers: Vec<String>,
    jwks_uri: String,
    keys: ArcSwap<KeySet>,
    record: Mutex<FetchRecord>,
    /// Serialises fetches for the pool (scheduled and on-demand).
    fetch_gate: tokio::sync::Mutex<()>,
    /// The on-demand (unknown-`kid`) refetch: when the last one started, which opens the
    /// penalty window, and the one in flight. Scheduled fetches do not open the window, so a
    /// key rotated just after one is still picked up at once.
    refetch: Mutex<Refetch>,
}

#[derive(Default)]
struct Refetch {
    last_started: Option<Instant>,
    /// Completes (changes or closes) when the fetch in flight has ended.
    in_flight: Option<watch::Receiver<()>>,
}

/// Counts fetch outcomes; the server plugs its metrics in here.
pub trait FetchObserver: Send + Sync {
    /// A fetch for `pool_id` ended; `result` is `"ok"` or a [`FetchError::as_str`] label.
    fn fetched(&self, pool_id: &str, result: &'static str, keys: usize);
}

struct NoObserver;
impl FetchObserver for NoObserver {
    fn fetched(&self, _: &str, _: &'static str, _: usize) {}
}

struct Inner {
    pools: Vec<PoolKeys>,
    http: reqwest::Client,
    settings: JwksSettings,
    observer: Arc<dyn FetchObserver>,
    /// `true` once the store is retired (replaced by a reload, or the server stops): its
    /// refresh loops end, including any spawned after the retirement.
    retired: watch::Sender<bool>,
}

/// A cheap-to-clone handle on every pool's keys.
#[derive(Clone)]
pub struct KeyStore {
    inner: Arc<Inner>,
}

impl KeyStore {
    /// A store for these pools, holding no keys yet; call [`KeyStore::refresh_all`] next.
    pub fn new(pools: &[PoolConfig], settings: &JwksSettings) -> Result<KeyStore, FetchError> {
        KeyStore::with_observer(pools, settings, Arc::new(NoObserver))
    }

    /// Like [`KeyStore::new`], reporting every fetch to `observer`.
    pub fn with_observer(
        pools: &[PoolConfig],
        settings: &JwksSettings,
        observer: Arc<dyn FetchObserver>,
    ) -> Result<KeyStore, FetchError> {
        let http = reqwest::Client::builder()
            .timeout(settings.fetch_timeout)
            .connect_timeout(settings.fetch_timeout)
            // A JWKS URL is configuration, never something a token names; still, do not let
            // the IdP bounce us elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("cognito-authz/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(FetchError::Http)?;
        let pools = pools
            .iter()
            .map(|p| PoolKeys {
                pool_id: p.id.clone(),
                issuers: p.issuers.clone(),
                jwks_uri: p.jwks_uri.clone(),
                keys: ArcSwap::from_pointee(KeySet::default()),
                record: Mutex::new(FetchRecord::default()),
                fetch_gate: tokio::sync::Mutex::new(()),
                refetch: Mutex::new(Refetch::default()),
            })
            .collect();
        Ok(KeyStore {
            inner: Arc::new(Inner {
                pools,
                http,
                settings: settings.clone(),
                observer,
                retired: watch::channel(false).0,
            }),
        })
    }

    /// Installs a JWKS document for pool `pool` without fetching (tests and benches).
    #[cfg(any(test, feature = "testkit"))]
    pub fn preload(&self, pool: usize, jwks: &[u8]) -> Result<(), FetchError> {
        self.inner.pools[pool]
            .keys
            .store(Arc::new(KeySet::from_jwks(jwks)?));
        Ok(())
    }

    /// Starts pool `pool` with a key set another store holds (a reload keeps the keys of an
    /// unchanged pool, so an IdP outage cannot turn a reload into an outage).
    pub fn adopt(&self, pool: usize, keys: Arc<KeySet>) {
        self.inner.pools[pool].keys.store(keys);
    }

    /// The current key set of pool `pool` (an index into the configured pools).
    pub fn snapshot(&self, pool: usize) -> Arc<KeySet> {
        self.inner.pools[pool].keys.load_full()
    }

    /// Whether pool `pool` currently holds key `kid` (a cached token signed by a key that left
    /// the JWKS stops being accepted at the refresh that removed it).
    pub fn has_key(&self, pool: usize, kid: &str) -> bool {
        self.inner.pools[pool].keys.load().get(kid).is_some()
    }

    /// Whether every pool holds keys (readiness).
    pub fn all_loaded(&self) -> bool {
        self.inner.pools.iter().all(|p| !p.keys.load().is_empty())
    }

    /// The key `kid` of pool `pool`, refetching the pool's JWKS once if it is unknown and the
    /// penalty window allows; concurrent callers share one fetch.
    ///
    /// The refetch runs as a task of its own: a caller that gives up (Envoy's timeout resets the
    /// stream and drops this future) stops waiting, not fetching, so a freshly rotated key still
    /// lands for the requests that follow.
    pub async fn key(&self, pool: usize, kid: &str) -> Result<Arc<VerificationKey>, KeyError> {
        let keys = &self.inner.pools[pool];
        if let Some(key) = keys.keys.load().get(kid) {
            return Ok(Arc::clone(key));
        }
        if let Some(mut done) = self.start_refetch(pool) {
            // Err means the task ended without a word: it is over either way.
            let _ = done.changed().await;
        }
        let current = keys.keys.load();
        match current.get(kid) {
            Some(key) => Ok(Arc::clone(key)),
            None if current.is_empty() => Err(KeyError::Unavailable),
            None => Err(KeyError::UnknownKid),
        }
    }

    /// Joins the on-demand refetch in flight, or starts one unless the penalty window is open;
    /// `None` means no fetch will come.
    fn start_refetch(&self, pool: usize) -> Option<watch::Receiver<()>> {
        let keys = &self.inner.pools[pool];
        let mut refetch = lock(&keys.refetch);
        if let Some(done) = &refetch.in_flight {
            return Some(done.clone());
        }
        let window = self.inner.settings.min_refetch_interval;
        if refetch
            .last_started
            .is_some_and(|started| started.elapsed() < window)
        {
            debug!(pool = %keys.pool_id, "unknown kid within the refetch penalty window");
            return None;
        }
        refetch.last_started = Some(Instant::now());
        let (finished, done) = watch::channel(());
        refetch.in_flight = Some(done.clone());
        drop(refetch);
        let store = self.clone();
        // The refetch belongs to the check that found the unknown kid: its trace, as a child.
        let refetch = async move {
            store.refresh(pool).await;
            let keys = &store.inner.pools[pool];
            lock(&keys.refetch).in_flight = None;
            let _ = finished.send(());
        };
        tokio::spawn(refetch.in_current_span());
        Some(done)
    }

    /// Fetches every pool's keys now, concurrently; returns whether all pools hold keys.
    pub async fn refresh_all(&self) -> bool {
        let mut fetches = tokio::task::JoinSet::new();
        for pool in 0..self.inner.pools.len() {
            let store = self.clone();
            fetches.spawn(async move { store.refresh(pool).await });
        }
        while fetches.join_next().await.is_some() {}
        self.all_loaded()
    }

    /// Fetches pool `pool`'s keys now; returns whether the fetch succeeded.
    pub async fn refresh(&self, pool: usize) -> bool {
        let keys = &self.inner.pools[pool];
        let _gate = keys.fetch_gate.lock().await;
        self.fetch_into(keys).await
    }

    /// Spawns one background task per pool: refresh on the configured interval, retry with
    /// exponential backoff after a failure (sooner while the pool has no keys at all).
    pub fn spawn_refresh(&self) -> Vec<tokio::task::JoinHandle<()>> {
        (0..self.inner.pools.len())
            .map(|pool| {
                let store = self.clone();
                tokio::spawn(async move { store.refresh_loop(pool).await })
            })
            .collect()
    }

    /// Retires the store: its refresh loops end, now or, for loops spawned later, at once.
    pub fn retire(&self) {
        self.inner.retired.send_replace(true);
    }

    async fn refresh_loop(self, pool: usize) {
        let settings = &self.inner.settings;
        let mut backoff = settings.retry_min;
        let mut ok = !self.inner.pools[pool].keys.load().is_empty();
        let mut retired = self.inner.retired.subscribe();
        while !*retired.borrow_and_update() {
            let delay = if ok {
                backoff = settings.retry_min;
                settings.refresh_interval
            } else {
                let delay = backoff.min(settings.refresh_interval);
                backoff = (backoff * 2).min(settings.retry_max);
                delay
            };
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = retired.wait_for(|retired| *retired) => break,
            }
            ok = self.refresh(pool).await;
        }
    }

    async fn fetch_into(&self, keys: &PoolKeys) -> bool {
        let span = crate::trace::jwks_span(&keys.pool_id);
        let result = fetch_jwks(
            &self.inner.http,
            &keys.jwks_uri,
            self.inner.settings.max_body_bytes,
        )
        .instrument(span.clone())
        .await;
        match &result {
            Ok(_) => {
                span.record("outcome", "ok");
            }
            Err(err) => crate::trace::record_failure(&span, err.as_str()),
        }
        let mut record = lock(&keys.record);
        match result {
            Ok(set) => {
                let count = set.keys.len();
                let old = keys.keys.swap(Arc::new(set));
                if old.kids() != keys.keys.load().kids() {
                    info!(pool = %keys.pool_id, kids = ?keys.keys.load().kids(), "keys loaded");
                }
                record.last_success = Some(SystemTime::now());
                record.last_error = None;
                record.fetches_ok += 1;
                self.inner.observer.fetched(&keys.pool_id, "ok", count);
                true
            }
            Err(err) => {
                let held = keys.keys.load().keys.len();
                warn!(
                    pool = %keys.pool_id,
                    jwks_uri = %keys.jwks_uri,
                    cause = %err,
                    keys_kept = held,
                    "jwks fetch failed"
                );
                record.last_error = Some(err.to_string());
                record.fetches_failed += 1;
                self.inner
                    .observer
                    .fetched(&keys.pool_id, err.as_str(), held);
                false
            }
        }
    }

    /// Every pool's state.
    pub fn status(&self) -> Vec<PoolStatus> {
        self.inner
            .pools
            .iter()
            .map(|p| {
                let record = lock(&p.record);
                PoolStatus {
                    pool_id: p.pool_id.clone(),
                    issuers: p.issuers.clone(),
                    jwks_uri: p.jwks_uri.clone(),
                    kids: p.keys.load().kids(),
                    last_success: record.last_success,
                    last_error: record.last_error.clone(),
                    fetches_ok: record.fetches_ok,
                    fetches_failed: record.fetches_failed,
                }
            })
            .collect()
    }
}

async fn fetch_jwks(
    http: &reqwest::Client,
    uri: &str,
    max_bytes: usize,
) -> Result<KeySet, FetchError> {
    let mut response = http
        .get(uri)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(FetchError::Http)?;
    if !response.status().is_success() {
        return Err(FetchError::Status(response.status().as_u16()));
    }
    if response
        .content_length()
        .is_some_and(|len| len > max_bytes as u64)
    {
        return Err(FetchError::TooLarge(max_bytes));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(FetchError::Http)? {
        if body.len() + chunk.len() > max_bytes {
            return Err(FetchError::TooLarge(max_bytes));
        }
        body.extend_from_slice(&chunk);
    }
    KeySet::from_jwks(&body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::TestKey;

    #[test]
    fn a_jwks_yields_its_rsa_signing_keys() {
        let a = TestKey::shared(0);
        let b = TestKey::shared(1);
        let body = crate::testkit::jwks(&[a, b]).to_string();
        let set = KeySet::from_jwks(body.as_bytes()).unwrap();
        assert_eq!(set.kids(), {
            let mut k = vec![a.kid.clone(), b.kid.clone()];
            k.sort();
            k
        });
    }

    #[test]
    fn unusable_entries_are_skipped_and_an_empty_result_is_an_error() {
        let good = TestKey::shared(0).jwk();
        let mut enc = good.clone();
        enc["use"] = "enc".into();
        enc["kid"] = "enc".into();
        let mut hs = good.clone();
        hs["alg"] = "HS256".into();
        hs["kid"] = "hs".into();
        let mut broken = good.clone();
        broken["n"] = "!!!".into();
        broken["kid"] = "broken".into();
        let mut tiny = good.clone();
        tiny["n"] = "AQAB".into();
        tiny["kid"] = "tiny".into();
        let ec = serde_json::json!({"kty": "EC", "kid": "ec", "crv": "P-256"});
        let no_kid = {
            let mut k = good.clone();
            k.as_object_mut().unwrap().remove("kid");
            k
        };

        let all = serde_json::json!({"keys": [good, enc, hs, broken, tiny, ec, no_kid]});
        let set = KeySet::from_jwks(all.to_string().as_bytes()).unwrap();
        assert_eq!(set.kids(), vec![TestKey::shared(0).kid.clone()]);

        let none = serde_json::json!({"keys": [enc, hs, broken, tiny, ec]});
        assert!(matches!(
            KeySet::from_jwks(none.to_string().as_bytes()),
            Err(FetchError::NoUsableKeys { skipped: 5 })
        ));
        assert!(matches!(
            KeySet::from_jwks(b"<html>500</html>"),
            Err(FetchError::NotJwks(_))
        ));
    }

    #[test]
    fn a_parsed_key_checks_signatures() {
        let key = TestKey::shared(0);
        let (n, e) = key.components();
        let parsed = VerificationKey::from_components(&key.kid, &n, &e).unwrap();
        let sig = key.sign_bytes(b"message");
        assert!(parsed.verify_rs256(b"message", &sig));
        assert!(!parsed.verify_rs256(b"massage", &sig));
    }
}
