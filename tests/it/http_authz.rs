//! The HTTP ext_authz listener over real sockets, HTTP/1.1 and HTTP/2 with prior knowledge:
//! the same decisions as gRPC, rendered as Envoy's `http_service` expects them.

use crate::common;

use cognito_authz::http_authz::HEADERS_TO_REMOVE;
use cognito_authz::server::{self, GrpcAddr};
use cognito_authz::testkit::{access_claims, jwks, now, Behaviour, JwksServer, TestKey};
use common::{serve_config, CLIENT, ISS};

const RULES: &str = r#"
[[routes]]
path_separated_prefix = "/home"
mode = "optional"
[[routes]]
path_separated_prefix = "/admin"
mode = "required"
groups_any = ["nobody"]
[identity.claim_headers]
"custom:tenant" = "x-tenant-id"
"#;

async fn start() -> (server::Running, String, JwksServer) {
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let config = serve_config(
        &idp.url("/jwks.json"),
        &[("AUTHZ_HTTP_ADDR", "127.0.0.1:0")],
        RULES,
    );
    let running = server::start(config).await.unwrap();
    let Some(GrpcAddr::Tcp(addr)) = running.http_addr else {
        panic!("the HTTP listener is on TCP: {:?}", running.http_addr)
    };
    // Keys are fetched in the background.
    for _ in 0..50 {
        if running.admin_addr.port() != 0
            && common::http_get(running.admin_addr, "/readyz").await.0 == 200
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    (running, format!("http://{addr}"), idp)
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn the_http_protocol_allows_with_identity_and_denies_with_rfc_6750() {
    let (running, base, _idp) = start().await;
    let token = TestKey::shared(0).token(&access_claims(ISS, CLIENT, now()));
    for client in [
        reqwest::Client::new(),
        reqwest::Client::builder()
            .http2_prior_knowledge()
            .build()
            .unwrap(),
    ] {
        // Allowed: identity headers to copy upstream, spoofed ones to remove.
        let allowed = client
            .get(format!("{base}/api/messages?x=1"))
            .bearer_auth(&token)
            .header("x-cognito-sub", "spoofed")
            .header("x-cognito-anything", "spoofed")
            .send()
            .await
            .unwrap();
        assert_eq!(allowed.status().as_u16(), 200);
        assert_eq!(
            header(&allowed, "x-cognito-sub"),
            Some("8f1e2d3c-0000-4000-8000-00000000abcd")
        );
        let removed: Vec<&str> = header(&allowed, HEADERS_TO_REMOVE)
            .unwrap()
            .split(',')
            .collect();
        assert!(removed.contains(&"x-cognito-anything"), "{removed:?}");
        assert!(removed.contains(&"x-tenant-id"), "{removed:?}");
        assert!(!removed.contains(&"x-cognito-sub"), "set, not removed");

        // A mapped header is set, never also removed (Envoy removes after setting, so the app
        // would never see it); docs/envoy.md says the Envoy config must copy it.
        let mut claims = access_claims(ISS, CLIENT, now());
        claims["custom:tenant"] = "t1".into();
        let tenant = TestKey::shared(0).token(&claims);
        let mapped = client
            .get(format!("{base}/api/messages"))
            .bearer_auth(&tenant)
            .header("x-tenant-id", "forged")
            .send()
            .await
            .unwrap();
        assert_eq!(header(&mapped, "x-tenant-id"), Some("t1"));
        assert!(!header(&mapped, HEADERS_TO_REMOVE)
            .unwrap()
            .split(',')
            .any(|h| h == "x-tenant-id"));
        assert_eq!(header(&allowed, "x-authz-decision"), Some("allow"));
        // The access log's sub: the token's, from the answer.
        assert_eq!(
            header(&allowed, "x-authz-sub"),
            Some("8f1e2d3c-0000-4000-8000-00000000abcd")
        );

        // Denied: the RFC 6750 status, challenge and body.
        let denied = client
            .get(format!("{base}/api/messages"))
            .send()
            .await
            .unwrap();
        assert_eq!(denied.status().as_u16(), 401);
        assert_eq!(
            header(&denied, "www-authenticate"),
            Some("Bearer realm=\"cognito-authz\"")
        );
        assert_eq!(header(&denied, "x-authz-reason"), Some("no_token"));
        assert_eq!(
            header(&denied, "x-authz-sub"),
            None,
            "a denial names no sub"
        );
        let body: serde_json::Value = denied.json().await.unwrap();
        assert_eq!(body["reason"], "no_token");

        // The same policy: rules from the file, 403 for a missing group.
        let forbidden = client
            .get(format!("{base}/admin/x"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(forbidden.status().as_u16(), 403);
        let anonymous = client
            .get(format!("{base}/home"))
            .header("authorization", "Bearer garbage")
            .send()
            .await
            .unwrap();
        assert_eq!(anonymous.status().as_u16(), 200);
        assert_eq!(header(&anonymous, "x-cognito-sub"), None);

        // Two authorization headers are one malformed credential, as over gRPC.
        let two = client
            .get(format!("{base}/api/messages"))
            .header("authorization", format!("Bearer {token}"))
            .header("authorization", format!("Bearer {token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(two.status().as_u16(), 400);

        // A preflight is checked like any request (AUTHZ_ALLOW_PREFLIGHT is off by default).
        let preflight = client
            .request(reqwest::Method::OPTIONS, format!("{base}/api/messages"))
            .header("origin", "http://127.0.0.1:3000")
            .header("access-control-request-method", "GET")
            .send()
            .await
            .unwrap();
        assert_eq!(preflight.status().as_u16(), 401);
        assert_eq!(header(&preflight, "x-authz-reason"), Some("no_token"));
    }

    // Counted like gRPC decisions.
    let (_, metrics) = common::http_get(running.admin_addr, "/metrics").await;
    assert!(
        metrics.contains("cognito_authz_decisions_total{decision=\"deny\",reason=\"no_token\"} 4"),
        "{metrics}"
    );
    running.stop().await.unwrap();
}

#[tokio::test]
async fn the_http_listener_serves_a_unix_socket_and_stops_with_the_server() {
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("http-uds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("authz-http.sock");
    let addr = format!("unix:{}", socket.display());
    let config = serve_config(&idp.url("/j"), &[("AUTHZ_HTTP_ADDR", &addr)], "");
    let running = server::start(config).await.unwrap();
    assert_eq!(running.http_addr, Some(GrpcAddr::Unix(socket.clone())));
    let mut stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    stream
        .write_all(b"GET /api/x HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 401"), "{response}");
    running.stop().await.unwrap();
    assert!(!socket.exists(), "the socket is removed at exit");
}
