//! Test support, compiled only with the `testkit` feature (tests and benches): RSA keys the
//! project generates itself, token minting with full control of header and claims (hostile
//! tokens included), and a controllable local JWKS server that counts its requests.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{KeyPair, RsaKeyPair, RSA_PKCS1_SHA256};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};

/// An RSA-2048 signing key with a key id.
pub struct TestKey {
    /// The key id put in tokens' headers and in the JWKS.
    pub kid: String,
    pair: RsaKeyPair,
}

impl TestKey {
    /// Generates a fresh key.
    pub fn generate(kid: &str) -> TestKey {
        TestKey {
            kid: kid.to_string(),
            pair: RsaKeyPair::generate(KeySize::Rsa2048).expect("RSA-2048 key generation"),
        }
    }

    /// One of four keys generated once per process (generation costs tens of milliseconds).
    pub fn shared(index: usize) -> &'static TestKey {
        static KEYS: OnceLock<Vec<TestKey>> = OnceLock::new();
        &KEYS.get_or_init(|| {
            (0..4)
                .map(|i| TestKey::generate(&format!("test-kid-{i}")))
                .collect()
        })[index]
    }

    /// The public modulus and exponent, big-endian.
    pub fn components(&self) -> (Vec<u8>, Vec<u8>) {
        let public = self.pair.public_key();
        (
            public.modulus().big_endian_without_leading_zero().to_vec(),
            public.exponent().big_endian_without_leading_zero().to_vec(),
        )
    }

    /// The public key as a JWK, the way Cognito publishes it.
    pub fn jwk(&self) -> Value {
        let (n, e) = self.components();
        json!({
            "alg": "RS256",
            "e": URL_SAFE_NO_PAD.encode(e),
            "kid": self.kid,
            "kty": "RSA",
            "n": URL_SAFE_NO_PAD.encode(n),
            "use": "sig",
        })
    }

    /// An RS256 signature over `message`.
    pub fn sign_bytes(&self, message: &[u8]) -> Vec<u8> {
        let mut signature = vec![0; self.pair.public_modulus_len()];
        self.pair
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                message,
                &mut signature,
            )
            .expect("RSA signing");
        signature
    }

    /// A token with Cognito's header (`kid`, `alg: RS256`) and these claims.
    pub fn token(&self, claims: &Value) -> String {
        self.token_with_header(&json!({"kid": self.kid, "alg": "RS256"}), claims)
    }

    /// A token with any header, signed RS256 with this key whatever the header says.
    pub fn token_with_header(&self, header: &Value, claims: &Value) -> String {
        self.sign_raw(header.to_string().as_bytes(), claims.to_string().as_bytes())
    }

    /// A token from raw header and payload bytes (for duplicate keys and odd JSON).
    pub fn sign_raw(&self, header: &[u8], payload: &[u8]) -> String {
        let message = format!("{}.{}", b64(header), b64(payload));
        let signature = self.sign_bytes(message.as_bytes());
        format!("{message}.{}", b64(&signature))
    }
}

/// Base64url without padding, as JWTs use.
pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url without padding (panics on bad input: test data only).
pub fn b64_decode(text: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(text).expect("base64url test data")
}

/// A JWKS document holding these keys.
pub fn jwks(keys: &[&TestKey]) -> Value {
    json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()})
}

/// The current Unix time in seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// The claims of a Cognito access token issued at `iat`, valid for an hour.
pub fn access_claims(issuer: &str, client_id: &str, iat: i64) -> Value {
    json!({
        "sub": "8f1e2d3c-0000-4000-8000-00000000abcd",
        "cognito:groups": ["admins", "beta"],
        "iss": issuer,
        "client_id": client_id,
        "origin_jti": "0b8f0c7e-1111-4111-8111-111111111111",
        "event_id": "2c9d7f1a-2222-4222-8222-222222222222",
        "token_use": "access",
        "scope": "aws.cognito.signin.user.admin openid",
        "auth_time": iat,
        "exp": iat + 3600,
        "iat": iat,
        "jti": "5a4b3c2d-3333-4333-8333-333333333333",
        "username": "8f1e2d3c-0000-4000-8000-00000000abcd",
    })
}

/// The claims of a Cognito ID token issued at `iat`, valid for an hour.
pub fn id_claims(issuer: &str, client_id: &str, iat: i64) -> Value {
    json!({
        "sub": "8f1e2d3c-0000-4000-8000-00000000abcd",
        "cognito:groups": ["admins"],
        "email_verified": true,
        "iss": issuer,
        "cognito:username": "8f1e2d3c-0000-4000-8000-00000000abcd",
        "preferred_username": "andrewbrown",
        "origin_jti": "0b8f0c7e-1111-4111-8111-111111111111",
        "aud": client_id,
        "event_id": "2c9d7f1a-2222-4222-8222-222222222222",
        "token_use": "id",
        "auth_time": iat,
        "name": "Andrew Brown",
        "exp": iat + 3600,
        "iat": iat,
        "jti": "5a4b3c2d-4444-4444-8444-444444444444",
        "email": "andrew@example.com",
    })
}

/// What the local JWKS server answers.
#[derive(Clone, Debug)]
pub enum Behaviour {
    /// 200 with this JSON body.
    Json(Value),
    /// This status with a small HTML body.
    Status(u16),
    /// 200 with this raw body.
    Raw(String),
    /// This status with this JSON body (Cognito's error answers).
    Answer(u16, Value),
    /// Sleep this long, then answer with the inner behaviour.
    Slow(Duration, Box<Behaviour>),
}

struct ServerState {
    behaviour: Mutex<Behaviour>,
    hits: AtomicUsize,
}

/// A local JWKS server on `127.0.0.1:0` whose answer can be changed and whose requests are
/// counted. It serves every path, so any JWKS URI on it works.
pub struct JwksServer {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<ServerState>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    /// Starts the server answering `behaviour`.
    pub async fn start(behaviour: Behaviour) -> JwksServer {
        let state = Arc::new(ServerState {
            behaviour: Mutex::new(behaviour),
            hits: AtomicUsize::new(0),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let app = axum::Router::new().fallback({
            let state = Arc::clone(&state);
            move || {
                let state = Arc::clone(&state);
                async move {
                    state.hits.fetch_add(1, Ordering::SeqCst);
                    let behaviour = state.behaviour.lock().expect("behaviour lock").clone();
                    respond(behaviour).await
                }
            }
        });
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("jwks server");
        });
        JwksServer { addr, state, task }
    }

    /// The URL of the JWKS at `path` (any path is served).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Changes the answer.
    pub fn set(&self, behaviour: Behaviour) {
        *self.state.behaviour.lock().expect("behaviour lock") = behaviour;
    }

    /// Requests served so far.
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn respond(
    behaviour: Behaviour,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = axum::response::Response> + Send>> {
    use axum::response::IntoResponse;
    Box::pin(async move {
        match behaviour {
            Behaviour::Json(value) => (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                value.to_string(),
            )
                .into_response(),
            Behaviour::Raw(body) => body.into_response(),
            Behaviour::Answer(code, value) => (
                axum::http::StatusCode::from_u16(code).expect("valid status"),
                [(
                    axum::http::header::CONTENT_TYPE,
                    "application/x-amz-json-1.1",
                )],
                value.to_string(),
            )
                .into_response(),
            Behaviour::Status(code) => (
                axum::http::StatusCode::from_u16(code).expect("valid status"),
                "<html><body>error</body></html>",
            )
                .into_response(),
            Behaviour::Slow(delay, inner) => {
                tokio::time::sleep(delay).await;
                respond(*inner).await
            }
        }
    })
}

/// How a harness-less bench was started: `cargo bench` passes `--bench`; `cargo test` and
/// nextest run it as a test, where it makes one quick pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchRun {
    /// nextest asked for the target's tests (`--list --format terse`, then with `--ignored`)
    /// and was answered: the quick pass is its one test. Nothing else to do.
    Listed,
    /// Run as a test: one quick pass.
    Quick,
    /// `cargo bench`: measure.
    Full,
}

/// Reads the bench's command line, answering nextest's listing on the way.
pub fn bench_run() -> BenchRun {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        if !args.iter().any(|a| a == "--ignored") {
            println!("quick_pass: test");
        }
        return BenchRun::Listed;
    }
    if args.iter().any(|a| a == "--bench") {
        BenchRun::Full
    } else {
        BenchRun::Quick
    }
}
