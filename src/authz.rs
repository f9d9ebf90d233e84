//! The Envoy ext_authz v3 service: find the token, apply the route's policy, and answer allow
//! (identity headers set with `append: false`, every other managed header removed) or deny
//! (RFC 6750 status, `WWW-Authenticate` and a JSON body).
//!
//! Errors become responses in one place, [`Authorizer::respond`]. Only a `CheckRequest` Envoy
//! itself malformed (no HTTP attributes, an unknown `context_extensions` value) is a gRPC error,
//! which Envoy turns into its `status_on_error`: nothing is ever allowed because something went
//! wrong.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use std::time::Instant;

use envoy_types::ext_authz::v3::pb::{
    Authorization, CheckRequest, CheckResponse, DeniedHttpResponse, HeaderValue, HeaderValueOption,
    HttpResponse, HttpStatus, OkHttpResponse,
};
use envoy_types::pb::google::protobuf::{value::Kind, BoolValue, Struct, Value as PbValue};
use envoy_types::pb::google::rpc;
use tonic::{Request, Response, Status};
use tracing::info;

use crate::cache::{token_key, Identity, Lookup, TokenCache};
use crate::metrics::Metrics;
use crate::policy::{Mode, Requirements, RouteConfig, IDENTITY_PREFIX};
use crate::verify::{Reason, Verifier};

/// Why a request was denied: a token reason or a policy reason. Codes are stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// No credential on a route that requires one.
    NoToken,
    /// A credential header that is not exactly one well-formed bearer token.
    InvalidRequest,
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
}

impl DenyReason {
    /// The stable code used in logs, metrics and the deny body.
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::NoToken => "no_token",
            DenyReason::InvalidRequest => "invalid_request",
            DenyReason::Token(reason) => reason.as_str(),
            DenyReason::PoolNotAllowed => "pool_not_allowed",
            DenyReason::MissingGroup => "missing_group",
            DenyReason::MissingScope => "missing_scope",
            DenyReason::UnsafeClaim => "unsafe_claim",
        }
    }

    /// The HTTP status: 400 malformed credential, 401 missing or invalid token, 403 valid token
    /// without the rights, 503 keys not loaded yet.
    pub fn http_status(self) -> u16 {
        match self {
            DenyReason::InvalidRequest => 400,
            DenyReason::MissingGroup | DenyReason::MissingScope => 403,
            DenyReason::Token(Reason::KeysUnavailable) => 503,
            _ => 401,
        }
    }

    /// The RFC 6750 error code (`None` when the request carried no credential at all).
    pub fn rfc6750_error(self) -> Option<&'static str> {
        match self {
            DenyReason::NoToken => None,
            DenyReason::InvalidRequest => Some("invalid_request"),
            DenyReason::MissingGroup | DenyReason::MissingScope => Some("insufficient_scope"),
            DenyReason::Token(Reason::KeysUnavailable) => Some("temporarily_unavailable"),
            _ => Some("invalid_token"),
        }
    }

    fn description(self) -> &'static str {
        match self {
            DenyReason::NoToken => "a bearer token is required",
            DenyReason::InvalidRequest => "the authorization header is not one bearer token",
            DenyReason::Token(reason) => reason.description(),
            DenyReason::PoolNotAllowed => "the token's user pool is not accepted here",
            DenyReason::MissingGroup => "the caller is in none of the required groups",
            DenyReason::MissingScope => "the token lacks a required scope",
            DenyReason::UnsafeClaim => "a claim holds a value that cannot be forwarded",
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
    /// The reason code: `valid`, `public`, `no_token`, or a deny/token reason (an anonymous
    /// allow on an optional route names why the token was not used).
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
}

/// Where the request's credential stands.
#[derive(Debug, PartialEq, Eq)]
pub enum Credential<'a> {
    /// No credential anywhere we look.
    Missing,
    /// A credential header that is not exactly one well-formed bearer token.
    Malformed,
    /// One token.
    Token(&'a str),
}

/// RFC 6750 `b64token`: the characters a bearer token may use.
fn is_b64token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        })
}

/// Parses `Bearer <token>`: the scheme case-insensitive, exactly one token after it.
pub fn parse_bearer(value: &str) -> Credential<'_> {
    let value = value.trim_matches(|c| c == ' ' || c == '\t');
    let Some((scheme, token)) = value.split_once(' ') else {
        return Credential::Malformed;
    };
    let token = token.trim_start_matches(' ');
    if scheme.eq_ignore_ascii_case("bearer") && is_b64token(token) {
        Credential::Token(token)
    } else {
        Credential::Malformed
    }
}

/// Finds the credential: `authorization`, then the configured header, then the configured
/// cookie. Envoy joins repeated headers with commas, which no bearer token contains, so two
/// `authorization` headers are malformed.
pub fn find_credential<'a>(
    headers: &'a HashMap<String, String>,
    routes: &RouteConfig,
) -> Credential<'a> {
    if let Some(value) = headers.get("authorization") {
        return parse_bearer(value);
    }
    if let Some(value) = routes.token_header.as_ref().and_then(|h| headers.get(h)) {
        let value = value.trim();
        return match parse_bearer(value) {
            Credential::Token(token) => Credential::Token(token),
            _ if is_b64token(value) => Credential::Token(value),
            _ => Credential::Malformed,
        };
    }
    if let (Some(name), Some(cookies)) = (&routes.token_cookie, headers.get("cookie")) {
        let found = cookies
            .split(';')
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| k.trim() == name);
        if let Some((_, value)) = found {
            let value = value.trim().trim_matches('"');
            return if is_b64token(value) {
                Credential::Token(value)
            } else {
                Credential::Malformed
            };
        }
    }
    Credential::Missing
}

/// The `cookie` header without the cookie `name`: `None` when it holds no such cookie, an
/// empty string when nothing else remains.
pub fn strip_cookie(cookies: &str, name: &str) -> Option<String> {
    let mut found = false;
    let kept: Vec<&str> = cookies
        .split(';')
        .map(str::trim)
        .filter(|pair| {
            let is_token = pair.split_once('=').is_some_and(|(k, _)| k.trim() == name);
            found |= is_token;
            !is_token && !pair.is_empty()
        })
        .collect();
    found.then(|| kept.join("; "))
}

/// A CORS preflight: `OPTIONS` with `Origin` and `Access-Control-Request-Method`. Browsers
/// never attach credentials to one; an `OPTIONS` without both headers is an ordinary request.
pub fn is_preflight(method: &str, headers: &HashMap<String, String>) -> bool {
    method == "OPTIONS"
        && headers.contains_key("origin")
        && headers.contains_key("access-control-request-method")
}

/// Everything a configuration decides: swapped whole on reload, so a request sees one.
struct State {
    verifier: Verifier,
    routes: Arc<RouteConfig>,
    cache: TokenCache,
}

struct Inner {
    state: ArcSwap<State>,
    metrics: Metrics,
    dry_run: AtomicBool,
}

/// Decides Checks. Cheap to clone.
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
        let state = State {
            verifier,
            routes: Arc::new(routes),
            cache: TokenCache::with_counters(cache_entries, metrics.cache_counters()),
        };
        Authorizer {
            inner: Arc::new(Inner {
                state: ArcSwap::from_pointee(state),
                metrics,
                dry_run: AtomicBool::new(false),
            }),
        }
    }

    /// Replaces pools, keys, routes and identity settings at once (a reload). Checks in flight
    /// finish with the configuration they started with; the token cache starts empty, since
    /// cached identities belong to the old pools and header mappings.
    pub fn replace(&self, verifier: Verifier, routes: RouteConfig, cache_entries: usize) {
        let state = State {
            verifier,
            routes: Arc::new(routes),
            cache: TokenCache::with_counters(cache_entries, self.inner.metrics.cache_counters()),
        };
        self.inner.state.store(Arc::new(state));
    }

    /// Switches dry-run (shadow) mode: every decision is computed, logged and counted as usual,
    /// but a denial is answered as an anonymous allow. Identity headers are still injected only
    /// for valid tokens and stripped otherwise.
    pub fn set_dry_run(&self, enabled: bool) {
        self.inner.dry_run.store(enabled, Ordering::Relaxed);
    }

    fn is_dry_run(&self) -> bool {
        self.inner.dry_run.load(Ordering::Relaxed)
    }

    /// Tokens in the verified-token cache.
    pub fn cache_len(&self) -> usize {
        self.inner.state.load().cache.len()
    }

    /// The current verifier (and through it the key store).
    pub fn verifier(&self) -> Verifier {
        self.inner.state.load().verifier.clone()
    }

    /// Decides one Check and builds Envoy's answer; counts and logs the decision.
    pub async fn check(&self, request: &CheckRequest) -> Result<CheckResponse, Status> {
        let started = Instant::now();
        let attributes = request
            .attributes
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("CheckRequest has no attributes"))?;
        let http = attributes
            .request
            .as_ref()
            .and_then(|r| r.http.as_ref())
            .ok_or_else(|| Status::invalid_argument("CheckRequest has no HTTP request"))?;
        let state = self.inner.state.load_full();
        let requirements = state
            .routes
            .requirements(
                &http.method,
                &http.host,
                &http.path,
                &attributes.context_extensions,
            )
            .map_err(|err| Status::invalid_argument(err.to_string()))?;

        let dry_run = self.is_dry_run();
        let verdict = state
            .decide(&http.method, &requirements, &http.headers)
            .await;
        let response = state.respond(&verdict, &http.headers, &requirements, dry_run);

        let elapsed = started.elapsed();
        self.inner.metrics.decision(
            verdict.decision.as_str(),
            verdict.reason,
            elapsed.as_secs_f64(),
        );
        let sub = verdict.identity.as_ref().map(|i| i.sub());
        info!(
            target: "cognito_authz::decision",
            decision = verdict.decision.as_str(),
            reason = verdict.reason,
            rule = %requirements.rule,
            method = %http.method,
            sub,
            request_id = http.headers.get("x-request-id").map(String::as_str),
            dry_run,
            latency_us = elapsed.as_micros() as u64,
            "check"
        );
        Ok(response)
    }
}

impl State {
    async fn identity(&self, token: &str) -> Result<Identity, DenyReason> {
        let key = token_key(token);
        let now = crate::unix_now();
        let keys = self.verifier.keys();
        if let (Lookup::Hit, Some(identity)) =
            self.cache
                .get(&key, now, self.verifier.leeway(), |pool, kid| {
                    keys.has_key(pool, kid)
                })
        {
            return Ok(identity);
        }
        let claims = self
            .verifier
            .verify_at(token, now)
            .await
            .map_err(|rejection| DenyReason::Token(rejection.reason))?;
        let identity = Identity::from_claims(&claims, &self.routes.claim_headers)
            .map_err(|_| DenyReason::UnsafeClaim)?;
        self.cache.insert(key, identity.clone());
        Ok(identity)
    }

    /// The decision for a request with these headers under these requirements.
    async fn decide(
        &self,
        method: &str,
        requirements: &Requirements,
        headers: &HashMap<String, String>,
    ) -> Verdict {
        let routes = &*self.routes;
        if requirements.mode == Mode::Public {
            return Verdict::anonymous("public");
        }
        if requirements.allow_preflight && is_preflight(method, headers) {
            return Verdict::anonymous("preflight");
        }
        let optional = requirements.mode == Mode::Optional;
        let token = match find_credential(headers, routes) {
            Credential::Token(token) => token,
            Credential::Missing if optional => return Verdict::anonymous("no_token"),
            Credential::Missing => return Verdict::deny(DenyReason::NoToken),
            Credential::Malformed => {
                return self.refuse(optional, requirements, DenyReason::InvalidRequest)
            }
        };
        let identity = match self.identity(token).await {
            Ok(identity) => identity,
            Err(reason) => return self.refuse(optional, requirements, reason),
        };
        if let Some(reason) = self.policy_failure(requirements, &identity) {
            return self.refuse(optional, requirements, reason);
        }
        Verdict {
            decision: Decision::Allow,
            reason: "valid",
            identity: Some(identity),
        }
    }

    /// On an optional route a token we cannot use makes the caller anonymous, unless the rule
    /// says to deny; on a required route it is denied.
    fn refuse(&self, optional: bool, requirements: &Requirements, reason: DenyReason) -> Verdict {
        if optional && !requirements.deny_invalid {
            Verdict::anonymous(reason.as_str())
        } else {
            Verdict::deny(reason)
        }
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

    /// Envoy's answer for a verdict. On every allow, each managed identity header not set here,
    /// and any request header with our prefix, is removed; none is both set and removed.
    fn respond(
        &self,
        verdict: &Verdict,
        request_headers: &HashMap<String, String>,
        requirements: &Requirements,
        dry_run: bool,
    ) -> CheckResponse {
        let routes = &*self.routes;
        let metadata = self.decision_metadata(verdict, requirements, dry_run);
        // In dry-run mode a denial is computed, logged and counted, then let through as anonymous.
        let shadowed = dry_run && matches!(verdict.decision, Decision::Deny(_));
        match verdict.decision {
            Decision::Deny(reason) if !shadowed => deny_response(reason, &routes.realm, metadata),
            _ => {
                let headers: Vec<(&str, &str)> = verdict
                    .identity
                    .as_ref()
                    .map(|i| i.headers(&routes.claim_headers).collect())
                    .unwrap_or_default();
                let set: HashSet<&str> = headers.iter().map(|(k, _)| *k).collect();
                let mut remove: Vec<String> = routes
                    .managed_headers
                    .iter()
                    .filter(|h| !set.contains(h.as_str()))
                    .cloned()
                    .collect();
                for name in request_headers.keys() {
                    if name.starts_with(IDENTITY_PREFIX)
                        && !set.contains(name.as_str())
                        && !remove.contains(name)
                    {
                        remove.push(name.clone());
                    }
                }
                let mut set_headers: Vec<HeaderValueOption> =
                    headers.iter().map(|(k, v)| overwrite(k, v)).collect();
                if !routes.forward_token {
                    remove.push("authorization".to_string());
                    if let Some(h) = &routes.token_header {
                        remove.push(h.clone());
                    }
                    // The token cookie goes; the app's other cookies stay.
                    let stripped = routes
                        .token_cookie
                        .as_deref()
                        .and_then(|name| strip_cookie(request_headers.get("cookie")?, name));
                    match stripped {
                        Some(rest) if rest.is_empty() => remove.push("cookie".to_string()),
                        Some(rest) => set_headers.push(overwrite("cookie", &rest)),
                        None => {}
                    }
                }
                CheckResponse {
                    status: Some(rpc::Status {
                        code: tonic::Code::Ok as i32,
                        ..Default::default()
                    }),
                    dynamic_metadata: Some(metadata),
                    http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                        headers: set_headers,
                        headers_to_remove: remove,
                        ..Default::default()
                    })),
                }
            }
        }
    }

    /// Dynamic metadata for Envoy's access log, under the filter's namespace
    /// (`%DYNAMIC_METADATA(envoy.filters.http.ext_authz:reason)%`).
    fn decision_metadata(
        &self,
        verdict: &Verdict,
        requirements: &Requirements,
        dry_run: bool,
    ) -> Struct {
        let mut fields = HashMap::from([
            (
                "decision".to_string(),
                string_value(verdict.decision.as_str()),
            ),
            ("reason".to_string(), string_value(verdict.reason)),
            ("rule".to_string(), string_value(&requirements.rule)),
        ]);
        if dry_run {
            fields.insert("dry_run".to_string(), string_value("true"));
        }
        if let Some(identity) = &verdict.identity {
            let pool = &self.verifier.pools()[identity.pool()].id;
            fields.insert("sub".to_string(), string_value(identity.sub()));
            fields.insert("pool".to_string(), string_value(pool));
            fields.insert(
                "token_use".to_string(),
                string_value(identity.token_use().as_str()),
            );
        }
        Struct { fields }
    }
}

/// A header that replaces any client-sent header of the same name. Envoy 1.40 honours only the
/// deprecated `append` flag here (it ignores `append_action`), so it is set explicitly.
#[allow(deprecated)]
fn overwrite(name: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: name.to_string(),
            value: value.to_string(),
            ..Default::default()
        }),
        append: Some(BoolValue { value: false }),
        ..Default::default()
    }
}

fn deny_response(reason: DenyReason, realm: &str, metadata: Struct) -> CheckResponse {
    let status = reason.http_status();
    let description = reason.description();
    let mut headers = vec![
        overwrite("content-type", "application/json"),
        overwrite("cache-control", "no-store"),
    ];
    match (status, reason.rfc6750_error()) {
        (503, _) => headers.push(overwrite("retry-after", "5")),
        (_, None) => headers.push(overwrite(
            "www-authenticate",
            &format!("Bearer realm=\"{realm}\""),
        )),
        (_, Some(error)) => headers.push(overwrite(
            "www-authenticate",
            &format!(
                "Bearer realm=\"{realm}\", error=\"{error}\", error_description=\"{description}\""
            ),
        )),
    }
    let body = serde_json::json!({
        "error": reason.rfc6750_error().unwrap_or("unauthorized"),
        "error_description": description,
        "reason": reason.as_str(),
    });
    let grpc_code = match status {
        403 => tonic::Code::PermissionDenied,
        503 => tonic::Code::Unavailable,
        _ => tonic::Code::Unauthenticated,
    };
    CheckResponse {
        status: Some(rpc::Status {
            code: grpc_code as i32,
            message: reason.as_str().to_string(),
            ..Default::default()
        }),
        dynamic_metadata: Some(metadata),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: i32::from(status),
            }),
            headers,
            body: body.to_string(),
        })),
    }
}

fn string_value(s: &str) -> PbValue {
    PbValue {
        kind: Some(Kind::StringValue(s.to_string())),
    }
}

/// The tonic service: a thin shell over [`Authorizer::check`].
#[derive(Clone)]
pub struct AuthzService {
    authorizer: Authorizer,
}

impl AuthzService {
    /// Wraps an authorizer.
    pub fn new(authorizer: Authorizer) -> AuthzService {
        AuthzService { authorizer }
    }
}

#[tonic::async_trait]
impl Authorization for AuthzService {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        self.authorizer
            .check(request.get_ref())
            .await
            .map(Response::new)
    }
}
