//! The verified-token cache: a bounded concurrent map from a token's SHA-256 to the compact
//! [`Identity`] it proved, so a token seen before costs a hash and a lookup instead of an RSA
//! verification.
//!
//! Safety: a hit is used only while the token's `exp` (with the leeway) has not passed and the
//! key that signed it is still in the pool's JWKS; the route's policy runs on every request.
//! The key is the first 16 bytes of the token's SHA-256: finding another token with the same
//! key is a second-preimage search of 2^128 work.
//!
//! Memory: an entry costs about 250 bytes for a Cognito access token (measured in the
//! benchmark: 100,000 cached tokens add 25 MB of RSS, key, value and the cache's bookkeeping
//! included), which is why the value is one allocation holding the header values, not the
//! token's claims.

use std::sync::Arc;

use aws_lc_rs::digest;
use prometheus_client::metrics::counter::Counter;

use crate::config::TokenUse;
use crate::policy::MAX_HEADER_VALUE_BYTES;
use crate::verify::Claims;

/// Default number of cached tokens: about 25 MB at 250 bytes each.
pub const DEFAULT_CACHE_ENTRIES: usize = 100_000;

const SUB: usize = 0;
const USERNAME: usize = 1;
const CLIENT_ID: usize = 2;
const GROUPS: usize = 3;
const SCOPE: usize = 4;
const EMAIL: usize = 5;
const PREFERRED_USERNAME: usize = 6;
const FIXED: usize = 7;

/// The fixed identity headers, in [`Identity`] field order.
const FIXED_HEADERS: [&str; FIXED] = [
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

fn claim_as_header(value: &serde_json::Value) -> Option<String> {
    use serde_json::Value;
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
/// holds, so its size is the cache's memory): a fixed header, the end offsets of the header
/// values, the signing `kid`, then the values themselves.
///
/// Layout: `exp` i64, pool u16, token use u8, username kind u8, extra count u8, padding u8,
/// kid length u16 (16 bytes); then one u16 end offset per value (7 fixed + extras); then the kid;
/// then the values. All little-endian. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Identity(Arc<[u8]>);

const HEADER: usize = 16;

impl Identity {
    /// Builds the identity of verified claims; `claim_headers` are the configured extra
    /// claim -> header mappings. Refuses values that are not safe header values.
    pub fn from_claims(
        claims: &Claims,
        claim_headers: &[(String, String)],
    ) -> Result<Identity, UnsafeClaim> {
        let username = match claims.username.as_deref() {
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
            .map(|(claim, _)| claims.raw.get(claim).and_then(claim_as_header))
            .collect();
        let own_username = match username {
            Username::Own => claims.username.as_deref().unwrap_or(""),
            _ => "",
        };
        let values: Vec<&str> = [
            claims.sub.as_str(),
            own_username,
            claims.client_id.as_str(),
            groups.as_str(),
            scope.as_str(),
            claims.email.as_deref().unwrap_or(""),
            claims.preferred_username.as_deref().unwrap_or(""),
        ]
        .into_iter()
        .chain(extras.iter().map(|v| v.as_deref().unwrap_or("")))
        .collect();
        if !values.iter().all(|v| header_safe(v)) {
            return Err(UnsafeClaim);
        }
        let extra_count = u8::try_from(extras.len()).map_err(|_| UnsafeClaim)?;
        let kid_len = u16::try_from(claims.kid.len()).map_err(|_| UnsafeClaim)?;
        let values_len: usize = values.iter().map(|v| v.len()).sum();
        let mut bytes =
            Vec::with_capacity(HEADER + 2 * values.len() + claims.kid.len() + values_len);
        bytes.extend_from_slice(&claims.exp.to_le_bytes());
        bytes.extend_from_slice(
            &u16::try_from(claims.pool_index)
                .map_err(|_| UnsafeClaim)?
                .to_le_bytes(),
        );
        bytes.push(match claims.token_use {
            TokenUse::Access => 0,
            TokenUse::Id => 1,
        });
        bytes.push(username as u8);
        bytes.push(extra_count);
        bytes.push(0);
        bytes.extend_from_slice(&kid_len.to_le_bytes());
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

    fn value_count(&self) -> usize {
        FIXED + usize::from(self.0[12])
    }

    fn values_start(&self) -> usize {
        HEADER + 2 * self.value_count() + self.u16_at(14)
    }

    fn span(&self, index: usize) -> &str {
        let base = self.values_start();
        let end = self.u16_at(HEADER + 2 * index);
        let start = if index == 0 {
            0
        } else {
            self.u16_at(HEADER + 2 * (index - 1))
        };
        // Written from &str values at offsets of whole values: always UTF-8.
        std::str::from_utf8(&self.0[base + start..base + end]).unwrap_or("")
    }

    /// `sub`.
    pub fn sub(&self) -> &str {
        self.span(SUB)
    }

    /// The username (`username` or `cognito:username`), when the token has one.
    pub fn username(&self) -> Option<&str> {
        match self.0[11] {
            x if x == Username::SameAsSub as u8 => Some(self.sub()),
            x if x == Username::Own as u8 => Some(self.span(USERNAME)),
            _ => None,
        }
    }

    /// The app client.
    pub fn client_id(&self) -> &str {
        self.span(CLIENT_ID)
    }

    /// `email` (ID tokens), when present.
    pub fn email(&self) -> Option<&str> {
        Some(self.span(EMAIL)).filter(|e| !e.is_empty())
    }

    /// `preferred_username` (ID tokens), when present.
    pub fn preferred_username(&self) -> Option<&str> {
        Some(self.span(PREFERRED_USERNAME)).filter(|p| !p.is_empty())
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
        if self.0[10] == 0 {
            TokenUse::Access
        } else {
            TokenUse::Id
        }
    }

    /// `exp`, Unix seconds.
    pub fn exp(&self) -> i64 {
        let mut exp = [0u8; 8];
        exp.copy_from_slice(&self.0[..8]);
        i64::from_le_bytes(exp)
    }

    /// The index of the issuing pool.
    pub fn pool(&self) -> usize {
        self.u16_at(8)
    }

    /// The id of the signing key.
    pub fn kid(&self) -> &str {
        let start = HEADER + 2 * self.value_count();
        std::str::from_utf8(&self.0[start..start + self.u16_at(14)]).unwrap_or("")
    }

    /// The identity headers with a value, fixed ones first, then the extra mappings (named by
    /// `claim_headers`, the same list the identity was built with).
    pub fn headers<'a>(
        &'a self,
        claim_headers: &'a [(String, String)],
    ) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        let username = self.username().unwrap_or("");
        let fixed = (0..FIXED).map(move |i| {
            let value = if i == USERNAME {
                username
            } else {
                self.span(i)
            };
            (FIXED_HEADERS[i], value)
        });
        let token_use = std::iter::once(("x-cognito-token-use", self.token_use().as_str()));
        let extra = claim_headers
            .iter()
            .take(self.value_count() - FIXED)
            .enumerate()
            .map(move |(i, (_, header))| (header.as_str(), self.span(FIXED + i)));
        fixed
            .chain(token_use)
            .chain(extra)
            .filter(|(_, v)| !v.is_empty())
    }
}

/// The cache key of a token: the first 16 bytes of its SHA-256.
pub fn token_key(token: &str) -> [u8; 16] {
    let digest = digest::digest(&digest::SHA256, token.as_bytes());
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest.as_ref()[..16]);
    key
}

/// How a lookup went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Found and still usable.
    Hit,
    /// Not cached.
    Miss,
    /// Cached but expired, or its key left the JWKS: dropped, verify again.
    Stale,
}

/// The cache and its counters.
pub struct TokenCache {
    map: Option<quick_cache::sync::Cache<[u8; 16], Identity>>,
    /// Lookups by outcome, for metrics.
    pub hits: Counter,
    /// Misses, for metrics.
    pub misses: Counter,
    /// Stale entries dropped, for metrics.
    pub stale: Counter,
}

impl TokenCache {
    /// A cache for at most `entries` tokens; 0 disables caching.
    pub fn new(entries: usize) -> TokenCache {
        TokenCache::with_counters(
            entries,
            [Counter::default(), Counter::default(), Counter::default()],
        )
    }

    /// Like [`TokenCache::new`], counting hits, misses and stale entries into these counters.
    pub fn with_counters(entries: usize, [hits, misses, stale]: [Counter; 3]) -> TokenCache {
        TokenCache {
            map: (entries > 0).then(|| quick_cache::sync::Cache::new(entries)),
            hits,
            misses,
            stale,
        }
    }

    /// The identity cached under `key`, if it is still good at `now`: `exp` (plus `leeway`)
    /// not passed and `key_present(pool, kid)`.
    pub fn get(
        &self,
        key: &[u8; 16],
        now: i64,
        leeway: i64,
        key_present: impl FnOnce(usize, &str) -> bool,
    ) -> (Lookup, Option<Identity>) {
        let Some(map) = &self.map else {
            return (Lookup::Miss, None);
        };
        match map.get(key) {
            None => {
                self.misses.inc();
                (Lookup::Miss, None)
            }
            Some(identity) => {
                if now >= identity.exp().saturating_add(leeway)
                    || !key_present(identity.pool(), identity.kid())
                {
                    map.remove(key);
                    self.stale.inc();
                    (Lookup::Stale, None)
                } else {
                    self.hits.inc();
                    (Lookup::Hit, Some(identity))
                }
            }
        }
    }

    /// Remembers a verified identity.
    pub fn insert(&self, key: [u8; 16], identity: Identity) {
        if let Some(map) = &self.map {
            map.insert(key, identity);
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.map.as_ref().map_or(0, |m| m.len())
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims() -> Claims {
        Claims {
            pool_id: "us-east-1_A".into(),
            pool_index: 0,
            kid: Arc::from("kid-1"),
            sub: "sub-1".into(),
            username: Some("sub-1".into()),
            client_id: "client".into(),
            token_use: TokenUse::Access,
            groups: vec!["admins".into(), "a,b".into()],
            scopes: vec!["openid".into(), "profile".into()],
            email: None,
            email_verified: None,
            name: None,
            preferred_username: Some("andrew".into()),
            exp: 1_000,
            iat: Some(0),
            auth_time: None,
            raw: json!({"custom:tenant": "t1", "custom:n": 7})
                .as_object()
                .unwrap()
                .clone(),
        }
    }

    #[test]
    fn an_identity_gives_back_every_header_value() {
        let mapping = vec![
            ("custom:tenant".to_string(), "x-tenant".to_string()),
            ("custom:missing".to_string(), "x-missing".to_string()),
            ("custom:n".to_string(), "x-n".to_string()),
        ];
        let identity = Identity::from_claims(&claims(), &mapping).unwrap();
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
            (identity.email(), identity.preferred_username()),
            (None, Some("andrew"))
        );
        assert!(!identity.in_group("a"));
        assert_eq!(identity.scopes().collect::<Vec<_>>(), ["openid", "profile"]);
    }

    #[test]
    fn a_machine_token_has_no_username() {
        let mut c = claims();
        c.sub = "client".into();
        c.username = None;
        let identity = Identity::from_claims(&c, &[]).unwrap();
        assert_eq!(identity.username(), None);
        let mut c = claims();
        c.username = Some("someone-else".into());
        assert_eq!(
            Identity::from_claims(&c, &[]).unwrap().username(),
            Some("someone-else")
        );
    }

    #[test]
    fn unsafe_values_are_refused() {
        let mut c = claims();
        c.preferred_username = Some("a\r\nx-cognito-sub: root".into());
        assert_eq!(Identity::from_claims(&c, &[]).unwrap_err(), UnsafeClaim);
        let mut c = claims();
        c.raw.insert("custom:t".into(), json!("x".repeat(9000)));
        let mapping = vec![("custom:t".to_string(), "x-t".to_string())];
        assert_eq!(
            Identity::from_claims(&c, &mapping).unwrap_err(),
            UnsafeClaim
        );
    }

    #[test]
    fn hits_respect_expiry_and_the_signing_key() {
        let cache = TokenCache::new(10);
        let key = token_key("a.b.c");
        assert_ne!(key, token_key("a.b.d"));
        assert_eq!(cache.get(&key, 0, 0, |_, _| true).0, Lookup::Miss);
        cache.insert(key, Identity::from_claims(&claims(), &[]).unwrap());
        assert_eq!(cache.get(&key, 999, 0, |_, _| true).0, Lookup::Hit);
        assert_eq!(
            cache.get(&key, 1_000, 5, |p, k| p == 0 && k == "kid-1").0,
            Lookup::Hit,
            "within the leeway"
        );
        assert_eq!(cache.get(&key, 1_005, 5, |_, _| true).0, Lookup::Stale);
        assert_eq!(
            cache.get(&key, 0, 0, |_, _| true).0,
            Lookup::Miss,
            "dropped"
        );

        cache.insert(key, Identity::from_claims(&claims(), &[]).unwrap());
        assert_eq!(
            cache.get(&key, 0, 0, |_, _| false).0,
            Lookup::Stale,
            "key gone"
        );
        assert_eq!(
            (cache.hits.get(), cache.misses.get(), cache.stale.get()),
            (2, 2, 2)
        );

        let off = TokenCache::new(0);
        off.insert(key, Identity::from_claims(&claims(), &[]).unwrap());
        assert_eq!(off.get(&key, 0, 0, |_, _| true).0, Lookup::Miss);
    }
}
