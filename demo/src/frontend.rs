//! The bootcamp's front end (week 3's pages) on its own origin, as its React app sat beside the
//! API: plain HTML, CSS and JavaScript from `demo/frontend/`, compiled into the binary (no
//! build step, no CDN). The same server forwards `POST /cognito` to the Cognito emulator, so
//! the browser calls Cognito same-origin and the emulator needs no CORS; the API it calls
//! cross-origin, through Envoy.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Bytes;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

const INDEX: &str = include_str!("../frontend/index.html");
const APP_JS: &str = include_str!("../frontend/app.js");
const STYLE: &str = include_str!("../frontend/style.css");

/// The emulator's response header carrying a recovery code (it sends no e-mail).
pub const RECOVERY_CODE_HEADER: &str = "x-moto-forgot-password-confirmation-code";

/// Forwards one Cognito API call (`X-Amz-Target`, JSON body) to `upstream`, counting `GetUser`
/// calls into `get_user` when given, and passing the emulator's recovery-code header back.
pub async fn forward_cognito(
    http: &reqwest::Client,
    upstream: &str,
    headers: &HeaderMap,
    body: Bytes,
    get_user: Option<&AtomicU64>,
) -> Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if target.ends_with(".GetUser") {
        if let Some(counter) = get_user {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    }
    let answer = http
        .post(upstream)
        .header("x-amz-target", target)
        .header("content-type", "application/x-amz-json-1.1")
        .body(body)
        .send()
        .await;
    let Ok(answer) = answer else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let code = answer.headers().get(RECOVERY_CODE_HEADER).cloned();
    let body = answer.bytes().await.unwrap_or_default();
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "application/x-amz-json-1.1")],
        body,
    )
        .into_response();
    if let Some(code) = code {
        response.headers_mut().insert(RECOVERY_CODE_HEADER, code);
    }
    response
}

/// The front end's routes: the pages, `config.js` naming the API and app client, and the
/// Cognito pass-through.
pub fn router(cognito_upstream: String, api_url: &str, client_id: &str) -> Router {
    let config_js = format!(
        "window.CRUDDUR = {};\n",
        serde_json::json!({
            "cognitoUrl": "/cognito",
            "apiUrl": api_url,
            "clientId": client_id,
        })
    );
    let http = reqwest::Client::new();
    let page = |body: &'static str, kind: &'static str| {
        move || async move {
            (
                [(header::CONTENT_TYPE, HeaderValue::from_static(kind))],
                body,
            )
        }
    };
    Router::new()
        .route("/", get(page(INDEX, "text/html; charset=utf-8")))
        .route(
            "/app.js",
            get(page(APP_JS, "text/javascript; charset=utf-8")),
        )
        .route("/style.css", get(page(STYLE, "text/css; charset=utf-8")))
        .route(
            "/config.js",
            get(move || {
                let config_js = config_js.clone();
                async move {
                    (
                        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                        config_js,
                    )
                }
            }),
        )
        .route(
            "/cognito",
            post(move |headers: HeaderMap, body: Bytes| {
                let (http, upstream) = (http.clone(), cognito_upstream.clone());
                async move { forward_cognito(&http, &upstream, &headers, body, None).await }
            }),
        )
}
