//! Where a request's credential is and whether it has one: `Authorization: Bearer`, a configured
//! token header or cookie, and the CORS preflight that never carries one. Plain string parsing
//! that no input can make panic; depends on nothing else in the crate.

use std::collections::HashMap;

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

/// Finds the credential: `authorization`, then the header `token_header`, then the cookie
/// `token_cookie`. Envoy joins repeated headers with commas, which no bearer token contains, so
/// two `authorization` headers are malformed.
pub fn find_credential<'a>(
    headers: &'a HashMap<String, String>,
    token_header: Option<&str>,
    token_cookie: Option<&str>,
) -> Credential<'a> {
    if let Some(value) = headers.get("authorization") {
        return parse_bearer(value);
    }
    if let Some(value) = token_header.and_then(|h| headers.get(h)) {
        let value = value.trim();
        return match parse_bearer(value) {
            Credential::Token(token) => Credential::Token(token),
            _ if is_b64token(value) => Credential::Token(value),
            _ => Credential::Malformed,
        };
    }
    if let (Some(name), Some(cookies)) = (token_cookie, headers.get("cookie")) {
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
