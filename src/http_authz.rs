//! Envoy's HTTP ext_authz protocol (`http_service`): Envoy sends the original method, path and
//! allowed headers as a bodiless request; the decision core decides; a 200 with identity
//! headers allows (Envoy copies those matching `allowed_upstream_headers` onto the upstream
//! request, replacing the client's, and removes what `x-envoy-auth-headers-to-remove` lists),
//! any other status denies (Envoy passes it on with the headers matching
//! `allowed_client_headers`).
//!
//! This protocol carries no `context_extensions`: routes are described by the rules in the
//! config file. The decision's metadata (`decision`, `reason`, `sub`, ...) is returned as
//! `x-authz-decision`, `x-authz-reason`, `x-authz-sub`, ..., which Envoy's
//! `dynamic_metadata_from_headers` turns into the same metadata the gRPC adapter sends: the
//! access log's `sub` is the decision's, on a denial too, never the client's `x-cognito-sub`.

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use tracing::Instrument as _;

use crate::decision::{Answer, Authorizer, CheckInput};

/// The response header listing the request headers Envoy must remove before the upstream.
pub const HEADERS_TO_REMOVE: &str = "x-envoy-auth-headers-to-remove";
/// Prefix of the response headers carrying the decision for Envoy's dynamic metadata.
pub const METADATA_PREFIX: &str = "x-authz-";

fn no_extensions() -> &'static HashMap<String, String> {
    static EMPTY: OnceLock<HashMap<String, String>> = OnceLock::new();
    EMPTY.get_or_init(HashMap::new)
}

/// The headers as the decision core reads them: names lowercase (as `http` keeps them),
/// repeated headers joined with commas, as Envoy joins them for gRPC.
fn header_map(headers: &HeaderMap) -> HashMap<String, String> {
    let mut map: HashMap<String, String> = HashMap::with_capacity(headers.keys_len());
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        map.entry(name.as_str().to_string())
            .and_modify(|joined| {
                joined.push(',');
                joined.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    map
}

/// A response that denies without saying why beyond the status: used when an answer cannot be
/// encoded, so nothing is ever allowed because something went wrong.
fn fail_closed() -> Response {
    let mut response = Response::new(Body::from("{\"error\":\"internal\"}"));
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response
}

impl Authorizer {
    /// Decides one HTTP authorization request and builds Envoy's answer.
    pub async fn check_http(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> Response {
        let map = header_map(headers);
        // HTTP/2 carries the host in :authority (the URI), HTTP/1.1 in Host.
        let host = uri
            .authority()
            .map(|a| a.as_str())
            .or_else(|| map.get("host").map(String::as_str))
            .unwrap_or("");
        let input = CheckInput {
            method: method.as_str(),
            host,
            path: uri.path_and_query().map_or("/", |p| p.as_str()),
            headers: &map,
            extensions: no_extensions(),
        };
        let Ok(outcome) = self.decide(&input).await else {
            // Only context_extensions can fail, and this protocol has none.
            return fail_closed();
        };
        let (status, mut pairs, body) = match outcome.answer {
            Answer::Allow { set, remove } => {
                // Envoy copies the set headers that match `allowed_upstream_headers`
                // (docs/security.md says which the guarantee needs) and removes the listed ones.
                let mut pairs = set;
                if !remove.is_empty() {
                    pairs.push((HEADERS_TO_REMOVE.to_string(), remove.join(",")));
                }
                (200, pairs, String::new())
            }
            Answer::Deny {
                status,
                headers,
                body,
            } => (
                status,
                headers
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
                body,
            ),
        };
        // The gRPC adapter's dynamic metadata, field for field: the access log reads `sub` from
        // here, never from a request header a client may have forged.
        pairs.extend(
            outcome
                .metadata
                .into_iter()
                .map(|(field, value)| (format!("{METADATA_PREFIX}{field}"), value)),
        );
        let mut response = Response::new(Body::from(body));
        *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
        let out = response.headers_mut();
        for (name, value) in pairs {
            // Identity values were checked when the token was verified (no control characters,
            // bounded length); one that still cannot be encoded must not be dropped silently,
            // or the client's copy of that header would survive.
            let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_bytes(value.as_bytes()),
            ) else {
                return fail_closed();
            };
            out.append(name, value);
        }
        response
    }
}

/// The HTTP listener's routes: every method and path is a check.
///
/// `trust_traceparent` (`AUTHZ_HTTP_TRUST_TRACEPARENT`) says whose a `traceparent` among the
/// check's headers is. On this protocol Envoy's trace context and a client's header arrive in
/// the same place, and nothing on the wire tells them apart:
/// - Envoy's tracer on: Envoy writes its own `traceparent` on every check, replacing any copy
///   `allowed_headers` forwarded from the client. It is Envoy's, so the check joins Envoy's
///   trace and follows its sampling (`true`; the docs' tracing set-up sets it).
/// - Envoy's tracer off (the shipped configs): nothing of Envoy's arrives, and a
///   `traceparent` there is a client's, forwarded by `allowed_headers` or a platform's
///   `headersToExtAuth`. Followed, it would let the client pick our trace id and, through a
///   parent-based sampler, force sampling. So by default (`false`) the check starts a trace of
///   its own, sampled by our sampler, and only links to the claimed context.
///
/// The default is the one that cannot be abused: a wrong `false` costs a trace split in two
/// (still linked), a wrong `true` hands sampling to clients. The gRPC protocol needs no switch:
/// Envoy's context travels in the gRPC metadata, which a client cannot write.
pub fn router(authorizer: Authorizer, trust_traceparent: bool) -> axum::Router {
    axum::Router::new().fallback(move |request: Request| {
        let authorizer = authorizer.clone();
        async move {
            let span = crate::trace::check_span("http");
            if trust_traceparent {
                crate::trace::adopt_parent(&span, request.headers(), None);
            } else {
                crate::trace::link_claimed(&span, request.headers());
            }
            authorizer
                .check_http(request.method(), request.uri(), request.headers())
                .instrument(span)
                .await
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_headers_are_joined_as_envoy_joins_them() {
        let mut headers = HeaderMap::new();
        headers.append("authorization", HeaderValue::from_static("Bearer a"));
        headers.append("authorization", HeaderValue::from_static("Bearer b"));
        headers.append("x-request-id", HeaderValue::from_static("1"));
        let map = header_map(&headers);
        assert_eq!(map["authorization"], "Bearer a,Bearer b");
        assert_eq!(map["x-request-id"], "1");
    }

    #[test]
    fn a_failure_is_never_a_200() {
        assert_eq!(fail_closed().status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
