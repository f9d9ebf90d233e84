//! Arbitrary bytes as Envoy's CheckRequest through the authorizer: never a panic, never a
//! header both set and removed, never identity without a token.
use envoy_types::ext_authz::v3::pb::{CheckRequest, HttpResponse};
use prost::Message;

/// One input, as the fuzzer and the replay test give it.
pub fn run(data: &[u8]) {
    let Ok(request) = CheckRequest::decode(data) else {
        return;
    };
    let (authorizer, runtime) = super::common::authorizer();
    let Ok(response) = runtime.block_on(authorizer.check(&request)) else {
        return;
    };
    if let Some(HttpResponse::OkResponse(ok)) = &response.http_response {
        for header in &ok.headers {
            let name = &header.header.as_ref().expect("a header").key;
            assert!(
                !ok.headers_to_remove.contains(name),
                "{name} set and removed"
            );
        }
        let has_token = request
            .attributes
            .as_ref()
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref())
            .is_some_and(|h| h.headers.contains_key("authorization"));
        assert!(
            ok.headers.is_empty() || has_token,
            "identity without a token"
        );
    }
}
