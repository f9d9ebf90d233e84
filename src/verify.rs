//! Token verification: the checks AWS prescribes for Cognito tokens, in a fixed order, each
//! failure with a stable reason code.
//!
//! Order: shape, header (`alg` RS256 only, `kid`), pool by the unverified `iss` (before any key
//! lookup, so a stranger's token can make us fetch nothing), key by `kid`, signature, time
//! (`exp` required, `nbf` and `iat` honoured, all with the leeway), `token_use`, app client.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::identity::{ClaimSet, TokenUse};
use crate::jwks::{KeyError, KeyStore};
use crate::pool::PoolConfig;

mod json;

pub use json::RawPayload;
use json::{Claim, Header, Payload};

/// Why a token was refused. The codes are stable: logs, metrics and deny descriptions use them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Not three base64url parts of JSON, a header without `kid`, an unsupported `crit`,
    /// duplicate names, or over the size cap.
    Malformed,
    /// `alg` is not RS256 (`none`, HMAC and every other algorithm are refused).
    UnsupportedAlg,
    /// `iss` names no configured pool (or is missing).
    UnknownIssuer,
    /// The pool has no key with this `kid`, even after a refetch.
    UnknownKid,
    /// The signature does not verify.
    BadSignature,
    /// `exp` has passed (beyond the leeway).
    Expired,
    /// `nbf` or `iat` is in the future (beyond the leeway).
    NotYetValid,
    /// A required claim is missing or of the wrong type (`exp`, `sub`, groups...).
    InvalidClaims,
    /// `token_use` is not one the pool accepts.
    WrongTokenUse,
    /// `client_id` (access) or `aud` (ID) is not one of the pool's app clients.
    WrongClient,
    /// The pool has never obtained keys: the answer is "try later", not "bad token".
    KeysUnavailable,
}

impl Reason {
    /// Every reason, for tests and metrics pre-registration.
    pub const ALL: [Reason; 11] = [
        Reason::Malformed,
        Reason::UnsupportedAlg,
        Reason::UnknownIssuer,
        Reason::UnknownKid,
        Reason::BadSignature,
        Reason::Expired,
        Reason::NotYetValid,
        Reason::InvalidClaims,
        Reason::WrongTokenUse,
        Reason::WrongClient,
        Reason::KeysUnavailable,
    ];

    /// The stable code.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Malformed => "malformed",
            Reason::UnsupportedAlg => "unsupported_alg",
            Reason::UnknownIssuer => "unknown_issuer",
            Reason::UnknownKid => "unknown_kid",
            Reason::BadSignature => "bad_signature",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::InvalidClaims => "invalid_claims",
            Reason::WrongTokenUse => "wrong_token_use",
            Reason::WrongClient => "wrong_client",
            Reason::KeysUnavailable => "keys_unavailable",
        }
    }

    /// A short human description, safe to send to clients (it never echoes the token).
    pub fn description(self) -> &'static str {
        match self {
            Reason::Malformed => "the token is not a well-formed JWT",
            Reason::UnsupportedAlg => "the token is not signed with RS256",
            Reason::UnknownIssuer => "the token was not issued by a trusted user pool",
            Reason::UnknownKid => "the token was signed with an unknown key",
            Reason::BadSignature => "the token signature is invalid",
            Reason::Expired => "the token has expired",
            Reason::NotYetValid => "the token is not valid yet",
            Reason::InvalidClaims => "the token lacks a required claim",
            Reason::WrongTokenUse => "the token is of the wrong kind (access or id)",
            Reason::WrongClient => "the token was issued to another app client",
            Reason::KeysUnavailable => "the user pool's keys are not available yet",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused token: the reason code and a fixed detail (never token contents).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection {
    /// The stable code.
    pub reason: Reason,
    /// Which part of the check failed.
    pub detail: &'static str,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason.as_str(), self.detail)
    }
}

impl std::error::Error for Rejection {}

fn reject<T>(reason: Reason, detail: &'static str) -> Result<T, Rejection> {
    Err(Rejection { reason, detail })
}

/// What a verified token says, for the stages after verification.
#[derive(Debug, Clone, Serialize)]
pub struct Claims {
    /// The configured pool that issued it.
    pub pool_id: String,
    /// Its index among the configured pools.
    pub pool_index: usize,
    /// The id of the key that signed it.
    pub kid: Arc<str>,
    /// `sub`.
    pub sub: String,
    /// `username` (access) or `cognito:username` (ID); absent from machine tokens.
    pub username: Option<String>,
    /// `client_id` (access) or `aud` (ID).
    pub client_id: String,
    /// `token_use`.
    pub token_use: TokenUse,
    /// `cognito:groups`.
    pub groups: Vec<String>,
    /// `scope`, split on spaces (access tokens).
    pub scopes: Vec<String>,
    /// `email` (ID tokens).
    pub email: Option<String>,
    /// `email_verified` (ID tokens).
    pub email_verified: Option<bool>,
    /// `name` (ID tokens).
    pub name: Option<String>,
    /// `preferred_username` (ID tokens).
    pub preferred_username: Option<String>,
    /// `exp`, Unix seconds.
    pub exp: i64,
    /// `iat`, Unix seconds.
    pub iat: Option<i64>,
    /// `auth_time`, Unix seconds.
    pub auth_time: Option<i64>,
    /// `jti`, when a string.
    #[serde(skip)]
    pub jti: Option<String>,
    /// `origin_jti` (the sign-in session), when a string.
    #[serde(skip)]
    pub origin_jti: Option<String>,
    /// The whole payload, as a map on first use.
    pub raw: RawPayload,
}

/// A JSON object that refuses duplicate member names: a token whose claims repeat a name could
/// mean one thing to us and another to the next reader.
struct StrictObject(Map<String, Value>);

impl<'de> Deserialize<'de> for StrictObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StrictVisitor;
        impl<'de> Visitor<'de> for StrictVisitor {
            type Value = StrictObject;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<StrictObject, A::Error> {
                let mut map = Map::new();
                while let Some(key) = access.next_key::<String>()? {
                    if map.contains_key(&key) {
                        return Err(de::Error::custom("duplicate member name"));
                    }
                    let value = access.next_value::<Value>()?;
                    map.insert(key, value);
                }
                Ok(StrictObject(map))
            }
        }
        deserializer.deserialize_map(StrictVisitor)
    }
}

/// A token split and decoded, before any key is involved. Its `Debug` shows the kid and the
/// parts' lengths: never the signed bytes nor the claims.
pub struct Decoded<'a> {
    /// `kid` from the header.
    pub kid: String,
    /// The payload's known claims, borrowed from the decoded payload.
    pub(crate) payload: Payload<'a>,
    /// `header.payload`, the signed bytes.
    pub message: &'a str,
    /// The signature bytes.
    pub signature: Vec<u8>,
}

impl fmt::Debug for Decoded<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decoded")
            .field("kid", &self.kid)
            .field("message_bytes", &self.message.len())
            .field("signature_bytes", &self.signature.len())
            .finish_non_exhaustive()
    }
}

const NOT_A_UNIQUE_OBJECT: Rejection = Rejection {
    reason: Reason::Malformed,
    detail: "a part is not a JSON object with unique names",
};

fn b64(part: &str) -> Result<Vec<u8>, Rejection> {
    URL_SAFE_NO_PAD
        .decode(part)
        .or_else(|_| reject(Reason::Malformed, "a part is not base64url"))
}

fn b64_json(part: &str) -> Result<Map<String, Value>, Rejection> {
    serde_json::from_slice::<StrictObject>(&b64(part)?)
        .map(|o| o.0)
        .or(Err(NOT_A_UNIQUE_OBJECT))
}

/// A decoded part as text. A part that is not UTF-8 is no JSON `Value` accepts either (outside a
/// string such a byte is a syntax error, inside one it is refused), so the detail is the same.
fn utf8(json: &[u8]) -> Result<&str, Rejection> {
    std::str::from_utf8(json).or(Err(NOT_A_UNIQUE_OBJECT))
}

/// Checks 1 and 2: shape and header. Never touches a key. The payload is decoded into
/// `payload_json`, which the returned claims borrow from.
pub fn decode<'a>(
    token: &'a str,
    max_bytes: usize,
    payload_json: &'a mut Vec<u8>,
) -> Result<Decoded<'a>, Rejection> {
    if token.len() > max_bytes {
        return reject(Reason::Malformed, "the token exceeds the size cap");
    }
    let mut parts = token.splitn(4, '.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return reject(
            Reason::Malformed,
            "the token is not three dot-separated parts",
        );
    };
    if header.is_empty() || payload.is_empty() || signature.is_empty() {
        return reject(Reason::Malformed, "a part of the token is empty");
    }
    let header_json = b64(header)?;
    let header_claims: Header<'_> =
        serde_json::from_str(utf8(&header_json)?).or(Err(NOT_A_UNIQUE_OBJECT))?;
    match &header_claims.alg {
        Some(Claim::Str(alg)) if alg == "RS256" => {}
        _ => return reject(Reason::UnsupportedAlg, "alg must be RS256"),
    }
    // RFC 7515 4.1.11: extensions listed in crit must be understood; we understand none.
    if header_claims.crit.is_some() {
        return reject(
            Reason::Malformed,
            "crit header extensions are not supported",
        );
    }
    // jku, x5u, jwk and x5c are ignored on purpose: keys come only from configuration.
    let kid = match &header_claims.kid {
        Some(Claim::Str(kid)) if !kid.is_empty() => kid.to_string(),
        _ => return reject(Reason::Malformed, "the header has no kid"),
    };
    *payload_json = b64(payload)?;
    let payload_json: &'a [u8] = payload_json;
    let payload_claims: Payload<'a> =
        serde_json::from_str(utf8(payload_json)?).or(Err(NOT_A_UNIQUE_OBJECT))?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .or_else(|_| reject(Reason::Malformed, "the signature is not base64url"))?;
    Ok(Decoded {
        kid,
        payload: payload_claims,
        message: &token[..header.len() + 1 + payload.len()],
        signature,
    })
}

/// The unverified payload, for "why was I denied" output; `None` when it cannot be decoded.
pub fn unverified_payload(token: &str) -> Option<Map<String, Value>> {
    let payload = token.split('.').nth(1)?;
    b64_json(payload).ok()
}

/// A NumericDate as Cognito writes it: a whole number of seconds that fits `i64`. Fractions,
/// strings and out-of-range numbers are refused (RFC 7519 would allow fractions; Cognito never
/// writes them, so one is a sign of a token Cognito did not make).
fn numeric_date(value: &Claim<'_>) -> Option<i64> {
    match value {
        Claim::Int(n) => Some(*n),
        _ => None,
    }
}

/// The longest a Cognito access or ID token lives (the pool's maximum validity, one day): an
/// `exp` further ahead than this, plus the leeway, cannot be Cognito's.
pub const MAX_TOKEN_LIFETIME_SECS: i64 = 24 * 3600;

fn optional_date(claim: &Option<Claim<'_>>) -> Result<Option<i64>, Rejection> {
    match claim {
        None => Ok(None),
        Some(value) => numeric_date(value).map(Some).ok_or(Rejection {
            reason: Reason::InvalidClaims,
            detail: "a time claim is not a number",
        }),
    }
}

fn optional_string(claim: &Option<Claim<'_>>) -> Result<Option<String>, Rejection> {
    match claim {
        None | Some(Claim::Null) => Ok(None),
        Some(Claim::Str(s)) => Ok(Some(s.to_string())),
        Some(_) => reject(Reason::InvalidClaims, "a string claim has another type"),
    }
}

/// The verifier's own tuning.
#[derive(Debug, Clone, Copy)]
pub struct VerifySettings {
    /// Clock-skew leeway for `exp`, `nbf` and `iat`.
    pub leeway: std::time::Duration,
    /// Largest token accepted, in bytes.
    pub max_token_bytes: usize,
}

impl Claims {
    /// What an [`crate::identity::Identity`] is built from.
    pub fn claim_set(&self) -> ClaimSet<'_> {
        ClaimSet {
            pool: self.pool_index,
            kid: &self.kid,
            exp: self.exp,
            token_use: self.token_use,
            sub: &self.sub,
            username: self.username.as_deref(),
            client_id: &self.client_id,
            groups: &self.groups,
            scopes: &self.scopes,
            email: self.email.as_deref(),
            preferred_username: self.preferred_username.as_deref(),
            jti: self.jti.as_deref(),
            origin_jti: self.origin_jti.as_deref(),
            iat: self.iat.unwrap_or(0),
            raw: &self.raw,
        }
    }
}

/// Verifies tokens against the configured pools. Cheap to clone.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<VerifierInner>,
}

struct VerifierInner {
    pools: Vec<PoolConfig>,
    by_issuer: HashMap<String, usize>,
    keys: KeyStore,
    leeway: i64,
    max_token_bytes: usize,
}

impl Verifier {
    /// A verifier for `pools` using `keys` (built from the same pools, in order).
    pub fn new(pools: &[PoolConfig], settings: VerifySettings, keys: KeyStore) -> Verifier {
        let by_issuer = pools
            .iter()
            .enumerate()
            .flat_map(|(i, p)| p.issuers.iter().map(move |iss| (iss.clone(), i)))
            .collect();
        Verifier {
            inner: Arc::new(VerifierInner {
                pools: pools.to_vec(),
                by_issuer,
                keys,
                leeway: i64::try_from(settings.leeway.as_secs()).unwrap_or(i64::MAX),
                max_token_bytes: settings.max_token_bytes,
            }),
        }
    }

    /// The clock-skew leeway in seconds.
    pub fn leeway(&self) -> i64 {
        self.inner.leeway
    }

    /// The key store.
    pub fn keys(&self) -> &KeyStore {
        &self.inner.keys
    }

    /// The pools, in configuration order (the key store's indices).
    pub fn pools(&self) -> &[PoolConfig] {
        &self.inner.pools
    }

    /// Verifies `token` now.
    pub async fn verify(&self, token: &str) -> Result<Claims, Rejection> {
        self.verify_at(token, crate::unix_now()).await
    }

    /// Verifies `token` as of `now` (Unix seconds).
    pub async fn verify_at(&self, token: &str, now: i64) -> Result<Claims, Rejection> {
        let inner = &*self.inner;
        let mut payload_json = Vec::new();
        let decoded = decode(token, inner.max_token_bytes, &mut payload_json)?;
        let pool_index = inner.pool_of(&decoded.payload)?;

        let key = match inner.keys.key(pool_index, &decoded.kid).await {
            Ok(key) => key,
            Err(KeyError::UnknownKid) => {
                return reject(Reason::UnknownKid, "no key of the pool has this kid")
            }
            Err(KeyError::Unavailable) => {
                return reject(Reason::KeysUnavailable, "the pool has no keys yet")
            }
        };
        if !key.verify_rs256(decoded.message.as_bytes(), &decoded.signature) {
            return reject(Reason::BadSignature, "the signature does not verify");
        }

        let mut claims =
            inner.checked_claims(&decoded.payload, pool_index, Arc::clone(key.kid()), now)?;
        claims.raw = RawPayload::new(payload_json);
        Ok(claims)
    }
}

impl VerifierInner {
    /// The pool the unverified `iss` names.
    fn pool_of(&self, payload: &Payload<'_>) -> Result<usize, Rejection> {
        match &payload.iss {
            Some(Claim::Str(iss)) => match self.by_issuer.get(iss.as_ref()) {
                Some(&index) => Ok(index),
                None => reject(Reason::UnknownIssuer, "iss names no configured pool"),
            },
            _ => reject(Reason::UnknownIssuer, "the token has no iss"),
        }
    }

    /// The checks after the signature, in order, and the claims they give (`raw` left empty:
    /// the caller moves the payload's bytes in).
    fn checked_claims(
        &self,
        payload: &Payload<'_>,
        pool_index: usize,
        kid: Arc<str>,
        now: i64,
    ) -> Result<Claims, Rejection> {
        let pool = &self.pools[pool_index];
        let (exp, iat) = check_times(payload, now, self.leeway)?;

        let (token_use, client_id) = check_client(payload, pool)?;

        let sub = match optional_string(&payload.sub)? {
            Some(sub) if !sub.is_empty() => sub,
            _ => return reject(Reason::InvalidClaims, "the token has no sub"),
        };
        let groups = groups(payload)?;
        let scopes = match &payload.scope {
            Some(Claim::Str(scope)) => scope.split_ascii_whitespace().map(str::to_string).collect(),
            scope => {
                optional_string(scope)?;
                Vec::new()
            }
        };
        let username = match token_use {
            TokenUse::Access => optional_string(&payload.username)?,
            TokenUse::Id => optional_string(&payload.cognito_username)?,
        };
        let email_verified = email_verified(payload)?;

        Ok(Claims {
            pool_id: pool.id.clone(),
            pool_index,
            kid,
            sub,
            username,
            client_id,
            token_use,
            groups,
            scopes,
            email: optional_string(&payload.email)?,
            email_verified,
            name: optional_string(&payload.name)?,
            preferred_username: optional_string(&payload.preferred_username)?,
            exp,
            iat,
            auth_time: optional_date(&payload.auth_time)?,
            jti: payload
                .jti
                .as_ref()
                .and_then(Claim::as_str)
                .map(str::to_string),
            origin_jti: payload
                .origin_jti
                .as_ref()
                .and_then(Claim::as_str)
                .map(str::to_string),
            raw: RawPayload::default(),
        })
    }
}

/// The token's times against `now` within `leeway`: `exp` present and not passed, and not
/// further ahead than a Cognito token lives; `nbf` and `iat`, when present, not in the future.
/// Gives `exp` and `iat`.
fn check_times(
    payload: &Payload<'_>,
    now: i64,
    leeway: i64,
) -> Result<(i64, Option<i64>), Rejection> {
    let exp = match &payload.exp {
        None => return reject(Reason::InvalidClaims, "the token has no exp"),
        Some(value) => numeric_date(value).ok_or(Rejection {
            reason: Reason::InvalidClaims,
            detail: "exp is not a number",
        })?,
    };
    if now >= exp.saturating_add(leeway) {
        return reject(Reason::Expired, "exp has passed");
    }
    if exp > now.saturating_add(MAX_TOKEN_LIFETIME_SECS.saturating_add(leeway)) {
        return reject(
            Reason::InvalidClaims,
            "exp is further ahead than a Cognito token lives",
        );
    }
    if optional_date(&payload.nbf)?.is_some_and(|nbf| nbf > now.saturating_add(leeway)) {
        return reject(Reason::NotYetValid, "nbf is in the future");
    }
    let iat = optional_date(&payload.iat)?;
    if iat.is_some_and(|iat| iat > now.saturating_add(leeway)) {
        return reject(Reason::NotYetValid, "iat is in the future");
    }
    Ok((exp, iat))
}

/// `token_use` accepted by the pool, and the app client (`client_id` of an access token, the
/// single `aud` of an ID token) one of the pool's.
fn check_client(payload: &Payload<'_>, pool: &PoolConfig) -> Result<(TokenUse, String), Rejection> {
    let token_use = match payload.token_use.as_ref().and_then(Claim::as_str) {
        Some("access") => TokenUse::Access,
        Some("id") => TokenUse::Id,
        _ => return reject(Reason::WrongTokenUse, "token_use is neither access nor id"),
    };
    if !pool.token_use.accepts(token_use) {
        return reject(
            Reason::WrongTokenUse,
            "the pool does not accept this token_use",
        );
    }

    let client_id = match token_use {
        TokenUse::Access => match &payload.client_id {
            Some(Claim::Str(c)) => c,
            _ => return reject(Reason::WrongClient, "the access token has no client_id"),
        },
        TokenUse::Id => match &payload.aud {
            Some(Claim::Str(a)) => a,
            Some(Claim::Strings(_) | Claim::Array) => {
                return reject(Reason::WrongClient, "aud must be a single app client id")
            }
            _ => return reject(Reason::WrongClient, "the ID token has no aud"),
        },
    };
    if !pool.client_ids.iter().any(|c| c == client_id) {
        return reject(Reason::WrongClient, "the app client is not configured");
    }
    Ok((token_use, client_id.to_string()))
}

/// `cognito:groups`: absent, null or a list of strings.
fn groups(payload: &Payload<'_>) -> Result<Vec<String>, Rejection> {
    Ok(match &payload.groups {
        None | Some(Claim::Null) => Vec::new(),
        Some(Claim::Strings(items)) => items.iter().map(|g| g.to_string()).collect(),
        Some(Claim::Array) => {
            return reject(Reason::InvalidClaims, "cognito:groups holds a non-string")
        }
        Some(_) => return reject(Reason::InvalidClaims, "cognito:groups is not a list"),
    })
}

/// `email_verified`: a boolean, or the string form some Cognito versions emit.
fn email_verified(payload: &Payload<'_>) -> Result<Option<bool>, Rejection> {
    Ok(match &payload.email_verified {
        None | Some(Claim::Null) => None,
        Some(Claim::Bool(b)) => Some(*b),
        // Some Cognito versions emit the attribute as a string.
        Some(Claim::Str(s)) if s == "true" => Some(true),
        Some(Claim::Str(s)) if s == "false" => Some(false),
        Some(_) => return reject(Reason::InvalidClaims, "email_verified is not a boolean"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, ENV_JWKS_MIN_REFETCH};
    use crate::testkit::{access_claims, id_claims, jwks, now, TestKey};
    use serde_json::json;

    const POOL: &str = "us-east-1_TestPool";
    const ISS: &str = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_TestPool";
    const CLIENT: &str = "client-a";

    pub(super) fn verifier_with(extra: &[(&str, &str)]) -> Verifier {
        let mut vars: HashMap<String, String> = [
            ("AWS_COGNITO_USER_POOL_ID", POOL),
            ("AWS_COGNITO_USER_POOL_CLIENT_ID", CLIENT),
            // Nothing listens on the discard port: a refetch fails fast.
            ("COGNITO_JWKS_URI", "http://127.0.0.1:9/jwks.json"),
            (ENV_JWKS_MIN_REFETCH, "3600"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in extra {
            vars.insert(k.to_string(), v.to_string());
        }
        let config = Config::from_lookup(|k| vars.get(k).cloned(), None).unwrap();
        let keys = KeyStore::new(&config.pools, &config.jwks).unwrap();
        keys.preload(0, jwks(&[TestKey::shared(0)]).to_string().as_bytes())
            .unwrap();
        config.verifier(keys)
    }

    fn verifier() -> Verifier {
        verifier_with(&[])
    }

    #[tokio::test]
    async fn an_id_token_for_several_audiences_is_refused_as_such() {
        let mut claims = id_claims(ISS, CLIENT, now());
        claims["aud"] = json!([CLIENT, "another-client"]);
        let v = verifier_with(&[("COGNITO_TOKEN_USE", "any")]);
        let rejection = v
            .verify(&TestKey::shared(0).token(&claims))
            .await
            .unwrap_err();
        assert_eq!(
            (rejection.reason, rejection.detail),
            (Reason::WrongClient, "aud must be a single app client id")
        );
    }

    #[tokio::test]
    async fn email_verified_is_read_as_a_boolean_or_its_string_form_and_nothing_else() {
        let v = verifier_with(&[("COGNITO_TOKEN_USE", "any")]);
        let with = |value: Value| {
            let mut claims = id_claims(ISS, CLIENT, now());
            claims["email_verified"] = value;
            TestKey::shared(0).token(&claims)
        };
        for (value, read) in [
            (json!(true), Some(true)),
            (json!(false), Some(false)),
            (json!("true"), Some(true)),
            (json!("false"), Some(false)),
            (json!(null), None),
        ] {
            let claims = v.verify(&with(value.clone())).await.unwrap();
            assert_eq!(claims.email_verified, read, "{value}");
        }
        for value in [json!("yes"), json!("TRUE"), json!(""), json!(1)] {
            let rejection = v.verify(&with(value.clone())).await.unwrap_err();
            assert_eq!(rejection.reason, Reason::InvalidClaims, "{value}");
        }
    }

    /// A decoded token's debug output shows its kid and lengths: none of its parts, none of
    /// its claims.
    #[test]
    fn a_decoded_token_shows_none_of_itself_in_debug() {
        let token = access(|_| {});
        let mut payload = Vec::new();
        let decoded = decode(&token, token.len(), &mut payload).unwrap();
        let shown = format!("{decoded:?}");
        let parts: Vec<&str> = token.split('.').collect();
        for part in [
            parts[0],
            parts[1],
            &parts[1][..8],
            parts[2],
            &parts[2][..8],
            CLIENT,
        ] {
            assert!(!shown.contains(part), "{shown}");
        }
        assert!(shown.contains("message_bytes"), "{shown}");
    }

    /// The size cap is inclusive, and each of the three parts must hold something: a token with
    /// an empty part is malformed before any key is looked at.
    #[test]
    fn the_size_cap_is_inclusive_and_every_part_must_be_there() {
        let token = access(|_| {});
        assert!(decode(&token, token.len(), &mut Vec::new()).is_ok());
        let over = decode(&token, token.len() - 1, &mut Vec::new()).unwrap_err();
        assert_eq!(over.reason, Reason::Malformed);
        let parts: Vec<&str> = token.split('.').collect();
        for emptied in 0..3 {
            let mut hollow = parts.clone();
            hollow[emptied] = "";
            let hollow = hollow.join(".");
            let rejection = decode(&hollow, 16 * 1024, &mut Vec::new()).unwrap_err();
            assert_eq!(rejection.reason, Reason::Malformed, "part {emptied} empty");
            assert_eq!(
                rejection.detail, "a part of the token is empty",
                "part {emptied}"
            );
        }
    }

    fn access(edit: impl FnOnce(&mut Value)) -> String {
        let mut claims = access_claims(ISS, CLIENT, now());
        edit(&mut claims);
        TestKey::shared(0).token(&claims)
    }

    async fn reason(v: &Verifier, token: &str) -> Reason {
        v.verify(token).await.unwrap_err().reason
    }

    #[test]
    fn reason_codes_are_stable() {
        let codes: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            codes,
            [
                "malformed",
                "unsupported_alg",
                "unknown_issuer",
                "unknown_kid",
                "bad_signature",
                "expired",
                "not_yet_valid",
                "invalid_claims",
                "wrong_token_use",
                "wrong_client",
                "keys_unavailable",
            ]
        );
        for r in Reason::ALL {
            assert_eq!(serde_json::to_value(r).unwrap(), json!(r.as_str()));
        }
    }

    #[tokio::test]
    async fn a_cognito_access_token_is_accepted_with_its_claims() {
        let claims = verifier().verify(&access(|_| {})).await.unwrap();
        assert_eq!(claims.pool_id, POOL);
        assert_eq!(claims.sub, "8f1e2d3c-0000-4000-8000-00000000abcd");
        assert_eq!(claims.username.as_deref(), Some(claims.sub.as_str()));
        assert_eq!(claims.client_id, CLIENT);
        assert_eq!(claims.token_use, TokenUse::Access);
        assert_eq!(claims.groups, vec!["admins", "beta"]);
        assert_eq!(
            claims.scopes,
            vec!["aws.cognito.signin.user.admin", "openid"]
        );
        assert_eq!(
            claims.raw.map()["jti"],
            "5a4b3c2d-3333-4333-8333-333333333333"
        );
    }

    #[tokio::test]
    async fn the_updated_issuer_form_is_accepted_too() {
        let token = access(|c| {
            c["iss"] = json!(format!(
                "https://issuer-cognito-idp.us-east-1.amazonaws.com/{POOL}"
            ))
        });
        assert!(verifier().verify(&token).await.is_ok());
    }

    #[tokio::test]
    async fn an_id_token_is_accepted_where_the_pool_takes_id_tokens() {
        let v = verifier_with(&[("COGNITO_TOKEN_USE", "id")]);
        let token = TestKey::shared(0).token(&id_claims(ISS, CLIENT, now()));
        let claims = v.verify(&token).await.unwrap();
        assert_eq!(claims.token_use, TokenUse::Id);
        assert_eq!(claims.client_id, CLIENT);
        assert_eq!(claims.email.as_deref(), Some("andrew@example.com"));
        assert_eq!(claims.email_verified, Some(true));
        assert_eq!(claims.preferred_username.as_deref(), Some("andrewbrown"));
        assert_eq!(claims.name.as_deref(), Some("Andrew Brown"));
        assert_eq!(
            claims.username.as_deref(),
            Some("8f1e2d3c-0000-4000-8000-00000000abcd")
        );
    }

    #[tokio::test]
    async fn a_machine_token_has_no_username() {
        let token = access(|c| {
            c.as_object_mut().unwrap().remove("username");
            c["sub"] = json!(CLIENT);
        });
        let claims = verifier().verify(&token).await.unwrap();
        assert_eq!(claims.username, None);
    }

    #[tokio::test]
    async fn shape_failures_are_malformed() {
        let v = verifier();
        let good = access(|_| {});
        let parts: Vec<&str> = good.split('.').collect();
        for bad in [
            String::new(),
            "abc".to_string(),
            format!("{}.{}", parts[0], parts[1]),
            format!("{good}.extra"),
            format!("{}..{}", parts[0], parts[2]),
            format!("{}.{}.", parts[0], parts[1]),
            format!("{}=.{}.{}", parts[0], parts[1], parts[2]),
            format!(" {good}"),
            format!("{}.{}.{}", parts[0], "bm90IGpzb24", parts[2]),
            format!(
                "{}.{}.{}",
                parts[0],
                crate::testkit::b64(b"[1,2]"),
                parts[2]
            ),
            format!("{}.{}.{}!", parts[0], parts[1], parts[2]),
            "a".repeat(20_000),
        ] {
            assert_eq!(reason(&v, &bad).await, Reason::Malformed, "{bad:.60}");
        }
    }

    #[tokio::test]
    async fn duplicate_claim_names_are_malformed() {
        let payload = format!(
            r#"{{"iss":"{ISS}","sub":"a","sub":"b","exp":{},"token_use":"access","client_id":"{CLIENT}"}}"#,
            now() + 60
        );
        let header = r#"{"kid":"test-kid-0","alg":"RS256"}"#;
        let token = TestKey::shared(0).sign_raw(header.as_bytes(), payload.as_bytes());
        assert_eq!(reason(&verifier(), &token).await, Reason::Malformed);
    }

    #[tokio::test]
    async fn a_deeply_nested_payload_is_malformed_not_a_crash() {
        let payload = format!(
            r#"{{"iss":"{ISS}","deep":{}1{}}}"#,
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        let header = r#"{"kid":"test-kid-0","alg":"RS256"}"#;
        let token = crate::testkit::b64(header.as_bytes())
            + "."
            + &crate::testkit::b64(payload.as_bytes())
            + ".c2ln";
        let v = verifier_with(&[]);
        let inner = Verifier {
            inner: Arc::new(VerifierInner {
                max_token_bytes: 1 << 20,
                pools: v.inner.pools.clone(),
                by_issuer: v.inner.by_issuer.clone(),
                keys: v.inner.keys.clone(),
                leeway: v.inner.leeway,
            }),
        };
        assert_eq!(reason(&inner, &token).await, Reason::Malformed);
    }

    #[tokio::test]
    async fn only_rs256_is_accepted() {
        let v = verifier();
        let key = TestKey::shared(0);
        let claims = access_claims(ISS, CLIENT, now());
        for alg in [
            json!("none"),
            json!("HS256"),
            json!("RS384"),
            json!("PS256"),
            json!("ES256"),
            json!("rs256"),
            json!(null),
        ] {
            let token = key.token_with_header(&json!({"kid": key.kid, "alg": alg}), &claims);
            assert_eq!(reason(&v, &token).await, Reason::UnsupportedAlg, "{alg}");
        }
        let no_alg = key.token_with_header(&json!({"kid": key.kid}), &claims);
        assert_eq!(reason(&v, &no_alg).await, Reason::UnsupportedAlg);
        // alg none with an empty signature, the classic attack.
        let unsigned = format!(
            "{}.{}.",
            crate::testkit::b64(br#"{"alg":"none","kid":"test-kid-0"}"#),
            crate::testkit::b64(claims.to_string().as_bytes())
        );
        assert_ne!(v.verify(&unsigned).await.map(|_| ()), Ok(()));
    }

    #[tokio::test]
    async fn a_header_needs_a_kid_and_no_crit() {
        let v = verifier();
        let key = TestKey::shared(0);
        let claims = access_claims(ISS, CLIENT, now());
        for header in [
            json!({"alg": "RS256"}),
            json!({"alg": "RS256", "kid": ""}),
            json!({"alg": "RS256", "kid": 7}),
            json!({"alg": "RS256", "kid": key.kid, "crit": ["exp"]}),
        ] {
            let token = key.token_with_header(&header, &claims);
            assert_eq!(reason(&v, &token).await, Reason::Malformed, "{header}");
        }
    }

    #[tokio::test]
    async fn an_unknown_issuer_is_refused_before_any_key_lookup() {
        let v = verifier();
        for iss in [
            json!("https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Other"),
            json!(format!("{ISS}/")),
            json!(7),
            json!(null),
        ] {
            // A kid the store lacks: reaching the key lookup would say unknown_kid.
            let key = TestKey::shared(1);
            let mut claims = access_claims(ISS, CLIENT, now());
            claims["iss"] = iss.clone();
            assert_eq!(
                reason(&v, &key.token(&claims)).await,
                Reason::UnknownIssuer,
                "{iss}"
            );
        }
        assert_eq!(v.keys().status()[0].fetches_failed, 0, "no fetch was tried");
    }

    #[tokio::test]
    async fn an_unknown_kid_is_refused_after_one_refetch() {
        let v = verifier();
        let stranger = TestKey::shared(1);
        let token = stranger.token(&access_claims(ISS, CLIENT, now()));
        assert_eq!(reason(&v, &token).await, Reason::UnknownKid);
        assert_eq!(v.keys().status()[0].fetches_failed, 1);
        // Within the penalty window: refused again without another fetch.
        assert_eq!(reason(&v, &token).await, Reason::UnknownKid);
        assert_eq!(v.keys().status()[0].fetches_failed, 1);
    }

    #[tokio::test]
    async fn a_foreign_signature_under_a_known_kid_is_refused() {
        let v = verifier();
        let mut claims = access_claims(ISS, CLIENT, now());
        let impostor = TestKey::shared(1);
        let header = json!({"kid": TestKey::shared(0).kid, "alg": "RS256"});
        assert_eq!(
            reason(&v, &impostor.token_with_header(&header, &claims)).await,
            Reason::BadSignature
        );
        // A good token whose payload was edited after signing.
        let good = TestKey::shared(0).token(&claims);
        claims["cognito:groups"] = json!(["admins", "root"]);
        let forged = TestKey::shared(0).token(&claims);
        let mixed: Vec<&str> = good.split('.').collect();
        let forged: Vec<&str> = forged.split('.').collect();
        let tampered = format!("{}.{}.{}", mixed[0], forged[1], mixed[2]);
        assert_eq!(reason(&v, &tampered).await, Reason::BadSignature);
    }

    #[tokio::test]
    async fn hmac_signed_with_the_public_key_is_refused() {
        // Key confusion: an HS256 token "signed" with the JWKS's public material.
        let key = TestKey::shared(0);
        let claims = access_claims(ISS, CLIENT, now());
        let token = key.token_with_header(&json!({"kid": key.kid, "alg": "HS256"}), &claims);
        assert_eq!(reason(&verifier(), &token).await, Reason::UnsupportedAlg);
    }

    #[tokio::test]
    async fn time_claims_are_checked_with_the_leeway() {
        let v = verifier_with(&[("COGNITO_CLOCK_LEEWAY_SECONDS", "30")]);
        let t = now();
        let at = |edit: &dyn Fn(&mut Value)| {
            let mut c = access_claims(ISS, CLIENT, t - 100);
            edit(&mut c);
            TestKey::shared(0).token(&c)
        };
        let exp_in = |secs: i64| at(&move |c: &mut Value| c["exp"] = json!(t + secs));
        assert!(v.verify_at(&exp_in(-29), t).await.is_ok(), "within leeway");
        assert_eq!(
            v.verify_at(&exp_in(-30), t).await.unwrap_err().reason,
            Reason::Expired
        );
        assert_eq!(
            v.verify_at(&at(&|c| c["exp"] = json!(-5)), t)
                .await
                .unwrap_err()
                .reason,
            Reason::Expired
        );
        // The bounds are inclusive: exactly the longest lifetime plus the leeway passes.
        assert!(v
            .verify_at(&at(&|c| c["exp"] = json!(t + 24 * 3600 + 30)), t)
            .await
            .is_ok());
        for bad in [
            json!("9999999999"),
            json!(null),
            json!([1]),
            json!(1e300),
            json!((t + 60) as f64 + 0.5),
            json!(u64::MAX),
            json!(t + 24 * 3600 + 31),
        ] {
            let token = at(&|c| c["exp"] = bad.clone());
            assert_eq!(
                v.verify_at(&token, t).await.unwrap_err().reason,
                Reason::InvalidClaims,
                "{bad}"
            );
        }
        let no_exp = at(&|c| {
            c.as_object_mut().unwrap().remove("exp");
        });
        assert_eq!(
            v.verify_at(&no_exp, t).await.unwrap_err().reason,
            Reason::InvalidClaims
        );

        assert!(v
            .verify_at(&at(&|c| c["nbf"] = json!(t + 30)), t)
            .await
            .is_ok());
        assert_eq!(
            v.verify_at(&at(&|c| c["nbf"] = json!(t + 31)), t)
                .await
                .unwrap_err()
                .reason,
            Reason::NotYetValid
        );
        assert_eq!(
            v.verify_at(&at(&|c| c["iat"] = json!(t + 31)), t)
                .await
                .unwrap_err()
                .reason,
            Reason::NotYetValid
        );
        assert_eq!(
            v.verify_at(&at(&|c| c["nbf"] = json!("soon")), t)
                .await
                .unwrap_err()
                .reason,
            Reason::InvalidClaims
        );
    }

    #[tokio::test]
    async fn token_use_must_match_the_pool() {
        let v = verifier();
        let id = TestKey::shared(0).token(&id_claims(ISS, CLIENT, now()));
        assert_eq!(reason(&v, &id).await, Reason::WrongTokenUse);
        for bad in [json!("refresh"), json!(null), json!(1), json!("ACCESS")] {
            let token = access(|c| c["token_use"] = bad.clone());
            assert_eq!(reason(&v, &token).await, Reason::WrongTokenUse, "{bad}");
        }
        let any = verifier_with(&[("COGNITO_TOKEN_USE", "any")]);
        assert!(any.verify(&id).await.is_ok());
        assert!(any.verify(&access(|_| {})).await.is_ok());
    }

    #[tokio::test]
    async fn the_app_client_must_be_configured() {
        let v = verifier();
        assert_eq!(
            reason(&v, &access(|c| c["client_id"] = json!("client-b"))).await,
            Reason::WrongClient
        );
        assert_eq!(
            reason(
                &v,
                &access(|c| {
                    c.as_object_mut().unwrap().remove("client_id");
                    c["aud"] = json!(CLIENT);
                })
            )
            .await,
            Reason::WrongClient,
            "an access token is judged by client_id, not aud"
        );
        let idv = verifier_with(&[("COGNITO_TOKEN_USE", "id")]);
        let mut claims = id_claims(ISS, CLIENT, now());
        claims["aud"] = json!([CLIENT]);
        assert_eq!(
            reason(&idv, &TestKey::shared(0).token(&claims)).await,
            Reason::WrongClient
        );
        claims["aud"] = json!("client-b");
        assert_eq!(
            reason(&idv, &TestKey::shared(0).token(&claims)).await,
            Reason::WrongClient
        );
        let several = verifier_with(&[("AWS_COGNITO_USER_POOL_CLIENT_ID", "x,client-b")]);
        assert!(several
            .verify(&access(|c| c["client_id"] = json!("client-b")))
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn ill_typed_identity_claims_are_invalid() {
        let v = verifier();
        for edit in [
            (|c: &mut Value| c["cognito:groups"] = json!("admins")) as fn(&mut Value),
            |c| c["cognito:groups"] = json!(["admins", 1]),
            |c| c["sub"] = json!(5),
            |c| c["sub"] = json!(""),
            |c| {
                c.as_object_mut().unwrap().remove("sub");
            },
            |c| c["scope"] = json!(["openid"]),
            |c| c["email_verified"] = json!(1),
        ] {
            assert_eq!(reason(&v, &access(edit)).await, Reason::InvalidClaims);
        }
    }

    #[tokio::test]
    async fn a_pool_without_keys_answers_keys_unavailable() {
        let vars: HashMap<&str, &str> = [
            ("AWS_COGNITO_USER_POOL_ID", POOL),
            ("AWS_COGNITO_USER_POOL_CLIENT_ID", CLIENT),
            ("COGNITO_JWKS_URI", "http://127.0.0.1:9/jwks.json"),
        ]
        .into_iter()
        .collect();
        let config = Config::from_lookup(|k| vars.get(k).map(|v| v.to_string()), None).unwrap();
        let keys = KeyStore::new(&config.pools, &config.jwks).unwrap();
        let v = config.verifier(keys);
        assert_eq!(reason(&v, &access(|_| {})).await, Reason::KeysUnavailable);
        assert!(!v.keys().all_loaded());
    }

    #[test]
    fn the_unverified_payload_is_readable_for_diagnosis() {
        let token = access(|_| {});
        assert_eq!(unverified_payload(&token).unwrap()["iss"], ISS);
        assert!(unverified_payload("x.y.z").is_none());
        assert!(unverified_payload("nodots").is_none());
    }
}

#[cfg(test)]
mod differential;
#[cfg(test)]
mod hostile;
