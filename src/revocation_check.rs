//! Asking Cognito whether a locally valid access token was revoked, at a cost the route chooses:
//! at most one `GetUser` call per token per TTL (shared by concurrent requests here, and by
//! every replica through Redis), a cap on calls in flight per pool, a timeout, and a documented
//! choice when Cognito gives no answer (fail closed, or accept a recent verdict).
//!
//! A revoked answer also revokes the token's whole sign-in session (`origin_jti`), so the
//! session's other and refreshed tokens are refused without another call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::Instrument as _;

use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Semaphore};
use tracing::debug;

use crate::clock::Clock;
use crate::identity::{Identity, TokenUse};
use crate::lock;
use crate::revocation::{
    CognitoAnswer, CognitoClient, CognitoVerdict, Entry, Revocation, RevocationList, Unavailable,
};
use crate::shared::Shared;

/// The scope `GetUser` needs on an access token.
pub const ADMIN_SCOPE: &str = "aws.cognito.signin.user.admin";
/// Default verdict TTL (`COGNITO_REVOCATION_TTL_SECONDS`).
pub const DEFAULT_TTL_SECS: u64 = 60;
/// Default grace for an old verdict when Cognito is unavailable and the route accepts one.
pub const DEFAULT_GRACE_SECS: u64 = 300;
/// Default budget of one token's revocation check: waiting for another replica's answer, a
/// turn in the queue and the `GetUser` call together. The shipped Envoy configs give the whole
/// check 500 ms; 300 leaves room for the rest of it.
pub const DEFAULT_TIMEOUT_MS: u64 = 300;
/// How long a token Cognito gave no verdict on is answered the same without asking again.
pub const NO_VERDICT_HOLD: Duration = Duration::from_secs(1);
/// Calls that may wait for a turn per pool, as a multiple of `max_concurrent`: a burst of new
/// tokens queues briefly instead of failing at once; beyond it, `busy`.
pub const QUEUE_PER_CALL: usize = 8;
/// Default cap on `GetUser` calls in flight per pool (Cognito's `UserRead` quota is 120/s per
/// account and region).
pub const DEFAULT_MAX_CONCURRENT: usize = 16;

/// Whether a route asks Cognito.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RevocationMode {
    /// Local verification only (and explicit revocations).
    Off,
    /// Confirm locally valid access tokens with `GetUser`.
    Cognito,
}

impl RevocationMode {
    /// The words that name each mode, for the config and Envoy's overrides alike.
    pub const CHOICES: [(&'static str, RevocationMode); 2] = [
        ("off", RevocationMode::Off),
        ("cognito", RevocationMode::Cognito),
    ];

    /// Parses `off` or `cognito` (any letter case).
    pub fn parse(value: &str) -> Option<RevocationMode> {
        choose(&Self::CHOICES, value)
    }
}

/// The choice `value` names (trimmed, any letter case), if any.
fn choose<T: Copy>(choices: &[(&str, T)], value: &str) -> Option<T> {
    let value = value.trim();
    choices
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(value))
        .map(|(_, choice)| *choice)
}

/// What a route does when Cognito gives no verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnUnavailable {
    /// 503 `revocation_unavailable` (the default: fail closed).
    Deny,
    /// Accept the last verdict if it is younger than the grace.
    Grace,
}

impl OnUnavailable {
    /// The words that name each policy, for the config and Envoy's overrides alike.
    pub const CHOICES: [(&'static str, OnUnavailable); 2] = [
        ("deny", OnUnavailable::Deny),
        ("grace", OnUnavailable::Grace),
    ];

    /// Parses `deny` or `grace` (any letter case).
    pub fn parse(value: &str) -> Option<OnUnavailable> {
        choose(&Self::CHOICES, value)
    }
}

/// Tuning of the Cognito check.
#[derive(Debug, Clone, Serialize)]
pub struct RevocationSettings {
    /// How long a verdict is trusted.
    #[serde(with = "crate::secs")]
    pub ttl: Duration,
    /// How old a verdict may be when Cognito is unavailable and the route accepts grace.
    #[serde(with = "crate::secs")]
    pub grace: Duration,
    /// Timeout of one `GetUser` call.
    #[serde(with = "crate::secs")]
    pub timeout: Duration,
    /// `GetUser` calls in flight per pool.
    pub max_concurrent: usize,
    /// Let tokens `GetUser` cannot judge (ID tokens, access tokens without the admin scope)
    /// through on routes that require the check (default: deny them).
    pub allow_unverifiable: bool,
}

impl Default for RevocationSettings {
    fn default() -> Self {
        RevocationSettings {
            ttl: Duration::from_secs(DEFAULT_TTL_SECS),
            grace: Duration::from_secs(DEFAULT_GRACE_SECS),
            timeout: Duration::from_millis(DEFAULT_TIMEOUT_MS),
            max_concurrent: DEFAULT_MAX_CONCURRENT,
            allow_unverifiable: false,
        }
    }
}

/// The answer for one token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Cognito (or a fresh shared verdict) says the token is live.
    Live,
    /// Revoked.
    Revoked,
    /// No verdict, and the route takes none older than its grace.
    Unavailable(Unavailable),
    /// An ID token, or an access token without the admin scope: `GetUser` cannot judge it.
    Unverifiable,
    /// Past its `exp` (accepted locally inside the clock leeway) with no fresh verdict, or
    /// Cognito said "Access Token has expired": refused as `expired`, never a revocation.
    Expired,
}

/// Counts check outcomes; the server plugs its metrics in.
pub trait CheckObserver: Send + Sync {
    /// One outcome: `cached`, `shared`, `valid`, `revoked`, `grace`, `unverifiable`, or an
    /// [`Unavailable`] label.
    fn revocation_check(&self, result: &'static str);
}

struct NoObserver;
impl CheckObserver for NoObserver {
    fn revocation_check(&self, _: &'static str) {}
}

type Outcome = Option<Result<CognitoAnswer, Unavailable>>;

/// Asks Cognito, through the caches. Cheap to clone.
#[derive(Clone)]
pub struct RevocationChecker {
    inner: Arc<Inner>,
    clock: Clock,
}

struct Inner {
    settings: RevocationSettings,
    client: CognitoClient,
    /// Per pool: the `GetUser` endpoint (`None`: the pool cannot be asked), its call cap and
    /// the calls waiting for a turn.
    pools: Vec<(Option<String>, Arc<Semaphore>, Arc<AtomicUsize>)>,
    /// Tokens Cognito just gave no verdict on (timeout, throttled, a bad answer), and when.
    no_verdict: quick_cache::sync::Cache<[u8; 16], (Unavailable, std::time::Instant)>,
    /// Kept across reloads: a new configuration does not forget what Cognito said.
    verdicts: Arc<quick_cache::sync::Cache<[u8; 16], (CognitoVerdict, i64)>>,
    in_flight: Mutex<HashMap<[u8; 16], watch::Receiver<Outcome>>>,
    list: Arc<RevocationList>,
    shared: Option<Shared>,
    lifetime: i64,
    observer: Arc<dyn CheckObserver>,
}

impl RevocationChecker {
    /// A checker for pools with these `GetUser` endpoints, recording revoked sessions in `list`
    /// (kept `lifetime` seconds), sharing through `shared` and counting into `observer`.
    pub fn new(
        settings: RevocationSettings,
        endpoints: Vec<Option<String>>,
        list: Arc<RevocationList>,
        shared: Option<Shared>,
        lifetime: i64,
        observer: Option<Arc<dyn CheckObserver>>,
    ) -> Result<RevocationChecker, reqwest::Error> {
        let client = CognitoClient::new(settings.timeout)?;
        let pools = endpoints
            .into_iter()
            .map(|e| {
                (
                    e,
                    Arc::new(Semaphore::new(settings.max_concurrent.max(1))),
                    Arc::new(AtomicUsize::new(0)),
                )
            })
            .collect();
        Ok(RevocationChecker {
            inner: Arc::new(Inner {
                client,
                pools,
                verdicts: Arc::new(quick_cache::sync::Cache::new(100_000)),
                no_verdict: quick_cache::sync::Cache::new(10_000),
                in_flight: Mutex::new(HashMap::new()),
                list,
                shared,
                lifetime,
                observer: observer.unwrap_or_else(|| Arc::new(NoObserver)),
                settings,
            }),
            clock: Clock::system(),
        })
    }

    /// This checker with `previous`'s verdicts (a reload): Cognito's answers stay cached.
    pub fn keeping_verdicts_of(self, previous: &RevocationChecker) -> RevocationChecker {
        let Ok(mut inner) = Arc::try_unwrap(self.inner) else {
            unreachable!("a checker just built has no other handle")
        };
        inner.verdicts = Arc::clone(&previous.inner.verdicts);
        RevocationChecker {
            inner: Arc::new(inner),
            clock: self.clock,
        }
    }

    /// The same checker judging verdict ages by `clock` (a manual one in tests).
    pub fn with_clock(mut self, clock: Clock) -> RevocationChecker {
        self.clock = clock;
        self
    }

    /// The settings.
    pub fn settings(&self) -> &RevocationSettings {
        &self.inner.settings
    }

    fn fresh(&self, key: &[u8; 16], now: i64, age: Duration) -> Option<CognitoVerdict> {
        let (verdict, at) = self.inner.verdicts.get(key)?;
        (now.saturating_sub(at) < i64::try_from(age.as_secs()).unwrap_or(i64::MAX))
            .then_some(verdict)
    }

    /// Every result a check is counted under (the metrics labels).
    pub const RESULTS: [&'static str; 13] = [
        "cached",
        "shared",
        "held",
        "grace",
        "valid",
        "revoked",
        "expired",
        "unverifiable",
        "timeout",
        "unreachable",
        "throttled",
        "bad_answer",
        "busy",
    ];

    fn count(&self, result: &'static str) {
        self.inner.observer.revocation_check(result);
    }

    /// Whether `token` (whose cache key is `key`) is live, asking Cognito at most once per TTL.
    pub async fn check(
        &self,
        key: [u8; 16],
        token: &str,
        identity: &Identity,
        grace: bool,
        now: i64,
    ) -> Check {
        let inner = &*self.inner;
        if identity.token_use() != TokenUse::Access || !identity.scopes().any(|s| s == ADMIN_SCOPE)
        {
            self.count("unverifiable");
            return Check::Unverifiable;
        }
        let ttl = inner.settings.ttl;
        if let Some(verdict) = self.fresh(&key, now, ttl) {
            self.count("cached");
            return verdict_check(verdict);
        }
        // Past its `exp` (accepted inside the clock leeway): Cognito would only say "Access
        // Token has expired", which is no verdict on revocation. Never asked, never revokes:
        // without a fresh verdict the token is simply expired.
        if now > identity.exp() {
            self.count("expired");
            return Check::Expired;
        }
        if let Some(shared) = &inner.shared {
            if let Ok(Some((verdict, at))) = shared.verdict(&key).await {
                if now.saturating_sub(at) < ttl.as_secs() as i64 {
                    inner.verdicts.insert(key, (verdict, at));
                    self.count("shared");
                    return verdict_check(verdict);
                }
            }
        }
        // Cognito gave no verdict on this token a moment ago: answer the same without asking
        // again, so a throttled or failing Cognito is not asked once per request.
        let recent = inner
            .no_verdict
            .get(&key)
            .filter(|(_, at)| at.elapsed() < NO_VERDICT_HOLD);
        let asked = match recent {
            Some((reason, _)) => {
                self.count("held");
                Err(reason)
            }
            None => self.ask(key, token, identity, now).await,
        };
        match asked {
            Ok(answer) => answer_check(answer),
            Err(reason) => {
                if grace {
                    let window = ttl + inner.settings.grace;
                    if let Some(verdict) = self.fresh(&key, now, window) {
                        self.count("grace");
                        return verdict_check(verdict);
                    }
                }
                Check::Unavailable(reason)
            }
        }
    }

    /// Joins the call in flight for this token, or starts one as a task of its own, so a caller
    /// Envoy gives up on does not cancel it.
    async fn ask(
        &self,
        key: [u8; 16],
        token: &str,
        identity: &Identity,
        now: i64,
    ) -> Result<CognitoAnswer, Unavailable> {
        let mut done = {
            let mut in_flight = lock(&self.inner.in_flight);
            // A call that just ended stored its verdict before leaving this map.
            if let Some(verdict) = self.fresh(&key, now, self.inner.settings.ttl) {
                return Ok(verdict_answer(verdict));
            }
            match in_flight.get(&key) {
                Some(done) => done.clone(),
                None => {
                    let (finished, done) = watch::channel(None);
                    in_flight.insert(key, done.clone());
                    let checker = self.clone();
                    let token = token.to_string();
                    let pool = identity.pool();
                    // The cached identity keeps only a digest of the session id; the entry
                    // shared with other replicas needs the id itself, from the token.
                    let session = crate::verify::unverified_payload(&token)
                        .and_then(|p| p.get("origin_jti")?.as_str().map(str::to_string));
                    // The call belongs to the first asker's check: its trace, as a child.
                    let call = async move {
                        let outcome = checker.call(key, &token, pool, session).await;
                        lock(&checker.inner.in_flight).remove(&key);
                        let _ = finished.send(Some(outcome));
                    };
                    tokio::spawn(call.in_current_span());
                    done
                }
            }
        };
        let outcome = match done.wait_for(Option::is_some).await {
            Ok(outcome) => *outcome,
            // The task ended without a word (it cannot panic by design): no verdict.
            Err(_) => None,
        };
        outcome.unwrap_or(Err(Unavailable::BadAnswer))
    }

    /// Another replica may be asking already: waits (half the budget at most) for its verdict
    /// instead of asking again. `None`: ask Cognito here.
    async fn replica_answer(
        &self,
        key: &[u8; 16],
        deadline: tokio::time::Instant,
    ) -> Option<CognitoAnswer> {
        let inner = &*self.inner;
        let settings = &inner.settings;
        let shared = inner.shared.as_ref()?;
        if let Ok(false) = shared.try_lock(key, settings.timeout).await {
            let patience = tokio::time::Instant::now() + settings.timeout / 2;
            while tokio::time::Instant::now() < patience.min(deadline) {
                tokio::time::sleep(Duration::from_millis(25)).await;
                // Only a verdict as fresh as `check` demands: the replica holding the lock
                // (or whoever set it) does not make an old verdict good again.
                if let Ok(Some((verdict, at))) = shared.verdict(key).await {
                    if self.clock.now().saturating_sub(at) < settings.ttl.as_secs() as i64 {
                        inner.verdicts.insert(*key, (verdict, at));
                        self.count("shared");
                        return Some(verdict_answer(verdict));
                    }
                }
            }
            debug!("the replica holding the lock gave no verdict in time: asking Cognito");
        }
        None
    }

    async fn call(
        &self,
        key: [u8; 16],
        token: &str,
        pool: usize,
        session: Option<String>,
    ) -> Result<CognitoAnswer, Unavailable> {
        let inner = &*self.inner;
        let settings = &inner.settings;
        let Some((Some(endpoint), limit, waiting)) = inner.pools.get(pool) else {
            self.count("unreachable");
            return Err(Unavailable::Unreachable);
        };
        // One budget for everything: another replica's answer, a turn, the call itself.
        let deadline = tokio::time::Instant::now() + settings.timeout;
        if let Some(answer) = self.replica_answer(&key, deadline).await {
            return Ok(answer);
        }
        // A short bounded queue: wait for a turn within the budget, or give up at once when
        // too many already wait.
        let queue = settings.max_concurrent.max(1) * QUEUE_PER_CALL;
        if waiting.fetch_add(1, AtomicOrdering::SeqCst) >= queue {
            waiting.fetch_sub(1, AtomicOrdering::SeqCst);
            self.count(Unavailable::Busy.as_str());
            return Err(Unavailable::Busy);
        }
        let turn = tokio::time::timeout_at(deadline, Arc::clone(limit).acquire_owned()).await;
        waiting.fetch_sub(1, AtomicOrdering::SeqCst);
        let Ok(Ok(_permit)) = turn else {
            self.count(Unavailable::Timeout.as_str());
            return Err(Unavailable::Timeout);
        };
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            self.count(Unavailable::Timeout.as_str());
            return Err(Unavailable::Timeout);
        }
        let result = inner.client.get_user(endpoint, token, left).await;
        let now = self.clock.now();
        match result {
            Ok(answer) => {
                self.count(match answer {
                    CognitoAnswer::Live => "valid",
                    CognitoAnswer::SessionRevoked | CognitoAnswer::Refused => "revoked",
                    CognitoAnswer::Expired => "expired",
                });
                // "Expired" is about the clock, not the token: nothing to keep or share.
                if let Some(verdict) = answer.verdict() {
                    inner.verdicts.insert(key, (verdict, now));
                    if let Some(shared) = &inner.shared {
                        let keep = settings.ttl + settings.grace;
                        let _ = shared.store_verdict(&key, verdict, now, keep).await;
                    }
                }
                // Only "Access Token has been revoked" ends the whole sign-in session: its
                // other tokens need no call. Any other refusal is this token's alone.
                // The entry only saves calls (Cognito refuses those tokens anyway), so it stays
                // local and takes at most half the list: whoever can sign sessions in and out
                // must not crowd out the operator's revocations.
                if let (CognitoAnswer::SessionRevoked, Some(session)) = (answer, session) {
                    let entry = Entry::new(Revocation::Session(session), now, inner.lifetime);
                    if let Err(why) = inner.list.insert_within_half(&entry) {
                        debug!(cause = %why, "a revoked session was not recorded");
                    }
                }
            }
            Err(reason) => {
                self.count(reason.as_str());
                // `busy` is about us, not the token: the next request may get a turn.
                if reason != Unavailable::Busy {
                    inner
                        .no_verdict
                        .insert(key, (reason, std::time::Instant::now()));
                }
            }
        }
        result
    }
}

/// What the revocation check said about a token the verifier accepted, as `VerifyToken` and
/// `verify` report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationStatus {
    /// No check configured for requests no rule matches, and no explicit revocation.
    Off,
    /// Cognito says the token is live.
    Valid,
    /// Cognito refused the token.
    Revoked,
    /// An explicit revocation matches it.
    RevokedExplicitly,
    /// Past its `exp` inside the leeway with no fresh verdict, or Cognito said "expired".
    Expired,
    /// `GetUser` cannot judge it (an ID token, or no admin scope); `allowed` when
    /// `COGNITO_REVOCATION_UNVERIFIABLE=allow`.
    Unverifiable {
        /// Whether such tokens are let through.
        allowed: bool,
    },
    /// Cognito gave no verdict: the token's status is unknown, so it is not valid.
    Unavailable(Unavailable),
}

impl RevocationStatus {
    /// `off`, `valid`, `revoked`, `revoked_explicitly`, `expired`, `unverifiable`, or
    /// `unavailable:<why>`.
    pub fn as_str(self) -> &'static str {
        match self {
            RevocationStatus::Off => "off",
            RevocationStatus::Valid => "valid",
            RevocationStatus::Revoked => "revoked",
            RevocationStatus::RevokedExplicitly => "revoked_explicitly",
            RevocationStatus::Expired => "expired",
            RevocationStatus::Unverifiable { .. } => "unverifiable",
            RevocationStatus::Unavailable(reason) => match reason {
                Unavailable::Timeout => "unavailable:timeout",
                Unavailable::Unreachable => "unavailable:unreachable",
                Unavailable::Throttled => "unavailable:throttled",
                Unavailable::BadAnswer => "unavailable:bad_answer",
                Unavailable::Busy => "unavailable:busy",
            },
        }
    }

    /// Whether the token passes: live, not checked, or unverifiable where that is allowed.
    pub fn is_valid(self) -> bool {
        matches!(
            self,
            RevocationStatus::Off
                | RevocationStatus::Valid
                | RevocationStatus::Unverifiable { allowed: true }
        )
    }

    /// The reason code a check would deny with, when it is not valid.
    pub fn reason(self) -> Option<&'static str> {
        match self {
            RevocationStatus::Off
            | RevocationStatus::Valid
            | RevocationStatus::Unverifiable { allowed: true } => None,
            RevocationStatus::Revoked | RevocationStatus::RevokedExplicitly => Some("revoked"),
            RevocationStatus::Expired => Some("expired"),
            RevocationStatus::Unverifiable { allowed: false } => Some("revocation_unverifiable"),
            RevocationStatus::Unavailable(_) => Some("revocation_unavailable"),
        }
    }
}

impl RevocationChecker {
    /// The check for a token the verifier accepted (diagnostics and the `verify` command):
    /// explicit revocations in `list` first, then Cognito when `ask_cognito`.
    pub async fn diagnose(
        &self,
        token: &str,
        claims: &crate::verify::Claims,
        list: &RevocationList,
        ask_cognito: bool,
    ) -> RevocationStatus {
        let now = self.clock.now();
        let allowed = self.inner.settings.allow_unverifiable;
        let Ok(identity) = Identity::from_claims(&claims.claim_set(), &[]) else {
            return RevocationStatus::Unverifiable { allowed };
        };
        let ids = crate::revocation::TokenIds {
            jti: identity.jti(),
            origin_jti: identity.origin_jti(),
            sub: identity.sub(),
            iat: identity.iat(),
        };
        if list.is_revoked(&ids, now) {
            return RevocationStatus::RevokedExplicitly;
        }
        if !ask_cognito {
            return RevocationStatus::Off;
        }
        let key = crate::cache::token_key(token);
        match self.check(key, token, &identity, false, now).await {
            Check::Live => RevocationStatus::Valid,
            Check::Revoked => RevocationStatus::Revoked,
            Check::Expired => RevocationStatus::Expired,
            Check::Unverifiable => RevocationStatus::Unverifiable { allowed },
            Check::Unavailable(reason) => RevocationStatus::Unavailable(reason),
        }
    }
}

fn verdict_answer(verdict: CognitoVerdict) -> CognitoAnswer {
    match verdict {
        CognitoVerdict::Valid => CognitoAnswer::Live,
        CognitoVerdict::Revoked => CognitoAnswer::Refused,
    }
}

fn answer_check(answer: CognitoAnswer) -> Check {
    match answer {
        CognitoAnswer::Live => Check::Live,
        CognitoAnswer::SessionRevoked | CognitoAnswer::Refused => Check::Revoked,
        CognitoAnswer::Expired => Check::Expired,
    }
}

fn verdict_check(verdict: CognitoVerdict) -> Check {
    match verdict {
        CognitoVerdict::Valid => Check::Live,
        CognitoVerdict::Revoked => Check::Revoked,
    }
}

#[cfg(test)]
mod label_tests {
    use super::*;

    /// Every result a check is counted under is in [`RevocationChecker::RESULTS`], the list the
    /// dynamic module defines its Envoy stats from (one it lacks is counted as `other`).
    #[test]
    fn every_counted_result_is_listed() {
        let source = include_str!("revocation_check.rs");
        let mut counted: Vec<&str> = source
            .split("self.count(\"")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .collect();
        assert!(counted.len() >= 5, "{counted:?}");
        counted.extend(
            [
                Unavailable::Timeout,
                Unavailable::Unreachable,
                Unavailable::Throttled,
                Unavailable::BadAnswer,
                Unavailable::Busy,
            ]
            .map(Unavailable::as_str),
        );
        for result in counted {
            assert!(
                RevocationChecker::RESULTS.contains(&result),
                "{result} is not in RESULTS"
            );
        }
    }
}
