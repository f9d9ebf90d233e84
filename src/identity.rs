//! What a verified token says, as the rest of the service uses it: which kind of token
//! (`token_use`), the compact [`Identity`] the cache holds and the headers are written from, the
//! list of identity headers we manage, and the escaping that keeps a header value unambiguous.
//!
//! Depends on nothing else in the crate: verification produces a [`ClaimSet`], policy reads an
//! [`Identity`], and both protocols write its headers.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Longest identity header value injected; a longer claim value refuses the token.
pub const MAX_HEADER_VALUE_BYTES: usize = 8 * 1024;

/// The identity headers always managed (set from the token, or removed).
pub const IDENTITY_HEADERS: [&str; 8] = [
    "x-cognito-sub",
    "x-cognito-username",
    "x-cognito-client-id",
    "x-cognito-token-use",
    "x-cognito-groups",
    "x-cognito-scope",
    "x-cognito-email",
    "x-cognito-preferred-username",
];
/// The prefix every identity header shares. A header with it that Envoy forwards to us is also
/// removed unless we set it; one Envoy does not forward is covered only if it is managed, which
/// is why every allow removes the whole managed list ([`crate::header_plan`]).
pub const IDENTITY_PREFIX: &str = "x-cognito-";

/// Headers a claim must never be written into: the credential and the request's identity, the
/// ones that frame the message or the connection (a claim in `content-length` would smuggle a
/// second request), and the ones proxies set about the client and the route.
pub fn reserved_header(name: &str) -> bool {
    const EXACT: [&str; 20] = [
        "authorization",
        "host",
        "cookie",
        "x-request-id",
        "content-length",
        "content-type",
        "content-encoding",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "expect",
        "proxy-authorization",
        "proxy-connection",
        "forwarded",
        "via",
        "x-real-ip",
        "traceparent",
    ];
    EXACT.contains(&name)
        || ["x-forwarded-", "x-envoy-", "tracestate", "grpc-"]
            .iter()
            .any(|prefix| name.starts_with(prefix))
}

/// Which kind of Cognito token a token is (`token_use`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenUse {
    /// An access token: `client_id`, `scope`, no `aud`.
    Access,
    /// An ID token: `aud`, user attributes.
    Id,
}

impl TokenUse {
    /// The claim value.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenUse::Access => "access",
            TokenUse::Id => "id",
        }
    }
}

/// Which token uses a pool (or a route) accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenUsePolicy {
    /// Access tokens only (the default: APIs are called with access tokens).
    Access,
    /// ID tokens only.
    Id,
    /// Either.
    Any,
}

impl TokenUsePolicy {
    /// Whether a token of this use is accepted.
    pub fn accepts(self, token_use: TokenUse) -> bool {
        matches!(
            (self, token_use),
            (TokenUsePolicy::Any, _)
                | (TokenUsePolicy::Access, TokenUse::Access)
                | (TokenUsePolicy::Id, TokenUse::Id)
        )
    }

    /// Parses `access`, `id` or `any` (any case); the error says what was found.
    pub fn parse(value: &str) -> Result<Self, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "access" => Ok(TokenUsePolicy::Access),
            "id" => Ok(TokenUsePolicy::Id),
            "any" => Ok(TokenUsePolicy::Any),
            other => Err(format!("'{other}' is not one of access, id, any")),
        }
    }
}

impl std::fmt::Display for TokenUsePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TokenUsePolicy::Access => "access",
            TokenUsePolicy::Id => "id",
            TokenUsePolicy::Any => "any",
        })
    }
}

/// The claims of a verified token that an [`Identity`] keeps, borrowed from the verifier's
/// output.
#[derive(Debug, Clone, Copy)]
pub struct ClaimSet<'a> {
    /// Index of the issuing pool among the configured pools.
    pub pool: usize,
    /// The signing key's id.
    pub kid: &'a str,
    /// `exp`, Unix seconds.
    pub exp: i64,
    /// `token_use`.
    pub token_use: TokenUse,
    /// `sub`.
    pub sub: &'a str,
    /// `username` or `cognito:username`.
    pub username: Option<&'a str>,
    /// `client_id` or `aud`.
    pub client_id: &'a str,
    /// `cognito:groups`.
    pub groups: &'a [String],
    /// `scope`, split.
    pub scopes: &'a [String],
    /// `email`.
    pub email: Option<&'a str>,
    /// `preferred_username`.
    pub preferred_username: Option<&'a str>,
    /// `jti`.
    pub jti: Option<&'a str>,
    /// `origin_jti`: the sign-in session.
    pub origin_jti: Option<&'a str>,
    /// `iat`, Unix seconds (0 when absent).
    pub iat: i64,
    /// The whole payload, for the configured claim -> header mappings.
    pub raw: &'a dyn ClaimLookup,
}

/// Where the configured claim -> header mappings read a claim from: the whole payload. The
/// verifier builds that map only when one is looked up, so tokens checked without mappings never
/// pay for it.
pub trait ClaimLookup: std::fmt::Debug + Sync {
    /// The top-level claim `name`, if the payload has it.
    fn claim(&self, name: &str) -> Option<&Value>;
}

impl ClaimLookup for Map<String, Value> {
    fn claim(&self, name: &str) -> Option<&Value> {
        self.get(name)
    }
}

// The slots of the fixed values, in `FIXED_HEADERS` order. The client id (2), email (5) and
// preferred username (6) are only ever written out as headers, so no accessor names them.
const SUB: usize = 0;
const USERNAME: usize = 1;
const GROUPS: usize = 3;
const SCOPE: usize = 4;
/// Values written as headers: the first seven.
const HEADER_VALUES: usize = 7;
const FIXED: usize = 7;

/// Every header [`Identity::headers`] may give, in its order: the fixed ones, then
/// `x-cognito-token-use`, then the mapped claims' (`claim_headers`).
pub fn header_names(claim_headers: &[(String, String)]) -> impl Iterator<Item = &str> {
    FIXED_HEADERS
        .into_iter()
        .chain(std::iter::once("x-cognito-token-use"))
        .chain(claim_headers.iter().map(|(_, header)| header.as_str()))
}

/// The fixed identity headers, in [`Identity`] field order.
const FIXED_HEADERS: [&str; HEADER_VALUES] = [
    "x-cognito-sub",
    "x-cognito-username",
    "x-cognito-client-id",
    "x-cognito-groups",
    "x-cognito-scope",
    "x-cognito-email",
    "x-cognito-preferred-username",
];

/// A claim value that cannot be forwarded as a header value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a claim holds a control character or exceeds the header value cap")]
pub struct UnsafeClaim;

/// Where the username is: with email sign-in it equals `sub`, so it is stored once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Username {
    None = 0,
    SameAsSub = 1,
    Own = 2,
}

/// Group names may contain commas (Cognito allows punctuation); `%` and `,` are escaped so the
/// comma-joined header stays unambiguous.
pub fn escape_list_item(item: &str) -> std::borrow::Cow<'_, str> {
    if item.contains(['%', ',']) {
        item.replace('%', "%25").replace(',', "%2C").into()
    } else {
        item.into()
    }
}

fn header_safe(value: &str) -> bool {
    value.len() <= MAX_HEADER_VALUE_BYTES && !value.chars().any(char::is_control)
}

fn claim_as_header(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map(escape_list_item))
            .collect::<Option<Vec<_>>>()
            .map(|v| v.join(",")),
        _ => None,
    }
}

/// What a verified token says that requests need, in one allocation (it is what the cache
/// holds, so its size is the cache's memory): a fixed header of [`layout::HEADER`] bytes, the
/// end offsets of the header values, the signing `kid`, then the values themselves.
///
/// The fixed header's fields stand at the offsets named in [`layout`]; then one u16 end offset
/// per value (7 header values, then the extras); then the kid; then the values. All
/// little-endian. Cheap to clone. The two ids are kept as 64-bit digests ([`id_digest`]):
/// revocations only compare them, and two UUID strings would cost 72 bytes a cached token.
#[derive(Clone, Debug)]
pub struct Identity(Arc<[u8]>);

/// Where each field of an [`Identity`]'s fixed header stands: a byte offset each, little-endian,
/// written and read through these names only.
pub mod layout {
    /// `exp`: i64.
    pub const EXP: usize = 0;
    /// The pool's index: u16.
    pub const POOL: usize = 8;
    /// `token_use`: u8, 0 access, 1 id.
    pub const TOKEN_USE: usize = 10;
    /// Where the username is: u8, 0 none, 1 the same as `sub`, 2 its own value.
    pub const USERNAME: usize = 11;
    /// How many extra claim values follow the 7 fixed ones: u8 (byte 13 is padding).
    pub const EXTRAS: usize = 12;
    /// The kid's length: u16.
    pub const KID_LEN: usize = 14;
    /// `iat`: i64.
    pub const IAT: usize = 16;
    /// The digest of `jti`: u64, 0 when absent.
    pub const JTI: usize = 24;
    /// The digest of `origin_jti`: u64, 0 when absent.
    pub const ORIGIN_JTI: usize = 32;
    /// The fixed header's length: the value end offsets start here.
    pub const HEADER: usize = 40;
}

/// A 64-bit digest of a token id (`jti`, `origin_jti`) for revocation lookups; 0 is reserved
/// for "absent". Two ids share a digest with probability 2^-64: at worst one token is refused.
pub fn id_digest(id: &str) -> u64 {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, id.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    u64::from_le_bytes(first).max(1)
}

/// The fixed header of an identity, written field by field at the [`layout`] offsets.
fn fixed_header(
    claims: &ClaimSet<'_>,
    username: Username,
    extras: u8,
) -> Result<[u8; layout::HEADER], UnsafeClaim> {
    let mut header = [0u8; layout::HEADER];
    let mut put = |at: usize, bytes: &[u8]| header[at..at + bytes.len()].copy_from_slice(bytes);
    put(layout::EXP, &claims.exp.to_le_bytes());
    let pool = u16::try_from(claims.pool).map_err(|_| UnsafeClaim)?;
    put(layout::POOL, &pool.to_le_bytes());
    put(
        layout::TOKEN_USE,
        &[u8::from(claims.token_use == TokenUse::Id)],
    );
    put(layout::USERNAME, &[username as u8]);
    put(layout::EXTRAS, &[extras]);
    let kid_len = u16::try_from(claims.kid.len()).map_err(|_| UnsafeClaim)?;
    put(layout::KID_LEN, &kid_len.to_le_bytes());
    put(layout::IAT, &claims.iat.to_le_bytes());
    put(layout::JTI, &claims.jti.map_or(0, id_digest).to_le_bytes());
    put(
        layout::ORIGIN_JTI,
        &claims.origin_jti.map_or(0, id_digest).to_le_bytes(),
    );
    Ok(header)
}

impl Identity {
    /// Builds the identity of verified claims; `claim_headers` are the configured extra
    /// claim -> header mappings. Refuses values that are not safe header values.
    pub fn from_claims(
        claims: &ClaimSet<'_>,
        claim_headers: &[(String, String)],
    ) -> Result<Identity, UnsafeClaim> {
        let username = match claims.username {
            None => Username::None,
            Some(u) if u == claims.sub => Username::SameAsSub,
            Some(_) => Username::Own,
        };
        let mut groups = String::new();
        for (i, group) in claims.groups.iter().enumerate() {
            if i > 0 {
                groups.push(',');
            }
            groups.push_str(&escape_list_item(group));
        }
        let scope = claims.scopes.join(" ");
        let extras: Vec<Option<String>> = claim_headers
            .iter()
            .map(|(claim, _)| claims.raw.claim(claim).and_then(claim_as_header))
            .collect();
        let own_username = match username {
            Username::Own => claims.username.unwrap_or(""),
            _ => "",
        };
        let values: Vec<&str> = [
            claims.sub,
            own_username,
            claims.client_id,
            groups.as_str(),
            scope.as_str(),
            claims.email.unwrap_or(""),
            claims.preferred_username.unwrap_or(""),
        ]
        .into_iter()
        .chain(extras.iter().map(|v| v.as_deref().unwrap_or("")))
        .collect();
        if !values.iter().all(|v| header_safe(v)) {
            return Err(UnsafeClaim);
        }
        let extra_count = u8::try_from(extras.len()).map_err(|_| UnsafeClaim)?;
        let values_len: usize = values.iter().map(|v| v.len()).sum();
        let mut bytes =
            Vec::with_capacity(layout::HEADER + 2 * values.len() + claims.kid.len() + values_len);
        bytes.extend_from_slice(&fixed_header(claims, username, extra_count)?);
        let mut end = 0usize;
        for value in &values {
            end += value.len();
            bytes.extend_from_slice(&u16::try_from(end).map_err(|_| UnsafeClaim)?.to_le_bytes());
        }
        bytes.extend_from_slice(claims.kid.as_bytes());
        for value in &values {
            bytes.extend_from_slice(value.as_bytes());
        }
        Ok(Identity(Arc::from(bytes)))
    }

    fn u16_at(&self, at: usize) -> usize {
        usize::from(u16::from_le_bytes([self.0[at], self.0[at + 1]]))
    }

    fn u64_at(&self, at: usize) -> u64 {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&self.0[at..at + 8]);
        u64::from_le_bytes(bytes)
    }

    fn i64_at(&self, at: usize) -> i64 {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&self.0[at..at + 8]);
        i64::from_le_bytes(bytes)
    }

    fn value_count(&self) -> usize {
        FIXED + usize::from(self.0[layout::EXTRAS])
    }

    fn values_start(&self) -> usize {
        layout::HEADER + 2 * self.value_count() + self.u16_at(layout::KID_LEN)
    }

    /// The length of value `index`, read from the offsets alone.
    fn span_len(&self, index: usize) -> usize {
        let end = self.u16_at(layout::HEADER + 2 * index);
        let start = if index == 0 {
            0
        } else {
            self.u16_at(layout::HEADER + 2 * (index - 1))
        };
        end.saturating_sub(start)
    }

    fn span(&self, index: usize) -> &str {
        let base = self.values_start();
        let end = self.u16_at(layout::HEADER + 2 * index);
        let start = if index == 0 {
            0
        } else {
            self.u16_at(layout::HEADER + 2 * (index - 1))
        };
        // Written from &str values at offsets of whole values: always UTF-8, and in bounds
        // (read with `get` all the same: no offset can make a check panic).
        self.0
            .get(base + start..base + end)
            .and_then(|bytes| std::str::from_utf8(bytes).ok())
            .unwrap_or("")
    }

    /// Every value, as one text: read as UTF-8 once for all the values a caller takes from it
    /// with [`Identity::value_in`] (`from_utf8` on each short value was a tenth of the module's
    /// own work on a cached check).
    fn values(&self) -> &str {
        let start = self.values_start().min(self.0.len());
        // Written from &str values: always UTF-8.
        std::str::from_utf8(&self.0[start..]).unwrap_or("")
    }

    /// Value `index`, out of [`Identity::values`].
    fn value_in<'a>(&self, values: &'a str, index: usize) -> &'a str {
        let end = self.u16_at(layout::HEADER + 2 * index);
        let start = if index == 0 {
            0
        } else {
            self.u16_at(layout::HEADER + 2 * (index - 1))
        };
        // The offsets are those of whole values: on character boundaries.
        values.get(start..end).unwrap_or("")
    }

    /// `sub`.
    pub fn sub(&self) -> &str {
        self.span(SUB)
    }

    /// The username (`username` or `cognito:username`), when the token has one.
    pub fn username(&self) -> Option<&str> {
        match self.0[layout::USERNAME] {
            x if x == Username::SameAsSub as u8 => Some(self.sub()),
            x if x == Username::Own as u8 => Some(self.span(USERNAME)),
            _ => None,
        }
    }

    /// Groups, each as it appears in `x-cognito-groups` (`%` and `,` escaped).
    pub fn groups(&self) -> impl Iterator<Item = &str> {
        self.span(GROUPS).split(',').filter(|g| !g.is_empty())
    }

    /// Whether the token is in group `name` (given unescaped).
    pub fn in_group(&self, name: &str) -> bool {
        let escaped = escape_list_item(name);
        self.groups().any(|g| g == escaped)
    }

    /// Scopes.
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.span(SCOPE).split_ascii_whitespace()
    }

    /// `token_use`.
    pub fn token_use(&self) -> TokenUse {
        if self.0[layout::TOKEN_USE] == 0 {
            TokenUse::Access
        } else {
            TokenUse::Id
        }
    }

    /// `exp`, Unix seconds.
    pub fn exp(&self) -> i64 {
        self.i64_at(layout::EXP)
    }

    /// `iat`, Unix seconds (0 when the token had none).
    pub fn iat(&self) -> i64 {
        self.i64_at(layout::IAT)
    }

    /// The digest of `jti`, when present.
    pub fn jti(&self) -> Option<u64> {
        Some(self.u64_at(layout::JTI)).filter(|d| *d != 0)
    }

    /// The digest of `origin_jti` (the sign-in session every refreshed token shares).
    pub fn origin_jti(&self) -> Option<u64> {
        Some(self.u64_at(layout::ORIGIN_JTI)).filter(|d| *d != 0)
    }

    /// The index of the issuing pool.
    pub fn pool(&self) -> usize {
        self.u16_at(layout::POOL)
    }

    /// The id of the signing key.
    pub fn kid(&self) -> &str {
        let start = layout::HEADER + 2 * self.value_count();
        self.0
            .get(start..start + self.u16_at(layout::KID_LEN))
            .and_then(|bytes| std::str::from_utf8(bytes).ok())
            .unwrap_or("")
    }

    /// Which headers [`Identity::headers`] gives, by their place in [`header_names`]: bit `p`
    /// set when the `p`-th has a value. Read from the offsets alone, without the values. Places
    /// past 63 are left out.
    pub fn header_places(&self) -> u64 {
        let username = match self.0[layout::USERNAME] {
            x if x == Username::SameAsSub as u8 => self.span_len(SUB),
            x if x == Username::Own as u8 => self.span_len(USERNAME),
            _ => 0,
        };
        // `x-cognito-token-use` always has a value.
        let mut places = 1u64 << HEADER_VALUES;
        for i in 0..HEADER_VALUES {
            let len = if i == USERNAME {
                username
            } else {
                self.span_len(i)
            };
            places |= u64::from(len > 0) << i;
        }
        for extra in 0..(self.value_count() - FIXED).min(63 - HEADER_VALUES) {
            places |= u64::from(self.span_len(FIXED + extra) > 0) << (HEADER_VALUES + 1 + extra);
        }
        places
    }

    /// The identity headers with a value, fixed ones first, then the extra mappings (named by
    /// `claim_headers`, the same list the identity was built with).
    pub fn headers<'a>(
        &'a self,
        claim_headers: &'a [(String, String)],
    ) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        let values = self.values();
        let username = match self.0[layout::USERNAME] {
            x if x == Username::SameAsSub as u8 => self.value_in(values, SUB),
            x if x == Username::Own as u8 => self.value_in(values, USERNAME),
            _ => "",
        };
        let fixed = (0..HEADER_VALUES).map(move |i| {
            let value = if i == USERNAME {
                username
            } else {
                self.value_in(values, i)
            };
            (FIXED_HEADERS[i], value)
        });
        let token_use = std::iter::once(("x-cognito-token-use", self.token_use().as_str()));
        let extra = claim_headers
            .iter()
            .take(self.value_count() - FIXED)
            .enumerate()
            .map(move |(i, (_, header))| (header.as_str(), self.value_in(values, FIXED + i)));
        fixed
            .chain(token_use)
            .chain(extra)
            .filter(|(_, v)| !v.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_headers_an_identity_writes_are_the_managed_list() {
        let mut written: Vec<&str> = FIXED_HEADERS.to_vec();
        written.push("x-cognito-token-use");
        written.sort_unstable();
        let mut managed = IDENTITY_HEADERS.to_vec();
        managed.sort_unstable();
        assert_eq!(written, managed);
        assert!(managed.iter().all(|h| h.starts_with(IDENTITY_PREFIX)));
    }
    use serde_json::json;

    struct Owned {
        sub: String,
        username: Option<String>,
        groups: Vec<String>,
        scopes: Vec<String>,
        preferred_username: Option<String>,
        raw: Map<String, Value>,
    }

    fn claims() -> Owned {
        Owned {
            sub: "sub-1".into(),
            username: Some("sub-1".into()),
            groups: vec!["admins".into(), "a,b".into()],
            scopes: vec!["openid".into(), "profile".into()],
            preferred_username: Some("andrew".into()),
            raw: json!({"custom:tenant": "t1", "custom:n": 7})
                .as_object()
                .unwrap()
                .clone(),
        }
    }

    impl Owned {
        fn set(&self) -> ClaimSet<'_> {
            ClaimSet {
                pool: 0,
                kid: "kid-1",
                exp: 1_000,
                token_use: TokenUse::Access,
                sub: &self.sub,
                username: self.username.as_deref(),
                client_id: "client",
                groups: &self.groups,
                scopes: &self.scopes,
                email: None,
                preferred_username: self.preferred_username.as_deref(),
                jti: Some("jti-1"),
                origin_jti: Some("session-1"),
                iat: 900,
                raw: &self.raw,
            }
        }
    }

    #[test]
    fn an_identity_gives_back_every_header_value() {
        let mapping = vec![
            ("custom:tenant".to_string(), "x-tenant".to_string()),
            ("custom:missing".to_string(), "x-missing".to_string()),
            ("custom:n".to_string(), "x-n".to_string()),
        ];
        let identity = Identity::from_claims(&claims().set(), &mapping).unwrap();
        let headers: Vec<(&str, &str)> = identity.headers(&mapping).collect();
        assert_eq!(
            headers,
            vec![
                ("x-cognito-sub", "sub-1"),
                ("x-cognito-username", "sub-1"),
                ("x-cognito-client-id", "client"),
                ("x-cognito-groups", "admins,a%2Cb"),
                ("x-cognito-scope", "openid profile"),
                ("x-cognito-preferred-username", "andrew"),
                ("x-cognito-token-use", "access"),
                ("x-tenant", "t1"),
                ("x-n", "7"),
            ]
        );
        assert!(identity.in_group("a,b") && identity.in_group("admins"));
        assert_eq!(
            (identity.exp(), identity.pool(), identity.kid()),
            (1_000, 0, "kid-1")
        );
        assert_eq!(identity.token_use(), TokenUse::Access);
        assert_eq!(
            (identity.jti(), identity.origin_jti(), identity.iat()),
            (Some(id_digest("jti-1")), Some(id_digest("session-1")), 900)
        );
        assert!(!identity.in_group("a"));
        assert_eq!(identity.scopes().collect::<Vec<_>>(), ["openid", "profile"]);
    }

    /// The headers take each value out of the values' one text by its offsets: an offset that
    /// is not a whole value's (inside a character, backwards, past the end) gives an empty
    /// value, never a panic on the request path.
    #[test]
    fn the_headers_read_an_offset_that_is_not_a_whole_values_as_empty() {
        let mapping = vec![("custom:tenant".to_string(), "x-tenant".to_string())];
        let mut owned = claims();
        owned.sub = "\u{1f600}\u{e9}".into();
        owned.username = Some("\u{e4}".into());
        owned.raw.insert("custom:tenant".into(), json!("t\u{e9}"));
        let identity = Identity::from_claims(&owned.set(), &mapping).unwrap();
        let len = u16::try_from(identity.values().len()).unwrap();
        assert_eq!(identity.value_count(), FIXED + 1);
        let names = FIXED_HEADERS.iter().copied().chain(["x-tenant"]);
        for (index, name) in names.enumerate() {
            let at = layout::HEADER + 2 * index;
            // 1, 2, 3: inside the first value's emoji; len - 1: inside the tenant's last
            // character.
            for offset in [0, 1, 2, 3, len - 1, len + 1, u16::MAX] {
                let mut bytes = identity.0.to_vec();
                bytes[at..at + 2].copy_from_slice(&offset.to_le_bytes());
                let corrupt = Identity(Arc::from(bytes));
                let mut headers: std::collections::HashMap<&str, &str> =
                    corrupt.headers(&mapping).collect();
                // Every value read (but the token use's, which is no value) is a part of the
                // one text cut on character boundaries.
                headers.remove("x-cognito-token-use");
                for (header, value) in &headers {
                    assert!(
                        corrupt.values().contains(value),
                        "{header} {value:?}, {name}'s offset set to {offset}"
                    );
                }
                // The accessors that read one value alone give a value or none, never a panic.
                let _ = (corrupt.sub(), corrupt.username(), corrupt.kid());
                let _ = (corrupt.groups().count(), corrupt.scopes().count());
                let _ = corrupt.in_group("admins");
                // Past the end: that value is empty, so its header is not written.
                if offset > len && index != USERNAME {
                    assert_eq!(headers.get(name), None, "{name}'s offset set to {offset}");
                }
            }
        }
    }

    /// The headers read out of the values read as one text are the values each accessor reads
    /// alone, whatever their characters and lengths (offsets on character boundaries).
    #[test]
    fn the_headers_hold_the_same_values_as_the_accessors() {
        let mapping = vec![
            ("custom:tenant".to_string(), "x-tenant".to_string()),
            ("custom:n".to_string(), "x-n".to_string()),
        ];
        for (sub, username) in [
            ("s\u{e9}b-\u{1f600}", Some("n\u{e4}me")),
            ("sub-1", Some("sub-1")),
            ("\u{65e5}\u{672c}", None),
            ("x", Some("\u{1f600}")),
        ] {
            let mut owned = claims();
            owned.sub = sub.into();
            owned.username = username.map(str::to_string);
            owned.groups = vec!["gr\u{fc}n".into(), "a,b".into()];
            owned
                .raw
                .insert("custom:tenant".into(), json!("t\u{e9}nant"));
            let identity = Identity::from_claims(&owned.set(), &mapping).unwrap();
            let headers: std::collections::HashMap<&str, &str> =
                identity.headers(&mapping).collect();
            assert_eq!(headers["x-cognito-sub"], identity.sub());
            assert_eq!(
                headers.get("x-cognito-username").copied(),
                identity.username()
            );
            assert_eq!(headers["x-cognito-groups"], identity.span(GROUPS));
            assert_eq!(headers["x-cognito-scope"], identity.span(SCOPE));
            assert_eq!(headers["x-tenant"], "t\u{e9}nant");
            assert_eq!(headers["x-n"], "7");
            assert_eq!(
                identity.values().len(),
                identity.0.len() - identity.values_start()
            );
        }
    }

    /// Each fixed-header field at its named offset, read back through its accessor, with
    /// values that tell the fields apart (a field written at another's offset fails here).
    #[test]
    fn each_field_stands_at_its_named_offset() {
        let owned = claims();
        let mut set = owned.set();
        set.pool = 0x0102;
        set.exp = 0x0A0B_0C0D_0E0F_1011;
        set.iat = 0x2122_2324_2526_2728;
        set.token_use = TokenUse::Id;
        set.username = Some("own-name");
        let mapping = vec![("custom:tenant".to_string(), "x-tenant".to_string())];
        let identity = Identity::from_claims(&set, &mapping).unwrap();
        let bytes = &identity.0;
        let at = |offset: usize, len: usize| &bytes[offset..offset + len];
        assert_eq!(at(layout::EXP, 8), set.exp.to_le_bytes());
        assert_eq!(identity.exp(), set.exp);
        assert_eq!(at(layout::POOL, 2), 0x0102u16.to_le_bytes());
        assert_eq!(identity.pool(), 0x0102);
        assert_eq!(bytes[layout::TOKEN_USE], 1);
        assert_eq!(identity.token_use(), TokenUse::Id);
        assert_eq!(bytes[layout::USERNAME], Username::Own as u8);
        assert_eq!(identity.username(), Some("own-name"));
        assert_eq!(bytes[layout::EXTRAS], 1);
        assert_eq!(identity.headers(&mapping).last(), Some(("x-tenant", "t1")));
        assert_eq!(at(layout::KID_LEN, 2), 5u16.to_le_bytes());
        assert_eq!(identity.kid(), "kid-1");
        assert_eq!(at(layout::IAT, 8), set.iat.to_le_bytes());
        assert_eq!(identity.iat(), set.iat);
        assert_eq!(at(layout::JTI, 8), id_digest("jti-1").to_le_bytes());
        assert_eq!(identity.jti(), Some(id_digest("jti-1")));
        assert_eq!(
            at(layout::ORIGIN_JTI, 8),
            id_digest("session-1").to_le_bytes()
        );
        assert_eq!(identity.origin_jti(), Some(id_digest("session-1")));
        // The value offsets follow the header: the first value, `sub`, ends at its length.
        assert_eq!(at(layout::HEADER, 2), 5u16.to_le_bytes());
        assert_eq!(identity.sub(), "sub-1");
        set.jti = None;
        set.origin_jti = None;
        let without = Identity::from_claims(&set, &[]).unwrap();
        assert_eq!((without.jti(), without.origin_jti()), (None, None));
    }

    /// The places an identity says it has values at are exactly the headers it gives, for
    /// every mix of absent, empty and present values, a username absent, the same as `sub`,
    /// its own or empty, and mappings short of, at and past the 64 places.
    #[test]
    fn header_places_name_exactly_the_headers_an_identity_gives() {
        let sub = "sub-1".to_string();
        for extras in [0usize, 1, 55, 56, 57, 70] {
            let mapping: Vec<(String, String)> = (0..extras)
                .map(|i| (format!("custom:c{i}"), format!("x-c{i}")))
                .collect();
            for username in [
                None,
                Some(sub.clone()),
                Some("own".into()),
                Some(String::new()),
            ] {
                for (email, preferred) in [(None, None), (Some(""), Some("p")), (Some("e"), None)] {
                    for (groups, scopes) in [(vec![], vec![]), (vec!["g".to_string()], vec![])] {
                        let mut c = claims();
                        c.username = username.clone();
                        c.preferred_username = preferred.map(str::to_string);
                        c.groups = groups.clone();
                        c.scopes = scopes.clone();
                        // Present, empty and missing in turn.
                        for i in (0..extras).filter(|i| i % 3 != 2) {
                            let value = if i % 3 == 1 { "v" } else { "" };
                            c.raw.insert(format!("custom:c{i}"), json!(value));
                        }
                        let mut set = c.set();
                        set.email = email;
                        let identity = Identity::from_claims(&set, &mapping).unwrap();
                        let expected = header_names(&mapping)
                            .take(64)
                            .enumerate()
                            .filter(|(_, name)| identity.headers(&mapping).any(|(k, _)| k == *name))
                            .fold(0u64, |mask, (place, _)| mask | 1 << place);
                        assert_eq!(
                            identity.header_places(),
                            expected,
                            "{extras} extras, username {username:?}, email {email:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_machine_token_has_no_username() {
        let mut c = claims();
        c.sub = "client".into();
        c.username = None;
        let identity = Identity::from_claims(&c.set(), &[]).unwrap();
        assert_eq!(identity.username(), None);
        let mut c = claims();
        c.username = Some("someone-else".into());
        assert_eq!(
            Identity::from_claims(&c.set(), &[]).unwrap().username(),
            Some("someone-else")
        );
    }

    #[test]
    fn unsafe_values_are_refused() {
        let mut c = claims();
        c.preferred_username = Some("a\r\nx-cognito-sub: root".into());
        assert_eq!(
            Identity::from_claims(&c.set(), &[]).unwrap_err(),
            UnsafeClaim
        );
        let mut c = claims();
        c.raw.insert("custom:t".into(), json!("x".repeat(9000)));
        let mapping = vec![("custom:t".to_string(), "x-t".to_string())];
        assert_eq!(
            Identity::from_claims(&c.set(), &mapping).unwrap_err(),
            UnsafeClaim
        );
    }
}
