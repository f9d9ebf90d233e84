//! Our own gRPC diagnostics API (`proto/cognito_authz/diagnostics/v1`): the `verify` command's
//! verdict and the key store's state, over the same port as Envoy's Check.

use serde_json::Value;
use tonic::{Request, Response, Status};

use crate::decision::Authorizer;
use crate::generated::diagnostics::diagnostics_server::Diagnostics;
use crate::generated::diagnostics::{
    KeyStatusRequest, KeyStatusResponse, PoolKeyStatus, VerifyTokenRequest, VerifyTokenResponse,
};
use crate::revocation_check::RevocationStatus;
use crate::verify::unverified_payload;

/// The diagnostics service.
#[derive(Clone)]
pub struct DiagnosticsService {
    authorizer: Authorizer,
}

impl DiagnosticsService {
    /// A service answering for the authorizer's current configuration.
    pub fn new(authorizer: Authorizer) -> DiagnosticsService {
        DiagnosticsService { authorizer }
    }

    /// The verdict for a token (`Bearer ` prefix allowed), as `cognito-authz verify` gives it.
    pub async fn verify_token(&self, token: &str) -> VerifyTokenResponse {
        let token = crate::credential::pasted_token(token);
        let now = self.authorizer.clock().now();
        match self.authorizer.verifier().verify_at(token, now).await {
            Ok(claims) => {
                let ask_cognito = self.authorizer.checks_cognito_by_default();
                let revocation = match self.authorizer.revocation_checker() {
                    Some(checker) => {
                        checker
                            .diagnose(token, &claims, &self.authorizer.revocations(), ask_cognito)
                            .await
                    }
                    None => RevocationStatus::Off,
                };
                VerifyTokenResponse {
                    // A token whose revocation status is unknown is not valid.
                    valid: revocation.is_valid(),
                    reason: revocation.reason().unwrap_or_default().to_string(),
                    pool_id: claims.pool_id,
                    claims: Some(to_struct(claims.raw.into_map())),
                    revocation_checked: revocation != RevocationStatus::Off,
                    revocation: revocation.as_str().to_string(),
                    ..Default::default()
                }
            }
            Err(rejection) => VerifyTokenResponse {
                valid: false,
                reason: rejection.reason.as_str().to_string(),
                detail: rejection.detail.to_string(),
                claims: unverified_payload(token).map(to_struct),
                ..Default::default()
            },
        }
    }

    /// The key store's state.
    pub fn key_status(&self) -> KeyStatusResponse {
        KeyStatusResponse {
            pools: self
                .authorizer
                .verifier()
                .keys()
                .status()
                .into_iter()
                .map(|s| PoolKeyStatus {
                    pool_id: s.pool_id,
                    issuers: s.issuers,
                    jwks_uri: s.jwks_uri,
                    kids: s.kids,
                    last_success: s.last_success.map(prost_types::Timestamp::from),
                    last_error: s.last_error.unwrap_or_default(),
                    fetches_ok: s.fetches_ok,
                    fetches_failed: s.fetches_failed,
                })
                .collect(),
        }
    }
}

#[tonic::async_trait]
impl Diagnostics for DiagnosticsService {
    async fn verify_token(
        &self,
        request: Request<VerifyTokenRequest>,
    ) -> Result<Response<VerifyTokenResponse>, Status> {
        Ok(Response::new(
            DiagnosticsService::verify_token(self, &request.get_ref().token).await,
        ))
    }

    async fn key_status(
        &self,
        _request: Request<KeyStatusRequest>,
    ) -> Result<Response<KeyStatusResponse>, Status> {
        Ok(Response::new(DiagnosticsService::key_status(self)))
    }
}

fn to_struct(map: serde_json::Map<String, Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: map.into_iter().map(|(k, v)| (k, to_value(v))).collect(),
    }
}

fn to_value(value: Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => Kind::StringValue(s),
        Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.into_iter().map(to_value).collect(),
        }),
        Value::Object(map) => Kind::StructValue(to_struct(map)),
    };
    prost_types::Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_becomes_a_protobuf_struct() {
        let json = serde_json::json!({"a": [1, "x", null, {"b": true}]});
        let Value::Object(map) = json else {
            unreachable!()
        };
        let s = to_struct(map);
        let prost_types::value::Kind::ListValue(list) = s.fields["a"].kind.clone().unwrap() else {
            panic!("a list")
        };
        assert_eq!(list.values.len(), 4);
        assert_eq!(
            list.values[1].kind,
            Some(prost_types::value::Kind::StringValue("x".into()))
        );
    }
}
