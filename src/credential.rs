//! Where a request's credential is and whether it has one: `Authorization: Bearer`, a configured
//! token header or cookie, and the CORS preflight that never carries one. Plain string parsing
//! that no input can make panic; depends on nothing else in the crate but the header view and
//! the cache's key.
//!
//! A well-formed token comes with its cache key. The last few a thread found are kept with
//! their keys ([`RecentTokens`]), so that a token repeated on the same thread is compared byte
//! for byte instead of scanned and hashed again: a client's burst of calls (a page's API calls,
//! on one connection and so one Envoy worker) repeats its token, and the character scan and
//! SHA-256 of a 1 KB token were a third of the module's cached check.

use std::cell::RefCell;

use crate::cache::token_key;
use crate::headers::Headers;

/// Where the request's credential stands.
#[derive(Debug, PartialEq, Eq)]
pub enum Credential<'a> {
    /// No credential anywhere we look.
    Missing,
    /// A credential header that is not exactly one well-formed bearer token.
    Malformed,
    /// One token.
    Token(Token<'a>),
}

impl<'a> Credential<'a> {
    /// The token's text, if there is one token.
    pub fn token(&self) -> Option<&'a str> {
        match self {
            Credential::Token(token) => Some(token.as_str()),
            _ => None,
        }
    }
}

/// A well-formed bearer token (RFC 6750's `b64token`) and, when it was [`Keys::Wanted`], its
/// cache key. Made only here, only for text that is one. Two are equal when their text is.
/// Its `Debug` shows the length, never the token.
#[derive(Clone, Copy)]
pub struct Token<'a> {
    text: &'a str,
    key: Option<[u8; 16]>,
}

impl PartialEq for Token<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for Token<'_> {}

/// Whether a check wants the cache key of the token it finds, a SHA-256 of the whole token:
/// with the verified-token cache off it is not worked out unless asked for
/// ([`Token::key`]), and the thread's memory of recent tokens is not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    /// Worked out with the token (or found with it among the thread's recent tokens).
    Wanted,
    /// Worked out only if [`Token::key`] is called.
    Unneeded,
}

impl std::fmt::Debug for Token<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token({} bytes)", self.text.len())
    }
}

impl<'a> Token<'a> {
    /// `candidate` as a token, if it is a well-formed one.
    fn of(candidate: &'a str, keys: Keys) -> Option<Token<'a>> {
        if keys == Keys::Unneeded {
            return is_b64token(candidate).then_some(Token {
                text: candidate,
                key: None,
            });
        }
        // Never looked up: an empty slot of the memory holds the empty text.
        if candidate.is_empty() {
            return None;
        }
        if candidate.len() > RECENT_MAX_LEN {
            return Token::checked(candidate);
        }
        RECENT_TOKENS
            .try_with(|recent| recent.borrow_mut().token(candidate))
            // This thread is exiting: no memory of its own left.
            .unwrap_or_else(|_| Token::checked(candidate))
    }

    /// `candidate` as a token, scanned and hashed.
    fn checked(candidate: &'a str) -> Option<Token<'a>> {
        is_b64token(candidate).then(|| Token {
            text: candidate,
            key: Some(token_key(candidate)),
        })
    }

    /// The token.
    pub fn as_str(&self) -> &'a str {
        self.text
    }

    /// Its key in the verified-token cache ([`crate::cache::token_key`]), worked out now if
    /// the token was found with [`Keys::Unneeded`].
    pub fn key(&self) -> [u8; 16] {
        self.key.unwrap_or_else(|| token_key(self.text))
    }
}

/// How many tokens a thread remembers.
const RECENT: usize = 4;
/// The longest token remembered (a Cognito token is 1–3 KB); a longer one is always scanned and
/// hashed.
const RECENT_MAX_LEN: usize = 4096;

thread_local! {
    static RECENT_TOKENS: RefCell<RecentTokens> = RefCell::default();
}

/// The last [`RECENT`] well-formed tokens a thread found and their keys, the oldest replaced
/// first. A token is found only by comparing every byte, and only a token that passed the scan
/// is kept: a hit is exactly what the scan and the hash would say. The tokens stay in this
/// thread's memory until replaced (Envoy's `jwt_authn` keeps every token it caches); a replaced
/// one is overwritten with zeros first.
#[derive(Default)]
struct RecentTokens {
    tokens: [Vec<u8>; RECENT],
    keys: [[u8; 16]; RECENT],
    /// Which slot is replaced next.
    next: usize,
}

impl RecentTokens {
    fn token<'a>(&mut self, candidate: &'a str) -> Option<Token<'a>> {
        let bytes = candidate.as_bytes();
        if let Some(i) = self.tokens.iter().position(|t| same_bytes(t, bytes)) {
            return Some(Token {
                text: candidate,
                key: Some(self.keys[i]),
            });
        }
        let token = Token::checked(candidate)?;
        let slot = self.next;
        self.next = (slot + 1) % RECENT;
        let kept = &mut self.tokens[slot];
        kept.fill(0);
        kept.clear();
        kept.extend_from_slice(bytes);
        self.keys[slot] = token.key();
        Some(token)
    }
}

/// Whether `b` is one of the bytes RFC 6750's `b64token` allows before its trailing `=`s.
/// Branch-free, so that [`is_b64token`] over a chunk compiles to vector compares: every check
/// reads the whole token, and a byte at a time (by branches, then by table) was a sixth of the
/// module's time on a cached token.
#[inline(always)]
fn b64token_byte(b: u8) -> bool {
    let letter = (b | 0x20).wrapping_sub(b'a') < 26;
    let digit = b.wrapping_sub(b'0') < 10;
    // `+` `-` `.` `/` are 0x2b, 0x2d, 0x2e, 0x2f; `_` and `~` are 0x5f and 0x7e.
    let punct = (b == b'+') | (b == b'-') | (b == b'.') | (b == b'/') | (b == b'_') | (b == b'~');
    letter | digit | punct
}

/// RFC 6750 `b64token`: the characters a bearer token may use.
fn is_b64token(token: &str) -> bool {
    let body = token.trim_end_matches('=').as_bytes();
    let mut chunks = body.chunks_exact(32);
    // No early exit inside a chunk: the fold over 32 bytes is what the compiler vectorizes.
    let whole = chunks.by_ref().all(|chunk| {
        chunk
            .iter()
            .fold(0u8, |bad, &b| bad | u8::from(!b64token_byte(b)))
            == 0
    });
    !body.is_empty() && whole && chunks.remainder().iter().all(|&b| b64token_byte(b))
}

/// What follows the `Bearer` scheme (any letter case) and the spaces after it; `None` without
/// that scheme. The one place the scheme is recognised.
fn after_bearer(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim_start_matches(' '))
}

/// Whether `kept` and `candidate` hold the same bytes, in a time that depends on their lengths
/// only (no exit at the first difference): `kept` may be another client's token.
fn same_bytes(kept: &[u8], candidate: &[u8]) -> bool {
    kept.len() == candidate.len()
        && kept
            .iter()
            .zip(candidate)
            .fold(0u8, |differ, (a, b)| differ | (a ^ b))
            == 0
}

/// Parses a request's `Bearer <token>`: the scheme case-insensitive, exactly one token after it.
pub fn parse_bearer(value: &str, keys: Keys) -> Credential<'_> {
    let token = after_bearer(value.trim_matches(|c| c == ' ' || c == '\t'));
    match token.and_then(|token| Token::of(token, keys)) {
        Some(token) => Credential::Token(token),
        None => Credential::Malformed,
    }
}

/// The secret in an operator's `Authorization: Bearer <secret>` (the control API): the secret
/// may hold any characters but surrounding white space; `None` without the scheme.
pub fn operator_secret(value: &str) -> Option<&str> {
    after_bearer(value.trim()).map(str::trim)
}

/// A token as an operator pastes it into the CLI or `VerifyToken`: `Bearer <token>` (any case)
/// or the bare token, trimmed either way.
pub fn pasted_token(value: &str) -> &str {
    operator_secret(value).unwrap_or_else(|| value.trim())
}

/// Finds the credential: `authorization`, then the header `token_header`, then the cookie
/// `token_cookie`. Envoy joins repeated headers with commas, which no bearer token contains, so
/// two `authorization` headers are malformed.
pub fn find_credential<'a>(
    headers: &'a (impl Headers + ?Sized),
    token_header: Option<&str>,
    token_cookie: Option<&str>,
    keys: Keys,
) -> Credential<'a> {
    if let Some(value) = headers.get("authorization") {
        return parse_bearer(value, keys);
    }
    if let Some(value) = token_header.and_then(|h| headers.get(h)) {
        let value = value.trim();
        return match parse_bearer(value, keys) {
            Credential::Token(token) => Credential::Token(token),
            _ => Token::of(value, keys).map_or(Credential::Malformed, Credential::Token),
        };
    }
    if let (Some(name), Some(cookies)) = (token_cookie, headers.get("cookie")) {
        let found = cookies
            .split(';')
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| k.trim() == name);
        if let Some((_, value)) = found {
            let value = value.trim().trim_matches('"');
            return Token::of(value, keys).map_or(Credential::Malformed, Credential::Token);
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
pub fn is_preflight(method: &str, headers: &(impl Headers + ?Sized)) -> bool {
    method == "OPTIONS"
        && headers.contains("origin")
        && headers.contains("access-control-request-method")
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::{
        b64token_byte, find_credential, is_b64token, is_preflight, operator_secret, parse_bearer,
        pasted_token, token_key, Credential, Headers, Keys, RECENT, RECENT_MAX_LEN,
    };

    /// [`parse_bearer`] with the key wanted, after checking that it finds the same credential,
    /// with the same key, when the key is not wanted.
    fn bearer(value: &str) -> Credential<'_> {
        let wanted = parse_bearer(value, Keys::Wanted);
        same_either_way(&wanted, &parse_bearer(value, Keys::Unneeded));
        wanted
    }

    /// [`find_credential`], checked the same way.
    fn credential<'a>(
        headers: &'a impl Headers,
        token_header: Option<&str>,
        token_cookie: Option<&str>,
    ) -> Credential<'a> {
        let wanted = find_credential(headers, token_header, token_cookie, Keys::Wanted);
        let unneeded = find_credential(headers, token_header, token_cookie, Keys::Unneeded);
        same_either_way(&wanted, &unneeded);
        wanted
    }

    fn same_either_way(wanted: &Credential<'_>, unneeded: &Credential<'_>) {
        assert_eq!(wanted, unneeded);
        if let (Credential::Token(a), Credential::Token(b)) = (wanted, unneeded) {
            assert!(a.key.is_some() && b.key.is_none());
            assert_eq!(a.key(), b.key(), "the key worked out later is the same");
            assert_eq!(a.key(), token_key(a.as_str()));
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_preflight_is_an_options_with_both_cors_headers_and_nothing_else_is() {
        let both = headers(&[
            ("origin", "http://localhost:3000"),
            ("access-control-request-method", "GET"),
        ]);
        assert!(is_preflight("OPTIONS", &both));
        assert!(!is_preflight("GET", &both));
        assert!(
            !is_preflight("options", &both),
            "methods are case-sensitive"
        );
        for one in [
            headers(&[("origin", "http://localhost:3000")]),
            headers(&[("access-control-request-method", "GET")]),
            headers(&[]),
        ] {
            assert!(!is_preflight("OPTIONS", &one), "{one:?}");
        }
    }

    #[test]
    fn a_remembered_token_gets_its_own_key_and_a_malformed_one_is_never_remembered() {
        let key_of = |value: &str| match bearer(value) {
            Credential::Token(token) => Some((token.as_str().to_string(), token.key())),
            _ => None,
        };
        let tokens: Vec<String> = (0..2 * RECENT + 1)
            .map(|i| format!("eyJhbGciOi.eyJzdWIi{i}.sig"))
            .collect();
        // Twice round more tokens than are remembered: hits, misses and replacements.
        for _ in 0..2 {
            for token in &tokens {
                for _ in 0..2 {
                    let found = key_of(&format!("Bearer {token}"));
                    assert_eq!(found, Some((token.clone(), token_key(token))), "{token}");
                }
            }
        }
        // A prefix, an extension and a one-byte change of a remembered token are other
        // tokens, each with its own key; with a byte no token may hold, not a token at all.
        let kept = &tokens[tokens.len() - 1];
        for other in [
            &kept[..kept.len() - 1],
            &format!("{kept}x"),
            &kept.replace("sig", "sih"),
        ] {
            assert_eq!(
                key_of(&format!("Bearer {other}")).map(|(_, k)| k),
                Some(token_key(other))
            );
        }
        for bad in [
            format!("{kept},"),
            format!("{kept}\""),
            kept.replace('.', "!"),
            String::new(),
        ] {
            for _ in 0..2 {
                assert_eq!(key_of(&format!("Bearer {bad}")), None, "{bad}");
            }
        }
        let long = "a".repeat(RECENT_MAX_LEN + 1);
        assert_eq!(
            key_of(&format!("Bearer {long}")),
            Some((long.clone(), token_key(&long)))
        );
        let long_bad = format!("{long}!");
        assert_eq!(key_of(&format!("Bearer {long_bad}")), None);
    }

    #[test]
    fn a_token_never_shows_in_debug_output() {
        let credential = bearer("Bearer abc.def.ghi");
        assert_eq!(format!("{credential:?}"), "Token(Token(11 bytes))");
    }

    #[test]
    fn spaces_and_tabs_around_a_bearer_token_are_trimmed_and_nothing_else() {
        for value in [
            "Bearer abc",
            " Bearer abc ",
            "\tBearer abc\t",
            "\t Bearer  abc \t",
        ] {
            assert_eq!(bearer(value).token(), Some("abc"), "{value:?}");
        }
        for value in [
            "\nBearer abc",
            "Bearer abc\n",
            "Bearer\tabc",
            "Bearer a b",
            "Basic abc",
        ] {
            assert_eq!(bearer(value), Credential::Malformed, "{value:?}");
        }
    }

    #[test]
    fn the_token_header_takes_a_bare_token_or_a_bearer_and_refuses_anything_else() {
        let find = |value: &str| {
            let map = headers(&[("x-auth", value)]);
            match credential(&map, Some("x-auth"), None) {
                Credential::Token(token) => Ok(token.as_str().to_string()),
                other => Err(format!("{other:?}")),
            }
        };
        assert_eq!(find("abc"), Ok("abc".into()));
        assert_eq!(find(" abc "), Ok("abc".into()));
        assert_eq!(find("Bearer abc"), Ok("abc".into()));
        assert_eq!(find("bearer abc"), Ok("abc".into()));
        for bad in ["a b", "Bearer a b", "abc,def", "Basic abc", ""] {
            assert_eq!(find(bad), Err("Malformed".into()), "{bad:?}");
        }
        // Only the configured header counts, and `authorization` comes first.
        let map = headers(&[("x-other", "abc")]);
        assert_eq!(credential(&map, Some("x-auth"), None), Credential::Missing);
        let map = headers(&[("x-auth", "abc"), ("authorization", "Bearer def")]);
        assert_eq!(credential(&map, Some("x-auth"), None).token(), Some("def"));
    }

    #[test]
    fn a_pasted_token_loses_its_scheme_in_any_case() {
        for pasted in [
            "Bearer abc",
            "bearer abc",
            " BEARER   abc \n",
            "abc",
            " abc\n",
        ] {
            assert_eq!(pasted_token(pasted), "abc", "{pasted:?}");
        }
        // Not the scheme: kept whole, and the verifier refuses it as malformed.
        assert_eq!(pasted_token("Bearerabc"), "Bearerabc");
    }

    #[test]
    fn an_operator_secret_needs_the_scheme_and_keeps_any_character() {
        assert_eq!(operator_secret("Bearer s3cr=t!%"), Some("s3cr=t!%"));
        assert_eq!(operator_secret("bearer  s "), Some("s"));
        assert_eq!(operator_secret("Basic s"), None);
        assert_eq!(operator_secret("s"), None);
    }

    #[test]
    fn the_b64token_bytes_are_exactly_rfc_6750s() {
        for b in 0..=255u8 {
            let rfc = b.is_ascii_alphanumeric() || b"-._~+/".contains(&b);
            assert_eq!(b64token_byte(b), rfc, "byte {b:#04x}");
        }
    }

    #[test]
    fn one_bad_byte_anywhere_refuses_the_token() {
        // Lengths around the 32-byte chunks, the bad byte at every position: the chunked path
        // and the remainder alike.
        for len in [1, 31, 32, 33, 64, 65, 100] {
            let good = "aZ09-._~+/".repeat(10)[..len].to_string();
            assert!(is_b64token(&good), "{len}");
            assert!(is_b64token(&format!("{good}==")), "{len}");
            for at in 0..len {
                for bad in [b' ', b'=', b',', b'"', 0x80, 0xff, b'`', b'{', b'@', b'['] {
                    let mut bytes = good.clone().into_bytes();
                    bytes[at] = bad;
                    let token = String::from_utf8_lossy(&bytes);
                    // `=` is only allowed at the end.
                    if bad == b'=' && at == len - 1 {
                        continue;
                    }
                    assert!(!is_b64token(&token), "{len} {at} {bad:#04x}");
                }
            }
        }
        assert!(!is_b64token(""));
        assert!(!is_b64token("=="));
    }
}
