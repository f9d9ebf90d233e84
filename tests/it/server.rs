//! The server over real sockets with tonic clients: Check, health transitions, reflection,
//! the diagnostics API, the admin listener, the Unix socket, and graceful shutdown with a
//! check in flight.

use crate::common;

use std::time::Duration;

use cognito_authz::generated::diagnostics::diagnostics_client::DiagnosticsClient;
use cognito_authz::generated::diagnostics::{KeyStatusRequest, VerifyTokenRequest};
use cognito_authz::server::{self, GrpcAddr};
use cognito_authz::testkit::{access_claims, jwks, now, Behaviour, JwksServer, TestKey};
use common::{answer, channel, check_request, http_get, serve_config, Answer, CLIENT, ISS};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

fn tcp(addr: &GrpcAddr) -> std::net::SocketAddr {
    match addr {
        GrpcAddr::Tcp(a) => *a,
        GrpcAddr::Unix(p) => panic!("expected TCP, got {p:?}"),
    }
}

async fn health(addr: std::net::SocketAddr, service: &str) -> i32 {
    HealthClient::new(channel(addr).await)
        .check(HealthCheckRequest {
            service: service.to_string(),
        })
        .await
        .expect("health answers")
        .into_inner()
        .status
}

#[tokio::test]
async fn health_follows_the_keys_and_check_answers_over_the_socket() {
    let idp = JwksServer::start(Behaviour::Status(503)).await;
    let config = serve_config(&idp.url("/jwks.json"), &[], "");
    let running = server::start(config).await.unwrap();
    let addr = tcp(&running.grpc_addr);

    assert_eq!(health(addr, "").await, ServingStatus::NotServing as i32);
    assert_eq!(
        health(addr, server::AUTHZ_SERVICE_NAME).await,
        ServingStatus::NotServing as i32
    );
    assert_eq!(http_get(running.admin_addr, "/readyz").await.0, 503);
    assert_eq!(http_get(running.admin_addr, "/healthz").await.0, 200);

    // Requests meanwhile get 503, never an allow.
    let token = TestKey::shared(0).token(&access_claims(ISS, CLIENT, now()));
    let auth = format!("Bearer {token}");
    let mut authz = AuthorizationClient::new(channel(addr).await);
    let response = authz
        .check(check_request(
            "GET",
            "/api/x",
            &[("authorization", &auth)],
            &[],
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(
        answer(&response),
        Answer::Denied { status: 503, .. }
    ));

    idp.set(Behaviour::Json(jwks(&[TestKey::shared(0)])));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while health(addr, "").await != ServingStatus::Serving as i32 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never became SERVING"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(http_get(running.admin_addr, "/readyz").await.0, 200);

    let response = authz
        .check(check_request(
            "GET",
            "/api/x",
            &[("authorization", &auth), ("x-cognito-sub", "spoof")],
            &[],
        ))
        .await
        .unwrap()
        .into_inner();
    match answer(&response) {
        Answer::Allowed { set, .. } => {
            assert_eq!(set["x-cognito-sub"], "8f1e2d3c-0000-4000-8000-00000000abcd")
        }
        other => panic!("{other:?}"),
    }

    let (status, metrics) = http_get(running.admin_addr, "/metrics").await;
    assert_eq!(status, 200);
    for needle in [
        "cognito_authz_decisions_total{decision=\"allow\",reason=\"valid\"} 1",
        "cognito_authz_decisions_total{decision=\"deny\",reason=\"keys_unavailable\"} 1",
        "cognito_authz_jwks_keys{pool=\"us-east-1_IntegPool\"} 1",
        "cognito_authz_jwks_fetches_total{pool=\"us-east-1_IntegPool\",result=\"bad_status\"}",
        "cognito_authz_check_duration_seconds_bucket",
    ] {
        assert!(metrics.contains(needle), "{needle} missing from\n{metrics}");
    }
    running.stop().await.unwrap();
}

#[tokio::test]
async fn reflection_lists_every_service_in_v1_and_v1alpha() {
    use tonic_reflection::pb::{v1, v1alpha};
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let running = server::start(serve_config(&idp.url("/j"), &[], ""))
        .await
        .unwrap();
    let addr = tcp(&running.grpc_addr);
    let expected = [
        "envoy.service.auth.v3.Authorization",
        "cognito_authz.diagnostics.v1.Diagnostics",
        "grpc.health.v1.Health",
    ];

    let mut client = v1::server_reflection_client::ServerReflectionClient::new(channel(addr).await);
    let request = v1::ServerReflectionRequest {
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
        ..Default::default()
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let reply = stream.message().await.unwrap().unwrap();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        reply.message_response
    else {
        panic!("not a list: {reply:?}")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for name in expected {
        assert!(
            names.iter().any(|n| n == name),
            "{name} missing from {names:?}"
        );
    }

    // v1alpha (grpcurl 1.8.6) can resolve Envoy's service to its file and imports.
    let mut alpha =
        v1alpha::server_reflection_client::ServerReflectionClient::new(channel(addr).await);
    let request = v1alpha::ServerReflectionRequest {
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                "envoy.service.auth.v3.Authorization".into(),
            ),
        ),
        ..Default::default()
    };
    let mut stream = alpha
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let reply = stream.message().await.unwrap().unwrap();
    match reply.message_response {
        Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(f)) => {
            assert!(!f.file_descriptor_proto.is_empty())
        }
        other => panic!("no descriptor: {other:?}"),
    }
    running.stop().await.unwrap();
}

#[tokio::test]
async fn the_diagnostics_api_explains_tokens_and_keys() {
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let running = server::start(serve_config(&idp.url("/jwks.json"), &[], ""))
        .await
        .unwrap();
    let addr = tcp(&running.grpc_addr);
    let mut diag = DiagnosticsClient::new(channel(addr).await);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = diag
            .key_status(KeyStatusRequest {})
            .await
            .unwrap()
            .into_inner();
        if !status.pools[0].kids.is_empty() {
            let pool = &status.pools[0];
            assert_eq!(pool.pool_id, "us-east-1_IntegPool");
            assert_eq!(pool.kids, vec![TestKey::shared(0).kid.clone()]);
            assert_eq!(pool.jwks_uri, idp.url("/jwks.json"));
            assert!(pool.last_success.is_some());
            assert_eq!(pool.issuers.len(), 2);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let good = TestKey::shared(0).token(&access_claims(ISS, CLIENT, now()));
    let verdict = diag
        .verify_token(VerifyTokenRequest {
            token: format!("Bearer {good}"),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(verdict.valid);
    assert_eq!(verdict.pool_id, "us-east-1_IntegPool");
    assert!(verdict.claims.unwrap().fields.contains_key("client_id"));

    let mut claims = access_claims(ISS, CLIENT, now());
    claims["client_id"] = serde_json::json!("someone-else");
    let verdict = diag
        .verify_token(VerifyTokenRequest {
            token: TestKey::shared(0).token(&claims),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!verdict.valid);
    assert_eq!(verdict.reason, "wrong_client");
    running.stop().await.unwrap();
}

#[tokio::test]
async fn a_unix_socket_listener_serves_check() {
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let dir = std::env::temp_dir().join(format!("cognito-authz-uds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("authz.sock");
    let addr = format!("unix:{}", path.display());
    let running = server::start(serve_config(
        &idp.url("/j"),
        &[("AUTHZ_GRPC_ADDR", addr.as_str())],
        "",
    ))
    .await
    .unwrap();
    assert_eq!(running.grpc_addr, GrpcAddr::Unix(path.clone()));

    let socket = path.clone();
    let channel = tonic::transport::Endpoint::from_static("http://uds.invalid")
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .unwrap();
    let response = AuthorizationClient::new(channel)
        .check(check_request("GET", "/api/x", &[], &[]))
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(
        answer(&response),
        Answer::Denied { status: 401, .. }
    ));
    running.stop().await.unwrap();
    assert!(!path.exists(), "the socket file is removed at shutdown");
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_check_finish() {
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let running = server::start(serve_config(&idp.url("/j"), &[], ""))
        .await
        .unwrap();
    let addr = tcp(&running.grpc_addr);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while health(addr, "").await != ServingStatus::Serving as i32 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // An unknown kid makes the check wait on a refetch the IdP answers slowly.
    idp.set(Behaviour::Slow(
        Duration::from_millis(800),
        Box::new(Behaviour::Json(jwks(&[
            TestKey::shared(0),
            TestKey::shared(1),
        ]))),
    ));
    let rotated = TestKey::shared(1).token(&access_claims(ISS, CLIENT, now()));
    let auth = format!("Bearer {rotated}");
    let mut authz = AuthorizationClient::new(channel(addr).await);
    let in_flight = tokio::spawn(async move {
        authz
            .check(check_request(
                "GET",
                "/api/x",
                &[("authorization", &auth)],
                &[],
            ))
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopped = tokio::spawn(running.stop());
    let response = in_flight
        .await
        .unwrap()
        .expect("the in-flight check is answered");
    assert!(
        matches!(answer(&response.into_inner()), Answer::Allowed { .. }),
        "and answered correctly, with the rotated key"
    );
    stopped.await.unwrap().unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener is closed after shutdown"
    );
}
