//! The demo upstream. `PORT` (default 8000) and `BIND` (default 127.0.0.1) choose the address.
//! CORS is Envoy's job (its CORS filter, configured in `envoy/envoy.yaml`), not the app's.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let bind = std::env::var("BIND").unwrap_or_else(|_| "127.0.0.1".into());
    let port = std::env::var("PORT").unwrap_or_else(|_| "8000".into());
    let addr = format!("{bind}:{port}");
    let listener = match tokio::net::TcpListener::bind(&addr).await {
        Ok(l) => l,
        Err(err) => {
            eprintln!("cruddur-app: cannot listen on {addr}: {err}");
            return std::process::ExitCode::from(2);
        }
    };
    eprintln!("cruddur-app: listening on {addr}");
    // SIGTERM too: in a container the app is PID 1, which ignores signals it does not handle.
    let shutdown = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    match axum::serve(listener, cruddur_demo::app::router())
        .with_graceful_shutdown(shutdown)
        .await
    {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("cruddur-app: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
