//! A do-nothing HTTP ext_authz server: answers every request 200 with no headers, over HTTP/1.1
//! and HTTP/2 with prior knowledge. The floor of the Envoy -> HTTP hop in the benchmark.
//! Usage: noop-http-authz HOST:PORT

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .ok_or("usage: noop-http-authz HOST:PORT")?;
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let app = axum::Router::new().fallback(|| async { axum::http::StatusCode::OK });
    axum::serve(listener, app).await?;
    Ok(())
}
