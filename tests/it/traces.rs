//! Traces, with a real OTLP/gRPC receiver and the real binary: a Check carrying W3C context is a
//! child of it, with the decision on its span and never a token; sampling never changes a
//! decision; a dead or silent collector neither blocks nor slows the checks, and what it could
//! not take is counted in `/metrics`; through Envoy with its tracer, Envoy's spans and ours form
//! one trace, and the app receives its context.

use crate::common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cognito_authz::testkit::{access_claims, jwks, now, Behaviour, JwksServer, TestKey};
use common::otlp::{ReceivedSpan, Receiver};
use common::{answer, channel, check_request, env_for, Answer, CLIENT, ISS, POOL};
use cruddur_demo::stack::{Options, Ports, Protocol, Stack};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

/// cognito-authz as a process; killed when dropped.
struct Authz {
    child: Child,
    grpc: SocketAddr,
    admin: SocketAddr,
}

impl Drop for Authz {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

async fn start_authz(jwks_uri: &str, otel: &[(&str, &str)]) -> Authz {
    let (grpc, admin) = (free_addr(), free_addr());
    let mut vars = env_for(jwks_uri, otel);
    vars.insert("AUTHZ_GRPC_ADDR".into(), grpc.to_string());
    vars.insert("AUTHZ_ADMIN_ADDR".into(), admin.to_string());
    let child = Command::new(env!("CARGO_BIN_EXE_cognito-authz"))
        .arg("serve")
        .env_clear()
        .envs(&vars)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let authz = Authz { child, grpc, admin };
    let deadline = Instant::now() + Duration::from_secs(10);
    while common::http_get_opt(admin, "/readyz").await != Some(200) {
        assert!(
            Instant::now() < deadline,
            "cognito-authz never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    authz
}

/// A Check for `GET /api/x` with `token`, `traceparent` in the gRPC metadata when given, and
/// `headers` among the request's own.
async fn check(
    addr: SocketAddr,
    token: &str,
    metadata: Option<&str>,
    headers: &[(&str, &str)],
) -> Answer {
    let auth = format!("Bearer {token}");
    let mut all = vec![("authorization", auth.as_str())];
    all.extend_from_slice(headers);
    let mut request = tonic::Request::new(check_request("GET", "/api/x", &all, &[]));
    if let Some(traceparent) = metadata {
        request
            .metadata_mut()
            .insert("traceparent", traceparent.parse().unwrap());
    }
    let response = AuthorizationClient::new(channel(addr).await)
        .check(request)
        .await
        .expect("Check")
        .into_inner();
    answer(&response)
}

fn checks(spans: &[ReceivedSpan]) -> Vec<&ReceivedSpan> {
    spans.iter().filter(|s| s.name == "authz.check").collect()
}

fn metric(text: &str, line_start: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {line_start} in /metrics"))
}

/// An answer with its header maps in a fixed order, to compare two answers whole.
fn canonical(answer: Answer) -> String {
    match answer {
        Answer::Allowed { set, removed } => format!(
            "allow {:?} {removed:?}",
            set.into_iter().collect::<BTreeMap<_, _>>()
        ),
        Answer::Denied {
            status,
            headers,
            body,
        } => format!(
            "deny {status} {:?} {body}",
            headers.into_iter().collect::<BTreeMap<_, _>>()
        ),
    }
}

fn is_allowed(answer: &Answer) -> bool {
    matches!(answer, Answer::Allowed { .. })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_joins_the_callers_trace_and_records_its_decision_never_a_token() {
    let receiver = Receiver::start().await;
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let endpoint = receiver.endpoint();
    let authz = start_authz(
        &idp.url("/jwks.json"),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
            ("OTEL_SERVICE_NAME", "authz-under-test"),
        ],
    )
    .await;
    let token = TestKey::shared(0).token(&access_claims(ISS, CLIENT, now()));
    let traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");

    // From the gRPC metadata (Envoy's ext_authz span), twice: a cache miss, then a hit.
    for _ in 0..2 {
        assert!(is_allowed(
            &check(authz.grpc, &token, Some(&traceparent), &[]).await
        ));
    }
    // Only among the request's headers: the fallback.
    let fallback_trace = "0af7651916cd43dd8448eb211c80319c";
    let fallback = format!("00-{fallback_trace}-b7ad6b7169203331-01");
    assert!(is_allowed(
        &check(authz.grpc, &token, None, &[("traceparent", &fallback)]).await
    ));
    // Malformed: ignored, the check is a root of its own trace and decides the same.
    assert!(is_allowed(
        &check(authz.grpc, &token, Some("00-zz-not-a-context-01"), &[]).await
    ));
    // A denial records its reason.
    let denied = check(authz.grpc, "not.a.token", Some(&traceparent), &[]).await;
    assert!(matches!(denied, Answer::Denied { status: 401, .. }));

    let spans = receiver
        .wait_for(Duration::from_secs(10), |s| checks(s).len() >= 5)
        .await;
    let ours = checks(&spans);
    assert_eq!(ours.len(), 5, "{spans:#?}");
    for span in &ours {
        assert_eq!(span.service, "authz-under-test");
        let values: Vec<&String> = span.attributes.values().collect();
        for secret in [token.as_str(), token.rsplit('.').next().unwrap()] {
            assert!(
                !values.iter().any(|v| v.contains(secret)),
                "a token on a span: {span:?}"
            );
        }
        assert!(
            !span.attributes.contains_key("authorization"),
            "a header on a span: {span:?}"
        );
    }
    let in_trace: Vec<&&ReceivedSpan> = ours.iter().filter(|s| s.trace_id == TRACE_ID).collect();
    assert_eq!(in_trace.len(), 3, "two allows and the denial: {ours:#?}");
    for span in &in_trace {
        assert_eq!(span.parent_span_id, PARENT_ID, "{span:?}");
    }
    let attrs = |s: &ReceivedSpan| -> BTreeMap<String, String> { s.attributes.clone() };
    let first = attrs(in_trace[0]);
    assert_eq!(first["decision"], "allow");
    assert_eq!(first["reason"], "valid");
    assert_eq!(first["pool"], POOL);
    assert!(!first["rule"].is_empty());
    let caches: Vec<String> = in_trace[..2]
        .iter()
        .map(|s| attrs(s)["cache"].clone())
        .collect();
    assert_eq!(caches, ["miss", "hit"]);
    let denial = attrs(in_trace[2]);
    assert_eq!(
        (denial["decision"].as_str(), denial["reason"].as_str()),
        ("deny", "malformed")
    );
    let fallen_back: Vec<&&ReceivedSpan> = ours
        .iter()
        .filter(|s| s.trace_id == fallback_trace)
        .collect();
    assert_eq!(fallen_back.len(), 1);
    assert_eq!(fallen_back[0].parent_span_id, "b7ad6b7169203331");
    let roots: Vec<&&ReceivedSpan> = ours
        .iter()
        .filter(|s| s.trace_id != TRACE_ID && s.trace_id != fallback_trace)
        .collect();
    assert_eq!(roots.len(), 1);
    assert!(roots[0].parent_span_id.is_empty(), "{:?}", roots[0]);

    let (_, metrics) = common::http_get(authz.admin, "/metrics").await;
    assert!(metric(&metrics, "cognito_authz_trace_spans_exported_total") >= 5);
    assert_eq!(
        metric(
            &metrics,
            "cognito_authz_trace_spans_dropped_total{reason=\"queue_full\"}"
        ),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_never_changes_a_decision() {
    let receiver = Receiver::start().await;
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let endpoint = receiver.endpoint();
    let valid = TestKey::shared(0).token(&access_claims(ISS, CLIENT, now()));
    let foreign = TestKey::shared(3).token(&access_claims(ISS, CLIENT, now()));
    let traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    let mut decisions = Vec::new();
    for sampler in ["always_on", "always_off"] {
        let authz = start_authz(
            &idp.url("/jwks.json"),
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
                ("OTEL_BSP_SCHEDULE_DELAY", "50"),
                ("OTEL_TRACES_SAMPLER", sampler),
            ],
        )
        .await;
        let mut seen = Vec::new();
        for token in [&valid, &foreign, &"garbage".to_string()] {
            seen.push(canonical(
                check(authz.grpc, token, Some(&traceparent), &[]).await,
            ));
        }
        decisions.push(seen);
        // Before this process goes: always_on's three spans arrive; always_off's never do
        // (ten export delays later, still three).
        let spans = match sampler {
            "always_on" => {
                receiver
                    .wait_for(Duration::from_secs(10), |s| checks(s).len() >= 3)
                    .await
            }
            _ => {
                tokio::time::sleep(Duration::from_millis(500)).await;
                receiver.spans()
            }
        };
        assert_eq!(checks(&spans).len(), 3, "{sampler}: {spans:#?}");
    }
    assert_eq!(decisions[0], decisions[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_or_silent_collector_never_holds_a_check_and_drops_are_counted() {
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let token = TestKey::shared(0).token(&access_claims(ISS, CLIENT, now()));
    // Silent: accepts connections (the kernel's backlog) and never answers, so every export
    // waits for its whole timeout. Dead: nothing listens, so every export fails at once.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = free_addr();
    for (collector, full_queue) in [
        (format!("http://{}", silent.local_addr().unwrap()), true),
        (format!("http://{dead}"), false),
    ] {
        let authz = start_authz(
            &idp.url("/jwks.json"),
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", &collector),
                ("OTEL_BSP_MAX_QUEUE_SIZE", "16"),
                ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "8"),
                ("OTEL_BSP_SCHEDULE_DELAY", "10"),
                ("OTEL_BSP_EXPORT_TIMEOUT", "60000"),
            ],
        )
        .await;
        let mut client = AuthorizationClient::new(channel(authz.grpc).await);
        let auth = format!("Bearer {token}");
        let traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
        let n = 400;
        for _ in 0..n {
            let mut request = tonic::Request::new(check_request(
                "GET",
                "/api/x",
                &[("authorization", &auth)],
                &[],
            ));
            request
                .metadata_mut()
                .insert("traceparent", traceparent.parse().unwrap());
            // Never waits on the collector: a check held by an export would hit this bound.
            let response = tokio::time::timeout(Duration::from_secs(2), client.check(request))
                .await
                .expect("a check waited on the collector")
                .expect("Check");
            assert!(is_allowed(&answer(&response.into_inner())));
        }
        let (_, metrics) = common::http_get(authz.admin, "/metrics").await;
        let full = metric(
            &metrics,
            "cognito_authz_trace_spans_dropped_total{reason=\"queue_full\"}",
        );
        let failed = metric(
            &metrics,
            "cognito_authz_trace_spans_dropped_total{reason=\"export_failed\"}",
        );
        assert_eq!(
            metric(&metrics, "cognito_authz_trace_spans_exported_total"),
            0
        );
        if full_queue {
            // One batch in the export that hangs, the queue full behind it: the rest dropped.
            assert!(full >= n - 16 - 8, "only {full} of {n} dropped: {metrics}");
        } else {
            // Every export fails fast; whatever was not dropped for a full queue failed.
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut failed = failed;
            while full + failed <= n && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let (_, metrics) = common::http_get(authz.admin, "/metrics").await;
                failed = metric(
                    &metrics,
                    "cognito_authz_trace_spans_dropped_total{reason=\"export_failed\"}",
                );
            }
            assert!(failed > 0, "no export failed: {metrics}");
            // Every check's span, and the key fetch's at start, accounted for.
            assert!(full + failed > n, "{full} + {failed} of {n}: {metrics}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_envoy_its_spans_and_ours_form_one_trace_and_the_app_gets_the_context() {
    // Envoy passes its context in the gRPC metadata, or in the HTTP protocol's headers.
    for protocol in [Protocol::Grpc, Protocol::Http] {
        one_trace_through_envoy(protocol).await;
    }
}

async fn one_trace_through_envoy(protocol: Protocol) {
    let receiver = Receiver::start().await;
    let options = Options {
        protocol,
        traces: Some(receiver.endpoint()),
        ..Options::default()
    };
    let stack = Stack::start_options(
        common::stack_layout(&format!("traces-{protocol:?}")),
        Ports::ephemeral().unwrap(),
        options,
    )
    .await
    .unwrap_or_else(|e| panic!("the stack did not start: {e}"));
    let email = "traces@example.com";
    let cognito = stack.cognito();
    cognito
        .sign_up(email, "Traces-Passw0rd", "Trace", "traces")
        .await
        .unwrap();
    cognito.confirm_sign_up(email, "1").await.unwrap();
    let token = cognito
        .sign_in(email, "Traces-Passw0rd")
        .await
        .unwrap()
        .access;

    let response = reqwest::Client::new()
        .get(stack.url("/api/echo"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let last = stack.app_last_request().await.unwrap();
    let traceparent = last["headers"]["traceparent"]
        .as_str()
        .unwrap_or_else(|| panic!("the app got no traceparent: {last}"))
        .to_string();
    let trace_id = traceparent.split('-').nth(1).unwrap().to_string();

    let spans = receiver
        .wait_for(Duration::from_secs(15), |s| {
            let in_trace: Vec<&ReceivedSpan> =
                s.iter().filter(|x| x.trace_id == trace_id).collect();
            in_trace.iter().any(|x| x.name == "authz.check")
                && in_trace.iter().filter(|x| x.service == "envoy").count() >= 2
        })
        .await;
    let in_trace: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.trace_id == trace_id).collect();
    let ours = in_trace
        .iter()
        .find(|s| s.name == "authz.check")
        .unwrap_or_else(|| panic!("{protocol:?}: no check span in the trace: {spans:#?}"));
    assert_eq!(
        ours.attributes["rpc.system"],
        if protocol == Protocol::Grpc {
            "grpc"
        } else {
            "http"
        }
    );
    let envoy: Vec<&&ReceivedSpan> = in_trace.iter().filter(|s| s.service == "envoy").collect();
    assert!(
        envoy.len() >= 2,
        "Envoy's ingress and ext_authz spans: {in_trace:#?}"
    );
    let parent = envoy
        .iter()
        .find(|s| s.span_id == ours.parent_span_id)
        .unwrap_or_else(|| panic!("{protocol:?}: our span's parent is not Envoy's: {in_trace:#?}"));
    // Envoy's ext_authz call is itself a child of its ingress span, the trace's root.
    assert!(
        envoy.iter().any(|s| s.span_id == parent.parent_span_id),
        "{in_trace:#?}"
    );
    assert_eq!(ours.attributes["decision"], "allow");
    assert_eq!(ours.attributes["reason"], "valid");
    // The route asks Cognito: its GetUser call is a child of the check.
    let get_user = in_trace
        .iter()
        .find(|s| s.name == "cognito.GetUser")
        .unwrap_or_else(|| panic!("no GetUser span: {in_trace:#?}"));
    assert_eq!(get_user.parent_span_id, ours.span_id);
    assert_eq!(get_user.attributes["outcome"], "live");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_fetches_get_user_and_redis_calls_are_children_of_the_check() {
    let receiver = Receiver::start().await;
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let (_redis, redis_url) = common::Redis::start();
    let endpoint = receiver.endpoint();
    // Cognito's API is down: the revocation check asks Redis, then fails to reach GetUser.
    let cognito = format!("http://{}/", free_addr());
    let authz = start_authz(
        &idp.url("/jwks.json"),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
            ("AUTHZ_REDIS_URL", &redis_url),
            ("COGNITO_REVOCATION", "cognito"),
            ("COGNITO_IDP_ENDPOINT", &cognito),
            ("COGNITO_JWKS_MIN_REFETCH_SECONDS", "1"),
        ],
    )
    .await;
    // Redis is not asked while it is down: wait until the share is up.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, metrics) = common::http_get(authz.admin, "/metrics").await;
        if metric(&metrics, "cognito_authz_redis_up") == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "Redis never came up: {metrics}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    let valid = TestKey::shared(0).token(&access_claims(ISS, CLIENT, now()));
    let answer = check(authz.grpc, &valid, Some(&traceparent), &[]).await;
    assert!(
        matches!(answer, Answer::Denied { status: 503, .. }),
        "{answer:?}"
    );
    // A key the store lacks: one refetch, once the penalty window after the first fetch passed.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let other = format!("00-{}-{PARENT_ID}-01", "5".repeat(32));
    let unknown = TestKey::shared(3).token(&access_claims(ISS, CLIENT, now()));
    let answer = check(authz.grpc, &unknown, Some(&other), &[]).await;
    assert!(
        matches!(answer, Answer::Denied { status: 401, .. }),
        "{answer:?}"
    );

    let spans = receiver
        .wait_for(Duration::from_secs(10), |s| {
            s.iter().filter(|x| x.name == "authz.check").count() >= 2
                && s.iter().any(|x| x.name == "cognito.GetUser")
                && s.iter()
                    .any(|x| x.name == "jwks.fetch" && x.trace_id == "5".repeat(32))
        })
        .await;
    let check_in = |trace: &str| {
        spans
            .iter()
            .find(|s| s.name == "authz.check" && s.trace_id == trace)
            .unwrap_or_else(|| panic!("no check in {trace}: {spans:#?}"))
            .clone()
    };
    let revoked = check_in(TRACE_ID);
    assert_eq!(revoked.attributes["reason"], "revocation_unavailable");
    let children: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.parent_span_id == revoked.span_id)
        .collect();
    let get_user = children
        .iter()
        .find(|s| s.name == "cognito.GetUser")
        .unwrap_or_else(|| panic!("GetUser is not the check's child: {spans:#?}"));
    assert_eq!(get_user.attributes["outcome"], "unreachable");
    assert_eq!(get_user.status, "error");
    let redis: Vec<&&ReceivedSpan> = children.iter().filter(|s| s.name == "redis").collect();
    assert!(
        !redis.is_empty(),
        "no Redis call under the check: {spans:#?}"
    );
    for span in &redis {
        assert_eq!(span.attributes["db.system.name"], "redis");
        assert!(!span.attributes["db.operation.name"].is_empty());
    }
    let refetched = check_in(&"5".repeat(32));
    assert_eq!(refetched.attributes["reason"], "unknown_kid");
    let fetch = spans
        .iter()
        .find(|s| s.name == "jwks.fetch" && s.parent_span_id == refetched.span_id)
        .unwrap_or_else(|| panic!("the refetch is not the check's child: {spans:#?}"));
    assert_eq!(fetch.attributes["pool"], POOL);
    assert_eq!(fetch.attributes["outcome"], "ok");
    // The first fetch, at start, belongs to no request: a root of its own.
    assert!(spans
        .iter()
        .any(|s| s.name == "jwks.fetch" && s.parent_span_id.is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_own_traceparent_links_but_cannot_force_sampling() {
    let receiver = Receiver::start().await;
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let endpoint = receiver.endpoint();
    // Keep no trace of our own; follow the caller's choice when the caller is Envoy.
    let authz = start_authz(
        &idp.url("/jwks.json"),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0"),
        ],
    )
    .await;
    let token = TestKey::shared(0).token(&access_claims(ISS, CLIENT, now()));
    let client_trace = "c".repeat(32);
    let sampled_by_client = format!("00-{client_trace}-b7ad6b7169203331-01");
    let huge_state = format!("vendor={}", "x".repeat(250));
    for _ in 0..5 {
        let answer = check(
            authz.grpc,
            &token,
            None,
            &[
                ("traceparent", &sampled_by_client),
                ("tracestate", &huge_state),
            ],
        )
        .await;
        assert!(is_allowed(&answer));
    }
    // Envoy's context (the metadata) is followed: sampled there, sampled here.
    let traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    assert!(is_allowed(
        &check(authz.grpc, &token, Some(&traceparent), &[]).await
    ));
    let spans = receiver
        .wait_for(Duration::from_secs(10), |s| !checks(s).is_empty())
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let spans = [spans, receiver.spans()].concat();
    let ours = checks(&spans);
    assert!(!ours.is_empty(), "Envoy's sampled context was not followed");
    assert!(
        ours.iter().all(|s| s.trace_id == TRACE_ID),
        "a client's flag chose sampling: {ours:#?}"
    );
}

/// `GET path` through Envoy with the client's own `traceparent`: answered 200.
async fn through_envoy_with(stack: &Stack, path: &str, traceparent: &str) {
    let response = reqwest::Client::new()
        .get(stack.url(path))
        .header("traceparent", traceparent)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200, "{path}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http_a_clients_traceparent_neither_forces_sampling_nor_picks_the_trace() {
    // The shipped HTTP config with Envoy's tracer off, as shipped, and the client's traceparent
    // forwarded to the check, as a platform may be told to: the only traceparent the check
    // can see is the client's. cognito-authz exports, with the default switch.
    let receiver = Receiver::start().await;
    let otel = |sampler: &[(&str, &str)]| -> Vec<(String, String)> {
        [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint().as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ]
        .iter()
        .chain(sampler)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    };
    let options = Options {
        protocol: Protocol::Http,
        forward_to_check: vec!["traceparent".into()],
        // Keep no trace of our own; follow a caller we believe.
        authz_env: otel(&[
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0"),
        ]),
        ..Options::default()
    };
    let mut stack = Stack::start_options(
        common::stack_layout("traces-http-client"),
        Ports::ephemeral().unwrap(),
        options,
    )
    .await
    .unwrap_or_else(|e| panic!("the stack did not start: {e}"));
    let sampled = |trace: &str| format!("00-{trace}-b7ad6b7169203331-01");
    let (forced, unsampled) = ("c".repeat(32), "d".repeat(32));

    // 1. Our sampler keeps nothing: a client's sampled flag does not make it keep a span.
    for _ in 0..3 {
        through_envoy_with(&stack, "/healthz", &sampled(&forced)).await;
    }
    // The control, after them on the same exporter: a context from the gRPC metadata, which
    // only Envoy writes, is followed.
    let traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    check(stack.authz_addr(), "x", Some(&traceparent), &[]).await;
    receiver
        .wait_for(Duration::from_secs(10), |s| {
            checks(s).iter().any(|x| x.trace_id == TRACE_ID)
        })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let spans = receiver.spans();
    let ours = checks(&spans);
    assert!(
        ours.iter().all(|s| s.trace_id == TRACE_ID),
        "a client's flag chose sampling: {ours:#?}"
    );

    // 2. Our sampler keeps every trace of its own: a client's context names neither the trace
    // nor the parent (sampled or not, it is only linked).
    stack.kill_authz().unwrap();
    stack.set_authz_env(otel(&[]));
    stack.start_authz().await.unwrap();
    let before = ours.len();
    through_envoy_with(&stack, "/healthz", &sampled(&forced)).await;
    through_envoy_with(
        &stack,
        "/healthz",
        &format!("00-{unsampled}-b7ad6b7169203331-00"),
    )
    .await;
    let spans = receiver
        .wait_for(Duration::from_secs(10), |s| checks(s).len() >= before + 2)
        .await;
    let all = checks(&spans);
    let ours = &all[before..];
    for claimed in [&forced, &unsampled] {
        let span = ours
            .iter()
            .find(|s| s.links.iter().any(|(trace, _)| trace == claimed))
            .unwrap_or_else(|| panic!("no check span links to {claimed}: {ours:#?}"));
        assert_ne!(&span.trace_id, claimed, "the client picked the trace");
        assert!(
            span.parent_span_id.is_empty(),
            "a client's parent: {span:?}"
        );
        assert_eq!(
            span.links,
            [(claimed.clone(), "b7ad6b7169203331".to_string())]
        );
    }
}
