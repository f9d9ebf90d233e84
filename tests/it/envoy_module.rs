//! cognito-authz inside Envoy: the pinned Envoy 1.40 loads `libcognito_authz_envoy.so` (built
//! by `scripts/test`, `cargo build -p cognito-authz-envoy`) through the shipped
//! `envoy/envoy.module.yaml`, in front of the demo app, with no sidecar. Judged by what the
//! client got and what the upstream received: the walkthrough, spoof stripping in every
//! spelling and on every path, the hostile-token set, key rotation, the IdP down at start-up,
//! failing closed when the filter cannot decide, and the module's lifetimes (streams reset and
//! Envoy stopped while checks wait, a per-route config another module made).

use crate::common;

use cognito_authz::testkit::{
    access_claims, b64, id_claims, jwks, now, Behaviour, JwksServer, TestKey,
};
use cruddur_demo::stack::{Layout, Options, Ports, Protocol, Stack};
use cruddur_demo::walkthrough::{self, get, payload};
use serde_json::{json, Value};

fn layout(name: &str) -> Layout {
    let layout = common::stack_layout(name);
    let module = layout.bin_dir.join("libcognito_authz_envoy.so");
    assert!(
        module.exists(),
        "{} is missing: build it with `cargo build -p cognito-authz-envoy` (scripts/test does)",
        module.display()
    );
    layout
}

/// The stack with the module in Envoy, and `env` for it (Envoy's environment).
async fn module_stack(name: &str, env: &[(&str, String)]) -> Stack {
    module_stack_with(name, env, false).await
}

/// The stack with the module in Envoy, `env` for it, and a Redis it shares revocations through
/// when `redis`.
async fn module_stack_with(name: &str, env: &[(&str, String)], redis: bool) -> Stack {
    let options = Options {
        protocol: Protocol::Module,
        authz_env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        redis,
        ..Options::default()
    };
    Stack::start_options(layout(name), Ports::ephemeral().unwrap(), options)
        .await
        .unwrap_or_else(|e| panic!("the stack did not start: {e}"))
}

/// The identity headers the upstream received on its last request.
async fn identity_seen(stack: &Stack) -> Vec<(String, Value)> {
    let last = stack.app_last_request().await.unwrap();
    last["headers"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with("x-cognito-"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_walkthrough_and_spoofed_headers_with_the_module_in_envoy() {
    let stack = module_stack("module-e2e", &[]).await;
    let log = std::fs::read_to_string(stack.log_path("envoy")).unwrap();
    assert!(
        log.contains("Dynamic module ABI version v0.2.0 matched"),
        "Envoy did not match the module's ABI version:\n{log}"
    );
    assert!(!log.contains("deprecated"), "Envoy warned:\n{log}");

    // 1. The walkthrough, every step, as with the sidecar.
    let steps = walkthrough::run(&stack, |_| {}).await;
    let failed: Vec<String> = steps
        .iter()
        .filter(|s| !s.ok)
        .map(|s| format!("{}: {}", s.title, s.lines.join("; ")))
        .collect();
    assert!(
        steps.len() >= 12,
        "the walkthrough stopped early: {steps:?}"
    );
    assert!(
        failed.is_empty(),
        "walkthrough steps failed:\n{}",
        failed.join("\n")
    );

    // 2. Spoofing: on an allow the upstream sees our identity, whatever the client sent and
    // however it spelled it; on an anonymous or public allow it sees none.
    let tokens = stack
        .cognito()
        .sign_in(walkthrough::EMAIL, "Cruddur-Bootcamp-2")
        .await
        .expect("the walkthrough's final password signs in");
    let sub = payload(&tokens.access)["sub"].as_str().unwrap().to_string();
    let spoofs = [
        ("x-cognito-sub", "spoof"),
        ("X-Cognito-Groups", "spoof"),
        ("X-COGNITO-EXTRA", "spoof"),
        ("x-cognito-username", "root"),
    ];
    let seen = get(&stack, "/api/echo", Some(&tokens.access), &spoofs).await;
    assert_eq!(seen.status.as_u16(), 200, "{}", seen.body);
    let identity = identity_seen(&stack).await;
    assert!(
        identity.contains(&("x-cognito-sub".into(), json!(sub))),
        "{identity:?}"
    );
    for (name, value) in &identity {
        assert_ne!(
            value, "spoof",
            "{name} reached the app as the client sent it"
        );
        assert_ne!(
            value, "root",
            "{name} reached the app as the client sent it"
        );
    }
    assert!(
        !identity.iter().any(|(k, _)| k == "x-cognito-extra"),
        "{identity:?}"
    );
    for (path, token) in [("/api/activities/home", None), ("/healthz", None)] {
        let seen = get(&stack, path, token, &spoofs).await;
        assert_eq!(seen.status.as_u16(), 200, "{path}: {}", seen.body);
        let identity = identity_seen(&stack).await;
        assert!(identity.is_empty(), "{path}: the app saw {identity:?}");
    }
    // A header repeated by the client goes whole.
    let repeated = reqwest::Client::new()
        .get(stack.url("/api/activities/home"))
        .header("x-cognito-sub", "one")
        .header("x-cognito-sub", "two")
        .send()
        .await
        .unwrap();
    assert_eq!(repeated.status().as_u16(), 200);
    assert!(identity_seen(&stack).await.is_empty());

    // 3. The decision is in Envoy's dynamic metadata under the sidecar's keys (access log).
    let before = stack.app_requests().await.unwrap();
    let denied = get(&stack, "/api/echo", None, &spoofs).await;
    assert_eq!(
        (denied.status.as_u16(), denied.body["reason"].as_str()),
        (401, Some("no_token"))
    );
    assert!(denied.challenge.unwrap().starts_with("Bearer realm="));
    assert_eq!(
        stack.app_requests().await.unwrap(),
        before,
        "a denial reached the app"
    );

    // 4. Envoy's Prometheus page shows the walkthrough's decisions, under the sidecar's names.
    let text = prometheus_until(&stack, |_| true).await;
    let decisions = "cognito_authz_decisions_total";
    for labels in [
        [("decision", "allow"), ("reason", "valid")],
        [("decision", "allow_anonymous"), ("reason", "public")],
        [("decision", "deny"), ("reason", "no_token")],
    ] {
        assert!(
            sample(&text, decisions, &labels) >= Some(1.0),
            "{labels:?} not counted in\n{text}"
        );
    }
}

/// A local JWKS the module fetches instead of the emulator's, so the test signs its own
/// tokens for the stack's pool and client.
struct Idp {
    server: JwksServer,
    issuer: String,
    client: String,
}

impl Idp {
    fn claims(&self) -> Value {
        access_claims(&self.issuer, &self.client, now())
    }

    fn token(&self, key: usize) -> String {
        TestKey::shared(key).token(&self.claims())
    }

    fn with_claims(&self, edit: impl FnOnce(&mut Value)) -> String {
        let mut claims = self.claims();
        edit(&mut claims);
        TestKey::shared(0).token(&claims)
    }
}

/// The stack over a local JWKS that starts out answering `behaviour`.
async fn stack_over_local_keys(name: &str, behaviour: Behaviour) -> (Stack, Idp) {
    let server = JwksServer::start(behaviour).await;
    // Unknown-kid refetches at most once a second (the default is longer): the rotation below
    // comes right after the hostile tokens' unknown kids.
    let env = [
        ("COGNITO_JWKS_URI", server.url("/jwks.json")),
        ("COGNITO_JWKS_MIN_REFETCH_SECONDS", "1".to_string()),
    ];
    let stack = module_stack(name, &env).await;
    let idp = Idp {
        server,
        issuer: format!(
            "https://cognito-idp.us-east-1.amazonaws.com/{}",
            stack.pool.pool_id
        ),
        client: stack.pool.client_id.clone(),
    };
    (stack, idp)
}

/// (status, reason) for `token` on a route that requires one (the catch-all rule).
async fn verdict(stack: &Stack, token: &str) -> (u16, String) {
    let seen = get(stack, "/elsewhere", Some(token), &[]).await;
    let reason = seen.body["reason"].as_str().unwrap_or("").to_string();
    (seen.status.as_u16(), reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_idp_down_at_start_then_hostile_tokens_then_a_rotated_key() {
    let (stack, idp) = stack_over_local_keys("module-keys", Behaviour::Status(503)).await;

    // 1. The IdP is down as Envoy starts: every token is refused (503, the keys are not
    // there), nothing reaches the app; once it answers, the same token passes.
    let before = stack.app_requests().await.unwrap();
    assert_eq!(
        verdict(&stack, &idp.token(0)).await,
        (503, "keys_unavailable".to_string())
    );
    assert_eq!(stack.app_requests().await.unwrap(), before);
    idp.server.set(Behaviour::Json(jwks(&[TestKey::shared(0)])));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let seen = get(&stack, "/api/activities/home", Some(&idp.token(0)), &[]).await;
        if seen.status.as_u16() == 200 && !seen.body["viewer"].is_null() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the keys never arrived: {} {}",
            seen.status,
            seen.body
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    // 2. Hostile tokens: each refused with its reason; none reaches the app.
    let evil = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(3)]))).await;
    let header = |h: Value| TestKey::shared(0).token_with_header(&h, &idp.claims());
    let kid = TestKey::shared(0).kid.clone();
    let hostile: Vec<(&str, String, u16, &str)> = vec![
        ("alg none", header(json!({"alg": "none", "kid": kid})), 401, "unsupported_alg"),
        ("unsigned", format!("{}.{}.", b64(br#"{"alg":"none"}"#), b64(idp.claims().to_string().as_bytes())), 401, "malformed"),
        ("RS384", header(json!({"alg": "RS384", "kid": kid})), 401, "unsupported_alg"),
        ("unknown kid", header(json!({"alg": "RS256", "kid": "not-a-kid"})), 401, "unknown_kid"),
        ("jku", TestKey::shared(3).token_with_header(&json!({"alg": "RS256", "kid": TestKey::shared(3).kid, "jku": evil.url("/jwks.json")}), &idp.claims()), 401, "unknown_kid"),
        ("embedded jwk", TestKey::shared(3).token_with_header(&json!({"alg": "RS256", "kid": kid, "jwk": TestKey::shared(3).jwk()}), &idp.claims()), 401, "bad_signature"),
        ("expired", idp.with_claims(|c| c["exp"] = json!(now() - 600)), 401, "expired"),
        ("exp huge", idp.with_claims(|c| c["exp"] = json!(i64::MAX)), 401, "invalid_claims"),
        ("nbf ahead", idp.with_claims(|c| c["nbf"] = json!(now() + 600)), 401, "not_yet_valid"),
        ("another issuer", idp.with_claims(|c| c["iss"] = json!("https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Evil")), 401, "unknown_issuer"),
        ("another client", idp.with_claims(|c| c["client_id"] = json!("another-client")), 401, "wrong_client"),
        ("refresh token_use", idp.with_claims(|c| c["token_use"] = json!("refresh")), 401, "wrong_token_use"),
        ("id token", TestKey::shared(0).token(&id_claims(&idp.issuer, &idp.client, now())), 401, "wrong_token_use"),
        ("CRLF in a claim", idp.with_claims(|c| c["username"] = json!("eve\r\nx-cognito-sub: admin")), 401, "unsafe_claim"),
        ("oversized", idp.with_claims(|c| c["padding"] = json!("x".repeat(20_000))), 401, "malformed"),
        ("whitespace inside", { let t = idp.token(0); let p: Vec<&str> = t.split('.').collect(); format!("{}. {}.{}", p[0], p[1], p[2]) }, 400, "invalid_request"),
    ];
    let before = stack.app_requests().await.unwrap();
    for (what, token, status, reason) in &hostile {
        assert_eq!(
            verdict(&stack, token).await,
            (*status, reason.to_string()),
            "{what}"
        );
    }
    let two = reqwest::Client::new()
        .get(stack.url("/elsewhere"))
        .bearer_auth(idp.token(0))
        .header("authorization", format!("Bearer {}", idp.token(0)))
        .send()
        .await
        .unwrap();
    assert_eq!(two.status().as_u16(), 400, "two authorization headers");
    assert_eq!(evil.hits(), 0, "a server a token named was contacted");
    assert_eq!(
        stack.app_requests().await.unwrap(),
        before,
        "a hostile request reached the app"
    );

    // 3. Key rotation: the IdP publishes a new key and drops the old one; a token signed with
    // the new key passes after one refetch (the unknown kid, off the worker thread).
    // First the key store settles: no fetch for longer than the refetch interval, so no
    // refetch the hostile kids left pending can fetch the new keys ahead of the new token.
    let settle_by = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let fetched = loop {
        let fetched = idp.server.hits();
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        if idp.server.hits() == fetched {
            break fetched;
        }
        assert!(
            std::time::Instant::now() < settle_by,
            "the key store kept fetching for 20 s"
        );
    };
    idp.server.set(Behaviour::Json(jwks(&[TestKey::shared(1)])));
    let seen = get(&stack, "/api/activities/home", Some(&idp.token(1)), &[]).await;
    assert_eq!(seen.status.as_u16(), 200, "{}", seen.body);
    assert!(
        !seen.body["viewer"].is_null(),
        "the rotated key was not used: {}",
        seen.body
    );
    assert_eq!(
        idp.server.hits(),
        fetched + 1,
        "one refetch for the new kid"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_shared_through_redis_reaches_the_module() {
    // A replica (here the test, through the library's own publisher) revokes a user in Redis;
    // the module, subscribed from its runtime, refuses that user's token from then on.
    use cognito_authz::metrics::Metrics;
    use cognito_authz::revocation::{Entry, Revocation};
    use cognito_authz::shared::Shared;
    let server = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let stack = module_stack_with(
        "module-redis",
        &[("COGNITO_JWKS_URI", server.url("/jwks.json"))],
        true,
    )
    .await;
    let issuer = format!(
        "https://cognito-idp.us-east-1.amazonaws.com/{}",
        stack.pool.pool_id
    );
    let mut claims = access_claims(&issuer, &stack.pool.client_id, now() - 30);
    claims["exp"] = json!(now() + 3600);
    let sub = claims["sub"].as_str().unwrap().to_string();
    let token = TestKey::shared(0).token(&claims);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while verdict(&stack, &token).await.0 == 503 {
        assert!(
            std::time::Instant::now() < deadline,
            "the keys never arrived"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let (status, reason) = verdict(&stack, &token).await;
    assert!(
        status != 401 && status != 403,
        "refused before the revocation: {reason}"
    );

    let port = stack.redis_port.expect("the stack's Redis");
    let shared = Shared::new(
        &format!("redis://127.0.0.1:{port}/"),
        std::sync::Arc::new(Metrics::new()),
        &[],
    )
    .unwrap();
    // The publisher needs its own subscription up, as a replica's does.
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    let _subscriber = shared.spawn_subscriber(std::sync::Arc::default(), stop_rx);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !shared.is_up() {
        assert!(
            std::time::Instant::now() < deadline,
            "the test's Redis link never came up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let revocation = Revocation::Sub { sub, before: now() };
    shared
        .publish(&Entry::new(revocation, now(), 86_400))
        .await
        .expect("published to Redis");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (status, reason) = verdict(&stack, &token).await;
        if (status, reason.as_str()) == (401, "revoked") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the module never saw the revocation: {status} {reason}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// A plain hand-written Envoy config around the module: one listener, a route whose
/// per-route config is `route_override` (JSON), the rest under the module's catch-all rule,
/// and `upstream` as the only cluster.
fn hand_written_config(listen: u16, admin: u16, plain: &Plain<'_>) -> String {
    let (upstream, route_override) = (plain.upstream, plain.route_override);
    let route_module = plain.route_module;
    // A JSON string is a YAML scalar: the TOML goes in as it is.
    let filter_toml = serde_json::to_string(plain.filter_toml).unwrap();
    // Trailers reach an upstream over HTTP/2 (HTTP/1.1 drops them unless told otherwise).
    let protocol = if plain.upstream_http2 {
        r#"
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: { http2_protocol_options: {} }"#
    } else {
        ""
    };
    format!(
        r#"admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
static_resources:
  listeners:
  - address: {{ socket_address: {{ address: 127.0.0.1, port_value: {listen} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: plain
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ path: /special }}
                route: {{ cluster: upstream }}
                typed_per_filter_config:
                  envoy.filters.http.dynamic_modules:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilterPerRoute
                    dynamic_module_config: {{ name: {route_module} }}
                    filter_config:
                      "@type": type.googleapis.com/google.protobuf.Struct
                      value: {route_override}
              - match: {{ prefix: / }}
                route: {{ cluster: upstream }}
          http_filters:
          - name: envoy.filters.http.dynamic_modules
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter
              dynamic_module_config: {{ name: cognito_authz_envoy }}
              filter_name: cognito-authz
              filter_config:
                "@type": type.googleapis.com/google.protobuf.StringValue
                value: {filter_toml}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: upstream
    connect_timeout: 0.25s{protocol}
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {upstream} }} }} }}
"#
    )
}

/// An upstream that counts the requests it receives.
async fn counting_upstream() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let count = std::sync::Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().fallback({
        let count = std::sync::Arc::clone(&count);
        move || {
            count.fetch_add(1, Ordering::SeqCst);
            async { "upstream" }
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, count)
}

/// Envoy with a hand-written config and the module from `search_path`; killed on drop.
struct PlainEnvoy {
    child: std::process::Child,
    port: u16,
    log: std::path::PathBuf,
}

impl Drop for PlainEnvoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a hand-written Envoy around the module is given.
struct Plain<'a> {
    search_path: &'a std::path::Path,
    route_override: &'a str,
    filter_toml: &'a str,
    upstream: u16,
    jwks_uri: &'a str,
    /// Whether Envoy speaks HTTP/2 to the upstream.
    upstream_http2: bool,
    /// The module that makes the `/special` route's per-route config.
    route_module: &'a str,
}

/// The module's name, as Envoy looks it up (`lib{MODULE}.so` on its search path).
const MODULE: &str = "cognito_authz_envoy";

/// Envoy with a hand-written config and the module from `search_path`; its log if it would not
/// start.
async fn plain_envoy(name: &str, plain: Plain<'_>) -> Result<PlainEnvoy, String> {
    let layout = layout(name);
    let [listen, admin] = free_ports();
    std::fs::create_dir_all(&layout.work_dir).unwrap();
    let config = layout.work_dir.join("plain-envoy.yaml");
    let text = hand_written_config(listen, admin, &plain);
    std::fs::write(&config, text).unwrap();
    let log = layout.work_dir.join("plain-envoy.log");
    let file = std::fs::File::create(&log).unwrap();
    let child = std::process::Command::new(layout.tool("envoy"))
        .arg("-c")
        .arg(&config)
        .args([
            "--disable-hot-restart",
            "--concurrency",
            "1",
            "--log-level",
            "warn",
        ])
        .env("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", plain.search_path)
        .env("AWS_COGNITO_USER_POOL_ID", "us-east-1_PlainPool")
        .env("AWS_COGNITO_USER_POOL_CLIENT_ID", "plain-client")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("COGNITO_JWKS_URI", plain.jwks_uri)
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    let mut envoy = PlainEnvoy {
        child,
        port: listen,
        log,
    };
    let ready = format!("http://127.0.0.1:{admin}/ready");
    for _ in 0..100 {
        if reqwest::get(&ready)
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(envoy);
        }
        if envoy.child.try_wait().unwrap().is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Err(std::fs::read_to_string(&envoy.log).unwrap_or_default())
}

fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<std::net::TcpListener> = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().unwrap().port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_route_config_the_module_cannot_read_keeps_envoy_from_starting() {
    // A typo in a route's policy, or a key without our prefix, would leave the route without
    // the policy it was meant to have: the config is refused at load, naming the problem.
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let (upstream, _) = counting_upstream().await;
    let bin_dir = common::stack_layout("module-refused-bin").bin_dir;
    for (route_override, named) in [
        (
            r#"{ "cognito_authz.mode": "sometimes" }"#,
            "'sometimes' is not public",
        ),
        (
            r#"{ "groups_any": "admins" }"#,
            "groups_any is not a cognito_authz.* key",
        ),
    ] {
        let refused = plain_envoy(
            "module-refused",
            Plain {
                search_path: &bin_dir,
                route_override,
                filter_toml: "",
                upstream,
                jwks_uri: &idp.url("/jwks.json"),
                upstream_http2: false,
                route_module: MODULE,
            },
        )
        .await;
        let log = match refused {
            Ok(_) => panic!("Envoy started with {route_override}"),
            Err(log) => log,
        };
        assert!(log.contains(named), "{route_override}:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cores_warnings_reach_envoys_log() {
    // Dry-run mode lets every denial through: it must not be on without a word in Envoy's log.
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let (upstream, _) = counting_upstream().await;
    let bin_dir = common::stack_layout("module-warn-bin").bin_dir;
    let envoy = plain_envoy(
        "module-warn",
        Plain {
            search_path: &bin_dir,
            route_override: r#"{ "cognito_authz.mode": "public" }"#,
            filter_toml: "[server]\ndry_run = true\n",
            upstream,
            jwks_uri: &idp.url("/jwks.json"),
            upstream_http2: false,
            route_module: MODULE,
        },
    )
    .await
    .unwrap_or_else(|log| panic!("Envoy did not start:\n{log}"));
    let log = std::fs::read_to_string(&envoy.log).unwrap();
    assert!(log.contains("dry-run mode"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_override_that_conflicts_with_its_rule_fails_closed_in_a_plain_config() {
    // The route's rule (the filter's TOML) requires a group; the route's override makes it
    // public. Which was meant cannot be known at load: each request is refused (500), never
    // let through.
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let (upstream, count) = counting_upstream().await;
    let bin_dir = common::stack_layout("module-plain-bin").bin_dir;
    let envoy = plain_envoy(
        "module-plain",
        Plain {
            search_path: &bin_dir,
            route_override: r#"{ "cognito_authz.mode": "public" }"#,
            filter_toml: "[[routes]]\nname = \"special\"\npath = \"/special\"\nmode = \"required\"\ngroups_any = [\"admins\"]\n",
            upstream,
            jwks_uri: &idp.url("/jwks.json"),
            upstream_http2: false,
            route_module: MODULE,
        },
    )
    .await
    .unwrap_or_else(|log| panic!("Envoy did not start:\n{log}"));
    let http = reqwest::Client::new();
    let special = http
        .get(format!("http://127.0.0.1:{}/special", envoy.port))
        .header("x-cognito-sub", "spoof")
        .send()
        .await
        .unwrap();
    assert_eq!(special.status().as_u16(), 500);
    let body: Value = special.json().await.unwrap();
    assert_eq!(body["reason"], "internal_error", "{body}");
    // Elsewhere the catch-all rule holds: no token, 401.
    let other = http
        .get(format!("http://127.0.0.1:{}/other", envoy.port))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status().as_u16(), 401);
    // The shipped build has no fault injection: the header is just a header.
    let inert = http
        .get(format!("http://127.0.0.1:{}/other", envoy.port))
        .header("x-cognito-authz-fault", "panic")
        .send()
        .await
        .unwrap();
    assert_eq!(inert.status().as_u16(), 401);
    assert_eq!(
        count.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the upstream was reached"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_the_filter_is_a_refusal_and_envoy_goes_on() {
    // The module built with fault injection (scripts/test puts it in its own folder): a panic on
    // the worker thread or on the module's runtime never crosses into Envoy; the request is
    // refused (500) and the next one is decided as usual.
    let bin_dir = common::stack_layout("module-fault-bin").bin_dir;
    let faulty = bin_dir.join("fault-injection");
    assert!(
        faulty.join("libcognito_authz_envoy.so").exists(),
        "{}/libcognito_authz_envoy.so is missing: scripts/test builds it with \
         `cargo build -p cognito-authz-envoy --features fault-injection`",
        faulty.display()
    );
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let (upstream, count) = counting_upstream().await;
    let envoy = plain_envoy(
        "module-fault",
        Plain {
            search_path: &faulty,
            route_override: r#"{ "cognito_authz.mode": "public" }"#,
            filter_toml: "",
            upstream,
            jwks_uri: &idp.url("/jwks.json"),
            upstream_http2: false,
            route_module: MODULE,
        },
    )
    .await
    .unwrap_or_else(|log| panic!("Envoy did not start:\n{log}"));
    let http = reqwest::Client::new();
    for (path, fault) in [
        ("/other", "panic"),
        ("/other", "panic-later"),
        ("/special", "panic"),
    ] {
        let seen = http
            .get(format!("http://127.0.0.1:{}{path}", envoy.port))
            .header("x-cognito-authz-fault", fault)
            .send()
            .await
            .unwrap();
        assert_eq!(seen.status().as_u16(), 500, "{path} {fault}");
        let body: Value = seen.json().await.unwrap();
        assert_eq!(body["reason"], "internal_error", "{body}");
    }
    assert_eq!(
        count.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "a request the filter panicked on reached the upstream"
    );
    let public = http
        .get(format!("http://127.0.0.1:{}/special", envoy.port))
        .send()
        .await
        .unwrap();
    assert_eq!(public.status().as_u16(), 200, "Envoy and the module go on");
    assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// An HTTP/2 upstream that keeps the names of the trailers of each request it receives.
async fn trailer_recording_upstream() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<Vec<String>>>>) {
    use http_body_util::BodyExt;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().fallback({
        let seen = std::sync::Arc::clone(&seen);
        move |request: axum::extract::Request| async move {
            let collected = request.into_body().collect().await.unwrap();
            let names = collected
                .trailers()
                .map(|t| t.keys().map(|k| k.as_str().to_string()).collect())
                .unwrap_or_default();
            seen.lock().unwrap().push(names);
            "upstream"
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, seen)
}

/// Sends a POST to `path` over HTTP/2 (prior knowledge) with `headers`, a body, and `trailers`;
/// the status.
async fn post_with_trailers(
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
    trailers: &[(&'static str, &str)],
) -> u16 {
    use http_body_util::{BodyExt, StreamBody};
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let mut trailer_map = http::HeaderMap::new();
    for (name, value) in trailers {
        trailer_map.append(*name, value.parse().unwrap());
    }
    let frames: Vec<Result<hyper::body::Frame<bytes::Bytes>, std::convert::Infallible>> = vec![
        Ok(hyper::body::Frame::data(bytes::Bytes::from_static(b"{}"))),
        Ok(hyper::body::Frame::trailers(trailer_map)),
    ];
    let body = StreamBody::new(futures_util::stream::iter(frames));
    let mut request = http::Request::post(format!("http://127.0.0.1:{port}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = sender
        .send_request(request.body(body).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let _ = response.into_body().collect().await;
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_headers_sent_as_trailers_never_reach_the_upstream() {
    // Over HTTP/2 a client can send headers after the body, as trailers; an upstream that reads
    // them (gRPC, HTTP/2 frameworks) must not find a forged identity there either: with a valid
    // token, and anonymously on a public route. (HTTP/2 names are lowercase or refused.)
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let (upstream, seen) = trailer_recording_upstream().await;
    let bin_dir = common::stack_layout("module-trailers-bin").bin_dir;
    let envoy = plain_envoy(
        "module-trailers",
        Plain {
            search_path: &bin_dir,
            route_override: r#"{ "cognito_authz.mode": "public" }"#,
            filter_toml: "",
            upstream,
            jwks_uri: &idp.url("/jwks.json"),
            upstream_http2: true,
            route_module: MODULE,
        },
    )
    .await
    .unwrap_or_else(|log| panic!("Envoy did not start:\n{log}"));
    let issuer = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_PlainPool";
    let token = TestKey::shared(0).token(&access_claims(issuer, "plain-client", now()));
    let bearer = format!("Bearer {token}");
    let forged = [
        ("x-cognito-sub", "someone-else"),
        ("x-cognito-groups", "admins"),
        ("x-cognito-made-up", "1"),
        ("x-app-trace", "kept"),
    ];
    // The keys are fetched on the first check: wait for the token to pass.
    let mut status = 0;
    for _ in 0..50 {
        status =
            post_with_trailers(envoy.port, "/api", &[("authorization", &bearer)], &forged).await;
        if status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200, "the valid token was refused");
    // The public route: anonymous, no token at all.
    assert_eq!(
        post_with_trailers(envoy.port, "/special", &[], &forged).await,
        200
    );
    // Refused: the upstream sees nothing.
    assert_eq!(
        post_with_trailers(envoy.port, "/api", &[], &forged).await,
        401
    );
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen.len(),
        2,
        "the allowed requests, and only those: {seen:?}"
    );
    for names in &seen {
        assert!(
            names.iter().all(|n| !n.starts_with("x-cognito-")),
            "a client's identity trailer reached the upstream: {names:?}"
        );
        assert!(names.iter().any(|n| n == "x-app-trace"), "{names:?}");
    }
}

#[test]
fn the_module_page_shows_the_filter_envoy_module_yaml_ships() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let page = std::fs::read_to_string(root.join("docs/module.md")).unwrap();
    let shipped = std::fs::read_to_string(root.join("envoy/envoy.module.yaml")).unwrap();
    let section = page
        .split("\n## Configure Envoy\n")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("docs/module.md's \"Configure Envoy\" section");
    let block = section
        .split("```yaml\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a yaml block in the module section");
    let bare = |l: &str| l.trim().trim_start_matches("- ").to_string();
    let shipped: Vec<String> = shipped.lines().map(bare).collect();
    let mut at = 0;
    for line in block.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let found = shipped[at..].iter().position(|s| *s == bare(line));
        let found = found.unwrap_or_else(|| panic!("envoy.module.yaml lacks `{line}` (in order)"));
        at += found + 1;
    }
}

/// The value of the Prometheus sample `name` whose labels include every one of `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let (labelled, value) = rest.rsplit_once(' ')?;
        if !labelled.starts_with('{') && !labelled.is_empty() {
            return None;
        }
        labels
            .iter()
            .all(|(k, v)| labelled.contains(&format!("{k}=\"{v}\"")))
            .then(|| value.parse().ok())?
    })
}

/// Envoy's Prometheus page, read until `ready` accepts it (histograms reach it at Envoy's stats
/// flush, every 5 s).
async fn prometheus_until(stack: &Stack, ready: impl Fn(&str) -> bool) -> String {
    let url = format!(
        "http://127.0.0.1:{}/stats/prometheus",
        stack.ports.envoy_admin
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
        if ready(&text) || std::time::Instant::now() >= deadline {
            return text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// The module's decisions, cache lookups and key fetches are Envoy stats, on Envoy's
/// `/stats/prometheus` under the sidecar's names and labels (`envoy/envoy.module.yaml`), each
/// counted once; the latency histogram is in microseconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoys_prometheus_page_counts_the_modules_decisions() {
    let (stack, idp) =
        stack_over_local_keys("module-stats", Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let pool = stack.pool.pool_id.clone();
    // The keys gauge is set on the module's own runtime thread, after the first fetch.
    let text = prometheus_until(&stack, |t| {
        sample(t, "cognito_authz_jwks_keys", &[("pool", &pool)]) == Some(1.0)
    })
    .await;
    assert_eq!(
        sample(&text, "cognito_authz_jwks_keys", &[("pool", &pool)]),
        Some(1.0),
        "{text}"
    );

    let token = idp.token(0);
    for _ in 0..3 {
        // Allowed, to the app, which has no such page.
        assert_eq!(verdict(&stack, &token).await.0, 404);
    }
    let expired = idp.with_claims(|c| {
        c["exp"] = json!(now() - 3600);
        c["iat"] = json!(now() - 7200);
    });
    assert_eq!(verdict(&stack, &expired).await.0, 401);
    let none = get(&stack, "/elsewhere", None, &[]).await;
    assert_eq!(none.status.as_u16(), 401);

    let text = prometheus_until(&stack, |t| {
        sample(t, "cognito_authz_check_duration_microseconds_count", &[]) >= Some(5.0)
    })
    .await;
    let decisions = "cognito_authz_decisions_total";
    for (labels, count) in [
        (&[("decision", "allow"), ("reason", "valid")], 3.0),
        (&[("decision", "deny"), ("reason", "expired")], 1.0),
        (&[("decision", "deny"), ("reason", "no_token")], 1.0),
        (&[("decision", "deny"), ("reason", "valid")], 0.0),
    ] {
        assert_eq!(
            sample(&text, decisions, labels),
            Some(count),
            "{labels:?} in\n{text}"
        );
    }
    // The token's first check verifies it; the next two are cache hits.
    assert_eq!(
        sample(
            &text,
            "cognito_authz_token_cache_lookups_total",
            &[("result", "hit")]
        ),
        Some(2.0),
        "{text}"
    );
    assert!(
        sample(
            &text,
            "cognito_authz_jwks_fetches_total",
            &[("pool", &pool), ("result", "ok")]
        ) >= Some(1.0),
        "{text}"
    );
    assert!(
        sample(
            &text,
            "cognito_authz_check_duration_microseconds_count",
            &[]
        ) >= Some(5.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "cognito_authz_redis_up", &[]),
        Some(0.0),
        "{text}"
    );
    assert!(
        text.contains("cognito_authz_check_duration_microseconds_bucket{le=\"1638400\"}"),
        "not the sidecar's buckets:\n{text}"
    );
    assert!(
        !text.contains("dynamicmodulescustom"),
        "a module stat kept Envoy's namespace:\n{text}"
    );
}

/// Envoy around the module over an IdP that answers its keys after `delay` (a fetch may take
/// 15 s): every check with a token waits (parks on the module's runtime) until then. The IdP,
/// and a valid token and one from a key the IdP does not publish (refused once the keys are in).
async fn envoy_over_slow_keys(
    name: &str,
    delay: std::time::Duration,
) -> (PlainEnvoy, JwksServer, String, String) {
    let keys = Behaviour::Json(jwks(&[TestKey::shared(0)]));
    let idp = JwksServer::start(Behaviour::Slow(delay, Box::new(keys))).await;
    let (upstream, _) = counting_upstream().await;
    let bin_dir = common::stack_layout(&format!("{name}-bin")).bin_dir;
    let envoy = plain_envoy(
        name,
        Plain {
            search_path: &bin_dir,
            route_override: r#"{ "cognito_authz.mode": "public" }"#,
            filter_toml: "[jwks]\ntimeout_ms = 15000\n",
            upstream,
            jwks_uri: &idp.url("/jwks.json"),
            upstream_http2: false,
            route_module: MODULE,
        },
    )
    .await
    .unwrap_or_else(|log| panic!("Envoy did not start:\n{log}"));
    let issuer = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_PlainPool";
    let token = |key: usize| {
        let token = TestKey::shared(key).token(&access_claims(issuer, "plain-client", now()));
        format!("Bearer {token}")
    };
    (envoy, idp, token(0), token(1))
}

/// What in Envoy's log says it crashed or the module panicked, if anything.
fn crash_in(log: &str) -> Option<&str> {
    [
        "Caught ",
        "Backtrace",
        "panicked",
        "Segmentation fault",
        "Aborted",
    ]
    .into_iter()
    .find(|mark| log.contains(mark))
}

/// An HTTP/2 connection to Envoy (prior knowledge): each request a stream of its own, so a
/// dropped request is a stream reset (RST_STREAM) on a connection that stays.
async fn h2_connection(port: u16) -> hyper::client::conn::http2::SendRequest<String> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    sender
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_reset_while_their_checks_wait_leave_envoy_answering() {
    // Clients give up while their checks wait on the IdP: HTTP/2 streams reset on a connection
    // that stays, POSTs whose body Envoy holds back, HTTP/1.1 connections closed. Envoy destroys
    // those filters while their checks run on the module's runtime; the checks' tasks are
    // aborted, and a wake-up already on its way finds no stream. Envoy does not crash, and once
    // the keys are in, the same connection and new ones are answered.
    // The keys come after 8 s; the 15 clients give up within about 2.5 s.
    let delay = std::time::Duration::from_secs(8);
    let (mut envoy, idp, valid, unknown) = envoy_over_slow_keys("module-reset", delay).await;
    let url = |path: &str| format!("http://127.0.0.1:{}{path}", envoy.port);
    let mut h2 = h2_connection(envoy.port).await;
    let give_up = std::time::Duration::from_millis(150);
    let mut waited = 0;
    for (i, auth) in [&valid, &unknown].into_iter().cycle().take(12).enumerate() {
        let method = if i % 3 == 0 { "POST" } else { "GET" };
        let request = http::Request::builder()
            .method(method)
            .uri(url("/api"))
            .header("authorization", auth.as_str())
            .body("{\"held\": true}".to_string())
            .unwrap();
        h2.ready().await.unwrap();
        let sent = tokio::time::timeout(give_up, h2.send_request(request)).await;
        waited += usize::from(sent.is_err());
    }
    let http1 = reqwest::Client::builder().timeout(give_up).build().unwrap();
    for auth in [&valid, &unknown, &valid] {
        let sent = http1
            .post(url("/api"))
            .header("authorization", auth.as_str())
            .body("{}")
            .send()
            .await;
        waited += usize::from(sent.is_err_and(|e| e.is_timeout()));
    }
    assert_eq!(
        waited, 15,
        "every check waited on the IdP, and every client gave up"
    );
    assert!(idp.hits() >= 1, "the keys were asked for");

    // The keys arrive; the checks left behind finish with no stream to wake.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        let request = http::Request::get(url("/api"))
            .header("authorization", valid.as_str())
            .body(String::new())
            .unwrap();
        h2.ready().await.expect("the HTTP/2 connection is still up");
        let status = h2.send_request(request).await.unwrap().status().as_u16();
        if status == 200 || std::time::Instant::now() > deadline {
            break status;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(status, 200, "the valid token, once the keys are in");
    let fresh = reqwest::Client::new();
    let refused = fresh
        .get(url("/api"))
        .header("authorization", unknown.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    let public = fresh.get(url("/special")).send().await.unwrap();
    assert_eq!(public.status().as_u16(), 200);
    assert!(envoy.child.try_wait().unwrap().is_none(), "Envoy exited");
    let log = std::fs::read_to_string(&envoy.log).unwrap();
    assert_eq!(crash_in(&log), None, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_stopped_while_checks_wait_exits_cleanly() {
    // Envoy is told to stop (SIGTERM) while checks wait on the IdP on the module's runtime:
    // it tears down its workers and the module's config (whose end waits for the module's
    // threads) and exits 0, with no crash in its log.
    let delay = std::time::Duration::from_secs(8);
    let (mut envoy, idp, valid, _) = envoy_over_slow_keys("module-stop", delay).await;
    let url = format!("http://127.0.0.1:{}/api", envoy.port);
    let client = reqwest::Client::new();
    let waiting: Vec<_> = (0..6)
        .map(|_| {
            let request = client
                .get(&url)
                .header("authorization", valid.as_str())
                .send();
            tokio::spawn(request)
        })
        .collect();
    let parked_by = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while idp.hits() == 0 && std::time::Instant::now() < parked_by {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(
        waiting.iter().all(|w| !w.is_finished()),
        "the checks were to wait on the IdP"
    );
    let pid = envoy.child.id().to_string();
    let term = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(term.success());
    let stopped_by = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = envoy.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < stopped_by,
            "Envoy did not stop within 30 s of SIGTERM"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let log = std::fs::read_to_string(&envoy.log).unwrap();
    assert_eq!(crash_in(&log), None, "{log}");
    assert_eq!(status.code(), Some(0), "{status}\n{log}");
    for request in waiting {
        // Cut off by the stop, never let through: no answer, or not a 200.
        if let Ok(Ok(response)) = request.await {
            assert_ne!(response.status().as_u16(), 200);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_route_config_another_module_made_is_never_read() {
    // Envoy hands the filter the route's config under the filter's name, whichever module made
    // it. Here another module (a second copy of this one, loaded apart: its own registry) made
    // the `/special` route's config, which would make the route public: the filter does not
    // read it, and refuses the route's requests (500) rather than guess its policy.
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let (upstream, count) = counting_upstream().await;
    let bin_dir = common::stack_layout("module-foreign-bin").bin_dir;
    let layout = layout("module-foreign");
    let modules = layout.work_dir.join("modules");
    std::fs::create_dir_all(&modules).unwrap();
    let ours = bin_dir.join(format!("lib{MODULE}.so"));
    std::fs::copy(&ours, modules.join(format!("lib{MODULE}.so"))).unwrap();
    std::fs::copy(&ours, modules.join("libanother_module.so")).unwrap();
    let envoy = plain_envoy(
        "module-foreign",
        Plain {
            search_path: &modules,
            route_override: r#"{ "cognito_authz.mode": "public" }"#,
            filter_toml: "",
            upstream,
            jwks_uri: &idp.url("/jwks.json"),
            upstream_http2: false,
            route_module: "another_module",
        },
    )
    .await
    .unwrap_or_else(|log| panic!("Envoy did not start:\n{log}"));
    let http = reqwest::Client::new();
    let special = http
        .get(format!("http://127.0.0.1:{}/special", envoy.port))
        .send()
        .await
        .unwrap();
    assert_eq!(special.status().as_u16(), 500);
    let body: Value = special.json().await.unwrap();
    assert_eq!(body["reason"], "internal_error", "{body}");
    assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 0);
    let log = std::fs::read_to_string(&envoy.log).unwrap();
    assert!(log.contains("not made by this module"), "{log}");
    // Elsewhere the filter decides as usual: no token, 401.
    let other = http
        .get(format!("http://127.0.0.1:{}/other", envoy.port))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status().as_u16(), 401);
}
