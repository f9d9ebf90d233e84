//! Serving until told to stop, and stopping well: `NOT_SERVING` first, in-flight checks finished
//! within the grace period, sockets removed; SIGHUP reloads and SIGTERM or SIGINT stop.

use std::future::Future;
use std::time::Duration;

use tokio_stream::{Stream, StreamExt as _};
use tonic_health::ServingStatus;
use tracing::{error, info, warn};

use super::{set_health, GrpcAddr, Running, ServerError};
use crate::config::{Config, ConfigError};
use crate::lock;

impl Running {
    /// Serves until `shutdown` completes, reloading on every item of `hangups`; then stops
    /// gracefully. A reload that fails, in reading or in applying, is logged and the running
    /// configuration keeps serving: nothing but `shutdown` ends the loop.
    pub async fn serve_until<R>(
        self,
        shutdown: impl Future<Output = ()>,
        mut hangups: impl Stream<Item = ()> + Unpin,
        reload: R,
    ) -> Result<(), ServerError>
    where
        R: Fn() -> Result<Config, ConfigError>,
    {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                Some(()) = hangups.next() => {
                    let applied = match reload() {
                        Ok(config) => self.reload(config).await.map_err(|e| e.to_string()),
                        Err(err) => Err(err.to_string()),
                    };
                    if let Err(cause) = applied {
                        error!(%cause, "reload refused: the running configuration stays");
                    }
                }
            }
        }
        info!("shutting down");
        self.stop().await
    }

    /// Reports `NOT_SERVING`, stops accepting, lets in-flight checks finish within the grace
    /// period, then stops everything.
    pub async fn stop(self) -> Result<(), ServerError> {
        set_health(&self.health, ServingStatus::NotServing).await;
        let _ = self.shutdown.send(true);
        if tokio::time::timeout(self.grace, self.grpc).await.is_err() {
            warn!(grace = ?self.grace, "grace period over: closing remaining connections");
        }
        if let Some(http) = self.http {
            if tokio::time::timeout(self.grace, http).await.is_err() {
                warn!("HTTP ext_authz listener: grace period over");
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.admin).await;
        for task in self.background {
            task.abort();
        }
        self.authorizer.verifier().keys().retire();
        for task in lock(&self.refresh).drain(..) {
            task.abort();
        }
        for addr in std::iter::once(&self.grpc_addr).chain(self.http_addr.as_ref()) {
            if let GrpcAddr::Unix(path) = addr {
                let _ = std::fs::remove_file(path);
            }
        }
        info!("stopped");
        Ok(())
    }
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(err) => {
                warn!(cause = %err, "cannot listen for SIGTERM; only Ctrl-C stops the server");
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
