//! The typed reading of a token against the `Map` reading it replaced, over a generated corpus:
//! the same decision (reason and detail) for every token, and for every accepted one the same
//! claims, payload, serialization and identity. The old path is kept here, as it was.

use super::tests::verifier_with;
use super::*;
use crate::identity::Identity;
use std::collections::BTreeMap;

/// The verifier's checks as they were before the typed reading: the whole payload as a map.
mod legacy {
    use super::super::*;

    #[derive(Debug, Clone, Serialize)]
    pub struct Claims {
        pub pool_id: String,
        pub pool_index: usize,
        pub kid: Arc<str>,
        pub sub: String,
        pub username: Option<String>,
        pub client_id: String,
        pub token_use: TokenUse,
        pub groups: Vec<String>,
        pub scopes: Vec<String>,
        pub email: Option<String>,
        pub email_verified: Option<bool>,
        pub name: Option<String>,
        pub preferred_username: Option<String>,
        pub exp: i64,
        pub iat: Option<i64>,
        pub auth_time: Option<i64>,
        pub raw: Map<String, Value>,
    }

    impl Claims {
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
                jti: self.raw.get("jti").and_then(Value::as_str),
                origin_jti: self.raw.get("origin_jti").and_then(Value::as_str),
                iat: self.iat.unwrap_or(0),
                raw: &self.raw,
            }
        }
    }

    pub struct Decoded<'a> {
        pub kid: String,
        pub payload: Map<String, Value>,
        #[allow(dead_code)]
        pub message: &'a str,
        #[allow(dead_code)]
        pub signature: Vec<u8>,
    }

    pub fn decode(token: &str, max_bytes: usize) -> Result<Decoded<'_>, Rejection> {
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
        let header_map = b64_json(header)?;
        match header_map.get("alg") {
            Some(Value::String(alg)) if alg == "RS256" => {}
            _ => return reject(Reason::UnsupportedAlg, "alg must be RS256"),
        }
        if header_map.contains_key("crit") {
            return reject(
                Reason::Malformed,
                "crit header extensions are not supported",
            );
        }
        let kid = match header_map.get("kid") {
            Some(Value::String(kid)) if !kid.is_empty() => kid.clone(),
            _ => return reject(Reason::Malformed, "the header has no kid"),
        };
        let payload_map = b64_json(payload)?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .or_else(|_| reject(Reason::Malformed, "the signature is not base64url"))?;
        Ok(Decoded {
            kid,
            payload: payload_map,
            message: &token[..header.len() + 1 + payload.len()],
            signature,
        })
    }

    fn numeric_date(value: &Value) -> Option<i64> {
        match value {
            Value::Number(n) => n.as_i64(),
            _ => None,
        }
    }

    fn optional_date(map: &Map<String, Value>, name: &str) -> Result<Option<i64>, Rejection> {
        match map.get(name) {
            None => Ok(None),
            Some(value) => numeric_date(value).map(Some).ok_or(Rejection {
                reason: Reason::InvalidClaims,
                detail: "a time claim is not a number",
            }),
        }
    }

    fn optional_string(map: &Map<String, Value>, name: &str) -> Result<Option<String>, Rejection> {
        match map.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => reject(Reason::InvalidClaims, "a string claim has another type"),
        }
    }

    /// `verify_at` without the key lookup and the signature (unchanged code): the key's id is
    /// the header's.
    pub fn verify_at(inner: &VerifierInner, token: &str, now: i64) -> Result<Claims, Rejection> {
        let decoded = decode(token, inner.max_token_bytes)?;
        let payload = &decoded.payload;

        let pool_index = match payload.get("iss") {
            Some(Value::String(iss)) => match inner.by_issuer.get(iss.as_str()) {
                Some(&index) => index,
                None => return reject(Reason::UnknownIssuer, "iss names no configured pool"),
            },
            _ => return reject(Reason::UnknownIssuer, "the token has no iss"),
        };
        let pool = &inner.pools[pool_index];

        let (exp, iat) = check_times(payload, now, inner.leeway)?;

        let (token_use, client_id) = check_client(payload, pool)?;

        let sub = match optional_string(payload, "sub")? {
            Some(sub) if !sub.is_empty() => sub,
            _ => return reject(Reason::InvalidClaims, "the token has no sub"),
        };
        let groups = groups(payload)?;
        let scopes = optional_string(payload, "scope")?
            .map(|s| s.split_ascii_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        let username = match token_use {
            TokenUse::Access => optional_string(payload, "username")?,
            TokenUse::Id => optional_string(payload, "cognito:username")?,
        };
        let email_verified = email_verified(payload)?;

        Ok(Claims {
            pool_id: pool.id.clone(),
            pool_index,
            kid: Arc::from(decoded.kid.as_str()),
            sub,
            username,
            client_id,
            token_use,
            groups,
            scopes,
            email: optional_string(payload, "email")?,
            email_verified,
            name: optional_string(payload, "name")?,
            preferred_username: optional_string(payload, "preferred_username")?,
            exp,
            iat,
            auth_time: optional_date(payload, "auth_time")?,
            raw: decoded.payload,
        })
    }

    fn check_times(
        payload: &Map<String, Value>,
        now: i64,
        leeway: i64,
    ) -> Result<(i64, Option<i64>), Rejection> {
        let exp = match payload.get("exp") {
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
        if optional_date(payload, "nbf")?.is_some_and(|nbf| nbf > now.saturating_add(leeway)) {
            return reject(Reason::NotYetValid, "nbf is in the future");
        }
        let iat = optional_date(payload, "iat")?;
        if iat.is_some_and(|iat| iat > now.saturating_add(leeway)) {
            return reject(Reason::NotYetValid, "iat is in the future");
        }
        Ok((exp, iat))
    }

    fn check_client(
        payload: &Map<String, Value>,
        pool: &PoolConfig,
    ) -> Result<(TokenUse, String), Rejection> {
        let token_use = match payload.get("token_use").and_then(Value::as_str) {
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

        let client_id = match (token_use, payload) {
            (TokenUse::Access, p) => match p.get("client_id") {
                Some(Value::String(c)) => c,
                _ => return reject(Reason::WrongClient, "the access token has no client_id"),
            },
            (TokenUse::Id, p) => match p.get("aud") {
                Some(Value::String(a)) => a,
                Some(Value::Array(_)) => {
                    return reject(Reason::WrongClient, "aud must be a single app client id")
                }
                _ => return reject(Reason::WrongClient, "the ID token has no aud"),
            },
        };
        if !pool.client_ids.iter().any(|c| c == client_id) {
            return reject(Reason::WrongClient, "the app client is not configured");
        }
        Ok((token_use, client_id.clone()))
    }

    fn groups(payload: &Map<String, Value>) -> Result<Vec<String>, Rejection> {
        Ok(match payload.get("cognito:groups") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|g| g.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or(Rejection {
                    reason: Reason::InvalidClaims,
                    detail: "cognito:groups holds a non-string",
                })?,
            Some(_) => return reject(Reason::InvalidClaims, "cognito:groups is not a list"),
        })
    }

    fn email_verified(payload: &Map<String, Value>) -> Result<Option<bool>, Rejection> {
        Ok(match payload.get("email_verified") {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(Value::String(s)) if s == "true" => Some(true),
            Some(Value::String(s)) if s == "false" => Some(false),
            Some(_) => return reject(Reason::InvalidClaims, "email_verified is not a boolean"),
        })
    }
}

/// `verify_at` as it is now, without the key lookup and the signature (unchanged code).
fn typed_verify_at(inner: &VerifierInner, token: &str, now: i64) -> Result<Claims, Rejection> {
    let mut payload_json = Vec::new();
    let decoded = decode(token, inner.max_token_bytes, &mut payload_json)?;
    let pool_index = inner.pool_of(&decoded.payload)?;
    let kid = Arc::from(decoded.kid.as_str());
    let mut claims = inner.checked_claims(&decoded.payload, pool_index, kid, now)?;
    claims.raw = RawPayload::new(payload_json);
    Ok(claims)
}

pub(super) const NOW: i64 = 1_700_000_000;
const ISS: &str = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_TestPool";
const KNOWN: [&str; 19] = [
    "iss",
    "sub",
    "exp",
    "nbf",
    "iat",
    "auth_time",
    "token_use",
    "client_id",
    "aud",
    "username",
    "cognito:username",
    "cognito:groups",
    "scope",
    "email",
    "email_verified",
    "name",
    "preferred_username",
    "jti",
    "origin_jti",
];
const UNKNOWN: [&str; 5] = ["custom:tenant", "custom:n", "event_id", "version", "x"];

/// A seeded xorshift: the same corpus every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
    fn percent(&mut self, p: usize) -> bool {
        self.below(100) < p
    }
}

/// A JSON string literal of `text`, each character escaped as `\uXXXX` with probability 1/3
/// (a surrogate pair beyond the BMP), or plainly when it needs no escape.
fn string(rng: &mut Rng, text: &str, escape: bool) -> Vec<u8> {
    let mut out = vec![b'"'];
    for c in text.chars() {
        let must = c == '"' || c == '\\' || c.is_control();
        if must || (escape && rng.percent(33)) {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.extend_from_slice(format!("\\u{unit:04x}").as_bytes());
            }
        } else {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
    }
    out.push(b'"');
    out
}

/// A plausible string for claim `name`: mostly values some check accepts, sometimes not.
fn text_for(rng: &mut Rng, name: &str) -> String {
    let common = [
        "",
        "v",
        "a,b%c",
        "tab\there",
        "ünïcødé 🦀",
        "  spaced  words ",
    ];
    let own: &[&str] = match name {
        "iss" => &[
            ISS,
            ISS,
            "https://cognito-idp.us-east-1.amazonaws.com/other",
        ],
        "token_use" => &["access", "id", "access", "id", "refresh", "ACCESS"],
        "client_id" | "aud" => &["client-a", "client-a", "client-b"],
        "email_verified" => &["true", "false", "yes", "TRUE"],
        "scope" => &["openid profile", "aws.cognito.signin.user.admin", " a  b "],
        "sub" | "username" | "cognito:username" => &["sub-1", "user-2", ""],
        "exp" | "nbf" | "iat" | "auth_time" => &["1700000060", "soon"],
        _ => &["value", "jti-1", "session-1"],
    };
    if rng.percent(80) {
        rng.pick(own).to_string()
    } else {
        rng.pick(&common).to_string()
    }
}

fn time_near_now(rng: &mut Rng) -> i64 {
    let deltas = [
        -100,
        -31,
        -30,
        -29,
        0,
        1,
        29,
        30,
        31,
        60,
        600,
        24 * 3600 + 30,
        24 * 3600 + 31,
    ];
    NOW + rng.pick(&deltas)
}

/// One JSON value for claim `name`, of a type picked at random, valid or not.
fn value(rng: &mut Rng, name: &str) -> Vec<u8> {
    let times = ["exp", "nbf", "iat", "auth_time"].contains(&name);
    match rng.below(16) {
        0 => b"null".to_vec(),
        1 | 2 => {
            let text = text_for(rng, name);
            string(rng, &text, false)
        }
        3 => {
            let text = text_for(rng, name);
            string(rng, &text, true)
        }
        4 | 5 if times => time_near_now(rng).to_string().into_bytes(),
        4 | 5 => rng
            .pick(&["0", "7", "1700000060", "9223372036854775807"])
            .as_bytes()
            .to_vec(),
        6 => rng
            .pick(&["-5", "-9223372036854775808", "-0", "-1700000060"])
            .as_bytes()
            .to_vec(),
        7 => rng
            .pick(&[
                "9223372036854775808",
                "18446744073709551615",
                "18446744073709551616",
                "123456789012345678901234567890",
            ])
            .as_bytes()
            .to_vec(),
        8 => {
            let floats = [
                "1.5".to_string(),
                "1e300".into(),
                "1.0".into(),
                "1E2".into(),
                format!("{}.5", NOW + 60),
                format!("{}e0", NOW + 60),
                "1e400".into(),
                "-1e400".into(),
                "0.0000000000000000000000000001".into(),
            ];
            rng.pick(&floats).as_bytes().to_vec()
        }
        9 => rng.pick(&["true", "false"]).as_bytes().to_vec(),
        10 => {
            let items: Vec<Vec<u8>> = (0..rng.below(4))
                .map(|_| {
                    let text = text_for(rng, name);
                    let escape = rng.percent(30);
                    string(rng, &text, escape)
                })
                .collect();
            [b"[".to_vec(), items.join(&b","[..]), b"]".to_vec()].concat()
        }
        11 => rng
            .pick(&[
                r#"["admins",1]"#,
                "[1]",
                r#"[["admins"]]"#,
                "[null]",
                r#"["a",{"b":1}]"#,
                r#"[true,"a"]"#,
            ])
            .as_bytes()
            .to_vec(),
        12 => rng
            .pick(&[
                "{}",
                r#"{"a":1}"#,
                r#"{"a":1,"a":2}"#,
                r#"{"\u0061":"x","a":[1,{"b":null}]}"#,
                r#"{"iss":"x"}"#,
            ])
            .as_bytes()
            .to_vec(),
        13 => {
            // Not JSON `Value` accepts: a lone surrogate, a bad escape, a raw control
            // character or invalid UTF-8 in a string, a bare word, an unterminated string.
            let bad: [&[u8]; 9] = [
                br#""\ud800""#,
                br#""\udc00x""#,
                br#""\x""#,
                b"\"a\nb\"",
                b"\"\xff\"",
                b"\"\xc3\"",
                b"tru",
                b"\"open",
                b"01",
            ];
            rng.pick(&bad).to_vec()
        }
        14 => {
            // Around serde_json's nesting limit (128 levels, the object around counting one).
            let depth = 124 + rng.below(8);
            let (open, close) = if rng.percent(50) {
                ("[", "]")
            } else {
                ("{\"d\":", "}")
            };
            [open.repeat(depth), "1".into(), close.repeat(depth)]
                .concat()
                .into_bytes()
        }
        _ => {
            // Valid, with some insignificant whitespace.
            let text = text_for(rng, name);
            [b" ".to_vec(), string(rng, &text, false), b"\n".to_vec()].concat()
        }
    }
}

/// A member name as JSON: plain, or with some characters escaped.
fn name_json(rng: &mut Rng, name: &str) -> Vec<u8> {
    let escape = rng.percent(15);
    string(rng, name, escape)
}

fn object(members: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = b"{".to_vec();
    for (i, (name, value)) in members.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(name);
        out.push(b':');
        out.extend_from_slice(value);
    }
    out.push(b'}');
    out
}

/// A Cognito-shaped payload, then edited: values of other types, members removed, repeated
/// (also under an escaped spelling), many more, shuffled; sometimes not an object at all.
fn payload(rng: &mut Rng) -> Vec<u8> {
    let id = rng.percent(40);
    let mut members: Vec<(String, Vec<u8>)> = vec![
        ("iss".into(), string(rng, ISS, false)),
        ("sub".into(), br#""sub-1""#.to_vec()),
        ("exp".into(), (NOW + 600).to_string().into_bytes()),
        ("iat".into(), (NOW - 10).to_string().into_bytes()),
        ("auth_time".into(), (NOW - 10).to_string().into_bytes()),
        (
            "token_use".into(),
            if id { &br#""id""#[..] } else { br#""access""# }.to_vec(),
        ),
        ("jti".into(), br#""jti-1""#.to_vec()),
        ("origin_jti".into(), br#""session-1""#.to_vec()),
    ];
    if id {
        members.extend([
            ("aud".into(), br#""client-a""#.to_vec()),
            ("cognito:username".into(), br#""user-2""#.to_vec()),
            ("email".into(), br#""a@example.com""#.to_vec()),
            ("email_verified".into(), b"true".to_vec()),
            ("name".into(), br#""A B""#.to_vec()),
            ("preferred_username".into(), br#""ab""#.to_vec()),
        ]);
    } else {
        members.extend([
            ("client_id".into(), br#""client-a""#.to_vec()),
            ("username".into(), br#""sub-1""#.to_vec()),
            ("scope".into(), br#""openid profile""#.to_vec()),
        ]);
    }
    if rng.percent(70) {
        members.push(("cognito:groups".into(), br#"["admins","a,b"]"#.to_vec()));
    }
    if rng.percent(50) {
        members.push(("custom:tenant".into(), br#""t1""#.to_vec()));
    }
    // Values of other types, including for names the token did not have.
    for _ in 0..rng.below(4) {
        let name = if rng.percent(85) {
            rng.pick(&KNOWN).to_string()
        } else {
            rng.pick(&UNKNOWN).to_string()
        };
        let v = value(rng, &name);
        match members.iter_mut().find(|(n, _)| *n == name) {
            Some(member) => member.1 = v,
            None => members.push((name, v)),
        }
    }
    for _ in 0..rng.below(2) {
        if !members.is_empty() && rng.percent(40) {
            let at = rng.below(members.len());
            members.remove(at);
        }
    }
    let mut encoded: Vec<(Vec<u8>, Vec<u8>)> = members
        .iter()
        .map(|(name, v)| (name_json(rng, name), v.clone()))
        .collect();
    if rng.percent(10) && !members.is_empty() {
        // The same name twice: known or not, plainly or escaped, same value or not.
        let (name, v) = rng.pick(&members).clone();
        let again = if rng.percent(50) {
            v
        } else {
            value(rng, &name)
        };
        let spelled = string(rng, &name, true);
        encoded.insert(rng.below(encoded.len() + 1), (spelled, again));
    }
    if rng.percent(8) {
        // Many members: past the duplicate check's linear scan, sometimes with one repeat.
        let many = 20 + rng.below(400);
        let repeat = rng.percent(30).then(|| rng.below(many));
        for i in 0..many {
            let name = format!("m{i}");
            encoded.push((string(rng, &name, false), b"1".to_vec()));
        }
        if let Some(i) = repeat {
            let name = format!("m{i}");
            encoded.push((string(rng, &name, true), b"2".to_vec()));
        }
        if rng.percent(20) {
            // Past the size cap once encoded.
            let pad = format!("\"{}\"", "p".repeat(12_000));
            encoded.push((br#""pad""#.to_vec(), pad.into_bytes()));
        }
    }
    if rng.percent(20) {
        for i in (1..encoded.len()).rev() {
            let j = rng.below(i + 1);
            encoded.swap(i, j);
        }
    }
    let mut json = object(&encoded);
    match rng.below(40) {
        0 => {
            let other: [&[u8]; 12] = [
                b"[]", b"[{}]", b"\"x\"", b"1", b"null", b"true", b"", b"{", b" {} ", b"{}x",
                b"{},{}", b"\xff{}",
            ];
            json = rng.pick(&other).to_vec();
        }
        1 => {
            let cut = rng.below(json.len());
            json.truncate(cut);
        }
        2 => json.extend_from_slice(b" \n\t"),
        3 => json.extend_from_slice(b" x"),
        4 => json.insert(0, b' '),
        _ => {}
    }
    json
}

/// A header: mostly `{"kid":..,"alg":"RS256"}`, sometimes with another alg, kid or crit,
/// repeated names, extra members, or not an object.
fn header(rng: &mut Rng) -> Vec<u8> {
    let (escape_kid, escape_alg) = (rng.percent(10), rng.percent(10));
    let mut members: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (name_json(rng, "kid"), string(rng, "test-kid-0", escape_kid)),
        (name_json(rng, "alg"), string(rng, "RS256", escape_alg)),
    ];
    if rng.percent(25) {
        let edits: [(&str, &[u8]); 14] = [
            ("alg", b"\"none\""),
            ("alg", b"\"HS256\""),
            ("alg", b"\"rs256\""),
            ("alg", b"null"),
            ("alg", b"5"),
            ("alg", b"[\"RS256\"]"),
            ("kid", b"\"\""),
            ("kid", b"7"),
            ("kid", b"null"),
            ("crit", b"[\"exp\"]"),
            ("crit", b"null"),
            ("jku", b"\"https://example.com/jwks\""),
            ("x5c", b"[\"AAAA\"]"),
            ("typ", b"\"JWT\""),
        ];
        let (name, v) = *rng.pick(&edits);
        match rng.below(3) {
            // Replace it, or add it once more (a repeat when it was there).
            0 if ["alg", "kid"].contains(&name) => {
                let at = usize::from(name == "alg");
                members[at].1 = v.to_vec();
            }
            _ => {
                let spelled = name_json(rng, name);
                members.push((spelled, v.to_vec()));
            }
        }
    }
    if rng.percent(5) {
        members.remove(rng.below(members.len()));
    }
    let mut json = object(&members);
    if rng.percent(2) {
        json = rng.pick(&[&b"[]"[..], b"\"x\"", b"{", b"\xff"]).to_vec();
    }
    json
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn token(rng: &mut Rng, header: &[u8], payload: &[u8]) -> String {
    let signature = match rng.below(50) {
        0 => "!!",
        1 => "",
        2 => "c2ln=",
        _ => "c2lnbmF0dXJl",
    };
    let mut parts = vec![b64(header), b64(payload), signature.to_string()];
    match rng.below(60) {
        0 => parts[1].push('='),
        1 => parts[0].insert(0, '*'),
        2 => {
            parts.pop();
        }
        3 => parts.push("extra".into()),
        _ => {}
    }
    parts.join(".")
}

/// Old and new agree on one token; gives the decision's reason and detail (or "accepted").
fn agree(inner: &VerifierInner, token: &str, mappings: &[(String, String)]) -> (String, String) {
    agree_with(inner, token, typed_verify_at(inner, token, NOW), mappings)
}

/// Old and new agree on one token, the new decision given.
pub(super) fn agree_with(
    inner: &VerifierInner,
    token: &str,
    new: Result<Claims, Rejection>,
    mappings: &[(String, String)],
) -> (String, String) {
    let old = legacy::verify_at(inner, token, NOW);
    match (old, new) {
        (Err(old), Err(new)) => {
            assert_eq!(old, new, "token {token}");
            (old.reason.as_str().to_string(), old.detail.to_string())
        }
        (Ok(old), Ok(new)) => {
            same_claims(&old, &new, token);
            for mapping in [&[][..], mappings] {
                let before = Identity::from_claims(&old.claim_set(), mapping);
                let after = Identity::from_claims(&new.claim_set(), mapping);
                assert_eq!(format!("{before:?}"), format!("{after:?}"), "token {token}");
            }
            ("accepted".into(), String::new())
        }
        (old, new) => panic!("token {token}: before {old:?}, now {new:?}"),
    }
}

pub(super) fn mappings() -> Vec<(String, String)> {
    [
        "custom:tenant",
        "email_verified",
        "cognito:groups",
        "exp",
        "aud",
        "x",
    ]
    .iter()
    .map(|claim| (claim.to_string(), format!("x-{}", claim.replace(':', "-"))))
    .collect()
}

fn same_claims(old: &legacy::Claims, new: &Claims, token: &str) {
    assert_eq!(old.pool_id, new.pool_id, "{token}");
    assert_eq!(old.pool_index, new.pool_index, "{token}");
    assert_eq!(old.kid, new.kid, "{token}");
    assert_eq!(old.sub, new.sub, "{token}");
    assert_eq!(old.username, new.username, "{token}");
    assert_eq!(old.client_id, new.client_id, "{token}");
    assert_eq!(old.token_use, new.token_use, "{token}");
    assert_eq!(old.groups, new.groups, "{token}");
    assert_eq!(old.scopes, new.scopes, "{token}");
    assert_eq!(old.email, new.email, "{token}");
    assert_eq!(old.email_verified, new.email_verified, "{token}");
    assert_eq!(old.name, new.name, "{token}");
    assert_eq!(old.preferred_username, new.preferred_username, "{token}");
    assert_eq!(old.exp, new.exp, "{token}");
    assert_eq!(old.iat, new.iat, "{token}");
    assert_eq!(old.auth_time, new.auth_time, "{token}");
    assert_eq!(&old.raw, new.raw.map(), "{token}");
    let (old_set, new_set) = (old.claim_set(), new.claim_set());
    assert_eq!(old_set.jti, new_set.jti, "{token}");
    assert_eq!(old_set.origin_jti, new_set.origin_jti, "{token}");
    // What the `verify` command and diagnostics print, and the serialized form.
    assert_eq!(
        serde_json::to_string(old).unwrap(),
        serde_json::to_string(new).unwrap(),
        "{token}"
    );
    assert_eq!(&old.raw, &new.clone().raw.into_map(), "{token}");
}

const CASES: usize = 60_000;

#[test]
fn the_typed_reading_decides_as_the_map_reading_did() {
    let verifiers = [
        verifier_with(&[("COGNITO_TOKEN_USE", "any")]),
        verifier_with(&[("COGNITO_CLOCK_LEEWAY_SECONDS", "30")]),
    ];
    let mappings = mappings();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
    for case in 0..CASES {
        let v = &verifiers[case % 2];
        let (header, payload) = (header(&mut rng), payload(&mut rng));
        let token = token(&mut rng, &header, &payload);
        *seen.entry(agree(&v.inner, &token, &mappings)).or_default() += 1;
    }
    // The corpus reaches every decision but the key's (unknown kid, bad signature, keys
    // unavailable): each detail the verifier can give, and acceptance, each many times.
    assert_eq!(seen.len(), 30, "{seen:#?}");
    assert!(seen.values().all(|&n| n >= 10), "{seen:#?}");
    assert!(seen[&("accepted".to_string(), String::new())] > CASES / 10);
    eprintln!("{CASES} tokens: {seen:#?}");
}

const SIGNED_CASES: usize = 2_000;

/// The same corpus's payloads validly signed, through the whole `verify_at` (key lookup,
/// signature, and the payload's bytes moved into the claims) against the old path.
#[tokio::test]
async fn signed_tokens_get_the_same_decisions_through_the_whole_verifier() {
    let v = verifier_with(&[
        ("COGNITO_TOKEN_USE", "any"),
        ("COGNITO_CLOCK_LEEWAY_SECONDS", "30"),
    ]);
    let mappings = mappings();
    let key = crate::testkit::TestKey::shared(0);
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut accepted = 0;
    for _ in 0..SIGNED_CASES {
        let payload = payload(&mut rng);
        let token = key.sign_raw(br#"{"kid":"test-kid-0","alg":"RS256"}"#, &payload);
        let new = v.verify_at(&token, NOW).await;
        if agree_with(&v.inner, &token, new, &mappings).0 == "accepted" {
            accepted += 1;
        }
    }
    assert!(accepted > SIGNED_CASES / 10, "{accepted} accepted");
}

/// The duplicate check's two ways (a scan while few names, a sort past that) on names
/// repeated only under an escaped spelling, at every position.
#[test]
fn a_repeated_name_is_refused_however_many_names_and_however_spelled() {
    for many in [1, 2, 23, 24, 25, 26, 100, 2000] {
        for repeat in [0, many / 2, many - 1] {
            let mut members: Vec<(Vec<u8>, Vec<u8>)> = (0..many)
                .map(|i| (format!("\"n{i}\"").into_bytes(), b"1".to_vec()))
                .collect();
            members.push((format!("\"\\u006e{repeat}\"").into_bytes(), b"2".to_vec()));
            members.push((br#""iss""#.to_vec(), format!("\"{ISS}\"").into_bytes()));
            let payload = object(&members);
            let token = format!(
                "{}.{}.c2ln",
                b64(br#"{"kid":"test-kid-0","alg":"RS256"}"#),
                b64(&payload)
            );
            let mut buf = Vec::new();
            let err = decode(&token, 1 << 20, &mut buf).unwrap_err();
            assert_eq!(err, NOT_A_UNIQUE_OBJECT, "{many} names, n{repeat} twice");
            let unique = object(&members[..many]);
            let token = format!(
                "{}.{}.c2ln",
                b64(br#"{"kid":"test-kid-0","alg":"RS256"}"#),
                b64(&unique)
            );
            assert!(decode(&token, 1 << 20, &mut buf).is_ok(), "{many} names");
        }
    }
}
