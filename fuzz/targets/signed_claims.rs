//! Arbitrary header and payload bytes, validly signed with a key the store trusts, through the
//! whole verifier: the checks behind the signature see hostile claims. Never a panic; anything
//! accepted really is a Cognito-shaped token of the configured pool and client.

/// One input, as the fuzzer and the replay test give it.
pub fn run(data: &[u8]) {
    let split = data
        .first()
        .map_or(0, |b| usize::from(*b))
        .min(data.len().saturating_sub(1));
    let (header, payload) = data
        .get(1..)
        .unwrap_or_default()
        .split_at(split.min(data.len().saturating_sub(1)));
    let token = cognito_authz::testkit::TestKey::shared(0).sign_raw(header, payload);
    let (authorizer, runtime) = super::common::authorizer();
    let verifier = authorizer.verifier();
    if let Ok(claims) = runtime.block_on(verifier.verify(&token)) {
        assert_eq!(claims.raw.map()["iss"], super::common::ISS);
        assert_eq!(claims.client_id, "fuzz-client");
        assert!(claims.exp > cognito_authz::unix_now() - 60);
    }
}
