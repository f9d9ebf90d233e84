//! Revocation, the part a locally verified token cannot tell: explicit revocations (one token,
//! one sign-in session, one user's tokens issued before a time) held until no token they match
//! can still be valid, and Cognito's own answer through `GetUser`, which refuses the tokens of a
//! user who signed out everywhere (`GlobalSignOut`, `AdminUserGlobalSignOut`).
//!
//! Depends on nothing above it: the decision core asks, the Redis share fills the list.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;
use tracing::Instrument as _;

use serde::{Deserialize, Serialize};

use crate::identity::id_digest;

/// What was revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Revocation {
    /// One token (`jti`).
    Jti(String),
    /// One sign-in session (`origin_jti`): every token refreshed from it.
    Session(String),
    /// One user's tokens issued (`iat`) before `before` (Unix seconds).
    Sub {
        /// `sub`.
        sub: String,
        /// Tokens issued before this are revoked.
        before: i64,
    },
}

impl Revocation {
    /// `jti`, `session` or `sub`, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Revocation::Jti(_) => "jti",
            Revocation::Session(_) => "session",
            Revocation::Sub { .. } => "sub",
        }
    }
}

/// Longest id a revocation may name (`jti`, `origin_jti`, `sub`): Cognito's are UUIDs (36
/// bytes); 256 leaves room for other issuers while bounding what a writer can make us keep.
pub const MAX_ID_BYTES: usize = 256;
/// Largest revocation message taken from Redis: an entry is about 100 bytes.
pub const MAX_ENTRY_BYTES: usize = 1024;
/// Default cap on the revocations held (`AUTHZ_MAX_REVOCATIONS`): about 100 bytes each, so
/// 100,000 cost about 10 MB, and more than anyone revokes in a day's token lifetime.
pub const DEFAULT_MAX_REVOCATIONS: usize = 100_000;

/// How many entries learned from Redis a list of `cap` takes: three quarters, leaving at least
/// one quarter (and at least one entry) that only the operator's own revocations through this
/// replica can fill. Not half: the other replicas' revocations arrive through Redis too, and
/// with signing on they are all the operator's, so three quarters keeps most of the cap for
/// sharing, while a quarter (25,000 by default) is still more than one replica takes in a
/// day's token lifetime.
pub fn learned_cap(cap: usize) -> usize {
    cap - cap.div_ceil(4)
}

/// Why a revocation was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// An empty id or one over [`MAX_ID_BYTES`], or a message over [`MAX_ENTRY_BYTES`].
    #[error("an id is empty or longer than 256 bytes")]
    TooLarge,
    /// `before` lies in the future beyond the clock leeway, or the entry would outlive any
    /// token.
    #[error("before (or the entry's expiry) lies too far in the future")]
    Future,
    /// The list holds its cap already.
    #[error("the revocation list is full")]
    Full,
    /// No token it names can still be valid: nothing to keep.
    #[error("no token it names can still be valid")]
    Expired,
}

impl Refused {
    /// Every reason a revocation is refused for.
    pub const ALL: [Refused; 4] = [
        Refused::TooLarge,
        Refused::Future,
        Refused::Full,
        Refused::Expired,
    ];

    /// A stable label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Refused::TooLarge => "too_large",
            Refused::Future => "future",
            Refused::Full => "full",
            Refused::Expired => "expired",
        }
    }
}

/// Told how many revocations are held and which were refused (the metrics).
pub trait ListObserver: Send + Sync {
    /// The number of revocations held changed.
    fn held(&self, count: usize);
    /// A revocation was refused.
    fn refused(&self, why: Refused);
}

/// A revocation with the time it can be forgotten.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// What was revoked.
    pub revocation: Revocation,
    /// Unix seconds after which no token it matches can still be valid.
    pub expires: i64,
}

/// How long a revocation is kept: the longest a Cognito token lives, plus the clock leeway.
pub fn entry_lifetime(leeway: Duration) -> i64 {
    crate::verify::MAX_TOKEN_LIFETIME_SECS
        .saturating_add(i64::try_from(leeway.as_secs()).unwrap_or(i64::MAX / 2))
}

impl Entry {
    /// An entry for `revocation` made at `now`, kept while a token it matches may be valid:
    /// a token lives at most `lifetime` seconds (Cognito: one day) plus the clock leeway. A
    /// user's cut-off matches tokens issued until `before`, which may lie up to the leeway
    /// ahead ([`Entry::admissible`]): it is kept `lifetime` past `before`, not past `now`.
    pub fn new(revocation: Revocation, now: i64, lifetime: i64) -> Entry {
        let from = match &revocation {
            Revocation::Sub { before, .. } => *before,
            _ => now,
        };
        Entry {
            expires: from.saturating_add(lifetime),
            revocation,
        }
    }
}

impl Entry {
    /// Whether a writer (the admin API, Redis) may make us keep this entry at `now`: every id
    /// non-empty and at most [`MAX_ID_BYTES`], `before` no later than `now + leeway`.
    pub fn admissible(&self, now: i64, leeway: i64) -> Result<(), Refused> {
        // Already over (a `before` far in the past), or kept longer than any token can live:
        // one issued by the leeway ahead (a cut-off's `before`, a clock ahead of ours) lives a
        // day from then, and passes the leeway past its `exp`.
        let longest = now
            .saturating_add(leeway)
            .saturating_add(crate::verify::MAX_TOKEN_LIFETIME_SECS)
            .saturating_add(leeway);
        if self.expires <= now {
            return Err(Refused::Expired);
        }
        if self.expires > longest {
            return Err(Refused::Future);
        }
        let id_ok = |id: &str| !id.trim().is_empty() && id.len() <= MAX_ID_BYTES;
        let ok = match &self.revocation {
            Revocation::Jti(id) | Revocation::Session(id) => id_ok(id),
            Revocation::Sub { sub, .. } => id_ok(sub),
        };
        // As shared: what no reader would take (an id of control characters grows sixfold
        // in JSON) is refused here too, never recorded and reported.
        if !ok || serde_json::to_string(self).map_or(true, |json| json.len() > MAX_ENTRY_BYTES) {
            return Err(Refused::TooLarge);
        }
        if let Revocation::Sub { before, .. } = &self.revocation {
            if *before > now.saturating_add(leeway) {
                return Err(Refused::Future);
            }
        }
        Ok(())
    }
}

/// The token fields a revocation can match.
#[derive(Debug, Clone, Copy)]
pub struct TokenIds<'a> {
    /// The digest of `jti` ([`id_digest`]).
    pub jti: Option<u64>,
    /// The digest of `origin_jti`.
    pub origin_jti: Option<u64>,
    /// `sub`.
    pub sub: &'a str,
    /// `iat`.
    pub iat: i64,
}

#[derive(Debug, Default)]
struct Lists {
    /// Keyed by [`id_digest`], as cached identities hold the ids.
    jtis: HashMap<u64, i64>,
    sessions: HashMap<u64, i64>,
    /// sub -> (before, expires): the latest `before` wins.
    subs: HashMap<String, (i64, i64)>,
}

/// The revocations in force in this process, at most a cap of them. Cheap to read when empty
/// (one lock, no lookups).
pub struct RevocationList {
    lists: RwLock<Lists>,
    cap: AtomicUsize,
    observer: Option<Arc<dyn ListObserver>>,
    /// The revocations shared through Redis are still being loaded (a replica or module just
    /// started): a token not revoked here may be revoked elsewhere.
    loading: AtomicBool,
}

impl Default for RevocationList {
    fn default() -> Self {
        RevocationList::new(DEFAULT_MAX_REVOCATIONS, None)
    }
}

impl std::fmt::Debug for RevocationList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevocationList")
            .field("len", &self.len())
            .field("cap", &self.cap.load(Ordering::Relaxed))
            .finish()
    }
}

impl RevocationList {
    /// An empty list holding at most `cap` revocations, telling `observer` what it holds.
    pub fn new(cap: usize, observer: Option<Arc<dyn ListObserver>>) -> RevocationList {
        RevocationList {
            lists: RwLock::default(),
            cap: AtomicUsize::new(cap),
            observer,
            loading: AtomicBool::new(false),
        }
    }

    /// Says whether the revocations shared through Redis are still being loaded; while they
    /// are, no token is admitted (its status is unavailable).
    pub fn set_loading(&self, loading: bool) {
        self.loading.store(loading, Ordering::Relaxed);
    }

    /// Whether the revocations shared through Redis are still being loaded.
    pub fn loading(&self) -> bool {
        self.loading.load(Ordering::Relaxed)
    }

    /// Changes the cap (a reload); entries held beyond it stay until they expire.
    pub fn set_cap(&self, cap: usize) {
        self.cap.store(cap, Ordering::Relaxed);
    }

    /// Records an entry (again: an existing one keeps the later expiry and `before`), unless
    /// it is new and the list holds its cap already.
    pub fn insert(&self, entry: &Entry) -> Result<(), Refused> {
        self.insert_up_to(entry, self.cap.load(Ordering::Relaxed))
    }

    /// Like [`RevocationList::insert`], but only while the list is under half its cap: for
    /// entries that only save work (a session Cognito said is revoked), which must never
    /// crowd out the operator's.
    pub fn insert_within_half(&self, entry: &Entry) -> Result<(), Refused> {
        self.insert_up_to(entry, self.cap.load(Ordering::Relaxed) / 2)
    }

    /// Like [`RevocationList::insert`], for entries learned from Redis: only while the list is
    /// under three quarters of its cap ([`learned_cap`]), so whoever can write to Redis cannot
    /// crowd out the revocations an operator makes through this replica.
    pub fn insert_learned(&self, entry: &Entry) -> Result<(), Refused> {
        self.insert_up_to(entry, learned_cap(self.cap.load(Ordering::Relaxed)))
    }

    fn insert_up_to(&self, entry: &Entry, cap: usize) -> Result<(), Refused> {
        let mut lists = self.lists.write().unwrap_or_else(PoisonError::into_inner);
        let known = match &entry.revocation {
            Revocation::Jti(jti) => lists.jtis.contains_key(&id_digest(jti)),
            Revocation::Session(id) => lists.sessions.contains_key(&id_digest(id)),
            Revocation::Sub { sub, .. } => lists.subs.contains_key(sub),
        };
        let held = lists.jtis.len() + lists.sessions.len() + lists.subs.len();
        if !known && held >= cap {
            drop(lists);
            if let Some(observer) = &self.observer {
                observer.refused(Refused::Full);
            }
            return Err(Refused::Full);
        }
        let keep_later = |old: &mut i64, new: i64| *old = (*old).max(new);
        match &entry.revocation {
            Revocation::Jti(jti) => keep_later(
                lists.jtis.entry(id_digest(jti)).or_insert(entry.expires),
                entry.expires,
            ),
            Revocation::Session(id) => keep_later(
                lists.sessions.entry(id_digest(id)).or_insert(entry.expires),
                entry.expires,
            ),
            Revocation::Sub { sub, before } => {
                let slot = lists
                    .subs
                    .entry(sub.clone())
                    .or_insert((*before, entry.expires));
                slot.0 = slot.0.max(*before);
                slot.1 = slot.1.max(entry.expires);
            }
        }
        let held = lists.jtis.len() + lists.sessions.len() + lists.subs.len();
        drop(lists);
        if let Some(observer) = &self.observer {
            observer.held(held);
        }
        Ok(())
    }

    /// Counts a revocation refused before it reached the list (too large, in the future).
    pub fn refused(&self, why: Refused) {
        if let Some(observer) = &self.observer {
            observer.refused(why);
        }
    }

    /// Whether a token with these ids is revoked at `now`.
    pub fn is_revoked(&self, ids: &TokenIds<'_>, now: i64) -> bool {
        let lists = self.lists.read().unwrap_or_else(PoisonError::into_inner);
        if lists.jtis.is_empty() && lists.sessions.is_empty() && lists.subs.is_empty() {
            return false;
        }
        let live = |expires: Option<&i64>| expires.is_some_and(|&e| e > now);
        ids.jti.is_some_and(|j| live(lists.jtis.get(&j)))
            || ids.origin_jti.is_some_and(|s| live(lists.sessions.get(&s)))
            || lists
                .subs
                .get(ids.sub)
                .is_some_and(|&(before, expires)| expires > now && ids.iat < before)
    }

    /// Forgets entries that can match no valid token any more.
    pub fn purge(&self, now: i64) {
        let mut lists = self.lists.write().unwrap_or_else(PoisonError::into_inner);
        lists.jtis.retain(|_, e| *e > now);
        lists.sessions.retain(|_, e| *e > now);
        lists.subs.retain(|_, (_, e)| *e > now);
        let held = lists.jtis.len() + lists.sessions.len() + lists.subs.len();
        drop(lists);
        if let Some(observer) = &self.observer {
            observer.held(held);
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        let lists = self.lists.read().unwrap_or_else(PoisonError::into_inner);
        lists.jtis.len() + lists.sessions.len() + lists.subs.len()
    }

    /// Whether nothing is revoked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A verdict on an access token, as cached and shared between replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CognitoVerdict {
    /// The token is live.
    Valid,
    /// Cognito refused the token (signed out, revoked, or not its own).
    Revoked,
}

/// What Cognito's `GetUser` answered, by its exact error shape. Only
/// `NotAuthorizedException: Access Token has been revoked` says the sign-in session ended;
/// "Access Token has expired" says nothing about revocation (a token used inside the clock
/// leeway after its `exp` always gets it), and any other `NotAuthorizedException` ("Invalid
/// Access Token", an emulator's "Invalid token") refuses this token alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CognitoAnswer {
    /// 200: the token is live.
    Live,
    /// "Access Token has been revoked": the whole sign-in session is over (GlobalSignOut,
    /// RevokeToken).
    SessionRevoked,
    /// Another `NotAuthorizedException`: this token is refused.
    Refused,
    /// "Access Token has expired": past its `exp` by Cognito's clock; not a revocation.
    Expired,
}

impl CognitoAnswer {
    /// A stable label for traces.
    pub fn as_str(self) -> &'static str {
        match self {
            CognitoAnswer::Live => "live",
            CognitoAnswer::SessionRevoked => "session_revoked",
            CognitoAnswer::Refused => "refused",
            CognitoAnswer::Expired => "expired",
        }
    }

    /// The verdict to cache and share (none for `Expired`: it is about time, not the token).
    pub fn verdict(self) -> Option<CognitoVerdict> {
        match self {
            CognitoAnswer::Live => Some(CognitoVerdict::Valid),
            CognitoAnswer::SessionRevoked | CognitoAnswer::Refused => Some(CognitoVerdict::Revoked),
            CognitoAnswer::Expired => None,
        }
    }
}

/// Why Cognito gave no verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    /// No answer within the timeout.
    #[error("timeout")]
    Timeout,
    /// The request failed (connection refused, TLS).
    #[error("unreachable")]
    Unreachable,
    /// `TooManyRequestsException` (or HTTP 429).
    #[error("throttled")]
    Throttled,
    /// A 5xx, or a body that is not Cognito's.
    #[error("bad_answer")]
    BadAnswer,
    /// Too many calls in flight for the pool.
    #[error("busy")]
    Busy,
}

impl Unavailable {
    /// A stable label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Unavailable::Timeout => "timeout",
            Unavailable::Unreachable => "unreachable",
            Unavailable::Throttled => "throttled",
            Unavailable::BadAnswer => "bad_answer",
            Unavailable::Busy => "busy",
        }
    }
}

/// Reads Cognito's answer to `GetUser` ([`CognitoAnswer`]); throttling, server errors and
/// anything else are no verdict.
pub fn classify(status: u16, body: &[u8]) -> Result<CognitoAnswer, Unavailable> {
    if status == 200 {
        return Ok(CognitoAnswer::Live);
    }
    #[derive(Deserialize)]
    struct Error {
        #[serde(rename = "__type")]
        kind: Option<String>,
        // AWS spells it `message`; some SDK paths `Message`.
        #[serde(alias = "Message")]
        message: Option<String>,
    }
    let error = serde_json::from_slice::<Error>(body).ok();
    let kind = error
        .as_ref()
        .and_then(|e| e.kind.clone())
        .unwrap_or_default();
    let message = error
        .and_then(|e| e.message)
        .unwrap_or_default()
        .to_ascii_lowercase();
    // AWS may prefix the type with a namespace (`...#NotAuthorizedException`).
    let kind = kind.rsplit('#').next().unwrap_or("");
    // Smithy's JSON protocols may append `:{uri}` to the type.
    let kind = kind.split(':').next().unwrap_or("");
    match (status, kind) {
        (400, "NotAuthorizedException") if message.contains("has been revoked") => {
            Ok(CognitoAnswer::SessionRevoked)
        }
        (400, "NotAuthorizedException") if message.contains("has expired") => {
            Ok(CognitoAnswer::Expired)
        }
        (400, "NotAuthorizedException") => Ok(CognitoAnswer::Refused),
        (429, _) | (_, "TooManyRequestsException") => Err(Unavailable::Throttled),
        _ => Err(Unavailable::BadAnswer),
    }
}

/// Calls Cognito's `GetUser` with an access token; the token is its own credential, so no AWS
/// signature is needed.
#[derive(Clone)]
pub struct CognitoClient {
    http: reqwest::Client,
}

impl CognitoClient {
    /// A client whose calls give up after `timeout`.
    pub fn new(timeout: Duration) -> Result<CognitoClient, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("cognito-authz/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(CognitoClient { http })
    }

    /// Asks `endpoint` (`https://cognito-idp.{region}.amazonaws.com/`) about `token`, giving up
    /// after `timeout` (what is left of the check's budget).
    pub async fn get_user(
        &self,
        endpoint: &str,
        token: &str,
        timeout: Duration,
    ) -> Result<CognitoAnswer, Unavailable> {
        let span = crate::trace::get_user_span();
        let answer = self
            .ask(endpoint, token, timeout)
            .instrument(span.clone())
            .await;
        match answer {
            Ok(answer) => {
                span.record("outcome", answer.as_str());
            }
            Err(unavailable) => crate::trace::record_failure(&span, unavailable.as_str()),
        }
        answer
    }

    async fn ask(
        &self,
        endpoint: &str,
        token: &str,
        timeout: Duration,
    ) -> Result<CognitoAnswer, Unavailable> {
        let response = self
            .http
            .post(endpoint)
            .timeout(timeout)
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amz-target", "AWSCognitoIdentityProviderService.GetUser")
            .body(serde_json::json!({ "AccessToken": token }).to_string())
            .send()
            .await
            .map_err(|err| {
                if err.is_timeout() {
                    Unavailable::Timeout
                } else {
                    Unavailable::Unreachable
                }
            })?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(|err| {
            if err.is_timeout() {
                Unavailable::Timeout
            } else {
                Unavailable::BadAnswer
            }
        })?;
        classify(status, &body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids<'a>(jti: &str, session: &str, sub: &'a str, iat: i64) -> TokenIds<'a> {
        TokenIds {
            jti: Some(id_digest(jti)),
            origin_jti: Some(id_digest(session)),
            sub,
            iat,
        }
    }

    #[test]
    fn each_kind_of_revocation_matches_what_it_names() {
        let list = RevocationList::default();
        assert!(!list.is_revoked(&ids("j", "s", "u", 100), 1_000));
        list.insert(&Entry::new(Revocation::Jti("j1".into()), 1_000, 86_400))
            .unwrap();
        list.insert(&Entry::new(Revocation::Session("s1".into()), 1_000, 86_400))
            .unwrap();
        let _ = list.insert(&Entry::new(
            Revocation::Sub {
                sub: "u1".into(),
                before: 500,
            },
            1_000,
            86_400,
        ));
        assert!(list.is_revoked(&ids("j1", "s", "u", 100), 1_000));
        assert!(
            list.is_revoked(&ids("j2", "s1", "u", 100), 1_000),
            "session"
        );
        assert!(
            list.is_revoked(&ids("j2", "s2", "u1", 499), 1_000),
            "before"
        );
        assert!(
            !list.is_revoked(&ids("j2", "s2", "u1", 500), 1_000),
            "after"
        );
        assert!(!list.is_revoked(&ids("j2", "s2", "u2", 100), 1_000));
        assert_eq!(list.len(), 3);
    }

    #[test]
    fn an_entry_expires_once_no_token_it_matches_can_be_valid() {
        let list = RevocationList::default();
        let entry = Entry::new(Revocation::Session("s".into()), 1_000, 100);
        assert_eq!(entry.expires, 1_100);
        list.insert(&entry).unwrap();
        assert!(list.is_revoked(&ids("j", "s", "u", 0), 1_099));
        assert!(!list.is_revoked(&ids("j", "s", "u", 0), 1_100));
        // Tokens issued before `before` are dead `lifetime` after it.
        let sub = Entry::new(
            Revocation::Sub {
                sub: "u".into(),
                before: 900,
            },
            1_000,
            100,
        );
        assert_eq!(sub.expires, 1_000);
        list.insert(&sub).unwrap();
        list.purge(1_100);
        assert!(list.is_empty());
    }

    /// A cut-off a little in the future (the leeway lets an operator cover a sign-in under
    /// way) revokes the tokens issued until then, and is kept, in this list and as the
    /// entry's expiry in Redis, until the last of them can no longer be valid: one issued a
    /// second before the cut-off lives a day from then, plus the leeway. Kept only a day from
    /// the revocation, it was forgotten while that token still passed; and a replica meeting
    /// the user's earlier cut-off (its own key, expiring later) took that one instead.
    #[test]
    fn a_future_cut_off_is_kept_while_a_token_it_revokes_can_be_valid() {
        let (now, leeway) = (1_000_000, 300);
        let before = now + 200;
        let entry = Entry::new(
            Revocation::Sub {
                sub: "u".into(),
                before,
            },
            now,
            entry_lifetime(Duration::from_secs(300)),
        );
        assert_eq!(entry.admissible(now, leeway), Ok(()));
        let list = RevocationList::default();
        list.insert(&entry).unwrap();
        // Issued a second before the cut-off, with the longest life a token has: `verify`
        // accepts it until `leeway` past its `exp`.
        let iat = before - 1;
        let exp = iat + crate::verify::MAX_TOKEN_LIFETIME_SECS;
        let last_accepted = exp + leeway - 1;
        list.purge(last_accepted);
        assert!(list.is_revoked(&ids("j", "s", "u", iat), last_accepted));
        assert!(entry.expires > last_accepted, "{entry:?}");
    }

    #[test]
    fn cognitos_answers_are_classified_by_their_exact_shapes() {
        assert_eq!(classify(200, b"{}"), Ok(CognitoAnswer::Live));
        // AWS's three NotAuthorizedException messages for GetUser, as it sends them.
        assert_eq!(
            classify(
                400,
                br#"{"__type":"NotAuthorizedException","message":"Access Token has been revoked"}"#
            ),
            Ok(CognitoAnswer::SessionRevoked)
        );
        assert_eq!(
            classify(
                400,
                br#"{"__type":"NotAuthorizedException","message":"Access Token has expired"}"#
            ),
            Ok(CognitoAnswer::Expired)
        );
        assert_eq!(
            classify(
                400,
                br#"{"__type":"NotAuthorizedException","message":"Invalid Access Token"}"#
            ),
            Ok(CognitoAnswer::Refused)
        );
        assert_eq!(
            classify(
                400,
                br#"{"__type":"com.amazonaws.cognito.identity.idp.model#NotAuthorizedException","Message":"Access Token has been revoked"}"#
            ),
            Ok(CognitoAnswer::SessionRevoked)
        );
        // The emulator's answer for a signed-out token: refused, no session ended.
        assert_eq!(
            classify(
                400,
                br#"{"__type":"NotAuthorizedException","message":"Invalid token"}"#
            ),
            Ok(CognitoAnswer::Refused)
        );
        assert_eq!(
            classify(400, br#"{"__type":"com.amazon#NotAuthorizedException"}"#),
            Ok(CognitoAnswer::Refused)
        );
        assert_eq!(
            classify(
                400,
                br#"{"__type":"NotAuthorizedException:http://internal.amazon.com/coral/","message":"Access Token has been revoked"}"#
            ),
            Ok(CognitoAnswer::SessionRevoked)
        );
        assert_eq!(CognitoAnswer::Expired.verdict(), None);
        assert_eq!(
            CognitoAnswer::Refused.verdict(),
            Some(CognitoVerdict::Revoked)
        );
        assert_eq!(
            classify(400, br#"{"__type":"TooManyRequestsException"}"#),
            Err(Unavailable::Throttled)
        );
        assert_eq!(classify(429, b""), Err(Unavailable::Throttled));
        assert_eq!(classify(500, b"<html>"), Err(Unavailable::BadAnswer));
        assert_eq!(
            classify(400, br#"{"__type":"InvalidParameterException"}"#),
            Err(Unavailable::BadAnswer)
        );
        assert_eq!(classify(400, b"garbage"), Err(Unavailable::BadAnswer));
    }

    #[test]
    fn entries_learned_from_redis_leave_a_quarter_of_the_cap_to_the_operator() {
        assert_eq!(
            [1, 2, 4, 100, 100_000].map(learned_cap),
            [0, 1, 3, 75, 75_000]
        );
        let list = RevocationList::new(8, None);
        let jti = |id: &str| Entry::new(Revocation::Jti(id.into()), 1_000, 100);
        for i in 0..6 {
            list.insert_learned(&jti(&format!("learned-{i}"))).unwrap();
        }
        assert_eq!(
            list.insert_learned(&jti("one more")),
            Err(Refused::Full),
            "Redis may fill three quarters"
        );
        // Renewing one already held is not a new entry.
        list.insert_learned(&jti("learned-0")).unwrap();
        list.insert(&jti("operator-1")).unwrap();
        list.insert(&jti("operator-2")).unwrap();
        assert_eq!(list.insert(&jti("operator-3")), Err(Refused::Full));
        assert_eq!(list.len(), 8);
    }

    #[test]
    fn the_list_holds_at_most_its_cap_and_refuses_what_is_too_large_or_in_the_future() {
        let list = RevocationList::new(2, None);
        let jti = |id: &str| Entry::new(Revocation::Jti(id.into()), 1_000, 100);
        list.insert(&jti("a")).unwrap();
        list.insert(&jti("b")).unwrap();
        assert_eq!(list.insert(&jti("c")), Err(Refused::Full));
        // Renewing one already held is not a new entry.
        list.insert(&jti("a")).unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(
            jti(&"x".repeat(257)).admissible(1_000, 30),
            Err(Refused::TooLarge)
        );
        assert_eq!(jti(" ").admissible(1_000, 30), Err(Refused::TooLarge));
        assert_eq!(jti(&"x".repeat(256)).admissible(1_000, 30), Ok(()));
        let sub = |before: i64| Entry {
            revocation: Revocation::Sub {
                sub: "u".into(),
                before,
            },
            expires: 2_000,
        };
        assert_eq!(sub(1_030).admissible(1_000, 30), Ok(()));
        assert_eq!(sub(1_031).admissible(1_000, 30), Err(Refused::Future));
    }
}
