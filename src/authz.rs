//! Envoy's ext_authz v3 gRPC protocol: a `CheckRequest` becomes a [`CheckInput`], the decision
//! core decides, and its [`Outcome`] becomes a `CheckResponse` — identity headers set with
//! `append: false`, removals in `headers_to_remove`, a denial as an in-band `DeniedHttpResponse`,
//! the decision as dynamic metadata.
//!
//! Only a `CheckRequest` Envoy itself malformed (no HTTP attributes, an unknown
//! `context_extensions` value) is a gRPC error, which Envoy turns into its `status_on_error`:
//! nothing is ever allowed because something went wrong.

use envoy_types::ext_authz::v3::pb::{
    Authorization, CheckRequest, CheckResponse, DeniedHttpResponse, HeaderValue, HeaderValueOption,
    HttpResponse, HttpStatus, OkHttpResponse,
};
use envoy_types::pb::google::protobuf::{value::Kind, BoolValue, Struct, Value as PbValue};
use envoy_types::pb::google::rpc;
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

pub use crate::decision::Authorizer;
use crate::decision::{Answer, CheckInput, Outcome};

impl Authorizer {
    /// Decides one Check and builds Envoy's answer.
    pub async fn check(&self, request: &CheckRequest) -> Result<CheckResponse, Status> {
        let attributes = request
            .attributes
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("CheckRequest has no attributes"))?;
        let http = attributes
            .request
            .as_ref()
            .and_then(|r| r.http.as_ref())
            .ok_or_else(|| Status::invalid_argument("CheckRequest has no HTTP request"))?;
        let input = CheckInput {
            method: &http.method,
            host: &http.host,
            path: &http.path,
            headers: &http.headers,
            extensions: &attributes.context_extensions,
        };
        let outcome = self
            .decide(&input)
            .await
            .map_err(|err| Status::invalid_argument(err.to_string()))?;
        Ok(check_response(outcome))
    }
}

/// The gRPC rendering of an outcome.
fn check_response(outcome: Outcome) -> CheckResponse {
    let metadata = Struct {
        fields: outcome
            .metadata
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    PbValue {
                        kind: Some(Kind::StringValue(v.to_string())),
                    },
                )
            })
            .collect(),
    };
    match outcome.answer {
        Answer::Allow(rewrite) => CheckResponse {
            status: Some(rpc::Status {
                code: tonic::Code::Ok as i32,
                ..Default::default()
            }),
            dynamic_metadata: Some(metadata),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                headers: rewrite
                    .set()
                    .map(|(k, v)| overwrite(k.to_string(), v.to_string()))
                    .collect(),
                headers_to_remove: rewrite.remove().map(str::to_string).collect(),
                ..Default::default()
            })),
        },
        Answer::Deny {
            status,
            headers,
            body,
        } => {
            let grpc_code = match status {
                403 => tonic::Code::PermissionDenied,
                503 => tonic::Code::Unavailable,
                _ => tonic::Code::Unauthenticated,
            };
            CheckResponse {
                status: Some(rpc::Status {
                    code: grpc_code as i32,
                    message: outcome.verdict.reason.to_string(),
                    ..Default::default()
                }),
                dynamic_metadata: Some(metadata),
                http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
                    status: Some(HttpStatus {
                        code: i32::from(status),
                    }),
                    headers: headers
                        .into_iter()
                        .map(|(k, v)| overwrite(k.to_string(), v))
                        .collect(),
                    body,
                })),
            }
        }
    }
}

/// A header that replaces any client-sent header of the same name. Envoy 1.40 honours only the
/// deprecated `append` flag here (it ignores `append_action`), so it is set explicitly.
#[allow(deprecated)]
fn overwrite(key: String, value: String) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key,
            value,
            ..Default::default()
        }),
        append: Some(BoolValue { value: false }),
        ..Default::default()
    }
}

/// The tonic service: a thin shell over [`Authorizer::check`].
#[derive(Clone)]
pub struct AuthzService {
    authorizer: Authorizer,
}

impl AuthzService {
    /// Wraps an authorizer.
    pub fn new(authorizer: Authorizer) -> AuthzService {
        AuthzService { authorizer }
    }
}

#[tonic::async_trait]
impl Authorization for AuthzService {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        // Envoy's ext_authz span travels in the gRPC metadata; without one, a `traceparent`
        // among the request's headers (the client's own, when Envoy forwards it) will do.
        let span = crate::trace::check_span("grpc");
        let headers = request
            .get_ref()
            .attributes
            .as_ref()
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref())
            .map(|http| &http.headers);
        crate::trace::adopt_parent(
            &span,
            request.metadata(),
            headers.map(|h| h as &dyn crate::trace::Carrier),
        );
        self.authorizer
            .check(request.get_ref())
            .instrument(span)
            .await
            .map(Response::new)
    }
}
