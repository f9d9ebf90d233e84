//! The decision core: for one request (method, host, path, headers, `context_extensions`),
//! find the credential, apply the route's policy and say what Envoy should do — allow with
//! identity headers to set and headers to remove, allow anonymously, or deny with a status,
//! headers and a body. Plain values, no wire format: the gRPC adapter ([`crate::authz`]) and the
//! HTTP adapter ([`crate::http_authz`]) each render an [`Outcome`] in a few lines.
//!
//! Counting and the decision log happen here too, so both protocols count and log alike.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use tracing::info;

use crate::cache::{Lookup, TokenCache};
use crate::clock::Clock;
use crate::credential::{find_credential, is_preflight, Credential, Keys, Token};
use crate::header_plan::Rewrite;
use crate::headers::Headers;
use crate::identity::Identity;
use crate::metrics::Metrics;
use crate::policy::{host_name, Mode, OverrideError, Requirements, Resolved, RouteConfig};
use crate::revocation::{RevocationList, TokenIds};
use crate::revocation_check::{Check, OnUnavailable, RevocationChecker, RevocationMode};
use crate::verify::{Reason, Verifier};

/// Why a request was denied: a token reason or a policy reason. Codes are stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// No credential on a route that requires one.
    NoToken,
    /// A credential header that is not exactly one well-formed bearer token.
    InvalidRequest,
    /// A `Host`/`:authority` that is not one host name with an optional port: no rule can be
    /// chosen for it, and any fallback could be weaker than the host's own rule.
    BadHost,
    /// The token failed verification.
    Token(Reason),
    /// A valid token from a pool the route does not accept.
    PoolNotAllowed,
    /// A valid token in none of the route's groups.
    MissingGroup,
    /// A valid token lacking one of the route's scopes.
    MissingScope,
    /// A claim we would inject is not a safe header value (control characters, too long).
    UnsafeClaim,
    /// Revoked: explicitly, or Cognito refused the token (signed out everywhere).
    Revoked,
    /// The route requires a revocation check and Cognito gave no verdict.
    RevocationUnavailable,
    /// The route requires a revocation check that `GetUser` cannot make for this token (an ID
    /// token, or an access token without the `aws.cognito.signin.user.admin` scope).
    RevocationUnverifiable,
}

impl DenyReason {
    /// Every reason a denial can carry but the token's own ([`Reason::ALL`]).
    pub const OWN: [DenyReason; 10] = [
        DenyReason::NoToken,
        DenyReason::InvalidRequest,
        DenyReason::BadHost,
        DenyReason::PoolNotAllowed,
        DenyReason::MissingGroup,
        DenyReason::MissingScope,
        DenyReason::UnsafeClaim,
        DenyReason::Revoked,
        DenyReason::RevocationUnavailable,
        DenyReason::RevocationUnverifiable,
    ];

    /// Every reason code a decision can carry: an allow's (`valid`, `public`, `preflight`),
    /// then every denial's (an anonymous allow names one of these too).
    pub fn every_code() -> Vec<&'static str> {
        let mut codes = vec!["valid", "public", "preflight"];
        codes.extend(DenyReason::OWN.map(DenyReason::as_str));
        codes.extend(Reason::ALL.map(Reason::as_str));
        codes
    }

    /// The stable code used in logs, metrics and the deny body.
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::NoToken => "no_token",
            DenyReason::InvalidRequest => "invalid_request",
            DenyReason::BadHost => "bad_host",
            DenyReason::Token(reason) => reason.as_str(),
            DenyReason::PoolNotAllowed => "pool_not_allowed",
            DenyReason::MissingGroup => "missing_group",
            DenyReason::MissingScope => "missing_scope",
            DenyReason::UnsafeClaim => "unsafe_claim",
            DenyReason::Revoked => "revoked",
            DenyReason::RevocationUnavailable => "revocation_unavailable",
            DenyReason::RevocationUnverifiable => "revocation_unverifiable",
        }
    }

    /// The HTTP status: 400 malformed credential, 401 missing or invalid token, 403 valid token
    /// without the rights, 503 keys not loaded yet.
    pub fn http_status(self) -> u16 {
        match self {
            DenyReason::InvalidRequest | DenyReason::BadHost => 400,
            DenyReason::MissingGroup
            | DenyReason::MissingScope
            | DenyReason::RevocationUnverifiable => 403,
            DenyReason::Token(Reason::KeysUnavailable) | DenyReason::RevocationUnavailable => 503,
            _ => 401,
        }
    }

    /// The RFC 6750 error code (`None` when the request carried no credential at all).
    pub fn rfc6750_error(self) -> Option<&'static str> {
        match self {
            DenyReason::NoToken => None,
            DenyReason::InvalidRequest | DenyReason::BadHost => Some("invalid_request"),
            DenyReason::MissingGroup
            | DenyReason::MissingScope
            | DenyReason::RevocationUnverifiable => Some("insufficient_scope"),
            DenyReason::Token(Reason::KeysUnavailable) | DenyReason::RevocationUnavailable => {
                Some("temporarily_unavailable")
            }
            _ => Some("invalid_token"),
        }
    }

    fn description(self) -> &'static str {
        match self {
            DenyReason::NoToken => "a bearer token is required",
            DenyReason::InvalidRequest => "the authorization header is not one bearer token",
            DenyReason::BadHost => "the host is not one host name with an optional port",
            DenyReason::Token(reason) => reason.description(),
            DenyReason::PoolNotAllowed => "the token's user pool is not accepted here",
            DenyReason::MissingGroup => "the caller is in none of the required groups",
            DenyReason::MissingScope => "the token lacks a required scope",
            DenyReason::UnsafeClaim => "a claim holds a value that cannot be forwarded",
            DenyReason::Revoked => "the token has been revoked",
            DenyReason::RevocationUnavailable => "the token's revocation status is unavailable",
            DenyReason::RevocationUnverifiable => {
                "the token cannot be checked for revocation here (an access token with the aws.cognito.signin.user.admin scope is needed)"
            }
        }
    }
}

/// What was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Allowed with the caller's identity.
    Allow,
    /// Allowed without identity (public route, or optional route without a usable token).
    AllowAnonymous,
    /// Denied.
    Deny(DenyReason),
}

impl Decision {
    /// `allow`, `allow_anonymous` or `deny`.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::AllowAnonymous => "allow_anonymous",
            Decision::Deny(_) => "deny",
        }
    }
}

/// A decision with its reason code and, when allowed with identity, the claims.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// What was decided.
    pub decision: Decision,
    /// The reason code: `valid`, `public`, `preflight`, `no_token`, or a deny/token reason (an
    /// anonymous allow on an optional route names why the token was not used).
    pub reason: &'static str,
    /// The caller's identity (allow only).
    pub identity: Option<Identity>,
}

impl Verdict {
    fn deny(reason: DenyReason) -> Verdict {
        Verdict {
            decision: Decision::Deny(reason),
            reason: reason.as_str(),
            identity: None,
        }
    }

    fn anonymous(reason: &'static str) -> Verdict {
        Verdict {
            decision: Decision::AllowAnonymous,
            reason,
            identity: None,
        }
    }

    fn allow(identity: Identity) -> Verdict {
        Verdict {
            decision: Decision::Allow,
            reason: "valid",
            identity: Some(identity),
        }
    }
}

/// One request as either protocol hands it over. Header names are lowercase; repeated
/// headers are joined with commas, as Envoy does for gRPC.
#[derive(Clone, Copy)]
pub struct CheckInput<'a> {
    /// The request method.
    pub method: &'a str,
    /// `Host` / `:authority`.
    pub host: &'a str,
    /// The path with its query.
    pub path: &'a str,
    /// The headers Envoy sent (`allowed_headers`).
    pub headers: &'a dyn Headers,
    /// `context_extensions` (gRPC only; empty over HTTP).
    pub extensions: &'a HashMap<String, String>,
}

/// What Envoy should do with the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Let it through after setting [`Rewrite::set`] (each replacing the client's value) and
    /// removing [`Rewrite::remove`]. No header is in both.
    Allow(Rewrite),
    /// Answer the client with this response instead.
    Deny {
        /// The HTTP status.
        status: u16,
        /// Response headers.
        headers: Vec<(&'static str, String)>,
        /// The JSON body.
        body: String,
    },
}

/// A decision and what to tell Envoy about it.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The decision as made (in dry-run mode a denial here may still be answered as an allow).
    pub verdict: Verdict,
    /// What Envoy should do.
    pub answer: Answer,
    /// Fields for Envoy's dynamic metadata (the access log): `decision`, `reason`, `sub`, and
    /// with full metadata also `rule`, `pool`, `token_use`; `dry_run` in dry-run mode.
    pub metadata: Metadata,
}

/// The decision's fields for Envoy's dynamic metadata, read through [`Metadata::iter`]: the
/// values are borrowed from the verdict (an identity's `sub` included), so the usual three
/// fields copy nothing.
#[derive(Debug, Clone)]
pub struct Metadata {
    decision: &'static str,
    reason: &'static str,
    identity: Option<Identity>,
    dry_run: bool,
    /// `rule`, and `pool` and `token_use` for an identity (full metadata only).
    full: Option<(String, Option<(String, &'static str)>)>,
}

impl Metadata {
    /// Every field, `(key, value)`, in a fixed order: `decision`, `reason`, `sub`, `dry_run`,
    /// then `rule`, `pool`, `token_use`.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &str)> + '_ {
        let sub = self.identity.as_ref().map(|i| ("sub", i.sub()));
        let dry_run = self.dry_run.then_some(("dry_run", "true"));
        let full = self.full.iter().flat_map(|(rule, identity)| {
            let identity = identity
                .iter()
                .flat_map(|(pool, token_use)| [("pool", pool.as_str()), ("token_use", *token_use)]);
            std::iter::once(("rule", rule.as_str())).chain(identity)
        });
        [("decision", self.decision), ("reason", self.reason)]
            .into_iter()
            .chain(sub)
            .chain(dry_run)
            .chain(full)
    }

    /// How many fields there are.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether there are none (never: `decision` and `reason` are always there).
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// Everything a configuration decides: swapped whole on reload, so a request sees one.
struct State {
    verifier: Verifier,
    routes: Arc<RouteConfig>,
    cache: Arc<TokenCache>,
    checker: Option<RevocationChecker>,
}

struct Inner {
    state: ArcSwap<State>,
    metrics: Metrics,
    dry_run: AtomicBool,
    full_metadata: AtomicBool,
    /// Explicit revocations: kept across reloads.
    revocations: Arc<RevocationList>,
    /// What every expiry is judged by.
    clock: Clock,
}

/// Decides checks for every protocol. Cheap to clone.
#[derive(Clone)]
pub struct Authorizer {
    inner: Arc<Inner>,
}

impl Authorizer {
    /// An authorizer over `verifier` with `routes`, caching up to `cache_entries` verified
    /// tokens, counting into `metrics`.
    pub fn new(
        verifier: Verifier,
        routes: RouteConfig,
        cache_entries: usize,
        metrics: Metrics,
    ) -> Authorizer {
        Authorizer::with_clock(verifier, routes, cache_entries, metrics, Clock::system())
    }

    /// Like [`Authorizer::new`], judging every expiry by `clock` (a manual one in tests).
    pub fn with_clock(
        verifier: Verifier,
        routes: RouteConfig,
        cache_entries: usize,
        metrics: Metrics,
        clock: Clock,
    ) -> Authorizer {
        let state = State {
            verifier,
            routes: Arc::new(routes),
            cache: Arc::new(TokenCache::with_counters(
                cache_entries,
                metrics.cache_counters(),
            )),
            checker: None,
        };
        let revocations = Arc::new(RevocationList::new(
            crate::revocation::DEFAULT_MAX_REVOCATIONS,
            Some(Arc::new(metrics.clone())),
        ));
        Authorizer {
            inner: Arc::new(Inner {
                state: ArcSwap::from_pointee(state),
                metrics,
                dry_run: AtomicBool::new(false),
                full_metadata: AtomicBool::new(false),
                revocations,
                clock,
            }),
        }
    }

    /// Replaces pools, keys, routes and identity settings at once (a reload). A check in flight
    /// finishes with the configuration it started with, except one that [`Authorizer::decide_now`]
    /// left to wait: [`Authorizer::decide_from`] decides it wholly under the new one (it carries
    /// nothing over). The token cache starts empty, since cached identities belong to the old
    /// pools and header mappings.
    pub fn replace(&self, verifier: Verifier, routes: RouteConfig, cache_entries: usize) {
        let checker = self.inner.state.load().checker.clone();
        let state = State {
            verifier,
            routes: Arc::new(routes),
            cache: Arc::new(TokenCache::with_counters(
                cache_entries,
                self.inner.metrics.cache_counters(),
            )),
            checker,
        };
        self.inner.state.store(Arc::new(state));
    }

    /// Installs (or removes) the Cognito revocation checker, keeping everything else.
    pub fn set_revocation_checker(&self, checker: Option<RevocationChecker>) {
        let current = self.inner.state.load_full();
        self.inner.state.store(Arc::new(State {
            verifier: current.verifier.clone(),
            routes: Arc::clone(&current.routes),
            cache: Arc::clone(&current.cache),
            checker,
        }));
    }

    /// The revocation checker in use, when revocation checks are configured.
    pub fn revocation_checker(&self) -> Option<RevocationChecker> {
        self.inner.state.load().checker.clone()
    }

    /// Whether requests no rule matches are confirmed with Cognito (the service-wide setting).
    pub fn checks_cognito_by_default(&self) -> bool {
        self.inner.state.load().routes.fallback.revocation == RevocationMode::Cognito
    }

    /// The explicit revocations in force (shared with Redis's subscriber).
    pub fn revocations(&self) -> Arc<RevocationList> {
        Arc::clone(&self.inner.revocations)
    }

    /// Switches dry-run (shadow) mode: every decision is computed, logged and counted as usual,
    /// but a denial is answered as an anonymous allow. Identity headers are still injected only
    /// for valid tokens and stripped otherwise.
    pub fn set_dry_run(&self, enabled: bool) {
        self.inner.dry_run.store(enabled, Ordering::Relaxed);
    }

    /// Switches full decision metadata (`rule`, `pool`, `token_use` besides `decision`,
    /// `reason` and `sub`). Off by default: Envoy pays for every field it receives.
    pub fn set_full_metadata(&self, enabled: bool) {
        self.inner.full_metadata.store(enabled, Ordering::Relaxed);
    }

    /// Every header an allow sets or removes under the running configuration (the identity
    /// headers and the mapped claim headers).
    pub fn managed_headers(&self) -> Vec<String> {
        self.inner.state.load().routes.managed_headers.clone()
    }

    /// Every header an allow may set or remove ([`crate::header_plan::HeaderPlan::rewritten`]).
    pub fn rewritten_headers(&self) -> Vec<String> {
        let state = self.inner.state.load();
        state
            .routes
            .headers
            .rewritten()
            .map(str::to_string)
            .collect()
    }

    /// Tokens in the verified-token cache.
    pub fn cache_len(&self) -> usize {
        self.inner.state.load().cache.len()
    }

    /// The current verifier (and through it the key store).
    pub fn verifier(&self) -> Verifier {
        self.inner.state.load().verifier.clone()
    }

    /// The clock every expiry is judged by.
    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    /// Decides one request and says what Envoy should do; counts and logs the decision. An
    /// error means Envoy sent a `context_extensions` value we cannot read: its configuration is
    /// wrong, and the adapter fails the check closed.
    pub async fn decide(&self, input: &CheckInput<'_>) -> Result<Outcome, OverrideError> {
        let resume = Resume {
            started: self.started(),
            cache: Asked::No,
        };
        self.decide_from(input, resume).await
    }

    /// When a check starts, if anything reads its latency: the metrics (not when Envoy's stats
    /// take the counts: the module times its checks itself) or the decision log (not when
    /// filtered out). None spares the clock's reads.
    fn started(&self) -> Option<Instant> {
        let logged = tracing::enabled!(target: "cognito_authz::decision", tracing::Level::INFO);
        (logged || self.inner.metrics.times_checks()).then(Instant::now)
    }

    /// Decides the request as [`Authorizer::decide`] does, if that needs no wait: a public
    /// route, a preflight, no or a malformed credential, a token found in the cache. Otherwise
    /// (a token to verify, a route that asks Cognito) nothing is decided, counted or logged,
    /// and [`Authorizer::decide_from`] finishes the decision from the [`Resume`] given back,
    /// the cache not asked twice. The same request decided either way gets the same outcome.
    pub fn decide_now(&self, input: &CheckInput<'_>) -> Now {
        let started = self.started();
        let state = self.inner.state.load();
        let (host, requirements) = match state.routed(input) {
            Ok(routed) => routed,
            Err(err) => return Now::Decided(Err(err)),
        };
        let now = self.inner.clock.now();
        let verdict = match host {
            None => Verdict::deny(DenyReason::BadHost),
            Some(_) => match state.decide_now(
                input.method,
                &requirements,
                input.headers,
                &self.inner.revocations,
                now,
            ) {
                Ok(verdict) => verdict,
                Err(cache) => return Now::Wait(Resume { started, cache }),
            },
        };
        Now::Decided(Ok(self.finish(
            &state,
            input,
            &requirements,
            verdict,
            started,
        )))
    }

    /// Finishes a decision [`Authorizer::decide_now`] left to wait (or, from
    /// [`Resume::fresh`], makes one from the start): as [`Authorizer::decide`].
    pub async fn decide_from(
        &self,
        input: &CheckInput<'_>,
        resume: Resume,
    ) -> Result<Outcome, OverrideError> {
        let state = self.inner.state.load_full();
        let (host, requirements) = state.routed(input)?;
        // A host no rule can be chosen for is refused: the `required` fallback would skip a
        // stricter rule for that host (or for that path) as surely as a permissive one.
        let verdict = if host.is_none() {
            Verdict::deny(DenyReason::BadHost)
        } else {
            state
                .decide(
                    input.method,
                    &requirements,
                    input.headers,
                    &self.inner.revocations,
                    self.inner.clock.now(),
                    resume.cache,
                )
                .await
        };
        Ok(self.finish(&state, input, &requirements, verdict, resume.started))
    }

    /// A verdict made into what Envoy should do, counted, traced and logged.
    fn finish(
        &self,
        state: &State,
        input: &CheckInput<'_>,
        requirements: &Requirements,
        verdict: Verdict,
        started: Option<Instant>,
    ) -> Outcome {
        let dry_run = self.inner.dry_run.load(Ordering::Relaxed);
        let answer = state.answer(&verdict, input.headers, dry_run);
        let metadata = state.metadata(
            &verdict,
            requirements,
            dry_run,
            self.inner.full_metadata.load(Ordering::Relaxed),
        );

        let elapsed = started.map(|started| started.elapsed());
        self.inner.metrics.decision(
            verdict.decision.as_str(),
            verdict.reason,
            elapsed.map_or(0.0, |elapsed| elapsed.as_secs_f64()),
        );
        crate::trace::record_decision(
            verdict.decision.as_str(),
            verdict.reason,
            &requirements.rule,
            verdict
                .identity
                .as_ref()
                .and_then(|i| state.verifier.pools().get(i.pool()))
                .map(|p| p.id.as_str()),
        );
        info!(
            target: "cognito_authz::decision",
            decision = verdict.decision.as_str(),
            reason = verdict.reason,
            rule = %requirements.rule,
            method = %input.method,
            sub = verdict.identity.as_ref().map(|i| i.sub()),
            request_id = input.headers.get("x-request-id"),
            dry_run,
            latency_us = elapsed.map(|elapsed| elapsed.as_micros() as u64),
            "check"
        );
        Outcome {
            verdict,
            answer,
            metadata,
        }
    }
}

/// A decision [`Authorizer::decide_now`] could not make without waiting, or none begun.
#[derive(Debug, Clone, Copy)]
pub struct Resume {
    /// When the check started (its latency counts from here), if anything reads it.
    started: Option<Instant>,
    /// Whether the token cache was asked already (and had no usable entry).
    cache: Asked,
}

impl Resume {
    /// A decision from the start, timed.
    pub fn fresh() -> Resume {
        Resume {
            started: Some(Instant::now()),
            cache: Asked::No,
        }
    }
}

/// Whether a decision's token cache lookup is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    No,
    /// Asked, and it had nothing usable: the token is verified without asking again (which
    /// would count the lookup twice, and find nothing it did not find).
    Missed,
}

/// What [`Authorizer::decide_now`] could do.
#[derive(Debug)]
// The outcome stays inline: returned through one call, and a box would be an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Now {
    /// Decided (an error as from [`Authorizer::decide`]).
    Decided(Result<Outcome, OverrideError>),
    /// Needs a wait: finish with [`Authorizer::decide_from`].
    Wait(Resume),
}

impl State {
    /// The request's host name (none: not one host with an optional port) and the route's
    /// requirements.
    fn routed<'i>(
        &self,
        input: &CheckInput<'i>,
    ) -> Result<(Option<&'i str>, Resolved<'_>), OverrideError> {
        let host = host_name(input.host);
        let requirements =
            self.routes
                .requirements_at(input.method, host, input.path, input.extensions)?;
        Ok((host, requirements))
    }

    /// The identity of the token the cache holds and may still use, the lookup counted.
    fn cached_identity(&self, token: &Token<'_>, now: i64) -> Option<Identity> {
        if !self.cache.is_enabled() {
            return None;
        }
        let keys = self.verifier.keys();
        match self
            .cache
            .get(&token.key(), now, self.verifier.leeway(), |pool, kid| {
                keys.has_key(pool, kid)
            }) {
            (Lookup::Hit, Some(identity)) => {
                crate::trace::record_cache(true);
                Some(identity)
            }
            _ => None,
        }
    }

    async fn identity(
        &self,
        token: Token<'_>,
        now: i64,
        cache: Asked,
    ) -> Result<Identity, DenyReason> {
        if cache == Asked::No {
            if let Some(identity) = self.cached_identity(&token, now) {
                return Ok(identity);
            }
        }
        crate::trace::record_cache(false);
        let claims = self
            .verifier
            .verify_at(token.as_str(), now)
            .await
            .map_err(|rejection| DenyReason::Token(rejection.reason))?;
        let identity = Identity::from_claims(&claims.claim_set(), &self.routes.claim_headers)
            .map_err(|_| DenyReason::UnsafeClaim)?;
        if self.cache.is_enabled() {
            self.cache.insert(token.key(), identity.clone());
        }
        Ok(identity)
    }

    /// The credential the route's decision turns on, or the verdict made without one (a
    /// public route, a preflight, none or a malformed one).
    fn credential<'h>(
        &self,
        method: &str,
        requirements: &Requirements,
        headers: &'h dyn Headers,
    ) -> Result<Token<'h>, Verdict> {
        let routes = &*self.routes;
        if requirements.mode == Mode::Public {
            return Err(Verdict::anonymous("public"));
        }
        if requirements.allow_preflight && is_preflight(method, headers) {
            return Err(Verdict::anonymous("preflight"));
        }
        let optional = requirements.mode == Mode::Optional;
        // The cache's key is a SHA-256 of the token: with no cache it is worked out only if
        // the revocation check asks for it.
        let keys = if self.cache.is_enabled() {
            Keys::Wanted
        } else {
            Keys::Unneeded
        };
        let credential = find_credential(
            headers,
            routes.token_header.as_deref(),
            routes.token_cookie.as_deref(),
            keys,
        );
        match credential {
            Credential::Token(token) => Ok(token),
            Credential::Missing if optional => Err(Verdict::anonymous("no_token")),
            Credential::Missing => Err(Verdict::deny(DenyReason::NoToken)),
            Credential::Malformed => {
                Err(refuse(optional, requirements, DenyReason::InvalidRequest))
            }
        }
    }

    /// The checks of a token's identity that need no wait: the route's policy, the explicit
    /// revocations. `Err`: the verdict they refuse it with.
    fn judged(
        &self,
        requirements: &Requirements,
        identity: &Identity,
        revocations: &RevocationList,
        now: i64,
    ) -> Result<(), Verdict> {
        let optional = requirements.mode == Mode::Optional;
        if let Some(reason) = self.policy_failure(requirements, identity) {
            return Err(refuse(optional, requirements, reason));
        }
        let ids = TokenIds {
            jti: identity.jti(),
            origin_jti: identity.origin_jti(),
            sub: identity.sub(),
            iat: identity.iat(),
        };
        if revocations.is_revoked(&ids, now) {
            return Err(refuse(optional, requirements, DenyReason::Revoked));
        }
        // Not revoked here, but the revocations shared through Redis are not loaded yet (a
        // module just started: unlike a replica it has no readiness to hold traffic back).
        if revocations.loading() {
            return Err(refuse(
                optional,
                requirements,
                DenyReason::RevocationUnavailable,
            ));
        }
        Ok(())
    }

    /// The decision for a request with these headers under these requirements, if it needs no
    /// wait (see [`Authorizer::decide_now`]); else whether the cache was asked.
    fn decide_now(
        &self,
        method: &str,
        requirements: &Requirements,
        headers: &dyn Headers,
        revocations: &RevocationList,
        now: i64,
    ) -> Result<Verdict, Asked> {
        // A route that asks Cognito waits on it (or on Redis) whatever the cache holds; without
        // a cache every token is verified. Both are left whole to the wait, the credential
        // not read twice.
        if requirements.revocation == RevocationMode::Cognito || !self.cache.is_enabled() {
            return Err(Asked::No);
        }
        let token = match self.credential(method, requirements, headers) {
            Ok(token) => token,
            Err(verdict) => return Ok(verdict),
        };
        let Some(identity) = self.cached_identity(&token, now) else {
            return Err(Asked::Missed);
        };
        if let Err(verdict) = self.judged(requirements, &identity, revocations, now) {
            return Ok(verdict);
        }
        Ok(Verdict::allow(identity))
    }

    /// The decision for a request with these headers under these requirements.
    async fn decide(
        &self,
        method: &str,
        requirements: &Requirements,
        headers: &dyn Headers,
        revocations: &RevocationList,
        now: i64,
        cache: Asked,
    ) -> Verdict {
        let token = match self.credential(method, requirements, headers) {
            Ok(token) => token,
            Err(verdict) => return verdict,
        };
        let optional = requirements.mode == Mode::Optional;
        let identity = match self.identity(token, now, cache).await {
            Ok(identity) => identity,
            Err(reason) => return refuse(optional, requirements, reason),
        };
        if let Err(verdict) = self.judged(requirements, &identity, revocations, now) {
            return verdict;
        }
        if requirements.revocation == RevocationMode::Cognito {
            let grace = requirements.revocation_on_unavailable == OnUnavailable::Grace;
            let check = match &self.checker {
                Some(checker) => {
                    checker
                        .check(token.key(), token.as_str(), &identity, grace, now)
                        .await
                }
                None => Check::Unavailable(crate::revocation::Unavailable::Unreachable),
            };
            let refused = match check {
                Check::Live => None,
                Check::Revoked => Some(DenyReason::Revoked),
                Check::Expired => Some(DenyReason::Token(Reason::Expired)),
                Check::Unavailable(_) => Some(DenyReason::RevocationUnavailable),
                Check::Unverifiable => match &self.checker {
                    Some(checker) if checker.settings().allow_unverifiable => None,
                    _ => Some(DenyReason::RevocationUnverifiable),
                },
            };
            if let Some(reason) = refused {
                return refuse(optional, requirements, reason);
            }
        }
        Verdict::allow(identity)
    }

    fn policy_failure(
        &self,
        requirements: &Requirements,
        identity: &Identity,
    ) -> Option<DenyReason> {
        if !requirements.pools.is_empty() {
            let pool_id = &self.verifier.pools()[identity.pool()].id;
            if !requirements.pools.contains(pool_id) {
                return Some(DenyReason::PoolNotAllowed);
            }
        }
        if let Some(accepted) = requirements.token_use {
            if !accepted.accepts(identity.token_use()) {
                return Some(DenyReason::Token(Reason::WrongTokenUse));
            }
        }
        if !requirements.groups_any.is_empty()
            && !requirements.groups_any.iter().any(|g| identity.in_group(g))
        {
            return Some(DenyReason::MissingGroup);
        }
        if !requirements
            .scopes_all
            .iter()
            .all(|s| identity.scopes().any(|have| have == s))
        {
            return Some(DenyReason::MissingScope);
        }
        None
    }

    /// What Envoy should do with a verdict: a denial's RFC 6750 answer, or the header plan's
    /// rewrite for an allow (the identity's headers set, every other managed header removed).
    fn answer(&self, verdict: &Verdict, request_headers: &dyn Headers, dry_run: bool) -> Answer {
        let routes = &*self.routes;
        // In dry-run mode a denial is computed, logged and counted, then let through as anonymous.
        if let Decision::Deny(reason) = verdict.decision {
            if !dry_run {
                return deny_answer(reason, &routes.realm);
            }
        }
        Answer::Allow(
            routes
                .headers
                .allow(verdict.identity.as_ref(), request_headers),
        )
    }

    /// Fields for Envoy's access log, under the filter's namespace
    /// (`%DYNAMIC_METADATA(envoy.filters.http.ext_authz:reason)%`).
    fn metadata(
        &self,
        verdict: &Verdict,
        requirements: &Requirements,
        dry_run: bool,
        full: bool,
    ) -> Metadata {
        let full = full.then(|| {
            let identity = verdict.identity.as_ref().map(|identity| {
                let pool = &self.verifier.pools()[identity.pool()].id;
                (pool.clone(), identity.token_use().as_str())
            });
            (requirements.rule.clone(), identity)
        });
        Metadata {
            decision: verdict.decision.as_str(),
            reason: verdict.reason,
            identity: verdict.identity.clone(),
            dry_run,
            full,
        }
    }
}

/// On an optional route a token we cannot use makes the caller anonymous, unless the rule says
/// to deny; on a required route it is denied.
fn refuse(optional: bool, requirements: &Requirements, reason: DenyReason) -> Verdict {
    if optional && !requirements.deny_invalid {
        Verdict::anonymous(reason.as_str())
    } else {
        Verdict::deny(reason)
    }
}

/// The RFC 6750 denial: status, `WWW-Authenticate` (or `retry-after` for 503), no caching, and
/// a JSON body naming the reason.
fn deny_answer(reason: DenyReason, realm: &str) -> Answer {
    let status = reason.http_status();
    let description = reason.description();
    let mut headers = vec![
        ("content-type", "application/json".to_string()),
        ("cache-control", "no-store".to_string()),
    ];
    match (status, reason.rfc6750_error()) {
        (503, _) => headers.push(("retry-after", "5".to_string())),
        (_, None) => headers.push(("www-authenticate", format!("Bearer realm=\"{realm}\""))),
        (_, Some(error)) => headers.push((
            "www-authenticate",
            format!(
                "Bearer realm=\"{realm}\", error=\"{error}\", error_description=\"{description}\""
            ),
        )),
    }
    let body = serde_json::json!({
        "error": reason.rfc6750_error().unwrap_or("unauthorized"),
        "error_description": description,
        "reason": reason.as_str(),
    });
    Answer::Deny {
        status,
        headers,
        body: body.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every reason a request can be denied for.
    fn every_reason() -> Vec<DenyReason> {
        let mut all = DenyReason::OWN.to_vec();
        all.extend(Reason::ALL.map(DenyReason::Token));
        all
    }

    fn body(reason: DenyReason) -> (u16, serde_json::Value, Vec<(&'static str, String)>) {
        match deny_answer(reason, "api") {
            Answer::Deny {
                status,
                headers,
                body,
            } => (status, serde_json::from_str(&body).unwrap(), headers),
            Answer::Allow { .. } => panic!("{reason:?} answered as an allow"),
        }
    }

    #[test]
    fn each_denial_names_its_rfc_6750_error_and_describes_itself() {
        let mut descriptions = std::collections::HashSet::new();
        for reason in every_reason() {
            let (status, body, headers) = body(reason);
            let expected = match status {
                503 => "temporarily_unavailable",
                403 => "insufficient_scope",
                400 => "invalid_request",
                _ if reason == DenyReason::NoToken => "unauthorized",
                _ => "invalid_token",
            };
            assert_eq!(body["error"], expected, "{reason:?}");
            assert_eq!(body["reason"], reason.as_str(), "{reason:?}");
            let description = body["error_description"].as_str().unwrap();
            assert!(description.len() > 10, "{reason:?}: {description:?}");
            assert!(
                descriptions.insert(description.to_string()),
                "{reason:?} shares its description: {description:?}"
            );
            // A 503 asks the client to retry; anything else tells it how to authenticate.
            let retry = headers.iter().any(|(name, _)| *name == "retry-after");
            let challenge = headers.iter().any(|(name, _)| *name == "www-authenticate");
            assert_eq!(
                (retry, challenge),
                (status == 503, status != 503),
                "{reason:?}"
            );
        }
    }

    #[test]
    fn the_unavailable_reasons_are_503s_a_client_may_retry() {
        for reason in [
            DenyReason::Token(Reason::KeysUnavailable),
            DenyReason::RevocationUnavailable,
        ] {
            assert_eq!(reason.http_status(), 503);
            assert_eq!(reason.rfc6750_error(), Some("temporarily_unavailable"));
        }
    }
}
