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
use crate::headers::Headers;

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

/// The check's headers as the decision core reads them: borrowed from the request when that
/// reads the same (each name once, every value UTF-8: what Envoy sends), else copied and
/// joined ([`header_map`]).
enum CheckHeaders<'a> {
    Borrowed(&'a HeaderMap),
    Joined(HashMap<String, String>),
}

impl<'a> CheckHeaders<'a> {
    fn of(headers: &'a HeaderMap) -> CheckHeaders<'a> {
        let plain = headers.keys_len() == headers.len()
            && headers
                .values()
                .all(|v| std::str::from_utf8(v.as_bytes()).is_ok());
        if plain {
            CheckHeaders::Borrowed(headers)
        } else {
            CheckHeaders::Joined(header_map(headers))
        }
    }
}

impl Headers for CheckHeaders<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        match self {
            CheckHeaders::Borrowed(headers) => headers
                .get(name)
                .and_then(|v| std::str::from_utf8(v.as_bytes()).ok()),
            CheckHeaders::Joined(map) => Headers::get(map, name),
        }
    }

    fn each_name(&self, each: &mut dyn FnMut(&str)) {
        match self {
            CheckHeaders::Borrowed(headers) => headers.keys().for_each(|k| each(k.as_str())),
            CheckHeaders::Joined(map) => map.each_name(each),
        }
    }
}

/// The answer's header names a check writes besides the identity headers: `HeaderName::from_bytes`
/// copies a name that is not one of HTTP's own into a new allocation each time, so every name a
/// check writes is made once.
const OTHER_NAMES: [&str; 9] = [
    HEADERS_TO_REMOVE,
    "x-authz-decision",
    "x-authz-reason",
    "x-authz-sub",
    "x-authz-dry_run",
    "x-authz-rule",
    "x-authz-pool",
    "x-authz-token_use",
    "www-authenticate",
];

/// `name` as a ready-made header name, when it is an identity header or one of [`OTHER_NAMES`].
fn known_name(name: &str) -> Option<HeaderName> {
    crate::identity::IDENTITY_HEADERS
        .iter()
        .chain(&OTHER_NAMES)
        .find(|known| **known == name)
        .map(|known| HeaderName::from_static(known))
}

/// The response header carrying the metadata field `field`, when it is one a decision writes.
fn metadata_name(field: &str) -> Option<&'static str> {
    OTHER_NAMES
        .iter()
        .copied()
        .find(|known| known.strip_prefix(METADATA_PREFIX) == Some(field))
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
        let view = CheckHeaders::of(headers);
        // HTTP/2 carries the host in :authority (the URI), HTTP/1.1 in Host.
        let host = uri
            .authority()
            .map(|a| a.as_str())
            .or_else(|| view.get("host"))
            .unwrap_or("");
        let input = CheckInput {
            method: method.as_str(),
            host,
            path: uri.path_and_query().map_or("/", |p| p.as_str()),
            headers: &view,
            extensions: no_extensions(),
        };
        let Ok(outcome) = self.decide(&input).await else {
            // Only context_extensions can fail, and this protocol has none.
            return fail_closed();
        };
        let mut response = Response::new(Body::empty());
        let out = response.headers_mut();
        // Identity values were checked when the token was verified (no control characters,
        // bounded length); one that still cannot be encoded must not be dropped silently, or
        // the client's copy of that header would survive.
        let mut append = |name: &str, value: &str| -> Result<(), ()> {
            let name = match known_name(name) {
                Some(name) => name,
                None => HeaderName::from_bytes(name.as_bytes()).map_err(drop)?,
            };
            let value = HeaderValue::from_bytes(value.as_bytes()).map_err(drop)?;
            out.append(name, value);
            Ok(())
        };
        let (status, body) = match outcome.answer {
            Answer::Allow(rewrite) => {
                // Envoy copies the set headers that match `allowed_upstream_headers`
                // (docs/security.md says which the guarantee needs) and removes the listed ones.
                for (name, value) in rewrite.set() {
                    if append(name, value).is_err() {
                        return fail_closed();
                    }
                }
                let mut remove = rewrite.remove().peekable();
                if remove.peek().is_some() {
                    let list = remove.collect::<Vec<_>>().join(",");
                    if append(HEADERS_TO_REMOVE, &list).is_err() {
                        return fail_closed();
                    }
                }
                (200, String::new())
            }
            Answer::Deny {
                status,
                headers,
                body,
            } => {
                for (name, value) in &headers {
                    if append(name, value).is_err() {
                        return fail_closed();
                    }
                }
                (status, body)
            }
        };
        // The gRPC adapter's dynamic metadata, field for field: the access log reads `sub` from
        // here, never from a request header a client may have forged.
        for (field, value) in outcome.metadata.iter() {
            let appended = match metadata_name(field) {
                Some(name) => append(name, value),
                None => append(&format!("{METADATA_PREFIX}{field}"), value),
            };
            if appended.is_err() {
                return fail_closed();
            }
        }
        *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
        *response.body_mut() = Body::from(body);
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

    /// The borrowed view reads as the joined copy does, and is used only where it can.
    #[test]
    fn the_borrowed_view_is_used_only_where_it_reads_as_the_joined_copy() {
        let mut plain = HeaderMap::new();
        plain.append("authorization", HeaderValue::from_static("Bearer a"));
        plain.append("x-cognito-sub", HeaderValue::from_static("forged"));
        let view = CheckHeaders::of(&plain);
        assert!(matches!(view, CheckHeaders::Borrowed(_)));
        let map = header_map(&plain);
        for name in ["authorization", "x-cognito-sub", "cookie"] {
            assert_eq!(view.get(name), Headers::get(&map, name), "{name}");
        }
        let mut names = Vec::new();
        view.each_name(&mut |n| names.push(n.to_string()));
        names.sort();
        assert_eq!(names, ["authorization", "x-cognito-sub"]);

        let mut repeated = plain.clone();
        repeated.append("authorization", HeaderValue::from_static("Bearer b"));
        let view = CheckHeaders::of(&repeated);
        assert!(matches!(view, CheckHeaders::Joined(_)));
        assert_eq!(view.get("authorization"), Some("Bearer a,Bearer b"));

        let mut binary = HeaderMap::new();
        binary.append(
            "authorization",
            HeaderValue::from_bytes(b"Bearer \xff").unwrap(),
        );
        let view = CheckHeaders::of(&binary);
        assert!(matches!(view, CheckHeaders::Joined(_)));
        assert_eq!(view.get("authorization"), Some("Bearer \u{fffd}"));
    }

    /// Every ready-made name is a valid header name (`from_static` would panic on one that is
    /// not), the identity headers are all among them, and each metadata field's name is the
    /// prefix and the field.
    #[test]
    fn the_ready_made_names_cover_the_identity_headers_and_the_metadata_fields() {
        for name in crate::identity::IDENTITY_HEADERS
            .into_iter()
            .chain(OTHER_NAMES)
        {
            assert_eq!(
                HeaderName::from_bytes(name.as_bytes()).ok(),
                known_name(name),
                "{name}"
            );
        }
        for field in [
            "decision",
            "reason",
            "sub",
            "dry_run",
            "rule",
            "pool",
            "token_use",
        ] {
            assert_eq!(
                metadata_name(field).map(str::to_string),
                Some(format!("{METADATA_PREFIX}{field}"))
            );
        }
        assert_eq!(known_name("x-tenant-id"), None);
    }

    #[test]
    fn a_failure_is_never_a_200() {
        assert_eq!(fail_closed().status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
