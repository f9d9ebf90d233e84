//! A token's header and payload read in one pass each, keeping only what the checks and the
//! identity use, borrowed from the decoded bytes where the JSON string has no escapes.
//!
//! The reading is exactly `serde_json::Value`'s: every value goes through the same
//! `deserialize_any` calls (numbers in range, strings valid UTF-8 with valid escapes, the same
//! nesting limit), so a part this accepts is one `Value` accepts, and the other way round. What
//! is kept of a known claim is its JSON type (a [`Claim`]), so the checks decide as they did on a
//! `Value`. Duplicate member names are refused at the top level, as before, by their decoded text.
//!
//! The caller checks the whole part is UTF-8 first (as `Value` refuses any part that is not:
//! outside strings a byte above 0x7f is a syntax error, inside one it is refused), so the strings
//! are not validated one by one.

use std::borrow::Cow;
use std::fmt;
use std::sync::OnceLock;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::identity::ClaimLookup;

/// A member name, borrowed unless it held escapes (`"s\u0075b"` is `sub`).
struct Name<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor;
        impl<'de> Visitor<'de> for NameVisitor {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(s)))
            }
        }
        deserializer.deserialize_str(NameVisitor)
    }
}

/// A JSON value read and validated as `Value` reads it, and kept nowhere.
struct Skip;

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SkipVisitor)
    }
}

struct SkipVisitor;

impl<'de> Visitor<'de> for SkipVisitor {
    type Value = Skip;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_str<E>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_unit<E>(self) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Skip, A::Error> {
        drain_seq(seq).map(|()| Skip)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Skip, A::Error> {
        drain_map(map).map(|()| Skip)
    }
}

fn drain_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<Skip>()?.is_some() {}
    Ok(())
}

/// Nested objects are read as `Value` reads them: a repeated name inside is not refused there.
fn drain_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_key::<Skip>()?.is_some() {
        map.next_value::<Skip>()?;
    }
    Ok(())
}

/// A known claim as the checks read it: its JSON type, with the value of the types some check
/// accepts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Claim<'de> {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// An integer that fits `i64` (what `Value::as_i64` gives).
    Int(i64),
    /// Any other number: a fraction, or an integer above `i64::MAX`.
    Number,
    /// A string.
    Str(Cow<'de, str>),
    /// An array of strings only (empty included).
    Strings(Vec<Cow<'de, str>>),
    /// An array holding something other than a string.
    Array,
    /// An object.
    Object,
}

impl Claim<'_> {
    /// The string, if this is one (`Value::as_str`).
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Claim::Str(s) => Some(s),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for Claim<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ClaimVisitor;
        impl<'de> Visitor<'de> for ClaimVisitor {
            type Value = Claim<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E>(self, b: bool) -> Result<Claim<'de>, E> {
                Ok(Claim::Bool(b))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Claim<'de>, E> {
                Ok(Claim::Int(n))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Claim<'de>, E> {
                Ok(i64::try_from(n).map_or(Claim::Number, Claim::Int))
            }
            fn visit_f64<E>(self, n: f64) -> Result<Claim<'de>, E> {
                // `Value` keeps a non-finite float as null (the parser never gives one).
                Ok(if n.is_finite() {
                    Claim::Number
                } else {
                    Claim::Null
                })
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Claim<'de>, E> {
                Ok(Claim::Str(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Claim<'de>, E> {
                Ok(Claim::Str(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Claim<'de>, E> {
                Ok(Claim::Str(Cow::Owned(s)))
            }
            fn visit_unit<E>(self) -> Result<Claim<'de>, E> {
                Ok(Claim::Null)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Claim<'de>, A::Error> {
                let mut strings = Vec::new();
                while let Some(item) = seq.next_element::<Item>()? {
                    match item {
                        Item::Str(s) => strings.push(s),
                        Item::Other => {
                            drain_seq(seq)?;
                            return Ok(Claim::Array);
                        }
                    }
                }
                Ok(Claim::Strings(strings))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Claim<'de>, A::Error> {
                drain_map(map).map(|()| Claim::Object)
            }
        }
        deserializer.deserialize_any(ClaimVisitor)
    }
}

/// An element of an array-valued claim: a string, or anything else (read and dropped).
enum Item<'de> {
    Str(Cow<'de, str>),
    Other,
}

impl<'de> Deserialize<'de> for Item<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ItemVisitor;
        impl<'de> Visitor<'de> for ItemVisitor {
            type Value = Item<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Item<'de>, E> {
                Ok(Item::Other)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Item<'de>, E> {
                Ok(Item::Other)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Item<'de>, E> {
                Ok(Item::Other)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Item<'de>, E> {
                Ok(Item::Other)
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Item<'de>, E> {
                Ok(Item::Str(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Item<'de>, E> {
                Ok(Item::Str(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Item<'de>, E> {
                Ok(Item::Str(Cow::Owned(s)))
            }
            fn visit_unit<E>(self) -> Result<Item<'de>, E> {
                Ok(Item::Other)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Item<'de>, A::Error> {
                drain_seq(seq).map(|()| Item::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Item<'de>, A::Error> {
                drain_map(map).map(|()| Item::Other)
            }
        }
        deserializer.deserialize_any(ItemVisitor)
    }
}

/// Whether no two names are equal: a linear scan while few (a token has a dozen or two), a sort
/// past that, so a hostile token with thousands of names costs `n log n`, not `n²`.
fn unique(names: &mut [Cow<'_, str>]) -> bool {
    const SCAN: usize = 24;
    if names.len() <= SCAN {
        return names
            .iter()
            .enumerate()
            .all(|(i, name)| !names[..i].contains(name));
    }
    names.sort_unstable();
    names.windows(2).all(|pair| pair[0] != pair[1])
}

/// Reads the members of a top-level object: `slot` gives where a known name's value goes (`None`
/// for the others, which are skipped). A known name seen twice finds its slot filled; the other
/// names are kept for one check at the end.
fn read_members<'de, A, T>(
    mut access: A,
    target: &mut T,
    slot: for<'t> fn(&'t mut T, &str) -> Option<&'t mut Option<Claim<'de>>>,
) -> Result<(), A::Error>
where
    A: MapAccess<'de>,
{
    let mut others: Vec<Cow<'de, str>> = Vec::new();
    while let Some(Name(name)) = access.next_key::<Name<'de>>()? {
        match slot(target, &name) {
            Some(Some(_)) => return Err(de::Error::custom("duplicate member name")),
            Some(value) => *value = Some(access.next_value::<Claim<'de>>()?),
            None => {
                access.next_value::<Skip>()?;
                others.push(name);
            }
        }
    }
    if !unique(&mut others) {
        return Err(de::Error::custom("duplicate member name"));
    }
    Ok(())
}

/// What verification reads of the header.
#[derive(Debug, Default)]
pub(crate) struct Header<'de> {
    pub(crate) alg: Option<Claim<'de>>,
    pub(crate) kid: Option<Claim<'de>>,
    /// `crit`, whatever its value: its presence alone refuses the token.
    pub(crate) crit: Option<Claim<'de>>,
}

impl<'de> Deserialize<'de> for Header<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct HeaderVisitor;
        impl<'de> Visitor<'de> for HeaderVisitor {
            type Value = Header<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, access: A) -> Result<Header<'de>, A::Error> {
                let mut header = Header::default();
                read_members(access, &mut header, |h, name| match name {
                    "alg" => Some(&mut h.alg),
                    "kid" => Some(&mut h.kid),
                    "crit" => Some(&mut h.crit),
                    _ => None,
                })?;
                Ok(header)
            }
        }
        deserializer.deserialize_map(HeaderVisitor)
    }
}

/// What verification and the identity read of the payload: each known claim, absent (`None`)
/// or as its JSON type.
#[derive(Debug, Default)]
pub(crate) struct Payload<'de> {
    pub(crate) iss: Option<Claim<'de>>,
    pub(crate) sub: Option<Claim<'de>>,
    pub(crate) exp: Option<Claim<'de>>,
    pub(crate) nbf: Option<Claim<'de>>,
    pub(crate) iat: Option<Claim<'de>>,
    pub(crate) auth_time: Option<Claim<'de>>,
    pub(crate) token_use: Option<Claim<'de>>,
    pub(crate) client_id: Option<Claim<'de>>,
    pub(crate) aud: Option<Claim<'de>>,
    pub(crate) username: Option<Claim<'de>>,
    pub(crate) cognito_username: Option<Claim<'de>>,
    pub(crate) groups: Option<Claim<'de>>,
    pub(crate) scope: Option<Claim<'de>>,
    pub(crate) email: Option<Claim<'de>>,
    pub(crate) email_verified: Option<Claim<'de>>,
    pub(crate) name: Option<Claim<'de>>,
    pub(crate) preferred_username: Option<Claim<'de>>,
    pub(crate) jti: Option<Claim<'de>>,
    pub(crate) origin_jti: Option<Claim<'de>>,
}

impl<'de> Deserialize<'de> for Payload<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PayloadVisitor;
        impl<'de> Visitor<'de> for PayloadVisitor {
            type Value = Payload<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, access: A) -> Result<Payload<'de>, A::Error> {
                let mut payload = Payload::default();
                read_members(access, &mut payload, |p, name| match name {
                    "iss" => Some(&mut p.iss),
                    "sub" => Some(&mut p.sub),
                    "exp" => Some(&mut p.exp),
                    "nbf" => Some(&mut p.nbf),
                    "iat" => Some(&mut p.iat),
                    "auth_time" => Some(&mut p.auth_time),
                    "token_use" => Some(&mut p.token_use),
                    "client_id" => Some(&mut p.client_id),
                    "aud" => Some(&mut p.aud),
                    "username" => Some(&mut p.username),
                    "cognito:username" => Some(&mut p.cognito_username),
                    "cognito:groups" => Some(&mut p.groups),
                    "scope" => Some(&mut p.scope),
                    "email" => Some(&mut p.email),
                    "email_verified" => Some(&mut p.email_verified),
                    "name" => Some(&mut p.name),
                    "preferred_username" => Some(&mut p.preferred_username),
                    "jti" => Some(&mut p.jti),
                    "origin_jti" => Some(&mut p.origin_jti),
                    _ => None,
                })?;
                Ok(payload)
            }
        }
        deserializer.deserialize_map(PayloadVisitor)
    }
}

/// The whole payload of a verified token, as the JSON object it is: kept as its bytes and
/// parsed into a map on first use (the `verify` command, diagnostics, claim -> header mappings),
/// so the requests that need none of those never build it.
#[derive(Clone, Default)]
pub struct RawPayload {
    json: Vec<u8>,
    map: OnceLock<Map<String, Value>>,
}

impl RawPayload {
    /// Bytes the typed reading accepted (an object with unique names).
    pub(crate) fn new(json: Vec<u8>) -> RawPayload {
        RawPayload {
            json,
            map: OnceLock::new(),
        }
    }

    /// The payload's members.
    pub fn map(&self) -> &Map<String, Value> {
        self.map.get_or_init(|| {
            // The typed reading accepted these bytes, and it reads exactly as `Value` does: this
            // parse cannot fail. Were it to, no claim is better than a panic on a request path.
            serde_json::from_slice(&self.json).unwrap_or_default()
        })
    }

    /// The payload's members, owned.
    pub fn into_map(self) -> Map<String, Value> {
        match self.map.into_inner() {
            Some(map) => map,
            None => serde_json::from_slice(&self.json).unwrap_or_default(),
        }
    }
}

impl fmt::Debug for RawPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.map().fmt(f)
    }
}

impl Serialize for RawPayload {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.map().serialize(serializer)
    }
}

impl ClaimLookup for RawPayload {
    fn claim(&self, name: &str) -> Option<&Value> {
        self.map().get(name)
    }
}
