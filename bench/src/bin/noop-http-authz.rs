//! A do-nothing HTTP ext_authz server: answers every request 200, over HTTP/1.1 and HTTP/2 with
//! prior knowledge. The floor of the Envoy -> HTTP hop in the benchmark.
//! Usage: noop-http-authz HOST:PORT [ANSWER.json]
//!
//! Without ANSWER, the 200 carries no headers (scenario (3h)). With it, the like-for-like floor
//! (scenario (3hl)): every 200 carries what cognito-authz's HTTP listener answers for the
//! bench's token, built once at start — the headers set, `x-envoy-auth-headers-to-remove` with
//! the headers removed, and the decision as `x-authz-*` headers. ANSWER is the JSON
//! noop-authz reads (see there).

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

/// The headers of every 200: none, or the ones `answer_file` describes.
fn answer_headers(answer_file: Option<&str>) -> Result<HeaderMap, Box<dyn std::error::Error>> {
    let mut headers = HeaderMap::new();
    let Some(path) = answer_file else {
        return Ok(headers);
    };
    let answer: Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    let pair = |pair: &Value| -> Result<(String, String), String> {
        match pair.as_array().map(Vec::as_slice) {
            Some([Value::String(k), Value::String(v)]) => Ok((k.clone(), v.clone())),
            _ => Err(format!("{pair} is not a [name, value] pair")),
        }
    };
    let list = |key: &str| {
        answer[key]
            .as_array()
            .ok_or(format!("the answer has no {key} list"))
    };
    let mut pairs = Vec::new();
    for set in list("set")? {
        pairs.push(pair(set)?);
    }
    let remove: Vec<&str> = list("remove")?.iter().filter_map(Value::as_str).collect();
    if !remove.is_empty() {
        pairs.push(("x-envoy-auth-headers-to-remove".into(), remove.join(",")));
    }
    for field in list("metadata")? {
        let (field, value) = pair(field)?;
        pairs.push((format!("x-authz-{field}"), value));
    }
    for (name, value) in pairs {
        headers.append(
            HeaderName::from_bytes(name.as_bytes())?,
            HeaderValue::from_str(&value)?,
        );
    }
    Ok(headers)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args
        .next()
        .ok_or("usage: noop-http-authz HOST:PORT [ANSWER.json]")?;
    let headers = answer_headers(args.next().as_deref())?;
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let app = if headers.is_empty() {
        axum::Router::new().fallback(|| async { axum::http::StatusCode::OK })
    } else {
        axum::Router::new().fallback(move || {
            let headers = headers.clone();
            async move { (axum::http::StatusCode::OK, headers) }
        })
    };
    axum::serve(listener, app).await?;
    Ok(())
}
