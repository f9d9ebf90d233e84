//! A do-nothing ext_authz server: answers every Check with OK. The floor of the Envoy -> gRPC
//! hop in the benchmark. Usage: noop-authz ADDR [ANSWER.json] (ADDR host:port or unix:/path).
//!
//! Without ANSWER, the OK carries nothing (scenario (3)). With it, the like-for-like floor
//! (scenario (3l)): every OK carries what cognito-authz answers for the bench's token, built
//! once at start — the headers set (each replacing the client's, as cognito-authz sets them),
//! the headers removed and the decision as dynamic metadata. ANSWER is the JSON bench/run
//! writes from the sidecar's own answer: `{"set": [[name, value], ...], "remove": [name, ...],
//! "metadata": [[field, value], ...]}`.

use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, HeaderValue,
    HeaderValueOption, HttpResponse, OkHttpResponse,
};
use envoy_types::pb::google::protobuf::{value::Kind, BoolValue, Struct, Value as PbValue};
use serde_json::Value;
use tonic::{Request, Response, Status};

struct Noop(CheckResponse);

#[tonic::async_trait]
impl Authorization for Noop {
    async fn check(&self, _: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        Ok(Response::new(self.0.clone()))
    }
}

/// The pairs under `key` of the answer file.
fn pairs(answer: &Value, key: &str) -> Result<Vec<(String, String)>, String> {
    answer[key]
        .as_array()
        .ok_or(format!("the answer has no {key} list"))?
        .iter()
        .map(|pair| match pair.as_array().map(Vec::as_slice) {
            Some([Value::String(k), Value::String(v)]) => Ok((k.clone(), v.clone())),
            _ => Err(format!("{key}: {pair} is not a [name, value] pair")),
        })
        .collect()
}

/// The OK the server answers: empty, or the one `answer_file` describes.
#[allow(deprecated)] // Envoy 1.40 honours only `append` on an OK's headers (see src/authz.rs).
fn ok_response(answer_file: Option<&str>) -> Result<CheckResponse, Box<dyn std::error::Error>> {
    let mut ok = OkHttpResponse::default();
    let mut metadata = None;
    if let Some(path) = answer_file {
        let answer: Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
        ok.headers = pairs(&answer, "set")?
            .into_iter()
            .map(|(key, value)| HeaderValueOption {
                header: Some(HeaderValue {
                    key,
                    value,
                    ..Default::default()
                }),
                append: Some(BoolValue { value: false }),
                ..Default::default()
            })
            .collect();
        ok.headers_to_remove = answer["remove"]
            .as_array()
            .ok_or("the answer has no remove list")?
            .iter()
            .map(|name| {
                name.as_str()
                    .map(str::to_string)
                    .ok_or("a name to remove is not a string")
            })
            .collect::<Result<_, _>>()?;
        let fields = pairs(&answer, "metadata")?
            .into_iter()
            .map(|(field, value)| {
                let value = PbValue {
                    kind: Some(Kind::StringValue(value)),
                };
                (field, value)
            })
            .collect();
        metadata = Some(Struct { fields });
    }
    Ok(CheckResponse {
        status: Some(Default::default()),
        dynamic_metadata: metadata,
        http_response: Some(HttpResponse::OkResponse(ok)),
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().ok_or("usage: noop-authz ADDR [ANSWER.json]")?;
    let answer = ok_response(args.next().as_deref())?;
    let router = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(AuthorizationServer::new(Noop(answer)));
    if let Some(path) = addr.strip_prefix("unix:") {
        let _ = std::fs::remove_file(path);
        let listener = tokio::net::UnixListener::bind(path)?;
        router
            .serve_with_incoming(tokio_stream_unix(listener))
            .await?;
    } else {
        router.serve(addr.parse()?).await?;
    }
    Ok(())
}

fn tokio_stream_unix(
    listener: tokio::net::UnixListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::UnixStream>> {
    tokio_stream::wrappers::UnixListenerStream::new(listener)
}
