//! The upstream: the bootcamp app's API in miniature. It trusts the identity headers Envoy
//! forwards and never parses a token, which is the point of the sidecar. CORS is answered at the
//! edge (Envoy's CORS filter, as the bootcamp's flask-cors settings had it), not here. It
//! records what the last request carried so tests can look at what really reached the
//! upstream, and counts preflights, which should never arrive.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};

/// Requests the app has served, so tests can prove a denied request never reached it, and the
/// last one it saw.
#[derive(Clone, Default)]
pub struct AppState {
    requests: Arc<AtomicU64>,
    preflights: Arc<AtomicU64>,
    last: Arc<Mutex<Value>>,
}

/// Counts every request but `/_stats` (preflights apart) and keeps its method, path and headers
/// (credentials redacted).
async fn record(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if request.uri().path() != "/_stats" {
        state.requests.fetch_add(1, Ordering::SeqCst);
        if request.method() == Method::OPTIONS
            && request
                .headers()
                .contains_key("access-control-request-method")
        {
            state.preflights.fetch_add(1, Ordering::SeqCst);
        }
        let headers: Map<String, Value> = request
            .headers()
            .iter()
            .map(|(name, value)| {
                let shown = match name.as_str() {
                    "authorization" | "cookie" => "<redacted>",
                    _ => value.to_str().unwrap_or("<non-ascii>"),
                };
                (name.as_str().to_string(), Value::String(shown.to_string()))
            })
            .collect();
        *state.last.lock().unwrap_or_else(|e| e.into_inner()) = json!({
            "method": request.method().as_str(),
            "path": request.uri().path(),
            "headers": headers,
        });
    }
    next.run(request).await
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The app's routes. `/_stats` is for tests and is not routed by Envoy.
pub fn router() -> Router {
    let state = AppState::default();
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/activities/home", get(home))
        .route("/api/echo", get(echo))
        .route("/api/admin/stats", get(admin))
        .route("/_stats", get(stats))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), record))
        .with_state(state)
}

async fn healthz(headers: HeaderMap) -> Json<Value> {
    Json(json!({"ok": true, "identity_headers": identity(&headers)}))
}

/// The home feed: everyone sees it; a signed-in caller gets one extra activity, as the
/// bootcamp app did when its token check succeeded.
async fn home(headers: HeaderMap) -> Json<Value> {
    let viewer = header(&headers, "x-cognito-sub");
    let mut activities = vec![
        json!({"uuid": "68f126b0-1ceb-4a33-88be-d90fa7109eee", "handle": "andrewbrown",
               "message": "Cloud is fun!", "likes_count": 5, "replies_count": 1}),
        json!({"uuid": "66e12864-8c26-4c3a-9658-95a10f8fea67", "handle": "worf",
               "message": "This post has no honor!", "likes_count": 0, "replies_count": 0}),
        json!({"uuid": "248959df-3079-4947-b847-9e0892d1bab4", "handle": "garek",
               "message": "My dear doctor, I am just a simple tailor.", "likes_count": 0,
               "replies_count": 0}),
    ];
    if let Some(sub) = viewer {
        activities.insert(
            0,
            json!({"uuid": "c2a6b0d5-9ce4-4b3f-9a4d-2d3c6e1f0a11", "handle": "lore",
                   "message": "Only signed-in users can see this.", "likes_count": 0,
                   "replies_count": 0, "shown_to": sub}),
        );
    }
    Json(json!({"viewer": viewer, "activities": activities}))
}

/// Echoes what the app received: the identity headers and whether a token was forwarded.
async fn echo(headers: HeaderMap) -> Json<Value> {
    Json(json!({
        "identity_headers": identity(&headers),
        "authorization_forwarded": headers.contains_key("authorization"),
    }))
}

/// Admin-only: Envoy and cognito-authz already required the `admins` group; the app checks the
/// header too, as a belt-and-braces upstream would.
async fn admin(headers: HeaderMap) -> impl IntoResponse {
    let is_admin = header(&headers, "x-cognito-groups")
        .is_some_and(|groups| groups.split(',').any(|g| g == "admins"));
    if is_admin {
        (
            StatusCode::OK,
            Json(json!({"admin": header(&headers, "x-cognito-sub"), "users": 1})),
        )
    } else {
        (StatusCode::FORBIDDEN, Json(json!({"error": "admins only"})))
    }
}

async fn stats(State(state): State<AppState>) -> Json<Value> {
    let last = state.last.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Json(json!({
        "requests": state.requests.load(Ordering::SeqCst),
        "preflights": state.preflights.load(Ordering::SeqCst),
        "last": last,
    }))
}

async fn not_found() -> impl IntoResponse {
    (StatusCode::NOT_FOUND, Json(json!({"error": "not found"})))
}

fn identity(headers: &HeaderMap) -> Value {
    let mut map = Map::new();
    for (name, value) in headers {
        if name.as_str().starts_with("x-cognito-") {
            map.insert(
                name.as_str().to_string(),
                Value::String(value.to_str().unwrap_or("<non-ascii>").to_string()),
            );
        }
    }
    Value::Object(map)
}
