//! Tokens never reach the logs: every crate logs at TRACE into a buffer while valid, invalid,
//! malformed and diagnostic requests go through the real server; no token, and no token's
//! signature, may appear in what was written.

#[path = "it/common/mod.rs"]
mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cognito_authz::generated::diagnostics::diagnostics_client::DiagnosticsClient;
use cognito_authz::generated::diagnostics::VerifyTokenRequest;
use cognito_authz::server::{self, GrpcAddr};
use cognito_authz::testkit::{access_claims, jwks, now, Behaviour, JwksServer, TestKey};
use common::{channel, check_request, serve_config, CLIENT, ISS};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const ROUTES: &str = r#"
[[routes]]
prefix = "/home"
mode = "optional"
"#;

#[tokio::test]
async fn no_token_reaches_the_logs_even_at_trace() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .init();

    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let running = server::start(serve_config(&idp.url("/jwks.json"), &[], ROUTES))
        .await
        .unwrap();
    let GrpcAddr::Tcp(addr) = running.grpc_addr else {
        unreachable!()
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    let valid = TestKey::shared(0).token(&access_claims(ISS, CLIENT, now()));
    let mut expired_claims = access_claims(ISS, CLIENT, now() - 7200);
    expired_claims["exp"] = serde_json::json!(now() - 3600);
    let expired = TestKey::shared(0).token(&expired_claims);
    let unknown_kid = TestKey::shared(3).token(&access_claims(ISS, CLIENT, now()));
    let mut foreign = access_claims(ISS, CLIENT, now());
    foreign["iss"] = serde_json::json!("https://evil.example/pool");
    let foreign = TestKey::shared(2).token(&foreign);
    let garbage = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.not-a-signature";
    let tokens = [valid, expired, unknown_kid, foreign, garbage.to_string()];

    let mut authz = AuthorizationClient::new(channel(addr).await);
    let mut diag = DiagnosticsClient::new(channel(addr).await);
    for token in &tokens {
        for path in ["/api/x", "/home"] {
            for header in [
                format!("Bearer {token}"),
                format!("Bearer {token} trailing"),
            ] {
                authz
                    .check(check_request(
                        "GET",
                        &format!("{path}?access_token={token}"),
                        &[("authorization", &header), ("x-request-id", "req-1")],
                        &[],
                    ))
                    .await
                    .unwrap();
            }
        }
        diag.verify_token(VerifyTokenRequest {
            token: token.clone(),
        })
        .await
        .unwrap();
    }
    running.stop().await.unwrap();

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("decision") && logs.contains("req-1"),
        "the capture works and decisions were logged:\n{logs:.2000}"
    );
    for token in &tokens {
        let signature = token.rsplit('.').next().unwrap();
        assert!(!logs.contains(token.as_str()), "a token reached the logs");
        assert!(
            !logs.contains(signature),
            "a token's signature reached the logs"
        );
    }
}
