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

use aws_lc_rs::digest;
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;

use crate::identity::Identity;

/// Default number of cached tokens: about 25 MB at 250 bytes each.
pub const DEFAULT_CACHE_ENTRIES: usize = 100_000;

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

impl Lookup {
    /// Every outcome, in the order of [`CacheCounters`]' fields.
    pub const ALL: [Lookup; 3] = [Lookup::Hit, Lookup::Miss, Lookup::Stale];

    /// The metrics label: `hit`, `miss` or `stale`.
    pub fn as_str(self) -> &'static str {
        match self {
            Lookup::Hit => "hit",
            Lookup::Miss => "miss",
            Lookup::Stale => "stale",
        }
    }
}

/// Who hears of each lookup instead of the counters (the dynamic module's Envoy stats).
pub trait LookupObserver: Send + Sync {
    /// One lookup went `lookup`.
    fn lookup(&self, lookup: Lookup);
}

/// Where the cache counts its lookups: the registry's counters, or the observer that replaces
/// the registry (Envoy's stats, in the dynamic module).
#[derive(Clone, Default)]
pub struct CacheCounters {
    /// Hits.
    pub hits: Counter,
    /// Misses.
    pub misses: Counter,
    /// Stale entries dropped.
    pub stale: Counter,
    /// When set, lookups are counted there and not in the counters above.
    pub observer: Option<Arc<dyn LookupObserver>>,
}

impl CacheCounters {
    fn count(&self, lookup: Lookup) {
        if let Some(observer) = &self.observer {
            observer.lookup(lookup);
            return;
        }
        match lookup {
            Lookup::Hit => self.hits.inc(),
            Lookup::Miss => self.misses.inc(),
            Lookup::Stale => self.stale.inc(),
        };
    }
}

/// The cache and its counters.
pub struct TokenCache {
    map: Option<quick_cache::sync::Cache<[u8; 16], Identity>>,
    /// Lookups by outcome, for metrics.
    pub counters: CacheCounters,
}

impl TokenCache {
    /// A cache for at most `entries` tokens (0 disables caching), counting hits, misses and
    /// stale entries into `counters`.
    pub fn with_counters(entries: usize, counters: CacheCounters) -> TokenCache {
        TokenCache {
            map: (entries > 0).then(|| quick_cache::sync::Cache::new(entries)),
            counters,
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
                self.counters.count(Lookup::Miss);
                (Lookup::Miss, None)
            }
            Some(identity) => {
                if now >= identity.exp().saturating_add(leeway)
                    || !key_present(identity.pool(), identity.kid())
                {
                    map.remove(key);
                    self.counters.count(Lookup::Stale);
                    (Lookup::Stale, None)
                } else {
                    self.counters.count(Lookup::Hit);
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

    /// Whether it caches at all (a size of 0 turns it off).
    pub fn is_enabled(&self) -> bool {
        self.map.is_some()
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
    use crate::identity::{ClaimSet, TokenUse};

    fn identity() -> Identity {
        let raw = serde_json::Map::new();
        let claims = ClaimSet {
            pool: 0,
            kid: "kid-1",
            exp: 1_000,
            token_use: TokenUse::Access,
            sub: "sub-1",
            username: None,
            client_id: "client",
            groups: &[],
            scopes: &[],
            email: None,
            preferred_username: None,
            jti: None,
            origin_jti: None,
            iat: 0,
            raw: &raw,
        };
        Identity::from_claims(&claims, &[]).unwrap()
    }

    #[test]
    fn hits_respect_expiry_and_the_signing_key() {
        let cache = TokenCache::with_counters(10, Default::default());
        let key = token_key("a.b.c");
        assert_ne!(key, token_key("a.b.d"));
        assert_eq!(cache.get(&key, 0, 0, |_, _| true).0, Lookup::Miss);
        cache.insert(key, identity());
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

        cache.insert(key, identity());
        assert_eq!(
            cache.get(&key, 0, 0, |_, _| false).0,
            Lookup::Stale,
            "key gone"
        );
        assert_eq!(
            (
                cache.counters.hits.get(),
                cache.counters.misses.get(),
                cache.counters.stale.get()
            ),
            (2, 2, 2)
        );

        let off = TokenCache::with_counters(0, Default::default());
        off.insert(key, identity());
        assert_eq!(off.get(&key, 0, 0, |_, _| true).0, Lookup::Miss);
    }
}
