//! Hostile tokens through Check, one test per attack: each is denied with its reason code,
//! nothing is allowed, no request reaches a server a token names, and the real JWKS is fetched
//! at most once more (the unknown-kid refetch).

use crate::common;

use cognito_authz::authz::Authorizer;
use cognito_authz::config::Config;
use cognito_authz::jwks::KeyStore;
use cognito_authz::metrics::Metrics;
use cognito_authz::testkit::{
    access_claims, b64, id_claims, jwks, now, Behaviour, JwksServer, TestKey,
};
use common::{answer, check_request, env_for, Answer, CLIENT, ISS};
use serde_json::{json, Value};

struct Rig {
    idp: JwksServer,
    evil: JwksServer,
    authz: Authorizer,
}

async fn rig() -> Rig {
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let evil = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(3)]))).await;
    let vars = env_for(&idp.url("/jwks.json"), &[]);
    let config = Config::from_lookup(|k| vars.get(k).cloned(), None).unwrap();
    let keys = KeyStore::new(&config.pools, &config.jwks).unwrap();
    assert!(keys.refresh_all().await);
    let authz = Authorizer::new(
        config.verifier(keys),
        config.routes.clone(),
        1000,
        Metrics::new(),
    );
    Rig { idp, evil, authz }
}

impl Rig {
    /// Sends the headers to Check and returns (status, reason) of the denial.
    async fn denied(&self, headers: &[(&str, &str)], path: &str) -> (i32, String) {
        let response = self
            .authz
            .check(&check_request("GET", path, headers, &[]))
            .await
            .expect("an in-band answer");
        let outcome = match answer(&response) {
            Answer::Denied { status, body, .. } => {
                (status, body["reason"].as_str().unwrap_or("").to_string())
            }
            Answer::Allowed { set, .. } => panic!("a hostile token was allowed: {set:?}"),
        };
        assert_eq!(
            self.evil.hits(),
            0,
            "a server named by the token was contacted"
        );
        assert!(self.idp.hits() <= 2, "{} JWKS fetches", self.idp.hits());
        outcome
    }

    async fn token(&self, token: &str) -> (i32, String) {
        let auth = format!("Bearer {token}");
        self.denied(&[("authorization", &auth)], "/api/x").await
    }
}

fn claims() -> Value {
    access_claims(ISS, CLIENT, now())
}

fn with_header(header: Value) -> String {
    TestKey::shared(0).token_with_header(&header, &claims())
}

fn with_claims(edit: impl FnOnce(&mut Value)) -> String {
    let mut c = claims();
    edit(&mut c);
    TestKey::shared(0).token(&c)
}

fn hmac_token(alg: &str, secret: &[u8]) -> String {
    use aws_lc_rs::hmac;
    let header = json!({"alg": alg, "kid": TestKey::shared(0).kid});
    let message = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims().to_string().as_bytes())
    );
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    format!(
        "{message}.{}",
        b64(hmac::sign(&key, message.as_bytes()).as_ref())
    )
}

macro_rules! hostile {
    ($($name:ident: $token:expr => ($status:expr, $reason:expr);)*) => {$(
        #[tokio::test]
        async fn $name() {
            let rig = rig().await;
            let token: String = ($token)(&rig);
            assert_eq!(rig.token(&token).await, ($status, $reason.to_string()));
        }
    )*};
}

hostile! {
    alg_none_with_a_signature: |_: &Rig| with_header(json!({"alg": "none", "kid": TestKey::shared(0).kid})) => (401, "unsupported_alg");
    alg_none_unsigned: |_: &Rig| format!("{}.{}.", b64(br#"{"alg":"none"}"#), b64(claims().to_string().as_bytes())) => (401, "malformed");
    hs256_signed_with_the_public_modulus: |_: &Rig| hmac_token("HS256", &TestKey::shared(0).components().0) => (401, "unsupported_alg");
    hs256_signed_with_the_jwk_text: |_: &Rig| hmac_token("HS256", TestKey::shared(0).jwk().to_string().as_bytes()) => (401, "unsupported_alg");
    rs384_header: |_: &Rig| with_header(json!({"alg": "RS384", "kid": TestKey::shared(0).kid})) => (401, "unsupported_alg");
    ps256_header: |_: &Rig| with_header(json!({"alg": "PS256", "kid": TestKey::shared(0).kid})) => (401, "unsupported_alg");
    es256_header: |_: &Rig| with_header(json!({"alg": "ES256", "kid": TestKey::shared(0).kid})) => (401, "unsupported_alg");
    kid_missing: |_: &Rig| with_header(json!({"alg": "RS256"})) => (401, "malformed");
    kid_unknown: |_: &Rig| with_header(json!({"alg": "RS256", "kid": "not-a-kid"})) => (401, "unknown_kid");
    kid_very_long: |_: &Rig| with_header(json!({"alg": "RS256", "kid": "k".repeat(8000)})) => (401, "unknown_kid");
    kid_odd_characters: |_: &Rig| with_header(json!({"alg": "RS256", "kid": "../../jwks\u{0}<script>\r\n"})) => (401, "unknown_kid");
    jku_pointing_at_a_local_server: |r: &Rig| TestKey::shared(3).token_with_header(
        &json!({"alg": "RS256", "kid": TestKey::shared(3).kid, "jku": r.evil.url("/jwks.json")}), &claims()) => (401, "unknown_kid");
    x5u_pointing_at_a_local_server: |r: &Rig| TestKey::shared(3).token_with_header(
        &json!({"alg": "RS256", "kid": TestKey::shared(3).kid, "x5u": r.evil.url("/cert.pem")}), &claims()) => (401, "unknown_kid");
    jwk_embedded_in_the_header: |_: &Rig| TestKey::shared(3).token_with_header(
        &json!({"alg": "RS256", "kid": TestKey::shared(3).kid, "jwk": TestKey::shared(3).jwk()}), &claims()) => (401, "unknown_kid");
    jwk_embedded_under_a_known_kid: |_: &Rig| TestKey::shared(3).token_with_header(
        &json!({"alg": "RS256", "kid": TestKey::shared(0).kid, "jwk": TestKey::shared(3).jwk()}), &claims()) => (401, "bad_signature");
    crit_header: |_: &Rig| with_header(json!({"alg": "RS256", "kid": TestKey::shared(0).kid, "crit": ["exp"]})) => (401, "malformed");
    two_parts: |_: &Rig| { let t = with_claims(|_| {}); t[..t.rfind('.').unwrap()].to_string() } => (401, "malformed");
    four_parts: |_: &Rig| format!("{}.{}", with_claims(|_| {}), "AAAA") => (401, "malformed");
    // `~` is legal in a bearer credential (RFC 6750 b64token) but not in base64url.
    bad_base64: |_: &Rig| { let t = with_claims(|_| {}); let p: Vec<&str> = t.split('.').collect(); format!("{}.{}~.{}", p[0], p[1], p[2]) } => (401, "malformed");
    padding_at_the_end: |_: &Rig| format!("{}==", with_claims(|_| {})) => (401, "malformed");
    // Characters a bearer credential cannot hold never reach the JWT parser.
    character_outside_the_credential_syntax: |_: &Rig| { let t = with_claims(|_| {}); let p: Vec<&str> = t.split('.').collect(); format!("{}.{}*.{}", p[0], p[1], p[2]) } => (400, "invalid_request");
    padding_inside: |_: &Rig| { let t = with_claims(|_| {}); let p: Vec<&str> = t.split('.').collect(); format!("{}==.{}.{}", p[0], p[1], p[2]) } => (400, "invalid_request");
    whitespace_inside: |_: &Rig| { let t = with_claims(|_| {}); let p: Vec<&str> = t.split('.').collect(); format!("{}. {}.{}", p[0], p[1], p[2]) } => (400, "invalid_request");
    oversized_token: |_: &Rig| with_claims(|c| c["padding"] = json!("x".repeat(20_000))) => (401, "malformed");
    deeply_nested_payload: |_: &Rig| with_claims(|c| {
        let mut v = json!(1);
        for _ in 0..200 { v = json!([v]); }
        c["deep"] = v;
    }) => (401, "malformed");
    exp_as_a_string: |_: &Rig| with_claims(|c| c["exp"] = json!((now() + 600).to_string())) => (401, "invalid_claims");
    exp_as_a_float: |_: &Rig| with_claims(|c| c["exp"] = json!((now() + 600) as f64 + 0.5)) => (401, "invalid_claims");
    exp_negative: |_: &Rig| with_claims(|c| c["exp"] = json!(-1)) => (401, "expired");
    exp_huge: |_: &Rig| with_claims(|c| c["exp"] = json!(i64::MAX)) => (401, "invalid_claims");
    exp_beyond_i64: |_: &Rig| with_claims(|c| c["exp"] = json!(u64::MAX)) => (401, "invalid_claims");
    exp_missing: |_: &Rig| with_claims(|c| { c.as_object_mut().unwrap().remove("exp"); }) => (401, "invalid_claims");
    nbf_in_the_future: |_: &Rig| with_claims(|c| c["nbf"] = json!(now() + 600)) => (401, "not_yet_valid");
    iat_in_the_future: |_: &Rig| with_claims(|c| c["iat"] = json!(now() + 600)) => (401, "not_yet_valid");
    unknown_issuer: |_: &Rig| TestKey::shared(3).token(&{ let mut c = claims(); c["iss"] = json!("https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Evil"); c }) => (401, "unknown_issuer");
    wrong_client_id: |_: &Rig| with_claims(|c| c["client_id"] = json!("another-client")) => (401, "wrong_client");
    wrong_token_use: |_: &Rig| with_claims(|c| c["token_use"] = json!("refresh")) => (401, "wrong_token_use");
    id_token_where_access_is_required: |_: &Rig| TestKey::shared(0).token(&id_claims(ISS, CLIENT, now())) => (401, "wrong_token_use");
    duplicate_claim_names: |_: &Rig| TestKey::shared(0).sign_raw(
        format!(r#"{{"alg":"RS256","kid":"{}"}}"#, TestKey::shared(0).kid).as_bytes(),
        format!(r#"{{"iss":"{ISS}","client_id":"{CLIENT}","token_use":"access","sub":"a","sub":"admin","exp":{}}}"#, now() + 600).as_bytes()) => (401, "malformed");
    claim_with_crlf: |_: &Rig| with_claims(|c| c["username"] = json!("eve\r\nx-cognito-sub: admin")) => (401, "unsafe_claim");
    claim_with_a_control_character: |_: &Rig| with_claims(|c| c["cognito:groups"] = json!(["ad\u{7}mins"])) => (401, "unsafe_claim");
}

#[tokio::test]
async fn aud_as_an_array_on_an_id_token() {
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let vars = env_for(&idp.url("/j"), &[("COGNITO_TOKEN_USE", "id")]);
    let config = Config::from_lookup(|k| vars.get(k).cloned(), None).unwrap();
    let keys = KeyStore::new(&config.pools, &config.jwks).unwrap();
    keys.refresh_all().await;
    let a = Authorizer::new(
        config.verifier(keys),
        config.routes.clone(),
        10,
        Metrics::new(),
    );
    let mut c = id_claims(ISS, CLIENT, now());
    c["aud"] = json!([CLIENT, "other"]);
    let auth = format!("Bearer {}", TestKey::shared(0).token(&c));
    match answer(
        &a.check(&check_request(
            "GET",
            "/x",
            &[("authorization", &auth)],
            &[],
        ))
        .await
        .unwrap(),
    ) {
        Answer::Denied { status, body, .. } => assert_eq!(
            (status, body["reason"].as_str()),
            (401, Some("wrong_client"))
        ),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn several_authorization_headers_are_an_invalid_request() {
    let rig = rig().await;
    let good = with_claims(|_| {});
    // Envoy joins repeated headers with a comma.
    let joined = format!("Bearer {good},Bearer {good}");
    assert_eq!(
        rig.denied(&[("authorization", &joined)], "/api/x").await,
        (400, "invalid_request".into())
    );
}

#[tokio::test]
async fn a_token_in_the_query_string_is_ignored() {
    let rig = rig().await;
    let path = format!("/api/x?access_token={}", with_claims(|_| {}));
    assert_eq!(rig.denied(&[], &path).await, (401, "no_token".into()));
}

#[tokio::test]
async fn a_lowercase_scheme_is_accepted_for_a_valid_token_only() {
    let rig = rig().await;
    let auth = format!("bearer {}", with_claims(|_| {}));
    let response = rig
        .authz
        .check(&check_request(
            "GET",
            "/api/x",
            &[("authorization", &auth)],
            &[],
        ))
        .await
        .unwrap();
    assert!(
        matches!(answer(&response), Answer::Allowed { .. }),
        "RFC 6750: the scheme is case-insensitive"
    );
    let forged = format!(
        "bearer {}",
        with_header(json!({"alg": "none", "kid": TestKey::shared(0).kid}))
    );
    assert_eq!(
        rig.denied(&[("authorization", &forged)], "/api/x").await,
        (401, "unsupported_alg".into())
    );
}
