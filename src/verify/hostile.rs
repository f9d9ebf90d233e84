//! What a hostile client sends at the typed reading: validly signed tokens whose header and
//! payload spell names and values in ways a reader could get wrong (escaped names, repeats,
//! near-repeats, values of another type), and parts built to cost time or stack. Each token is
//! decided by the whole verifier, checked against the `Map` reading it replaced, and pinned to
//! the decision it must get.

use serde_json::{json, Map, Value};

use super::differential::{agree_with, mappings, NOW};
use super::tests::verifier_with;
use super::*;
use crate::identity::Identity;
use crate::testkit::{access_claims, id_claims, TestKey};

const ISS: &str = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_TestPool";
const CLIENT: &str = "client-a";
const HEADER: &[u8] = br#"{"kid":"test-kid-0","alg":"RS256"}"#;
const NOT_UNIQUE: (&str, &str) = ("malformed", "a part is not a JSON object with unique names");

/// `claims` as JSON text, without the members named in `drop`, with the raw `name:value`
/// members of `extra` appended.
fn payload(claims: Value, drop: &[&str], extra: &[&str]) -> Vec<u8> {
    let mut map = claims.as_object().unwrap().clone();
    for name in drop {
        map.remove(*name);
    }
    let mut text = serde_json::to_string(&map).unwrap();
    text.pop();
    for member in extra {
        if text.len() > 1 {
            text.push(',');
        }
        text.push_str(member);
    }
    text.push('}');
    text.into_bytes()
}

fn access(drop: &[&str], extra: &[&str]) -> Vec<u8> {
    payload(access_claims(ISS, CLIENT, NOW), drop, extra)
}

fn id(drop: &[&str], extra: &[&str]) -> Vec<u8> {
    payload(id_claims(ISS, CLIENT, NOW), drop, extra)
}

fn verifier() -> Verifier {
    verifier_with(&[("COGNITO_TOKEN_USE", "any")])
}

/// The decision on the signed token (`accepted`, or the reason and detail), the same as the
/// `Map` reading's, claims and identity included.
async fn decide(v: &Verifier, header: &[u8], payload: &[u8]) -> (String, String) {
    let token = TestKey::shared(0).sign_raw(header, payload);
    let new = v.verify_at(&token, NOW).await;
    agree_with(&v.inner, &token, new, &mappings())
}

/// The claims of a token that must be accepted.
async fn accepted(v: &Verifier, header: &[u8], payload: &[u8]) -> Claims {
    let token = TestKey::shared(0).sign_raw(header, payload);
    match v.verify_at(&token, NOW).await {
        Ok(claims) => claims,
        Err(rejection) => panic!("{}: {rejection:?}", String::from_utf8_lossy(payload)),
    }
}

fn pair(decision: &(String, String)) -> (&str, &str) {
    (decision.0.as_str(), decision.1.as_str())
}

/// A known claim under an escaped name is that claim: checked, never skipped as an unknown one.
#[tokio::test]
async fn an_escaped_known_name_is_the_claim_it_spells() {
    let v = verifier();
    let past = (NOW - 3600).to_string();
    let cases: Vec<(Vec<u8>, (&str, &str))> = vec![
        (
            access(&["exp"], &[&format!(r#""e\u0078p":{past}"#)]),
            ("expired", "exp has passed"),
        ),
        (
            access(&["exp"], &[r#""\u0065xp":"soon""#]),
            ("invalid_claims", "exp is not a number"),
        ),
        (
            access(&["cognito:groups"], &[r#""cognito\u003agroups":["a",1]"#]),
            ("invalid_claims", "cognito:groups holds a non-string"),
        ),
        (
            access(&["cognito:groups"], &[r#""cognito\u003Agroups":"admins""#]),
            ("invalid_claims", "cognito:groups is not a list"),
        ),
        (
            access(&["iss"], &[r#""\u0069ss":"https://evil.example""#]),
            ("unknown_issuer", "iss names no configured pool"),
        ),
        (
            access(&["iss"], &[&format!(r#""iss":"{ISS}\u0000""#)]),
            ("unknown_issuer", "iss names no configured pool"),
        ),
        (
            access(&["iss"], &[&format!(r#""iss":["{ISS}"]"#)]),
            ("unknown_issuer", "the token has no iss"),
        ),
        (
            access(&["token_use"], &[r#""token\u005fuse":"id""#]),
            ("wrong_client", "the ID token has no aud"),
        ),
        (
            access(&["sub"], &[r#""s\u0075b":"""#]),
            ("invalid_claims", "the token has no sub"),
        ),
        (
            access(&["client_id"], &[r#""client\u005Fid":"client-b""#]),
            ("wrong_client", "the app client is not configured"),
        ),
        (
            id(&["aud"], &[r#""\u0061ud":["client-a"]"#]),
            ("wrong_client", "aud must be a single app client id"),
        ),
        (
            id(&["email_verified"], &[r#""email\u005fverified":"yes""#]),
            ("invalid_claims", "email_verified is not a boolean"),
        ),
        (
            access(&["nbf"], &[&format!(r#""nb\u0066":{}"#, NOW + 3600)]),
            ("not_yet_valid", "nbf is in the future"),
        ),
        (
            access(&["scope"], &[r#""sc\u006fpe":["openid"]"#]),
            ("invalid_claims", "a string claim has another type"),
        ),
    ];
    for (payload, expected) in cases {
        let decision = decide(&v, HEADER, &payload).await;
        assert_eq!(
            pair(&decision),
            expected,
            "{}",
            String::from_utf8_lossy(&payload)
        );
    }
    // And accepted under its escaped name, its value read: the groups and the client are the
    // ones the escaped names hold.
    let claims = accepted(
        &v,
        HEADER,
        &access(
            &["cognito:groups", "client_id", "token_use"],
            &[
                r#""cognito\u003agroups":["r\u00f4le","a\u002cb"]"#,
                r#""\u0063lient_id":"client\u002da""#,
                r#""token_use":"\u0061ccess""#,
            ],
        ),
    )
    .await;
    assert_eq!(claims.groups, ["r\u{f4}le", "a,b"]);
    assert_eq!(claims.client_id, CLIENT);
    assert_eq!(claims.token_use, TokenUse::Access);
    // The issuer with its slashes escaped, as JSON allows, is the issuer.
    let escaped = ISS.replace('/', r"\/");
    let claims = accepted(
        &v,
        HEADER,
        &access(&["iss"], &[&format!(r#""\u0069ss":"{escaped}""#)]),
    )
    .await;
    assert_eq!(claims.pool_index, 0);
    assert_eq!(claims.raw.map()["iss"], ISS);
}

/// A known name given twice is refused whatever the spellings and values (the same value too):
/// plain then escaped, escaped then plain, two different escapes, and in the header.
#[tokio::test]
async fn a_known_name_twice_is_refused_however_each_is_spelled() {
    let v = verifier();
    let exp = NOW + 600;
    let spellings: Vec<(&str, Vec<String>)> = vec![
        (
            "exp",
            vec![
                format!(r#""exp":{exp}"#),
                format!(r#""e\u0078p":{exp}"#),
                format!(r#""\u0065xp":{exp}"#),
                format!(r#""\u0065\u0078\u0070":{}"#, NOW - 3600),
            ],
        ),
        (
            "token_use",
            vec![
                r#""token_use":"access""#.into(),
                r#""token_use":"id""#.into(),
                r#""token\u005fuse":"access""#.into(),
                r#""token\u005Fuse":"id""#.into(),
            ],
        ),
        (
            "cognito:groups",
            vec![
                r#""cognito:groups":["admins"]"#.into(),
                r#""cognito\u003agroups":["root"]"#.into(),
                r#""cognito\u003Agroups":[]"#.into(),
                r#""\u0063ognito:groups":null"#.into(),
            ],
        ),
        (
            "iss",
            vec![
                format!(r#""iss":"{ISS}""#),
                format!(r#""i\u0073s":"{ISS}""#),
                r#""\u0069ss":"https://evil.example""#.into(),
            ],
        ),
        (
            "sub",
            vec![
                r#""sub":"victim""#.into(),
                r#""s\u0075b":"attacker""#.into(),
                r#""su\u0062":"victim""#.into(),
            ],
        ),
        (
            "jti",
            vec![r#""jti":"a""#.into(), r#""j\u0074i":"b""#.into()],
        ),
        (
            "origin_jti",
            vec![
                r#""origin_jti":"a""#.into(),
                r#""origin\u005fjti":"b""#.into(),
            ],
        ),
    ];
    for (name, forms) in &spellings {
        for first in forms {
            for second in forms {
                let payload = access(&[name], &[first, second]);
                let decision = decide(&v, HEADER, &payload).await;
                assert_eq!(
                    pair(&decision),
                    NOT_UNIQUE,
                    "{}",
                    String::from_utf8_lossy(&payload)
                );
            }
        }
    }
    // `aud` and `email_verified` on an ID token: a second, escaped, spelling is a repeat.
    for (name, extra) in [
        ("aud", [r#""aud":"client-a""#, r#""\u0061ud":"client-a""#]),
        (
            "email_verified",
            [r#""email_verified":false"#, r#""email_verifie\u0064":true"#],
        ),
    ] {
        let payload = id(&[name], &extra);
        assert_eq!(pair(&decide(&v, HEADER, &payload).await), NOT_UNIQUE);
    }
    // In the header: `alg`, `kid`, `crit`, whatever the values.
    for header in [
        r#"{"kid":"test-kid-0","alg":"RS256","alg":"RS256"}"#,
        r#"{"kid":"test-kid-0","alg":"RS256","\u0061lg":"RS256"}"#,
        r#"{"kid":"test-kid-0","al\u0067":"none","alg":"RS256"}"#,
        r#"{"kid":"test-kid-0","k\u0069d":"test-kid-0","alg":"RS256"}"#,
        r#"{"kid":"other","alg":"RS256","kid":"test-kid-0"}"#,
        r#"{"kid":"test-kid-0","alg":"RS256","typ":"JWT","t\u0079p":"JWT"}"#,
    ] {
        let decision = decide(&v, header.as_bytes(), &access(&[], &[])).await;
        assert_eq!(pair(&decision), NOT_UNIQUE, "{header}");
    }
}

/// Names are compared as decoded and exactly: unknown names that are one name under two
/// spellings are a repeat, at every count around the switch from a scan to a sort, and names
/// that differ (letter case, a space, a NUL) are not, and leave the known claim alone.
#[tokio::test]
async fn unknown_names_repeat_only_when_they_decode_the_same() {
    let v = verifier();
    for many in [0, 1, 22, 23, 24, 25, 60] {
        let filler: Vec<String> = (0..many).map(|i| format!(r#""custom:f{i}":1"#)).collect();
        for (a, b) in [
            (r#""custom:tenant":"a""#, r#""custom\u003atenant":"b""#),
            (r#""custom\u003atenant":"a""#, r#""custom\u003Atenant":"a""#),
            (r#""\u00e9":"a""#, "\"\u{e9}\":\"b\""),
            (r#""\ud83d\ude00":1"#, "\"\u{1f600}\":2"),
            (r#""a\/b":1"#, r#""a/b":2"#),
            (r#""":1"#, r#""":2"#),
        ] {
            // The repeat first, in the middle and last among the other names.
            for at in [0, many / 2, many] {
                let mut members: Vec<&str> = filler.iter().map(String::as_str).collect();
                members.insert(at, a);
                members.push(b);
                let payload = access(&[], &members);
                let decision = decide(&v, HEADER, &payload).await;
                assert_eq!(pair(&decision), NOT_UNIQUE, "{many} names, {a} and {b}");
            }
        }
        for (a, b) in [
            (r#""EXP":1"#, r#""Exp":1"#),
            (r#""custom:t":1"#, r#""custom:T":1"#),
            (r#""x":1"#, r#""x ":1"#),
            (r#""x":1"#, r#""x\u0000":1"#),
            (r#""cognito:groups ":1"#, r#""cognito_groups":1"#),
        ] {
            let mut members: Vec<&str> = filler.iter().map(String::as_str).collect();
            members.extend([a, b]);
            let claims = accepted(&v, HEADER, &access(&[], &members)).await;
            assert_eq!(claims.groups, ["admins", "beta"], "{a} {b}");
            assert_eq!(
                decide(&v, HEADER, &access(&[], &members)).await.0,
                "accepted"
            );
        }
    }
    // A name in another case is not the claim: with no `exp` of its own the token has none.
    let payload = access(&["exp"], &[&format!(r#""EXP":{}"#, NOW + 600)]);
    assert_eq!(
        pair(&decide(&v, HEADER, &payload).await),
        ("invalid_claims", "the token has no exp")
    );
}

/// Each known claim holding a value of a type no check accepts is refused, as the `Map`
/// reading refused it: numbers that only look like whole seconds, strings that only look like
/// booleans, arrays around the one value.
#[tokio::test]
async fn a_value_of_another_type_is_refused_for_what_it_is() {
    let v = verifier();
    let exp = NOW + 600;
    let not_a_date = [
        format!("{exp}.0"),
        format!("{exp}e0"),
        format!("{}E1", exp / 10),
        format!("\"{exp}\""),
        format!("[{exp}]"),
        format!("{{\"v\":{exp}}}"),
        "-0".into(),
        "-0.0".into(),
        "9223372036854775808".into(),
        "18446744073709551615".into(),
        "true".into(),
        "null".into(),
    ];
    for value in &not_a_date {
        let payload = access(&["exp"], &[&format!(r#""exp":{value}"#)]);
        assert_eq!(
            pair(&decide(&v, HEADER, &payload).await),
            ("invalid_claims", "exp is not a number"),
            "exp {value}"
        );
        for name in ["iat", "nbf", "auth_time"] {
            let payload = access(&[name], &[&format!(r#""{name}":{value}"#)]);
            assert_eq!(
                pair(&decide(&v, HEADER, &payload).await),
                ("invalid_claims", "a time claim is not a number"),
                "{name} {value}"
            );
        }
    }
    // Out of any float's range: not JSON the reading takes at all.
    for value in ["1e400", "-1e400"] {
        let payload = access(&["exp"], &[&format!(r#""exp":{value}"#)]);
        assert_eq!(
            pair(&decide(&v, HEADER, &payload).await),
            NOT_UNIQUE,
            "{value}"
        );
    }
    // The most negative i64 is a whole number: an `exp` long past.
    let payload = access(&["exp"], &[r#""exp":-9223372036854775808"#]);
    assert_eq!(
        pair(&decide(&v, HEADER, &payload).await),
        ("expired", "exp has passed")
    );

    let mut cases: Vec<(Vec<u8>, (&str, &str))> = Vec::new();
    for value in [
        r#"["access"]"#,
        r#""Access""#,
        r#""access ""#,
        r#""access\u0000""#,
        "null",
        "1",
    ] {
        cases.push((
            access(&["token_use"], &[&format!(r#""token_use":{value}"#)]),
            ("wrong_token_use", "token_use is neither access nor id"),
        ));
    }
    for value in [r#"[["client-a"]]"#, "[]", r#"["client-a"]"#, r#"[null]"#] {
        cases.push((
            id(&["aud"], &[&format!(r#""aud":{value}"#)]),
            ("wrong_client", "aud must be a single app client id"),
        ));
    }
    for value in ["null", "{}", "1", "true"] {
        cases.push((
            id(&["aud"], &[&format!(r#""aud":{value}"#)]),
            ("wrong_client", "the ID token has no aud"),
        ));
    }
    for value in [r#"["client-a"]"#, "null", r#""Client-a""#] {
        let detail = if value.starts_with("\"C") {
            "the app client is not configured"
        } else {
            "the access token has no client_id"
        };
        cases.push((
            access(&["client_id"], &[&format!(r#""client_id":{value}"#)]),
            ("wrong_client", detail),
        ));
    }
    for value in [
        r#""True""#,
        r#"" true""#,
        r#""true\u0000""#,
        r#""1""#,
        "1",
        "0",
        "[true]",
        "{}",
    ] {
        cases.push((
            id(
                &["email_verified"],
                &[&format!(r#""email_verified":{value}"#)],
            ),
            ("invalid_claims", "email_verified is not a boolean"),
        ));
    }
    for (value, detail) in [
        (r#""admins""#, "cognito:groups is not a list"),
        ("{}", "cognito:groups is not a list"),
        ("1", "cognito:groups is not a list"),
        (r#"[["admins"]]"#, "cognito:groups holds a non-string"),
        (r#"["admins",null]"#, "cognito:groups holds a non-string"),
        (r#"[{"admins":1}]"#, "cognito:groups holds a non-string"),
    ] {
        cases.push((
            access(
                &["cognito:groups"],
                &[&format!(r#""cognito:groups":{value}"#)],
            ),
            ("invalid_claims", detail),
        ));
    }
    // `username` is read from an access token, `cognito:username` from an ID token.
    for (name, token) in [
        ("sub", id as fn(&[&str], &[&str]) -> Vec<u8>),
        ("cognito:username", id),
        ("username", access),
        ("scope", access),
        ("email", id),
        ("name", id),
        ("preferred_username", id),
    ] {
        for value in ["1", "[]", r#"["x"]"#, "{}", "false"] {
            cases.push((
                token(&[name], &[&format!(r#""{name}":{value}"#)]),
                ("invalid_claims", "a string claim has another type"),
            ));
        }
    }
    for (payload, expected) in cases {
        let decision = decide(&v, HEADER, &payload).await;
        assert_eq!(
            pair(&decision),
            expected,
            "{}",
            String::from_utf8_lossy(&payload)
        );
    }

    // What is accepted is read as the `Map` reading read it: an escaped "true", a null group
    // list, a `jti` of another type (kept as none).
    let claims = accepted(
        &v,
        HEADER,
        &id(
            &["email_verified", "cognito:groups", "jti"],
            &[
                r#""email_verified":"\u0074rue""#,
                r#""cognito:groups":null"#,
                r#""jti":7"#,
            ],
        ),
    )
    .await;
    assert_eq!(claims.email_verified, Some(true));
    assert!(claims.groups.is_empty());
    assert_eq!(claims.claim_set().jti, None);
}

/// The header: only the string `RS256` (however escaped) is the algorithm; `crit` refuses the
/// token whatever it holds, even null; `kid` is a non-empty string, escapes decoded.
#[tokio::test]
async fn the_header_is_read_by_its_decoded_names_and_typed_values() {
    let v = verifier();
    let payload = access(&[], &[]);
    for header in [
        r#"{"kid":"test-kid-0","alg":"RS\u0032\u0035\u0036"}"#,
        r#"{"k\u0069d":"test-kid-\u0030","\u0061lg":"RS256"}"#,
        r#"{"kid":"test-kid-0","alg":"RS256","typ":"JWT","jku":"https://evil.example/k"}"#,
    ] {
        assert_eq!(
            decide(&v, header.as_bytes(), &payload).await.0,
            "accepted",
            "{header}"
        );
    }
    for header in [
        r#"{"kid":"test-kid-0","alg":"rs256"}"#,
        r#"{"kid":"test-kid-0","alg":"RS256 "}"#,
        r#"{"kid":"test-kid-0","alg":"RS256\u0000"}"#,
        r#"{"kid":"test-kid-0","alg":["RS256"]}"#,
        r#"{"kid":"test-kid-0","alg":null}"#,
        r#"{"kid":"test-kid-0","alg":"none"}"#,
        r#"{"kid":"test-kid-0","alg":"HS256"}"#,
        r#"{"kid":"test-kid-0","ALG":"RS256"}"#,
        r#"{"kid":"test-kid-0"}"#,
    ] {
        assert_eq!(
            pair(&decide(&v, header.as_bytes(), &payload).await),
            ("unsupported_alg", "alg must be RS256"),
            "{header}"
        );
    }
    for crit in ["null", "[]", "{}", "false", r#""""#, r#"["exp"]"#] {
        for name in ["crit", r#"\u0063rit"#, r#"cri\u0074"#] {
            let header = format!(r#"{{"kid":"test-kid-0","alg":"RS256","{name}":{crit}}}"#);
            assert_eq!(
                pair(&decide(&v, header.as_bytes(), &payload).await),
                ("malformed", "crit header extensions are not supported"),
                "{header}"
            );
        }
    }
    for kid in ["\"\"", "null", "0", r#"["test-kid-0"]"#, "{}", "true"] {
        let header = format!(r#"{{"kid":{kid},"alg":"RS256"}}"#);
        assert_eq!(
            pair(&decide(&v, header.as_bytes(), &payload).await),
            ("malformed", "the header has no kid"),
            "{header}"
        );
    }
    for header in [
        r#"{"KID":"test-kid-0","alg":"RS256"}"#,
        r#"["RS256"]"#,
        r#""RS256""#,
        "null",
    ] {
        let decision = decide(&v, header.as_bytes(), &payload).await;
        assert_eq!(decision.0, "malformed", "{header}");
    }
}

/// The whole payload, built on first use for the claim -> header mappings and the `verify`
/// command, is the object the checks read: the same members under their decoded names, the
/// same values, in the identity's headers too.
#[tokio::test]
async fn the_payload_map_holds_what_the_checks_read() {
    let v = verifier();
    let payload = id(
        &["cognito:groups", "email_verified", "aud", "sub"],
        &[
            r#""cognito\u003agroups":["r\u00f4le","a\u002cb"]"#,
            r#""email_verified":"\u0074rue""#,
            r#""\u0061ud":"client-a""#,
            r#""s\u0075b":"us\u0065r-\ud83d\ude00""#,
            r#""custom\u003atenant":"t\u00e9nant""#,
            r#""custom:obj":{"a":1,"a":2}"#,
            r#""x":[1,"y"]"#,
        ],
    );
    let claims = accepted(&v, HEADER, &payload).await;
    let expected: Map<String, Value> = serde_json::from_slice(&payload).unwrap();
    assert_eq!(claims.raw.map(), &expected);
    let raw = claims.raw.map();
    assert_eq!(raw["cognito:groups"], json!(claims.groups));
    assert_eq!(raw["sub"], json!(claims.sub));
    assert_eq!(claims.sub, "user-\u{1f600}");
    assert_eq!(raw["aud"], json!(claims.client_id));
    assert_eq!(raw["email_verified"], json!("true"));
    assert!(!raw.contains_key("cognito\\u003agroups"));

    let mapping: Vec<(String, String)> = [
        ("cognito:groups", "x-groups"),
        ("sub", "x-sub"),
        ("custom:tenant", "x-tenant"),
        ("custom:obj", "x-obj"),
        ("x", "x-x"),
        ("email_verified", "x-ev"),
    ]
    .iter()
    .map(|(c, h)| (c.to_string(), h.to_string()))
    .collect();
    let identity = Identity::from_claims(&claims.claim_set(), &mapping).unwrap();
    let headers: std::collections::HashMap<&str, &str> = identity.headers(&mapping).collect();
    assert_eq!(headers["x-groups"], "r\u{f4}le,a%2Cb");
    assert_eq!(headers["x-sub"], claims.sub);
    assert_eq!(headers["x-sub"], headers["x-cognito-sub"]);
    assert_eq!(headers["x-tenant"], "t\u{e9}nant");
    assert_eq!(headers["x-ev"], "true");
    assert!(!headers.contains_key("x-obj") && !headers.contains_key("x-x"));
    // The same token through the `Map` reading: same decision, claims and identity.
    assert_eq!(decide(&v, HEADER, &payload).await.0, "accepted");
    // Serialized (the `verify` command) and owned (diagnostics), it is that same object.
    let printed: Value = serde_json::to_value(&claims).unwrap();
    assert_eq!(printed["raw"], Value::Object(expected.clone()));
    assert_eq!(claims.raw.into_map(), expected);
}

/// Parts built to cost: tens of thousands of names (a scan per name would be quadratic), names
/// and values made of escapes, nesting far past the parser's limit in each place a value is
/// read. Each is decided, quickly, without running out of stack.
#[test]
fn a_part_built_to_cost_time_or_stack_is_decided_in_bounded_time() {
    let max = 16 << 20;
    let wrap = |payload: &[u8], header: &[u8]| {
        format!(
            "{}.{}.c2ln",
            crate::testkit::b64(header),
            crate::testkit::b64(payload)
        )
    };
    let started = std::time::Instant::now();

    // 60,000 names sharing a long prefix: unique, then with one repeat at the end.
    let prefix = "p".repeat(20);
    let names: Vec<String> = (0..60_000).map(|i| format!(r#""{prefix}{i}":0"#)).collect();
    let mut members: Vec<&str> = names.iter().map(String::as_str).collect();
    let unique = access(&[], &members);
    assert!(decode(&wrap(&unique, HEADER), max, &mut Vec::new()).is_ok());
    let repeat = format!(r#""{prefix}\u0030":1"#);
    members.push(&repeat);
    let repeated = access(&[], &members);
    let err = decode(&wrap(&repeated, HEADER), max, &mut Vec::new()).unwrap_err();
    assert_eq!((err.reason.as_str(), err.detail), NOT_UNIQUE);
    // The same in the header.
    let header = [
        br#"{"kid":"test-kid-0","alg":"RS256","#.as_slice(),
        members.join(",").as_bytes(),
        b"}",
    ]
    .concat();
    let err = decode(&wrap(&unique, &header), max, &mut Vec::new()).unwrap_err();
    assert_eq!((err.reason.as_str(), err.detail), NOT_UNIQUE);

    // Every name and value made of escapes (each name decoded into its own allocation).
    let escaped: Vec<String> = (0..20_000)
        .map(|i| format!(r#""\u0065\u0073{i}":"{}""#, r"\u00e9\n".repeat(8)))
        .collect();
    let members: Vec<&str> = escaped.iter().map(String::as_str).collect();
    assert!(decode(&wrap(&access(&[], &members), HEADER), max, &mut Vec::new()).is_ok());
    let long = format!(r#""custom:long":"{}""#, r"\u0041".repeat(200_000));
    assert!(decode(&wrap(&access(&[], &[&long]), HEADER), max, &mut Vec::new()).is_ok());

    // Nesting 100,000 deep: in an unknown claim, a known one, an array of groups, the header.
    for (open, close) in [("[", "]"), (r#"{"a":"#, "}")] {
        let deep = format!("{}1{}", open.repeat(100_000), close.repeat(100_000));
        for name in ["custom:deep", "aud", "cognito:groups", "exp"] {
            let payload = access(&[name], &[&format!(r#""{name}":{deep}"#)]);
            let err = decode(&wrap(&payload, HEADER), max, &mut Vec::new()).unwrap_err();
            assert_eq!((err.reason.as_str(), err.detail), NOT_UNIQUE, "{name}");
        }
        let groups = access(
            &["cognito:groups"],
            &[&format!(r#""cognito:groups":["a",{deep}]"#)],
        );
        let err = decode(&wrap(&groups, HEADER), max, &mut Vec::new()).unwrap_err();
        assert_eq!((err.reason.as_str(), err.detail), NOT_UNIQUE);
        let header = format!(r#"{{"kid":"test-kid-0","alg":"RS256","x":{deep}}}"#);
        let err = decode(&wrap(&unique, header.as_bytes()), max, &mut Vec::new()).unwrap_err();
        assert_eq!((err.reason.as_str(), err.detail), NOT_UNIQUE);
    }
    // The typed reading and the map built later from the same bytes share the nesting limit:
    // whatever depth one takes, the other takes (the map is never silently empty).
    for depth in 120..135 {
        let deep = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        let payload = access(&[], &[&format!(r#""custom:deep":{deep}"#)]);
        let typed = decode(&wrap(&payload, HEADER), max, &mut Vec::new()).is_ok();
        let map = serde_json::from_slice::<Map<String, Value>>(&payload).is_ok();
        assert_eq!(typed, map, "depth {depth}");
    }
    // Under half a second in a debug build; the duplicate check made a scan of every name (a
    // quadratic one) takes some 45 s here.
    let elapsed = started.elapsed();
    assert!(elapsed < std::time::Duration::from_secs(10), "{elapsed:?}");
}
