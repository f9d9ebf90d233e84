//! Token shape and header parsing, and bearer parsing, on arbitrary bytes: never a panic.

/// One input, as the fuzzer and the replay test give it.
pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(decoded) = cognito_authz::verify::decode(&text, 16 * 1024, &mut Vec::new()) {
        assert!(!decoded.kid.is_empty());
        assert!(text.starts_with(decoded.message));
    }
    let _ = cognito_authz::verify::unverified_payload(&text);
    let _ = cognito_authz::credential::parse_bearer(&text, cognito_authz::credential::Keys::Wanted);
}
