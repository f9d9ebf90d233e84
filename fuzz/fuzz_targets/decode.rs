//! Token shape and header parsing, and bearer parsing, on arbitrary bytes: never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(decoded) = cognito_authz::verify::decode(&text, 16 * 1024) {
        assert!(!decoded.kid.is_empty());
        assert!(text.starts_with(decoded.message));
    }
    let _ = cognito_authz::verify::unverified_payload(&text);
    let _ = cognito_authz::credential::parse_bearer(&text);
});
