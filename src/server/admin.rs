//! The admin listener: `/metrics`, `/healthz` and `/readyz` for any scraper or probe that can
//! reach it, and the control API (`POST /revocations`, `GET /revocations`, `GET /config`) for
//! the operator only, behind the bearer secret of `AUTHZ_ADMIN_TOKEN_FILE`.

use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::response::IntoResponse;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::Config;
use crate::decision::Authorizer;
use crate::metrics::Metrics;
use crate::revocation::{entry_lifetime, Entry, Refused, Revocation};
use crate::shared::Shared;

/// A revocation as the admin API takes it: exactly one of `jti`, `origin_jti` and `sub` (with
/// `before`, default now).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    /// One token.
    pub jti: Option<String>,
    /// One sign-in session.
    pub origin_jti: Option<String>,
    /// One user...
    pub sub: Option<String>,
    /// ...for tokens issued before this (Unix seconds; default: now).
    pub before: Option<i64>,
}

impl RevokeRequest {
    /// The revocation it names, or what is wrong with it.
    pub fn revocation(self, now: i64) -> Result<Revocation, &'static str> {
        let nonempty = |v: Option<String>| v.filter(|v| !v.trim().is_empty());
        match (
            nonempty(self.jti),
            nonempty(self.origin_jti),
            nonempty(self.sub),
        ) {
            (Some(jti), None, None) if self.before.is_none() => Ok(Revocation::Jti(jti)),
            (None, Some(id), None) if self.before.is_none() => Ok(Revocation::Session(id)),
            (None, None, Some(sub)) => Ok(Revocation::Sub {
                sub,
                before: self.before.unwrap_or(now),
            }),
            _ => Err("give exactly one of jti, origin_jti, sub (before goes with sub only)"),
        }
    }

    /// The entry the control API records for this request at `now` under the clock `leeway`,
    /// and that `cognito-authz revoke --redis` writes: kept until no token it matches can be
    /// valid, within the bounds every replica admits.
    pub fn entry(self, now: i64, leeway: std::time::Duration) -> Result<Entry, BadRevocation> {
        let revocation = self.revocation(now).map_err(BadRevocation::Malformed)?;
        let entry = Entry::new(revocation, now, entry_lifetime(leeway));
        let leeway = i64::try_from(leeway.as_secs()).unwrap_or(0);
        entry
            .admissible(now, leeway)
            .map_err(BadRevocation::Refused)?;
        Ok(entry)
    }
}

/// Why a revocation request makes no entry (the control API's 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadRevocation {
    /// Not exactly one of `jti`, `origin_jti`, `sub`, or `before` without `sub`.
    #[error("{0}")]
    Malformed(&'static str),
    /// Outside the bounds a replica admits (an id too long, a `before` in the future, nothing
    /// left to revoke).
    #[error("{0}")]
    Refused(Refused),
}

/// What `POST /revocations` answers once a revocation is recorded, and what `cognito-authz
/// revoke` takes for success: every field required, no other field, so a proxy's `{}`, a web
/// page or another service's JSON is never mistaken for it.
#[derive(Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationRecorded {
    /// Always `true` from the control API; any other value is not its answer.
    pub recorded: bool,
    /// When the entry is forgotten (Unix seconds): no token it matches can be valid by then.
    pub expires: i64,
    /// Published to the other replicas through Redis (`true`), kept here and queued until
    /// Redis returns (`false`), or no Redis to share with (`null`, still required).
    #[serde(deserialize_with = "required_option")]
    pub shared: Option<bool>,
}

/// An `Option` that must be present (`null` allowed): serde lets an `Option` field be absent
/// unless its deserializer is named.
fn required_option<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    serde::Deserialize::deserialize(d)
}

/// What the admin listener's handlers share.
#[derive(Clone)]
pub(super) struct Admin {
    pub(super) metrics: Metrics,
    pub(super) authorizer: Authorizer,
    pub(super) running_config: Arc<ArcSwap<Config>>,
    pub(super) shared: Option<Shared>,
    pub(super) shutdown: watch::Receiver<bool>,
}

/// Largest body the control API reads: a revocation is under 1 KiB.
const MAX_CONTROL_BODY_BYTES: usize = 16 * 1024;

type AdminResponse = (axum::http::StatusCode, axum::Json<serde_json::Value>);

fn admin_error(status: axum::http::StatusCode, message: &str) -> axum::response::Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

/// The control API (`/revocations`, `/config`) answers only to the operator: the bearer secret
/// of `AUTHZ_ADMIN_TOKEN_FILE`, compared in constant time. Without a secret it is off: the
/// admin listener is reachable by every process sharing the pod's or task's network (an SSRF
/// in the app is enough), and whoever can revoke can sign anyone out.
async fn operator_only(
    axum::extract::State(admin): axum::extract::State<Admin>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::{header, StatusCode};
    let config = admin.running_config.load();
    let Some(secret) = &config.server.admin_token else {
        return admin_error(
            StatusCode::NOT_FOUND,
            "the control API is off: give it a secret with AUTHZ_ADMIN_TOKEN_FILE",
        );
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::credential::operator_secret);
    match presented {
        Some(token) if secret.matches(token.as_bytes()) => next.run(request).await,
        _ => {
            let mut response = admin_error(
                StatusCode::UNAUTHORIZED,
                "the control API needs the operator's bearer secret",
            );
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"cognito-authz-admin\""),
            );
            response.into_response()
        }
    }
}

/// `POST /revocations`: records a revocation here and shares it, within bounds.
async fn revoke(
    axum::extract::State(admin): axum::extract::State<Admin>,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::http::StatusCode;
    let refuse = admin_error;
    let now = admin.authorizer.clock().now();
    let config = admin.running_config.load();
    let Ok(request) = serde_json::from_slice::<RevokeRequest>(&body) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "the body is not a revocation request",
        );
    };
    let list = admin.authorizer.revocations();
    let entry = match request.entry(now, config.leeway) {
        Ok(entry) => entry,
        Err(bad) => {
            if let BadRevocation::Refused(why) = bad {
                list.refused(why);
            }
            return refuse(StatusCode::BAD_REQUEST, &bad.to_string());
        }
    };
    if let Err(why) = list.insert(&entry) {
        warn!(cause = %why, "a revocation was refused");
        return refuse(StatusCode::SERVICE_UNAVAILABLE, &why.to_string());
    }
    // Shared, or not shared yet (Redis down: published when it returns), or nothing to share
    // with (no Redis). Only the middle one is not a success: 202, and the CLI exits 1.
    let (status, shared) = match &admin.shared {
        Some(shared) => match shared.publish(&entry).await {
            Ok(()) => (StatusCode::OK, Some(true)),
            Err(err) => {
                warn!(cause = %err, "a revocation was recorded here but not shared yet");
                (StatusCode::ACCEPTED, Some(false))
            }
        },
        None => (StatusCode::OK, None),
    };
    info!(
        kind = entry.revocation.kind(),
        shared = ?shared,
        "revocation recorded"
    );
    let answer = RevocationRecorded {
        recorded: true,
        expires: entry.expires,
        shared,
    };
    (status, axum::Json(answer)).into_response()
}

/// A revocation as `GET /revocations` lists it: the fields `POST /revocations` takes, and when
/// it expires.
fn listed(entry: &Entry) -> serde_json::Value {
    let mut item = match &entry.revocation {
        Revocation::Jti(jti) => serde_json::json!({ "jti": jti }),
        Revocation::Session(id) => serde_json::json!({ "origin_jti": id }),
        Revocation::Sub { sub, before } => serde_json::json!({ "sub": sub, "before": before }),
    };
    item["expires"] = entry.expires.into();
    item
}

/// `GET /revocations`: the live revocations in Redis as this replica reads them (what its keys
/// signed, or everything when it has none), at most `AUTHZ_MAX_REVOCATIONS` of them. Read-only:
/// to carry revocations over when signing is turned on, they are listed from a replica
/// without a key and re-issued through one with it (`cognito-authz copy-revocations`).
async fn list_revocations(
    axum::extract::State(admin): axum::extract::State<Admin>,
) -> AdminResponse {
    use axum::http::StatusCode;
    let Some(shared) = &admin.shared else {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({
                "error": "no Redis (AUTHZ_REDIS_URL): revocations are not shared, there is no list"
            })),
        );
    };
    let max = admin.running_config.load().server.max_revocations;
    match shared.live_revocations(max).await {
        Ok(listing) => (
            StatusCode::OK,
            axum::Json(serde_json::json!({
                "revocations": listing.entries.iter().map(listed).collect::<Vec<_>>(),
                "truncated": listing.truncated,
            })),
        ),
        Err(err) => {
            warn!(cause = %err, "listing revocations from redis failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(serde_json::json!({ "error": format!("redis: {}", err.as_str()) })),
            )
        }
    }
}

/// `GET /config`: the configuration in force (as `check-config` prints it), reloads included.
async fn running_config(
    axum::extract::State(admin): axum::extract::State<Admin>,
) -> axum::Json<Arc<Config>> {
    axum::Json(admin.running_config.load_full())
}

/// `GET /metrics`: the Prometheus text exposition.
async fn metrics(axum::extract::State(admin): axum::extract::State<Admin>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        admin.metrics.encode(),
    )
}

/// `GET /readyz`: keys loaded, the revocations in Redis loaded (or Redis found unreachable), not
/// draining, and Redis up where it is required.
async fn readyz(axum::extract::State(admin): axum::extract::State<Admin>) -> impl IntoResponse {
    use axum::http::StatusCode;
    let redis_required = admin.running_config.load().server.redis_required;
    let keys = admin.authorizer.verifier().keys().all_loaded();
    let redis = admin.shared.as_ref().map(Shared::is_up);
    let settled = admin.shared.as_ref().is_none_or(Shared::settled);
    let ready =
        keys && settled && !*admin.shutdown.borrow() && !(redis_required && redis == Some(false));
    let detail = match redis {
        None => "",
        Some(true) => "redis: up\n",
        Some(false) => "redis: down (deciding from local state)\n",
    };
    if ready {
        (StatusCode::OK, format!("ready\n{detail}"))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready\n{detail}"),
        )
    }
}

/// The admin listener: probes and metrics for anyone who can reach it, the control API for the
/// operator only.
pub(super) fn router(admin: Admin) -> axum::Router {
    use axum::routing::{get, post};
    let control = axum::Router::new()
        .route("/revocations", post(revoke).get(list_revocations))
        .route("/config", get(running_config))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_CONTROL_BODY_BYTES))
        .route_layer(axum::middleware::from_fn_with_state(
            admin.clone(),
            operator_only,
        ));
    axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .merge(control)
        .with_state(admin)
}

#[cfg(test)]
mod tests {
    use super::RevocationRecorded;

    fn parse(text: &str) -> Option<RevocationRecorded> {
        serde_json::from_str(text).ok()
    }

    #[test]
    fn the_recorded_answer_is_read_back_as_written_and_nothing_else_passes_for_it() {
        for shared in [Some(true), Some(false), None] {
            let answer = RevocationRecorded {
                recorded: true,
                expires: 1_800_000_000,
                shared,
            };
            let text = serde_json::to_string(&answer).unwrap();
            assert_eq!(parse(&text), Some(answer), "{text}");
        }
        for other in [
            "{}",
            r#"{"recorded": true}"#,
            r#"{"recorded": true, "expires": 1}"#,
            r#"{"recorded": true, "expires": 1, "shared": true, "by": "proxy"}"#,
            r#"{"recorded": "yes", "expires": 1, "shared": true}"#,
            r#"{"error": "the control API needs the operator's bearer secret"}"#,
            "<html></html>",
            "",
        ] {
            assert_eq!(parse(other), None, "{other}");
        }
    }
}
