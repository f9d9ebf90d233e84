//! Route policy: which rule governs a request (first match wins, unmatched routes are
//! `required`), Envoy's per-route overrides through `context_extensions`, and the identity-header
//! settings (which headers we manage, where a token may come from).

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::ops::Deref;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::header_plan::HeaderPlan;
use crate::identity::{reserved_header, TokenUsePolicy, IDENTITY_HEADERS, IDENTITY_PREFIX};
use crate::revocation_check::{OnUnavailable, RevocationMode};

/// A rule or identity setting that cannot be used, naming its file key.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct PolicyError {
    /// The file key (`routes[2].mode`).
    pub key: String,
    /// What is wrong.
    pub problem: String,
}

/// `context_extensions` key overriding the rule's mode (`public`, `optional`, `required`).
pub const CTX_MODE: &str = "cognito_authz.mode";
/// `context_extensions` key overriding `groups_any` (comma-separated).
pub const CTX_GROUPS_ANY: &str = "cognito_authz.groups_any";
/// `context_extensions` key overriding `scopes_all` (comma- or space-separated).
pub const CTX_SCOPES_ALL: &str = "cognito_authz.scopes_all";
/// `context_extensions` key overriding the accepted token use (`access`, `id`, `any`).
pub const CTX_TOKEN_USE: &str = "cognito_authz.token_use";
/// `context_extensions` key overriding `deny_invalid` (`true`/`false`).
pub const CTX_DENY_INVALID: &str = "cognito_authz.deny_invalid";
/// `context_extensions` key naming the rule in logs and metadata.
pub const CTX_RULE: &str = "cognito_authz.rule";
/// `context_extensions` key overriding `revocation` (`off`, `cognito`).
pub const CTX_REVOCATION: &str = "cognito_authz.revocation";
/// `context_extensions` key overriding `revocation_on_unavailable` (`deny`, `grace`).
pub const CTX_REVOCATION_ON_UNAVAILABLE: &str = "cognito_authz.revocation_on_unavailable";
/// `context_extensions` key overriding `allow_preflight` (`true`/`false`).
pub const CTX_ALLOW_PREFLIGHT: &str = "cognito_authz.allow_preflight";

/// Default for `allow_preflight`: off. A preflight carries no credential, and an upstream
/// handler that ignores the method would run for it without an identity; the shipped Envoy
/// configs answer preflights with Envoy's CORS filter before the check, so neither the check
/// nor the app sees them (oauth2-proxy's `skip_auth_preflight` and Pomerium's
/// `cors_allow_preflight` default to off as well).
pub const DEFAULT_ALLOW_PREFLIGHT: bool = false;

/// Default `WWW-Authenticate` realm.
pub const DEFAULT_REALM: &str = "cognito-authz";
/// The request headers the shipped Envoy configs send with each check (`allowed_headers`,
/// besides every header with [`IDENTITY_PREFIX`]): the credential, the request id for logs, and
/// what marks a CORS preflight. A test holds every config in `envoy/` to this list.
pub const ENVOY_ALLOWED_HEADERS: [&str; 4] = [
    "authorization",
    "x-request-id",
    "origin",
    "access-control-request-method",
];

/// What a rule asks of the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// No token needed, none checked.
    Public,
    /// Anonymous allowed; a valid token adds identity.
    Optional,
    /// A valid token is needed.
    Required,
}

impl Mode {
    fn parse(value: &str) -> Option<Mode> {
        match value.trim().to_ascii_lowercase().as_str() {
            "public" => Some(Mode::Public),
            "optional" => Some(Mode::Optional),
            "required" => Some(Mode::Required),
            _ => None,
        }
    }
}

/// A route rule as written in the config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    name: Option<String>,
    path: Option<String>,
    prefix: Option<String>,
    path_separated_prefix: Option<String>,
    #[serde(default)]
    methods: Vec<String>,
    host: Option<String>,
    mode: Option<Mode>,
    #[serde(default)]
    deny_invalid: bool,
    #[serde(default)]
    groups_any: Vec<String>,
    #[serde(default)]
    scopes_all: Vec<String>,
    #[serde(default)]
    pools: Vec<String>,
    token_use: Option<TokenUsePolicy>,
    allow_preflight: Option<bool>,
    revocation: Option<RevocationMode>,
    revocation_on_unavailable: Option<OnUnavailable>,
}

/// Identity-header and token-source settings as written in the config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentitySpec {
    realm: Option<String>,
    forward_token: Option<bool>,
    token_header: Option<String>,
    token_cookie: Option<String>,
    #[serde(default)]
    claim_headers: BTreeMap<String, String>,
}

/// How a rule matches a request.
#[derive(Debug, Clone, Serialize)]
pub enum PathMatch {
    /// The path (without query) equals this.
    Exact(String),
    /// The path starts with this (plain string prefix, as Envoy's `prefix`): `/api/admin`
    /// also matches `/api/administrators`.
    Prefix(String),
    /// The path is this or continues it after a `/` (Envoy's `path_separated_prefix`):
    /// `/api/admin` matches `/api/admin` and `/api/admin/users`, not `/api/administrators`.
    SeparatedPrefix(String),
}

/// A validated rule.
#[derive(Debug, Clone, Serialize)]
pub struct Rule {
    /// Name for logs and metadata.
    pub name: String,
    /// Path matcher.
    pub path: PathMatch,
    /// Methods matched (uppercase); empty matches all.
    pub methods: Vec<String>,
    /// Host matched (lowercase, without port); `None` matches all.
    pub host: Option<String>,
    /// What the rule requires.
    pub requirements: Requirements,
}

/// What a request must satisfy, after `context_extensions` overrides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Requirements {
    /// The rule's name, for logs.
    pub rule: String,
    /// The mode.
    pub mode: Mode,
    /// On `optional` routes, deny an invalid token instead of treating the caller as anonymous.
    pub deny_invalid: bool,
    /// At least one of these groups (`cognito:groups`), when not empty.
    pub groups_any: Vec<String>,
    /// All of these scopes (`scope`).
    pub scopes_all: Vec<String>,
    /// Pools accepted on the route (ids); empty accepts every configured pool.
    pub pools: Vec<String>,
    /// Token use accepted on the route; narrows the pool's own setting.
    pub token_use: Option<TokenUsePolicy>,
    /// Let a CORS preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`)
    /// through as anonymous, without looking for a token.
    pub allow_preflight: bool,
    /// Whether a locally valid token is confirmed with Cognito.
    pub revocation: RevocationMode,
    /// What happens when Cognito gives no verdict.
    pub revocation_on_unavailable: OnUnavailable,
}

/// A `context_extensions` entry Envoy sent that we cannot understand: Envoy's configuration is
/// wrong, so the check fails (closed) instead of guessing.
#[derive(Debug, thiserror::Error)]
#[error("context_extensions {key}: {problem}")]
pub struct OverrideError {
    /// The key.
    pub key: &'static str,
    /// What is wrong.
    pub problem: String,
}

/// Validated route rules and identity settings.
#[derive(Debug, Clone, Serialize)]
pub struct RouteConfig {
    /// Rules in order; the first match wins.
    pub rules: Vec<Rule>,
    /// The rule for requests no rule matches: `required`.
    pub fallback: Requirements,
    /// `WWW-Authenticate` realm.
    pub realm: String,
    /// Whether `authorization` reaches the upstream.
    pub forward_token: bool,
    /// A header carrying a raw token, tried when `authorization` is absent.
    pub token_header: Option<String>,
    /// A cookie carrying a raw token, tried when `authorization` is absent.
    pub token_cookie: Option<String>,
    /// Extra claim -> header mappings.
    pub claim_headers: Vec<(String, String)>,
    /// Every identity header we manage: the fixed ones and the mapped ones.
    pub managed_headers: Vec<String>,
    /// Which headers every allow sets and removes, built from the settings above.
    #[serde(skip)]
    pub headers: Arc<HeaderPlan>,
    /// Requirements after each set of `context_extensions` overrides seen, parsed once.
    #[serde(skip)]
    overridden: OverrideCache,
}

/// The most distinct sets of `context_extensions` overrides whose requirements are kept. A
/// set is one route's in Envoy's config, so a few dozen is a large deployment; past the bound
/// a set is parsed on each request, as before there was a cache.
pub const MAX_OVERRIDE_SETS: usize = 256;

/// A request's requirements: a rule's own, borrowed, or a rule's after Envoy's overrides,
/// shared by every request that sends the same overrides.
#[derive(Debug, Clone)]
pub enum Resolved<'a> {
    /// The matching rule's (or the fallback's), unchanged.
    Rule(&'a Requirements),
    /// After `context_extensions` overrides.
    Overridden(Arc<Requirements>),
}

impl Deref for Resolved<'_> {
    type Target = Requirements;

    fn deref(&self) -> &Requirements {
        match self {
            Resolved::Rule(requirements) => requirements,
            Resolved::Overridden(requirements) => requirements,
        }
    }
}

/// One set of overrides on one rule, and the requirements they make.
#[derive(Debug)]
struct OverrideSet {
    /// The rule's index, [`usize::MAX`] for the fallback.
    base: usize,
    /// The `cognito_authz.*` entries.
    entries: Vec<(String, String)>,
    requirements: Arc<Requirements>,
}

/// Parsed override sets by a hash of the rule and the entries (entries compared on a hit).
#[derive(Debug, Default)]
struct OverrideCache(RwLock<HashMap<u64, Vec<OverrideSet>>>);

impl Clone for OverrideCache {
    /// A copy of a configuration starts with no sets parsed.
    fn clone(&self) -> OverrideCache {
        OverrideCache::default()
    }
}

/// Whether a `context_extensions` key is one of ours.
fn is_override(key: &str) -> bool {
    key.starts_with("cognito_authz.")
}

/// The hash of a rule's overrides: the same whatever order the map gives its entries in
/// (each entry hashed alone, the hashes added), with fixed keys (the entries come from
/// Envoy's configuration, not from a client).
fn override_hash(base: usize, extensions: &HashMap<String, String>) -> u64 {
    let hasher = BuildHasherDefault::<DefaultHasher>::default();
    extensions
        .iter()
        .filter(|(key, _)| is_override(key))
        .fold(hasher.hash_one(base), |sum, entry| {
            sum.wrapping_add(hasher.hash_one(entry))
        })
}

impl OverrideCache {
    fn get(
        &self,
        hash: u64,
        base: usize,
        extensions: &HashMap<String, String>,
    ) -> Option<Arc<Requirements>> {
        let sets = self.0.read().unwrap_or_else(|e| e.into_inner());
        let count = extensions.keys().filter(|k| is_override(k)).count();
        sets.get(&hash)?
            .iter()
            .find(|set| {
                set.base == base
                    && set.entries.len() == count
                    && set
                        .entries
                        .iter()
                        .all(|(k, v)| extensions.get(k) == Some(v))
            })
            .map(|set| Arc::clone(&set.requirements))
    }

    fn insert(
        &self,
        hash: u64,
        base: usize,
        extensions: &HashMap<String, String>,
        requirements: &Arc<Requirements>,
    ) {
        let mut sets = self.0.write().unwrap_or_else(|e| e.into_inner());
        if sets.values().map(Vec::len).sum::<usize>() >= MAX_OVERRIDE_SETS {
            return;
        }
        let entries = extensions
            .iter()
            .filter(|(key, _)| is_override(key))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        sets.entry(hash).or_default().push(OverrideSet {
            base,
            entries,
            requirements: Arc::clone(requirements),
        });
    }
}

impl RouteConfig {
    /// Token sources configured here that the shipped Envoy configs would not send with a
    /// check (see [`ENVOY_ALLOWED_HEADERS`]): each a sentence saying what to add.
    pub fn envoy_forwarding_warnings(&self) -> Vec<String> {
        let sent = |h: &str| ENVOY_ALLOWED_HEADERS.contains(&h) || h.starts_with(IDENTITY_PREFIX);
        let mut warnings = Vec::new();
        if let Some(header) = self.token_header.as_deref().filter(|h| !sent(h)) {
            warnings.push(format!(
                "identity.token_header = \"{header}\": the shipped Envoy configs do not send \
                 {header} to cognito-authz; add `- exact: {header}` to the ext_authz filter's \
                 allowed_headers"
            ));
        }
        if let Some(cookie) = &self.token_cookie {
            warnings.push(format!(
                "identity.token_cookie = \"{cookie}\": the shipped Envoy configs do not send the \
                 cookie header to cognito-authz; add `- exact: cookie` to the ext_authz filter's \
                 allowed_headers"
            ));
        }
        // Over Envoy's HTTP protocol a header we set reaches the app only when it matches
        // `allowed_upstream_headers` (the shipped configs match the x-cognito- prefix, Envoy
        // Gateway's `headersToBackend` lists names exactly). One Envoy does not copy leaves the
        // client's own copy in place, so every mapping is worth a line.
        for (_, header) in &self.claim_headers {
            warnings.push(format!(
                "identity.claim_headers maps a claim to {header}: with Envoy's HTTP protocol \
                 (http_service), authorization_response.allowed_upstream_headers must match it \
                 (`- exact: {header}`; Envoy Gateway: add it to headersToBackend), or the \
                 client's own {header} reaches the app"
            ));
        }
        if !self.forward_token && self.token_cookie.is_some() {
            warnings.push(
                "identity.forward_token = false with a token cookie: with Envoy's HTTP protocol \
                 (http_service), add `- exact: cookie` to authorization_response.\
                 allowed_upstream_headers, or the token cookie reaches the app"
                    .to_string(),
            );
        }
        warnings
    }
}

/// Settings every rule inherits unless it sets its own.
#[derive(Debug, Clone, Copy)]
pub struct RouteDefaults {
    /// See [`Requirements::allow_preflight`].
    pub allow_preflight: bool,
    /// See [`Requirements::revocation`].
    pub revocation: RevocationMode,
    /// See [`Requirements::revocation_on_unavailable`].
    pub revocation_on_unavailable: OnUnavailable,
}

impl Default for RouteDefaults {
    fn default() -> Self {
        RouteDefaults {
            allow_preflight: DEFAULT_ALLOW_PREFLIGHT,
            revocation: RevocationMode::Off,
            revocation_on_unavailable: OnUnavailable::Deny,
        }
    }
}

impl Default for RouteConfig {
    fn default() -> Self {
        RouteConfig::build(
            Vec::new(),
            IdentitySpec::default(),
            RouteDefaults::default(),
            &[],
        )
        .expect("the empty route configuration is valid")
    }
}

/// A header name we may set or read a token from: lowercase letters, digits and `-`. No `_`:
/// WSGI and CGI servers fold `x_tenant` and `x-tenant` into one variable, so a client's
/// `x-tenant` could land where our `x_tenant` was meant to.
fn header_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Claim -> header mappings, in configured order.
type ClaimHeaders = Vec<(String, String)>;

/// The configured claim -> header mappings, validated, and the managed list they extend: every
/// header an allow sets or removes.
fn claim_headers(
    mappings: impl IntoIterator<Item = (String, String)>,
) -> Result<(Vec<String>, ClaimHeaders), PolicyError> {
    let invalid = |key: String, problem: String| PolicyError { key, problem };
    let mut managed_headers: Vec<String> = IDENTITY_HEADERS.iter().map(|h| h.to_string()).collect();
    let mut claim_headers = Vec::new();
    for (claim, header) in mappings {
        let header = header.trim().to_ascii_lowercase();
        let key = format!("identity.claim_headers.\"{claim}\"");
        if !header_name_ok(&header) {
            return Err(invalid(key, format!("'{header}' is not a header name")));
        }
        if managed_headers.contains(&header) {
            return Err(invalid(key, format!("'{header}' is already managed")));
        }
        if reserved_header(&header) {
            return Err(invalid(key, format!("'{header}' cannot carry identity")));
        }
        managed_headers.push(header.clone());
        claim_headers.push((claim, header));
    }
    Ok((managed_headers, claim_headers))
}

fn normalize_list(items: &[String]) -> Vec<String> {
    items
        .iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

impl PathMatch {
    /// The one path condition of a `[[routes]]` entry: exactly one of `path`, `prefix` and
    /// `path_separated_prefix`, starting with `/`.
    fn from_spec(
        key: &str,
        path: Option<String>,
        prefix: Option<String>,
        separated: Option<String>,
    ) -> Result<PathMatch, PolicyError> {
        let invalid = |key: String, problem: String| PolicyError { key, problem };
        let path = match (path, prefix, separated) {
            (Some(p), None, None) => PathMatch::Exact(p),
            (None, Some(p), None) => PathMatch::Prefix(p),
            (None, None, Some(p)) => {
                let trimmed = p.trim_end_matches('/');
                if trimmed.is_empty() || trimmed.len() != p.len() {
                    return Err(invalid(
                        format!("{key}.path_separated_prefix"),
                        "must not end with '/' (it matches the path and what follows a '/')".into(),
                    ));
                }
                PathMatch::SeparatedPrefix(p)
            }
            (None, None, None) => {
                return Err(invalid(
                    key.to_string(),
                    "needs a path, a prefix or a path_separated_prefix".into(),
                ));
            }
            _ => {
                return Err(invalid(
                    key.to_string(),
                    "set one of path, prefix and path_separated_prefix".into(),
                ))
            }
        };
        let (PathMatch::Exact(p) | PathMatch::Prefix(p) | PathMatch::SeparatedPrefix(p)) = &path;
        if !p.starts_with('/') {
            return Err(invalid(format!("{key}.path"), "must start with '/'".into()));
        }
        Ok(path)
    }
}

impl Rule {
    /// One `[[routes]]` entry, validated; `key` names it in errors (`routes[2]`).
    fn from_spec(
        key: String,
        spec: RouteSpec,
        defaults: &RouteDefaults,
        pool_ids: &[&str],
    ) -> Result<Rule, PolicyError> {
        let invalid = |key: String, problem: String| PolicyError { key, problem };
        let path = PathMatch::from_spec(&key, spec.path, spec.prefix, spec.path_separated_prefix)?;
        let mode = spec.mode.ok_or_else(|| {
            invalid(
                format!("{key}.mode"),
                "missing: public, optional or required".into(),
            )
        })?;
        for pool in &spec.pools {
            if !pool_ids.contains(&pool.as_str()) {
                return Err(invalid(
                    format!("{key}.pools"),
                    format!("'{pool}' is not a configured pool"),
                ));
            }
        }
        if mode == Mode::Public && (!spec.groups_any.is_empty() || !spec.scopes_all.is_empty()) {
            return Err(invalid(
                format!("{key}.mode"),
                "a public route checks no token, so it cannot require groups or scopes".into(),
            ));
        }
        let name = spec.name.unwrap_or_else(|| key.clone());
        Ok(Rule {
            path,
            methods: spec
                .methods
                .iter()
                .map(|m| m.trim().to_ascii_uppercase())
                .collect(),
            host: spec.host.map(|h| {
                let h = h.trim().to_ascii_lowercase();
                h.strip_suffix('.').map(str::to_string).unwrap_or(h)
            }),
            requirements: Requirements {
                rule: name.clone(),
                mode,
                deny_invalid: spec.deny_invalid,
                groups_any: normalize_list(&spec.groups_any),
                scopes_all: normalize_list(&spec.scopes_all),
                pools: spec.pools,
                token_use: spec.token_use,
                allow_preflight: spec.allow_preflight.unwrap_or(defaults.allow_preflight),
                revocation: spec.revocation.unwrap_or(defaults.revocation),
                revocation_on_unavailable: spec
                    .revocation_on_unavailable
                    .unwrap_or(defaults.revocation_on_unavailable),
            },
            name,
        })
    }
}

impl RouteConfig {
    /// Validates rules and identity settings; `pool_ids` are the configured pools.
    pub fn build(
        routes: Vec<RouteSpec>,
        identity: IdentitySpec,
        defaults: RouteDefaults,
        pool_ids: &[&str],
    ) -> Result<RouteConfig, PolicyError> {
        let rules = routes
            .into_iter()
            .enumerate()
            .map(|(i, spec)| Rule::from_spec(format!("routes[{i}]"), spec, &defaults, pool_ids))
            .collect::<Result<Vec<_>, _>>()?;
        let (managed_headers, claim_headers) = claim_headers(identity.claim_headers)?;
        let invalid = |key: String, problem: String| PolicyError { key, problem };
        let token_header = identity.token_header.map(|h| h.trim().to_ascii_lowercase());
        if let Some(h) = &token_header {
            if !header_name_ok(h) || managed_headers.contains(h) {
                return Err(invalid(
                    "identity.token_header".into(),
                    format!("'{h}' is not a usable header name"),
                ));
            }
        }
        let forward_token = identity.forward_token.unwrap_or(true);
        let token_cookie = identity.token_cookie.map(|c| c.trim().to_string());
        let realm = identity.realm.unwrap_or_else(|| DEFAULT_REALM.to_string());
        if realm.contains('"') || realm.contains('\\') || realm.chars().any(char::is_control) {
            return Err(invalid(
                "identity.realm".into(),
                "must not contain quotes, backslashes or control characters".into(),
            ));
        }
        Ok(RouteConfig {
            rules,
            fallback: Requirements {
                rule: "default".to_string(),
                mode: Mode::Required,
                // Meaningless while required; an override to optional must get the optional
                // default (an unusable token is anonymous), not a leftover.
                deny_invalid: false,
                groups_any: Vec::new(),
                scopes_all: Vec::new(),
                pools: Vec::new(),
                token_use: None,
                allow_preflight: defaults.allow_preflight,
                revocation: defaults.revocation,
                revocation_on_unavailable: defaults.revocation_on_unavailable,
            },
            realm,
            forward_token,
            headers: Arc::new(HeaderPlan::new(
                managed_headers.clone(),
                claim_headers.clone(),
                forward_token,
                token_header.as_deref(),
                token_cookie.as_deref(),
            )),
            overridden: OverrideCache::default(),
            token_header,
            token_cookie,
            claim_headers,
            managed_headers,
        })
    }

    /// The requirements for a request: the first matching rule (or the `required` fallback),
    /// then Envoy's `context_extensions` overrides. A set of overrides is parsed the first time
    /// it comes with a rule, then shared (an error is never kept: it is found again each time).
    pub fn requirements(
        &self,
        method: &str,
        host: &str,
        path: &str,
        extensions: &HashMap<String, String>,
    ) -> Result<Resolved<'_>, OverrideError> {
        self.requirements_at(method, host_name(host), path, extensions)
    }

    /// [`RouteConfig::requirements`] for a host already read with [`host_name`] (`None`: it
    /// did not parse).
    pub fn requirements_at(
        &self,
        method: &str,
        host: Option<&str>,
        path: &str,
        extensions: &HashMap<String, String>,
    ) -> Result<Resolved<'_>, OverrideError> {
        let path = path.split(['?', '#']).next().unwrap_or("");
        // A host that does not parse matches no rule: the decision refuses it (`bad_host`), and
        // the fallback here only names a rule for the log.
        let index = host.and_then(|host| {
            self.rules
                .iter()
                .position(|rule| rule.matches(method, host, path))
        });
        let base = index.map_or(&self.fallback, |i| &self.rules[i].requirements);
        // Borrowed unless Envoy overrides something: no per-check copy of the rule.
        if !extensions.keys().any(|k| is_override(k)) {
            return Ok(Resolved::Rule(base));
        }
        let index = index.unwrap_or(usize::MAX);
        let hash = override_hash(index, extensions);
        if let Some(requirements) = self.overridden.get(hash, index, extensions) {
            return Ok(Resolved::Overridden(requirements));
        }
        let requirements = Arc::new(overridden(base, extensions)?);
        self.overridden
            .insert(hash, index, extensions, &requirements);
        Ok(Resolved::Overridden(requirements))
    }
}

/// `base` after Envoy's `context_extensions` overrides.
fn overridden(
    base: &Requirements,
    extensions: &HashMap<String, String>,
) -> Result<Requirements, OverrideError> {
    let mut req = base.clone();
    for (key, value) in extensions {
        match key.as_str() {
            CTX_MODE => {
                req.mode = Mode::parse(value).ok_or_else(|| OverrideError {
                    key: CTX_MODE,
                    problem: format!("'{value}' is not public, optional or required"),
                })?
            }
            CTX_GROUPS_ANY => req.groups_any = split_words(value, &[',']),
            CTX_SCOPES_ALL => req.scopes_all = split_words(value, &[',', ' ']),
            CTX_TOKEN_USE => {
                req.token_use =
                    Some(
                        TokenUsePolicy::parse(value).map_err(|problem| OverrideError {
                            key: CTX_TOKEN_USE,
                            problem,
                        })?,
                    )
            }
            CTX_DENY_INVALID => req.deny_invalid = parse_bool(CTX_DENY_INVALID, value)?,
            CTX_ALLOW_PREFLIGHT => req.allow_preflight = parse_bool(CTX_ALLOW_PREFLIGHT, value)?,
            CTX_REVOCATION => {
                req.revocation = RevocationMode::parse(value).ok_or_else(|| OverrideError {
                    key: CTX_REVOCATION,
                    problem: format!("'{value}' is not off or cognito"),
                })?
            }
            CTX_REVOCATION_ON_UNAVAILABLE => {
                req.revocation_on_unavailable =
                    OnUnavailable::parse(value).ok_or_else(|| OverrideError {
                        key: CTX_REVOCATION_ON_UNAVAILABLE,
                        problem: format!("'{value}' is not deny or grace"),
                    })?
            }
            CTX_RULE => req.rule = value.clone(),
            other if is_override(other) => {
                return Err(OverrideError {
                    key: "cognito_authz.*",
                    problem: format!("unknown key {other}"),
                })
            }
            _ => {}
        }
    }
    if req.mode == Mode::Public && (!req.groups_any.is_empty() || !req.scopes_all.is_empty()) {
        return Err(OverrideError {
            key: CTX_MODE,
            problem: "a public route cannot require groups or scopes".to_string(),
        });
    }
    Ok(req)
}

fn split_words(value: &str, separators: &[char]) -> Vec<String> {
    value
        .split(separators)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn parse_bool(key: &'static str, value: &str) -> Result<bool, OverrideError> {
    crate::parse_bool(value).map_err(|problem| OverrideError { key, problem })
}

/// The host of a `Host`/`:authority` value as rules match it: without its port and without a
/// trailing dot (`a.example.:443` is `a.example`); `[v6]` keeps its brackets. Letter case is
/// left to the comparison, which ignores it. `None` for anything that is not one host with an
/// optional numeric port (`[::1`, two hosts joined by a comma, spaces, empty labels): such a
/// request is refused (`bad_host`). Works on bytes and `split_once`, so no input can index out
/// of bounds.
pub fn host_name(authority: &str) -> Option<&str> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let literal = !inside.is_empty()
            && inside
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
        if !literal {
            return None;
        }
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':')?),
        };
        // '[' + inside + ']': ASCII on both ends, so the slice is on char boundaries.
        (authority.get(..inside.len() + 2)?, port)
    } else {
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        };
        // One trailing dot is the fully qualified spelling of the same name.
        let host = host.strip_suffix('.').unwrap_or(host);
        // Labels of letters, digits, '-' and '_', none empty: one pass over the bytes (this is
        // on every check's path), a dot valid only after a label's character.
        let mut previous = b'.';
        let mut name = !host.is_empty();
        for &b in host.as_bytes() {
            let label = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_');
            name &= label || (b == b'.' && previous != b'.');
            previous = b;
        }
        if !name || previous == b'.' {
            return None;
        }
        (host, port)
    };
    match port {
        Some(port) if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) => None,
        _ => Some(host),
    }
}

impl PathMatch {
    fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(p) => path == p,
            PathMatch::Prefix(p) => path.starts_with(p.as_str()),
            PathMatch::SeparatedPrefix(p) => path
                .strip_prefix(p.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/')),
        }
    }
}

impl Rule {
    fn matches(&self, method: &str, host: &str, path: &str) -> bool {
        self.path.matches(path)
            && (self.methods.is_empty()
                || self.methods.iter().any(|m| {
                    // Case-insensitive (HTTP/2 lets `delete` through to apps that uppercase
                    // it), and HEAD is GET without a body to the app (Flask runs the GET view).
                    m.eq_ignore_ascii_case(method)
                        || (m == "GET" && method.eq_ignore_ascii_case("HEAD"))
                }))
            && self
                .host
                .as_deref()
                .is_none_or(|wanted| wanted.eq_ignore_ascii_case(host))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(toml_text: &str) -> Result<RouteConfig, PolicyError> {
        #[derive(Deserialize)]
        struct F {
            #[serde(default)]
            routes: Vec<RouteSpec>,
            #[serde(default)]
            identity: IdentitySpec,
        }
        let f: F = toml::from_str(toml_text).unwrap();
        RouteConfig::build(
            f.routes,
            f.identity,
            RouteDefaults::default(),
            &["us-east-1_A"],
        )
    }

    fn routes(toml_text: &str) -> RouteConfig {
        build(toml_text).unwrap()
    }

    fn build_err(toml_text: &str) -> String {
        build(toml_text).unwrap_err().to_string()
    }

    const APP: &str = r#"
        [[routes]]
        name = "health"
        path = "/healthz"
        mode = "public"
        [[routes]]
        name = "home"
        prefix = "/api/activities/home"
        methods = ["get"]
        mode = "optional"
        [[routes]]
        name = "admin"
        prefix = "/api/admin"
        mode = "required"
        groups_any = ["admins"]
        [[routes]]
        name = "internal"
        prefix = "/internal"
        host = "Internal.Example"
        mode = "public"
    "#;

    fn none() -> HashMap<String, String> {
        HashMap::new()
    }

    fn ext(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// A set of overrides is parsed once per rule and shared; the same entries in another
    /// map (another order) find it; other values, another rule or a bad value never do; past
    /// the bound, sets are still parsed, only not kept.
    #[test]
    fn overrides_are_parsed_once_per_rule_and_set_and_never_confused() {
        let r = routes(APP);
        let first = ext(&[
            (CTX_MODE, "optional"),
            (CTX_GROUPS_ANY, "a, b"),
            ("other.filter", "x"),
        ]);
        let shared = |req: Resolved<'_>| match req {
            Resolved::Overridden(req) => req,
            Resolved::Rule(_) => panic!("overrides ignored"),
        };
        let a = shared(r.requirements("GET", "h", "/api/admin/x", &first).unwrap());
        assert_eq!(a.mode, Mode::Optional);
        assert_eq!(a.groups_any, ["a", "b"]);
        assert_eq!(a.rule, "admin");
        // Built again with its entries the other way round: the same hash, the same set.
        let mut again = HashMap::with_capacity(8);
        for key in [CTX_GROUPS_ANY, "other.filter", CTX_MODE] {
            again.insert(key.to_string(), first[key].clone());
        }
        let b = shared(r.requirements("GET", "h", "/api/admin/y", &again).unwrap());
        assert!(Arc::ptr_eq(&a, &b), "the same set was parsed twice");
        // Another value, another rule: other requirements.
        let other = ext(&[(CTX_MODE, "optional"), (CTX_GROUPS_ANY, "a")]);
        let c = shared(r.requirements("GET", "h", "/api/admin/x", &other).unwrap());
        assert_eq!(c.groups_any, ["a"]);
        let d = shared(r.requirements("GET", "h", "/elsewhere", &first).unwrap());
        assert_eq!((d.rule.as_str(), d.mode), ("default", Mode::Optional));
        assert!(!Arc::ptr_eq(&a, &d));
        // A bad set is refused every time, never kept.
        let bad = ext(&[(CTX_MODE, "sometimes")]);
        for _ in 0..2 {
            assert!(r.requirements("GET", "h", "/x", &bad).is_err());
        }
        // Past the bound: each set still gets its own requirements.
        for i in 0..MAX_OVERRIDE_SETS + 10 {
            let rule = format!("rule-{i}");
            let set = ext(&[(CTX_RULE, rule.as_str())]);
            assert_eq!(r.requirements("GET", "h", "/x", &set).unwrap().rule, rule);
            assert_eq!(r.requirements("GET", "h", "/x", &set).unwrap().rule, rule);
        }
        let kept: usize = r.overridden.0.read().unwrap().values().map(Vec::len).sum();
        assert_eq!(kept, MAX_OVERRIDE_SETS);
    }

    #[test]
    fn the_first_matching_rule_wins_and_unmatched_routes_are_required() {
        let r = routes(APP);
        let rule = |m: &str, h: &str, p: &str| r.requirements(m, h, p, &none()).unwrap();
        assert_eq!(rule("GET", "app", "/healthz").mode, Mode::Public);
        assert_eq!(
            rule("GET", "app", "/healthz/x").mode,
            Mode::Required,
            "exact"
        );
        assert_eq!(rule("GET", "app", "/healthz?probe=1").mode, Mode::Public);
        assert_eq!(
            rule("GET", "app", "/api/activities/home").mode,
            Mode::Optional
        );
        assert_eq!(
            rule("POST", "app", "/api/activities/home").mode,
            Mode::Required
        );
        let admin = rule("GET", "app", "/api/admin/users");
        assert_eq!(
            (admin.mode, admin.groups_any.clone()),
            (Mode::Required, vec!["admins".to_string()])
        );
        assert_eq!(
            rule("GET", "internal.example:8080", "/internal/x").mode,
            Mode::Public
        );
        assert_eq!(
            rule("GET", "other.example", "/internal/x").mode,
            Mode::Required
        );
        let fallback = rule("GET", "app", "/anything");
        assert_eq!(
            (fallback.mode, fallback.rule.as_str()),
            (Mode::Required, "default")
        );
    }

    #[test]
    fn context_extensions_override_the_rule() {
        let r = routes(APP);
        let ext: HashMap<String, String> = [
            (CTX_MODE, "optional"),
            (CTX_GROUPS_ANY, "a, b"),
            (CTX_SCOPES_ALL, "read write,admin"),
            (CTX_TOKEN_USE, "id"),
            (CTX_RULE, "from-envoy"),
            ("unrelated", "ignored"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let req = r.requirements("GET", "app", "/anything", &ext).unwrap();
        assert_eq!(req.mode, Mode::Optional);
        assert_eq!(req.groups_any, vec!["a", "b"]);
        assert_eq!(req.scopes_all, vec!["read", "write", "admin"]);
        assert_eq!(req.token_use, Some(TokenUsePolicy::Id));
        assert_eq!(req.rule, "from-envoy");
    }

    #[test]
    fn a_bad_override_is_an_error_not_a_guess() {
        let r = routes(APP);
        for (k, v) in [
            (CTX_MODE, "open"),
            (CTX_TOKEN_USE, "refresh"),
            (CTX_DENY_INVALID, "yes"),
            ("cognito_authz.groups", "admins"),
        ] {
            let ext = HashMap::from([(k.to_string(), v.to_string())]);
            assert!(r.requirements("GET", "h", "/x", &ext).is_err(), "{k}={v}");
        }
        let ext = HashMap::from([
            (CTX_MODE.to_string(), "public".to_string()),
            (CTX_GROUPS_ANY.to_string(), "admins".to_string()),
        ]);
        assert!(r.requirements("GET", "h", "/x", &ext).is_err());
    }

    #[test]
    fn bad_rules_are_refused_naming_the_key() {
        assert!(build_err("[[routes]]\nmode = \"public\"\n").starts_with("routes[0]:"));
        assert!(build_err("[[routes]]\npath = \"x\"\nmode = \"public\"\n")
            .starts_with("routes[0].path:"));
        assert!(build_err("[[routes]]\npath = \"/x\"\n").starts_with("routes[0].mode:"));
        assert!(
            build_err("[[routes]]\npath = \"/x\"\nmode = \"required\"\npools = [\"nope\"]\n")
                .starts_with("routes[0].pools:")
        );
        assert!(
            build_err("[[routes]]\npath = \"/x\"\nmode = \"public\"\ngroups_any = [\"a\"]\n")
                .starts_with("routes[0].mode:")
        );
        assert!(
            build_err("[identity.claim_headers]\n\"custom:t\" = \"x-cognito-sub\"\n")
                .contains("already managed")
        );
        assert!(
            build_err("[identity.claim_headers]\n\"custom:t\" = \"Bad Header\"\n")
                .contains("not a header name")
        );
        assert!(build_err("[identity]\nrealm = 'a\"b'\n").starts_with("identity.realm:"));
    }

    /// The realm is written inside `WWW-Authenticate`'s quotes: a quote, a backslash or a
    /// control character (a line break would start a header of the client's choosing) is each
    /// refused on its own.
    #[test]
    fn a_realm_that_could_break_out_of_its_quotes_is_refused() {
        for realm in ["a\"b", "a\\\\b", "a\\nx-evil: 1", "a\\rb", "a\\u0000b"] {
            let text = format!("[identity]\nrealm = \"{}\"\n", realm.replace('"', "\\\""));
            assert!(
                build_err(&text).starts_with("identity.realm:"),
                "{realm:?} was accepted"
            );
        }
        assert_eq!(routes("[identity]\nrealm = \"my api\"\n").realm, "my api");
    }

    /// The token header may be neither a name a client could not send nor a header we manage
    /// (the token would then be set, or removed, as an identity header).
    #[test]
    fn a_token_header_that_is_no_name_or_a_managed_header_is_refused() {
        for header in ["x-cognito-sub", "X-Cognito-Groups", "bad header", ""] {
            let text = format!("[identity]\ntoken_header = \"{header}\"\n");
            assert!(
                build_err(&text).starts_with("identity.token_header:"),
                "{header:?} was accepted"
            );
        }
        assert_eq!(
            routes("[identity]\ntoken_header = \"X-Access-Token\"\n").token_header,
            Some("x-access-token".to_string())
        );
    }

    #[test]
    fn envoy_can_make_an_optional_route_deny_an_unusable_token() {
        let r = routes("[[routes]]\nprefix = \"/feed\"\nmode = \"optional\"\n");
        assert!(
            !r.requirements("GET", "h", "/feed", &none())
                .unwrap()
                .deny_invalid
        );
        let on = HashMap::from([(CTX_DENY_INVALID.to_string(), "TRUE".to_string())]);
        assert!(
            r.requirements("GET", "h", "/feed", &on)
                .unwrap()
                .deny_invalid
        );
        let bad = HashMap::from([(CTX_DENY_INVALID.to_string(), "yes".to_string())]);
        assert!(r.requirements("GET", "h", "/feed", &bad).is_err());
    }

    #[test]
    fn a_rule_without_a_path_says_which_keys_it_needs() {
        let problem = build_err("[[routes]]\nmode = \"public\"\n");
        assert!(
            problem.contains("needs a path, a prefix or a path_separated_prefix"),
            "{problem}"
        );
        let problem = build_err("[[routes]]\npath = \"/a\"\nprefix = \"/b\"\nmode = \"public\"\n");
        assert!(problem.contains("set one of"), "{problem}");
    }

    #[test]
    fn revocation_checks_are_chosen_per_route_and_by_envoy() {
        let r = routes(
            "[[routes]]\nprefix = \"/pay\"\nmode = \"required\"\nrevocation = \"cognito\"\n\
             revocation_on_unavailable = \"grace\"\n",
        );
        let req =
            |p: &str, ext: &HashMap<String, String>| r.requirements("GET", "h", p, ext).unwrap();
        let pay = req("/pay", &none());
        assert_eq!(
            (pay.revocation, pay.revocation_on_unavailable),
            (RevocationMode::Cognito, OnUnavailable::Grace)
        );
        assert_eq!(req("/other", &none()).revocation, RevocationMode::Off);
        let on = HashMap::from([(CTX_REVOCATION.to_string(), "cognito".to_string())]);
        assert_eq!(req("/other", &on).revocation, RevocationMode::Cognito);
        let grace = HashMap::from([(
            CTX_REVOCATION_ON_UNAVAILABLE.to_string(),
            "grace".to_string(),
        )]);
        assert_eq!(
            req("/other", &grace).revocation_on_unavailable,
            OnUnavailable::Grace
        );
        for (k, v) in [
            (CTX_REVOCATION, "maybe"),
            (CTX_REVOCATION_ON_UNAVAILABLE, "allow"),
        ] {
            let bad = HashMap::from([(k.to_string(), v.to_string())]);
            assert!(r.requirements("GET", "h", "/x", &bad).is_err(), "{k}={v}");
        }
    }

    #[test]
    fn token_sources_envoy_would_not_send_are_warned_about() {
        assert!(routes("").envoy_forwarding_warnings().is_empty());
        let r = routes("[identity]\ntoken_cookie = \"jwt\"\ntoken_header = \"x-access-token\"\n");
        let warnings = r.envoy_forwarding_warnings();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("- exact: x-access-token"));
        assert!(warnings[1].contains("- exact: cookie"));
        let r = routes("[identity]\nforward_token = false\ntoken_cookie = \"jwt\"\n");
        for warning in r.envoy_forwarding_warnings() {
            assert!(!warning.contains("  "), "a run of spaces: {warning:?}");
        }
        let r = routes("[identity]\ntoken_header = \"x-cognito-token\"\n");
        assert!(
            r.envoy_forwarding_warnings().is_empty(),
            "x-cognito-* is sent"
        );
    }

    #[test]
    fn mapped_claim_headers_become_managed() {
        let r = routes("[identity.claim_headers]\n\"custom:tenant\" = \"X-Tenant-Id\"\n");
        assert_eq!(
            r.claim_headers,
            vec![("custom:tenant".to_string(), "x-tenant-id".to_string())]
        );
        assert!(r.managed_headers.contains(&"x-tenant-id".to_string()));
        assert_eq!(r.managed_headers.len(), IDENTITY_HEADERS.len() + 1);
    }

    #[test]
    fn a_claim_cannot_be_mapped_to_a_header_that_frames_or_routes_the_request() {
        // A claim in `content-length` smuggled a second request to the upstream; one in
        // `x-forwarded-for` overwrote the address Envoy set.
        for header in [
            "content-length",
            "transfer-encoding",
            "connection",
            "te",
            "upgrade",
            "expect",
            "keep-alive",
            "proxy-authorization",
            "forwarded",
            "via",
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-real-ip",
            "x-envoy-original-path",
            "traceparent",
            "content-type",
        ] {
            let text = format!("[identity.claim_headers]\n\"custom:tenant\" = \"{header}\"\n");
            assert!(build(&text).is_err(), "{header} was accepted");
        }
    }

    #[test]
    fn ports_are_stripped_from_hosts() {
        assert_eq!(host_name("a.example:443"), Some("a.example"));
        assert_eq!(host_name("a.example"), Some("a.example"));
        assert_eq!(host_name("[::1]:80"), Some("[::1]"));
        assert_eq!(host_name("[::1]"), Some("[::1]"));
    }

    #[test]
    fn a_host_that_cannot_be_parsed_is_no_host_and_no_panic() {
        // `[::1` panicked the check (issue 9): it sliced past the end.
        for bad in [
            "[",
            "[::1",
            "[]",
            "[::1]x",
            "[::1]:",
            "[::1]:8a",
            "a.example, b.example",
            "a b",
            "",
            ":80",
            "a.example:",
            "a:b:c",
            "[é]",
            "é.example",
            "[::1]]",
        ] {
            assert_eq!(host_name(bad), None, "{bad:?}");
        }
        let r = routes(APP);
        for bad in ["[::1", "[", "internal.example, internal.example"] {
            let req = r.requirements("GET", bad, "/internal/x", &none()).unwrap();
            assert_eq!(req.mode, Mode::Required, "{bad:?} matches no host rule");
        }
    }

    #[test]
    fn hosts_are_matched_without_case_port_or_trailing_dot() {
        assert_eq!(
            host_name("Internal.Example.:8443"),
            Some("Internal.Example")
        );
        assert_eq!(host_name("a.example."), Some("a.example"));
        for bad in ["a.example..", ".a.example", "a..example", "."] {
            assert_eq!(host_name(bad), None, "{bad:?}");
        }
        let r = routes(
            "[[routes]]\nhost = \"Internal.Example.\"\nprefix = \"/internal\"\nmode = \"required\"\n\
             groups_any = [\"admins\"]\n\
             [[routes]]\nprefix = \"/internal\"\nmode = \"public\"\n",
        );
        let rule = |host: &str| r.requirements("GET", host, "/internal/x", &none()).unwrap();
        for spelling in [
            "internal.example",
            "INTERNAL.EXAMPLE",
            "internal.example.",
            "Internal.Example.:443",
        ] {
            assert_eq!(rule(spelling).groups_any, vec!["admins"], "{spelling:?}");
        }
        assert_eq!(rule("other.example").mode, Mode::Public);
        // A host that does not parse gets the fallback, never the permissive rule below the
        // host rule.
        for bad in ["internal.example:", "internal.example..", "[::1", ""] {
            assert_eq!(rule(bad).rule, "default", "{bad:?}");
        }
    }

    #[test]
    fn methods_match_in_any_case_and_head_matches_get() {
        let r = routes(
            "[[routes]]\npath = \"/x\"\nmethods = [\"DELETE\", \"GET\"]\nmode = \"required\"\n\
             groups_any = [\"admins\"]\n[[routes]]\npath = \"/x\"\nmode = \"public\"\n",
        );
        for method in ["DELETE", "delete", "Delete", "GET", "get", "HEAD", "head"] {
            let req = r.requirements(method, "h", "/x", &none()).unwrap();
            assert_eq!(req.groups_any, vec!["admins"], "{method}");
        }
        assert_eq!(
            r.requirements("POST", "h", "/x", &none()).unwrap().mode,
            Mode::Public
        );
        // HEAD is GET's alone: a GET-only rule covers it, a rule of other methods does not.
        let only = |methods: &str| {
            routes(&format!(
                "[[routes]]\npath = \"/x\"\nmethods = [{methods}]\nmode = \"required\"\n\
                 [[routes]]\npath = \"/x\"\nmode = \"public\"\n"
            ))
            .requirements("HEAD", "h", "/x", &none())
            .unwrap()
            .mode
        };
        assert_eq!(only("\"get\""), Mode::Required);
        assert_eq!(only("\"POST\""), Mode::Public);
        assert_eq!(only("\"DELETE\", \"POST\""), Mode::Public);
    }

    #[test]
    fn mapped_headers_outside_the_prefix_warn_about_the_http_protocol() {
        let r = routes("[identity.claim_headers]\n\"custom:tenant\" = \"x-tenant-id\"\n");
        let warnings = r.envoy_forwarding_warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("allowed_upstream_headers"));
        // Envoy Gateway's headersToBackend lists names exactly: a mapping inside the prefix
        // needs it too.
        let r = routes("[identity.claim_headers]\n\"custom:tenant\" = \"x-cognito-tenant\"\n");
        assert_eq!(r.envoy_forwarding_warnings().len(), 1);
        assert!(
            build_err("[identity.claim_headers]\n\"custom:tenant\" = \"x_tenant\"\n")
                .contains("not a header name")
        );
    }

    #[test]
    fn a_path_separated_prefix_matches_on_segment_boundaries() {
        let r = routes(
            "[[routes]]\npath_separated_prefix = \"/api/admin\"\nmode = \"public\"\n\
             [[routes]]\nprefix = \"/api/adm\"\nmode = \"optional\"\n",
        );
        let mode = |p: &str| r.requirements("GET", "h", p, &none()).unwrap().mode;
        assert_eq!(mode("/api/admin"), Mode::Public);
        assert_eq!(mode("/api/admin/users"), Mode::Public);
        assert_eq!(mode("/api/admin?x=1"), Mode::Public);
        assert_eq!(mode("/api/administrators"), Mode::Optional, "plain prefix");
        assert_eq!(mode("/api/ad"), Mode::Required);
        assert!(
            build_err("[[routes]]\npath_separated_prefix = \"/api/\"\nmode = \"public\"\n")
                .starts_with("routes[0].path_separated_prefix:")
        );
        assert!(
            build_err("[[routes]]\npath = \"/a\"\nprefix = \"/b\"\nmode = \"public\"\n")
                .starts_with("routes[0]:")
        );
    }

    #[test]
    fn preflights_are_checked_by_default_and_can_be_let_through() {
        assert!(
            !routes("")
                .requirements("OPTIONS", "h", "/", &none())
                .unwrap()
                .allow_preflight
        );
        let r = RouteConfig::build(
            vec![toml::from_str(
                "prefix = \"/strict\"\nmode = \"required\"\nallow_preflight = false\n",
            )
            .unwrap()],
            IdentitySpec::default(),
            RouteDefaults {
                allow_preflight: true,
                ..RouteDefaults::default()
            },
            &[],
        )
        .unwrap();
        let req = |p: &str, ext: &HashMap<String, String>| {
            r.requirements("OPTIONS", "h", p, ext)
                .unwrap()
                .allow_preflight
        };
        assert!(req("/anything", &none()));
        assert!(!req("/strict/x", &none()));
        let off = HashMap::from([(CTX_ALLOW_PREFLIGHT.to_string(), "false".to_string())]);
        assert!(!req("/anything", &off));
        let on = HashMap::from([(CTX_ALLOW_PREFLIGHT.to_string(), "true".to_string())]);
        assert!(req("/strict/x", &on));
        let bad = HashMap::from([(CTX_ALLOW_PREFLIGHT.to_string(), "no".to_string())]);
        assert!(r.requirements("OPTIONS", "h", "/x", &bad).is_err());

        let f: RouteConfig = RouteConfig::build(
            Vec::new(),
            IdentitySpec::default(),
            RouteDefaults {
                allow_preflight: false,
                ..RouteDefaults::default()
            },
            &[],
        )
        .unwrap();
        assert!(
            !f.requirements("OPTIONS", "h", "/", &none())
                .unwrap()
                .allow_preflight
        );
    }
}
