//! The filter's logic, free of FFI: the filter config (the decision core and the runtime its
//! network work runs on), the per-route overrides, and one stream's check. Envoy is reached
//! only through the [`Stream`] trait, which the FFI module implements over Envoy's callbacks
//! and the tests implement over plain values.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use cognito_authz::clock::Clock;
use cognito_authz::config::Config;
use cognito_authz::decision::{Answer, CheckInput, Outcome};
use cognito_authz::identity::IDENTITY_PREFIX;
use cognito_authz::metrics::MetricsObserver;
use cognito_authz::policy::{RouteConfig, ENVOY_ALLOWED_HEADERS};
use cognito_authz::server::Core;

/// The dynamic-metadata namespace the decision is written under: the sidecar's, so one
/// access-log format serves both (`%DYNAMIC_METADATA(envoy.filters.http.ext_authz:reason)%`).
pub const METADATA_NAMESPACE: &str = "envoy.filters.http.ext_authz";

/// What the filter needs from Envoy for one stream.
pub trait Stream {
    /// The request headers (pseudo-headers included) whose name `wanted` accepts, in order.
    fn request_headers(&self, wanted: &dyn Fn(&str) -> bool) -> Vec<(String, String)>;
    /// Replaces every value of `name` with `value`.
    fn set_header(&mut self, name: &str, value: &str);
    /// Adds `name: value`, for a header the request does not carry (Envoy skips the search
    /// for values to replace).
    fn add_header(&mut self, name: &str, value: &str);
    /// Removes every value of `name`.
    fn remove_header(&mut self, name: &str);
    /// Writes strings into the stream's dynamic metadata, all in one call.
    fn set_metadata(&mut self, namespace: &str, entries: &[(&str, &str)]);
    /// Answers the client instead of the upstream.
    fn send_local_reply(&mut self, status: u16, headers: &[(&str, &str)], body: &str);
    /// The names of the request's trailers.
    fn request_trailer_names(&self) -> Vec<String>;
    /// Removes every value of the request trailer `name`.
    fn remove_request_trailer(&mut self, name: &str);
    /// The check is decided; its outcome is carried out next (the module times checks here).
    fn decided(&mut self) {}
}

/// What the filter tells Envoy after the request headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Go on to the upstream (headers rewritten).
    Continue,
    /// Stop here: a local reply was sent.
    Replied,
    /// Stop and wait: the check waits on the network and resumes through the scheduler.
    Pending,
}

/// A filter config that could not be built: Envoy refuses the config with this message.
#[derive(Debug)]
pub struct ConfigError(pub String);

/// The decision core for one `DynamicModuleFilter` config, with the runtime that runs its
/// network work (key fetches, `GetUser`, Redis) off Envoy's worker threads.
pub struct FilterConfig {
    core: Option<Core>,
    runtime: Option<tokio::runtime::Runtime>,
    /// The headers a check reads besides `x-cognito-*` and the pseudo-headers: Envoy's
    /// `allowed_headers` for the sidecar, plus a configured token header or cookie.
    reads: Vec<String>,
}

impl FilterConfig {
    /// Builds the config from the filter's TOML (`serve`'s file format), with the pool and
    /// every other setting also taken from the environment as `serve` takes them.
    pub fn new(toml: &str, env: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        FilterConfig::with_stats(toml, env, |_| None)
    }

    /// As [`FilterConfig::new`], the core counting into the observer `stats` makes for the
    /// configured pools (their ids) instead of its own registry: Envoy's stats, in the module.
    pub fn with_stats(
        toml: &str,
        env: impl Fn(&str) -> Option<String>,
        stats: impl FnOnce(&[String]) -> Option<Arc<dyn MetricsObserver>>,
    ) -> Result<Self, ConfigError> {
        let config = Config::from_toml(env, toml).map_err(|e| ConfigError(e.to_string()))?;
        let pools: Vec<String> = config.pools.iter().map(|p| p.id.clone()).collect();
        let observer = stats(&pools);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("cognito-authz")
            .enable_all()
            .build()
            .map_err(|e| ConfigError(format!("cannot start the module's runtime: {e}")))?;
        let core = {
            let _entered = runtime.enter();
            Core::start(&config, Clock::system(), observer)
                .map_err(|e| ConfigError(e.to_string()))?
        };
        // Every header an allow removes must be read, so that one the request carries is seen.
        let mut reads: Vec<String> = ENVOY_ALLOWED_HEADERS
            .iter()
            .map(|h| h.to_string())
            .collect();
        reads.extend(config.routes.managed_headers.iter().cloned());
        reads.extend(config.routes.token_header.clone());
        if config.routes.token_cookie.is_some() {
            reads.push("cookie".to_string());
        }
        Ok(FilterConfig {
            core: Some(core),
            runtime: Some(runtime),
            reads,
        })
    }

    /// Whether a check reads the header `name` (any case): the pseudo-headers, the ones in
    /// [`FilterConfig::reads`], and every header in our namespace (so the header plan removes
    /// each one the client sent, whatever it is). The others are never copied out of Envoy.
    pub fn reads(&self, name: &str) -> bool {
        name.starts_with(':')
            || name
                .get(..IDENTITY_PREFIX.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(IDENTITY_PREFIX))
            || self.reads.iter().any(|h| h.eq_ignore_ascii_case(name))
    }

    fn core(&self) -> &Core {
        self.core
            .as_ref()
            .expect("the core lives as long as the config")
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime
            .as_ref()
            .expect("the runtime lives as long as the config")
    }

    /// The verified-token cache's size (for tests).
    pub fn cache_len(&self) -> usize {
        self.core().authorizer.cache_len()
    }
}

impl Drop for FilterConfig {
    fn drop(&mut self) {
        // The core's upkeep is aborted inside its runtime; the runtime then stops without
        // waiting (this runs on Envoy's main thread, which must not block).
        if let Some(runtime) = self.runtime.take() {
            {
                let _entered = runtime.enter();
                self.core.take();
            }
            runtime.shutdown_background();
        }
    }
}

/// A route's overrides: the keys and values `context_extensions` carry to the sidecar
/// (`cognito_authz.mode`, `cognito_authz.groups_any`, ...), as a JSON object of strings
/// (`DynamicModuleFilterPerRoute`'s `filter_config` as a `google.protobuf.Struct`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RouteOverrides(pub Arc<HashMap<String, String>>);

impl RouteOverrides {
    /// Parses a per-route config; anything but an object of strings is refused at load time.
    pub fn parse(config: &[u8]) -> Result<RouteOverrides, ConfigError> {
        if config.iter().all(u8::is_ascii_whitespace) {
            return Ok(RouteOverrides::default());
        }
        let value: serde_json::Value = serde_json::from_slice(config)
            .map_err(|e| ConfigError(format!("per-route config is not JSON: {e}")))?;
        let object = value.as_object().ok_or_else(|| {
            ConfigError("per-route config must be an object of strings".to_string())
        })?;
        let overrides = object
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) if k.starts_with("cognito_authz.") => {
                    Ok((k.clone(), s.clone()))
                }
                serde_json::Value::String(_) => Err(ConfigError(format!(
                    "per-route config: {k} is not a cognito_authz.* key"
                ))),
                _ => Err(ConfigError(format!(
                    "per-route config: {k} must be a string"
                ))),
            })
            .collect::<Result<HashMap<_, _>, _>>()?;
        // Every key and value read now, as a check would read them: a typo refuses the config
        // at load instead of failing each request on the route.
        RouteConfig::default()
            .requirements("GET", "localhost", "/", &overrides)
            .map_err(|e| ConfigError(format!("per-route config: {e}")))?;
        Ok(RouteOverrides(Arc::new(overrides)))
    }
}

type Decision = Pin<Box<dyn Future<Output = Option<Outcome>> + Send>>;

/// Where a check that waited on the network leaves its outcome for the worker thread, with
/// the request it decided (whose headers say which managed ones an allow must remove).
pub struct Parked {
    outcome: Mutex<Option<Option<Outcome>>>,
    request: Arc<Request>,
}

impl Parked {
    /// The outcome, once (None before the check finished or after it was taken).
    pub fn take(&self) -> Option<Option<Outcome>> {
        self.outcome
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// The request the check decided.
    pub fn request(&self) -> &Request {
        &self.request
    }
}

/// Decides the request whose headers `stream` holds. A check that can be decided without the
/// network (a cache hit, a token refused by its shape, a public route) is decided here, on the
/// worker thread; one that must wait (a key fetch, `GetUser`, Redis) runs on the module's
/// runtime, which calls the closure `waker` made (on this thread) when it is done; the outcome
/// is then in the returned slot.
pub fn on_request_headers<W>(
    config: &FilterConfig,
    route: Option<&RouteOverrides>,
    stream: &mut dyn Stream,
    waker: impl FnOnce() -> W,
) -> (Step, Option<Arc<Parked>>)
where
    W: FnOnce() + Send + 'static,
{
    let (mut decision, request) =
        decision(config, route, stream.request_headers(&|h| config.reads(h)));
    let runtime = config.runtime();
    let polled = {
        let _entered = runtime.enter();
        decision
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
    };
    match polled {
        Poll::Ready(outcome) => (apply(outcome.as_ref(), &request, stream), None),
        Poll::Pending => {
            let parked = Arc::new(Parked {
                outcome: Mutex::new(None),
                request,
            });
            let slot = Arc::clone(&parked);
            let resume = waker();
            let decided = runtime.spawn(decision);
            runtime.spawn(async move {
                // A check that panics on the runtime ends as no outcome: refused (500), and
                // the stream is woken all the same.
                let outcome = decided.await.ok().flatten();
                *slot.outcome.lock().unwrap_or_else(|e| e.into_inner()) = Some(outcome);
                resume();
            });
            (Step::Pending, Some(parked))
        }
    }
}

/// The check as a future that shares the request it reads (every managed header it carries
/// among its headers). `None` from the future: the route's overrides could not be read
/// (Envoy's config is wrong), which fails closed.
fn decision(
    config: &FilterConfig,
    route: Option<&RouteOverrides>,
    headers: Vec<(String, String)>,
) -> (Decision, Arc<Request>) {
    let authorizer = config.core().authorizer.clone();
    // Shared, not copied: a route's overrides are the same for each of its requests.
    let extensions = route.map(|r| Arc::clone(&r.0)).unwrap_or_default();
    let mut request = Request::default();
    for (name, value) in headers {
        request.add(name, value);
    }
    let request = Arc::new(request);
    let shared = Arc::clone(&request);
    #[cfg(feature = "fault-injection")]
    let fault = request.headers.get("x-cognito-authz-fault").cloned();
    #[cfg(feature = "fault-injection")]
    if fault.as_deref() == Some("panic") {
        panic!("injected fault on the worker thread");
    }
    let decision: Decision = Box::pin(async move {
        #[cfg(feature = "fault-injection")]
        if fault.as_deref() == Some("panic-later") {
            tokio::task::yield_now().await;
            panic!("injected fault on the module's runtime");
        }
        let input = CheckInput {
            method: &request.method,
            host: &request.host,
            path: &request.path,
            headers: &request.headers,
            extensions: &extensions,
        };
        authorizer.decide(&input).await.ok()
    });
    (decision, shared)
}

/// The request as the decision core reads it: pseudo-headers apart, other names lowercase,
/// repeated headers joined with commas (as Envoy joins them for the gRPC protocol).
#[derive(Default)]
pub struct Request {
    method: String,
    host: String,
    path: String,
    headers: HashMap<String, String>,
}

impl Request {
    fn add(&mut self, mut name: String, value: String) {
        match name.as_str() {
            ":method" => self.method = value,
            ":authority" => self.host = value,
            ":path" => self.path = value,
            _ if name.starts_with(':') => {}
            _ => {
                // In place: Envoy's names are lowercase already, and this costs no copy.
                name.make_ascii_lowercase();
                match self.headers.get_mut(&name) {
                    Some(joined) => {
                        // Cookies join as one `Cookie` header would carry them (RFC 6265), so a
                        // token cookie in a second header is still found and cut out.
                        joined.push_str(if name == "cookie" { "; " } else { "," });
                        joined.push_str(&value);
                    }
                    None => {
                        self.headers.insert(name, value);
                    }
                }
            }
        }
    }

    /// Whether the request carries the header `name` (lowercase).
    pub fn carries(&self, name: &str) -> bool {
        self.headers.contains_key(name)
    }
}

/// Carries out an outcome on the `request` it decided. A header to remove that the request does
/// not carry costs Envoy a search for nothing, so only those it carries are removed (it read
/// every header an allow may remove). No outcome (a route override Envoy's config got wrong)
/// is refused like an internal error.
pub fn apply(outcome: Option<&Outcome>, request: &Request, stream: &mut dyn Stream) -> Step {
    stream.decided();
    let Some(outcome) = outcome else {
        fail_closed(stream);
        return Step::Replied;
    };
    debug_assert!(outcome.metadata.len() <= MAX_METADATA, "metadata cut short");
    let mut entries = [("", ""); MAX_METADATA];
    let count = outcome.metadata.len().min(MAX_METADATA);
    for (entry, (key, value)) in entries.iter_mut().zip(&outcome.metadata) {
        *entry = (key, value.as_str());
    }
    stream.set_metadata(METADATA_NAMESPACE, &entries[..count]);
    match &outcome.answer {
        Answer::Allow { set, remove } => {
            for name in remove.iter().filter(|name| request.carries(name)) {
                stream.remove_header(name);
            }
            for (name, value) in set {
                // A client's value is replaced; a header the request lacks is only added.
                if request.carries(name) {
                    stream.set_header(name, value);
                } else {
                    stream.add_header(name, value);
                }
            }
            Step::Continue
        }
        Answer::Deny {
            status,
            headers,
            body,
        } => {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            stream.send_local_reply(*status, &headers, body);
            Step::Replied
        }
    }
}

/// Removes from the request's trailers every header an allow manages and every other header
/// in our namespace: an upstream that reads trailers (gRPC, HTTP/2) must not find a client's
/// `x-cognito-sub` there either.
pub fn strip_trailers(config: &FilterConfig, stream: &mut dyn Stream) {
    let names = stream.request_trailer_names();
    if names.is_empty() {
        return;
    }
    let managed = config.core().authorizer.managed_headers();
    for name in names {
        let lower = name.to_ascii_lowercase();
        if lower.starts_with(IDENTITY_PREFIX) || managed.contains(&lower) {
            stream.remove_request_trailer(&name);
        }
    }
}

/// The most metadata fields an outcome has (`decision`, `reason`, `sub`, `dry_run`, and with
/// full metadata `rule`, `pool`, `token_use`), with room to spare.
pub const MAX_METADATA: usize = 8;

/// The body of the answer to a request the filter could not decide.
pub const INTERNAL_ERROR_BODY: &str = r#"{"error":"server_error","error_description":"the authorization check failed","reason":"internal_error"}"#;

/// Refuses the request because the filter itself failed (a panic, an unreadable override):
/// never let through what was not decided.
pub fn fail_closed(stream: &mut dyn Stream) {
    stream.set_metadata(
        METADATA_NAMESPACE,
        &[("decision", "deny"), ("reason", "internal_error")],
    );
    stream.send_local_reply(
        500,
        &[
            ("content-type", "application/json"),
            ("cache-control", "no-store"),
        ],
        INTERNAL_ERROR_BODY,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use cognito_authz::testkit::{access_claims, jwks, now, Behaviour, JwksServer, TestKey};
    use std::sync::mpsc;

    /// A stream over plain values: what the filter read, set, removed and answered.
    #[derive(Default)]
    struct FakeStream {
        headers: Vec<(String, String)>,
        set: Vec<(String, String)>,
        removed: Vec<String>,
        metadata: Vec<(String, String)>,
        reply: Option<(u16, String)>,
        trailers: Vec<String>,
    }

    impl Stream for FakeStream {
        fn request_headers(&self, wanted: &dyn Fn(&str) -> bool) -> Vec<(String, String)> {
            self.headers
                .iter()
                .filter(|(k, _)| wanted(k))
                .cloned()
                .collect()
        }
        fn set_header(&mut self, name: &str, value: &str) {
            self.set.push((name.into(), value.into()));
        }
        fn add_header(&mut self, name: &str, value: &str) {
            assert!(
                self.headers.iter().all(|(k, _)| k != name),
                "{name} added beside the client's"
            );
            self.set.push((name.into(), value.into()));
        }
        fn remove_header(&mut self, name: &str) {
            self.removed.push(name.into());
        }
        fn set_metadata(&mut self, namespace: &str, entries: &[(&str, &str)]) {
            assert_eq!(namespace, METADATA_NAMESPACE);
            self.metadata
                .extend(entries.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        }
        fn send_local_reply(&mut self, status: u16, _headers: &[(&str, &str)], body: &str) {
            self.reply = Some((status, body.into()));
        }
        fn request_trailer_names(&self) -> Vec<String> {
            self.trailers.clone()
        }
        fn remove_request_trailer(&mut self, name: &str) {
            self.trailers.retain(|t| t != name);
        }
    }

    fn request(path: &str, extra: &[(&str, &str)]) -> FakeStream {
        let mut headers: Vec<(String, String)> = [
            (":method", "GET"),
            (":authority", "app.example.com"),
            (":path", path),
        ]
        .iter()
        .chain(extra)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        headers.push(("x-request-id".into(), "r1".into()));
        FakeStream {
            headers,
            ..FakeStream::default()
        }
    }

    const POOL: &str = "us-east-1_ModulePool";
    const CLIENT: &str = "module-client";

    fn config(jwks_uri: &str) -> FilterConfig {
        config_with(jwks_uri, "")
    }

    /// The filter config from `toml`, the pool from the environment.
    fn config_with(jwks_uri: &str, toml: &str) -> FilterConfig {
        let env = [
            ("AWS_COGNITO_USER_POOL_ID", POOL.to_string()),
            ("AWS_COGNITO_USER_POOL_CLIENT_ID", CLIENT.to_string()),
            ("AWS_DEFAULT_REGION", "us-east-1".to_string()),
            ("COGNITO_JWKS_URI", jwks_uri.to_string()),
        ];
        FilterConfig::new(toml, |k| {
            env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
        })
        .unwrap_or_else(|e| panic!("{}", e.0))
    }

    /// Checks the request `stream` holds to the end: a check that waits for the network is
    /// waited for (woken through the waker) and its outcome applied.
    fn check_to_the_end(config: &FilterConfig, stream: &mut FakeStream) -> Step {
        let (woken, wait) = mpsc::channel();
        let (step, parked) =
            on_request_headers(config, None, stream, || move || woken.send(()).unwrap());
        match step {
            Step::Pending => {
                wait.recv_timeout(std::time::Duration::from_secs(10))
                    .expect("the stream was woken");
                let parked = parked.expect("a parked check");
                let outcome = parked.take().expect("an outcome");
                apply(outcome.as_ref(), parked.request(), stream)
            }
            step => step,
        }
    }

    fn never() -> impl FnOnce() + Send + 'static {
        || panic!("a check that needs no network woke the stream")
    }

    #[test]
    fn repeated_headers_are_joined_and_names_lowercased() {
        let mut request = Request::default();
        for (k, v) in [
            (":method", "GET"),
            (":path", "/a"),
            (":authority", "h"),
            (":scheme", "http"),
            ("X-Cognito-Sub", "one"),
            ("x-cognito-sub", "two"),
        ] {
            request.add(k.into(), v.into());
        }
        assert_eq!(
            (request.method.as_str(), request.path.as_str()),
            ("GET", "/a")
        );
        assert_eq!(request.host, "h");
        assert_eq!(request.headers.len(), 1, "{:?}", request.headers);
        assert_eq!(request.headers["x-cognito-sub"], "one,two");
    }

    #[test]
    fn a_route_override_must_be_an_object_of_known_keys_and_values() {
        let ok = RouteOverrides::parse(br#"{"cognito_authz.mode": "public"}"#).unwrap();
        assert_eq!(ok.0["cognito_authz.mode"], "public");
        assert_eq!(
            RouteOverrides::parse(b"  ").unwrap(),
            RouteOverrides::default()
        );
        for bad in [
            &br#"{"cognito_authz.mode": 1}"#[..],
            b"[1]",
            b"mode: public",
            b"\"x\"",
            // A key without our prefix would be ignored: the route's policy would vanish.
            br#"{"groups_any": "admins", "mode": "required"}"#,
            br#"{"cognito_authz.groups": "admins"}"#,
            br#"{"cognito_authz.mode": "requried"}"#,
            br#"{"cognito_authz.revocation": "sometimes"}"#,
        ] {
            assert!(
                RouteOverrides::parse(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn two_cookie_headers_join_as_one() {
        let mut request = Request::default();
        request.add("cookie".into(), "a=1".into());
        request.add("cookie".into(), "jwt=t".into());
        assert_eq!(request.headers["cookie"], "a=1; jwt=t");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn identity_trailers_are_stripped() {
        let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
        let config = config(&idp.url("/jwks.json"));
        let mut stream = FakeStream {
            trailers: vec![
                "X-Cognito-Sub".into(),
                "x-cognito-other".into(),
                "grpc-status".into(),
            ],
            ..FakeStream::default()
        };
        strip_trailers(&config, &mut stream);
        assert_eq!(stream.trailers, vec!["grpc-status".to_string()]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_public_route_is_decided_on_the_worker_thread_and_strips_spoofed_headers() {
        let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
        let config = config(&idp.url("/jwks.json"));
        let route = RouteOverrides::parse(br#"{"cognito_authz.mode": "public"}"#).unwrap();
        let mut stream = request("/healthz", &[("x-cognito-sub", "spoof")]);
        let (step, parked) = on_request_headers(&config, Some(&route), &mut stream, never);
        assert_eq!(step, Step::Continue);
        assert!(parked.is_none());
        // Only what the request carries is removed: Envoy is not asked to look for the rest.
        assert_eq!(stream.removed, vec!["x-cognito-sub".to_string()]);
        assert!(stream.set.is_empty(), "{:?}", stream.set);
        assert!(stream
            .metadata
            .contains(&("reason".into(), "public".into())));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_check_that_waits_for_keys_resumes_through_the_waker_then_hits_the_cache() {
        let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
        let config = config(&idp.url("/jwks.json"));
        let issuer = format!("https://cognito-idp.us-east-1.amazonaws.com/{POOL}");
        let token = TestKey::shared(0).token(&access_claims(&issuer, CLIENT, now()));
        let auth = format!("Bearer {token}");
        let mut stream = request("/api/x", &[("authorization", &auth)]);
        // The first fetch may already have landed: then no wait at all.
        let step = check_to_the_end(&config, &mut stream);
        assert_eq!(step, Step::Continue, "{:?}", stream.reply);
        assert!(
            stream.set.iter().any(|(k, _)| k == "x-cognito-sub"),
            "{:?}",
            stream.set
        );
        assert_eq!(config.cache_len(), 1);

        // The same token again: a cache hit, decided without waking anything.
        let mut again = request("/api/x", &[("authorization", &auth)]);
        let (step, parked) = on_request_headers(&config, None, &mut again, never);
        assert_eq!((step, parked.is_none()), (Step::Continue, true));
    }

    /// A check that must wait (the IdP answers slowly) parks; its outcome is taken once and
    /// applied to the request it decided, whose headers say which of the client's own
    /// headers in our namespace the allow removes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_parked_check_is_applied_once_to_the_request_it_decided() {
        let keys = Behaviour::Json(jwks(&[TestKey::shared(0)]));
        let slow = Behaviour::Slow(std::time::Duration::from_millis(500), Box::new(keys));
        let idp = JwksServer::start(slow).await;
        let config = config(&idp.url("/jwks.json"));
        let issuer = format!("https://cognito-idp.us-east-1.amazonaws.com/{POOL}");
        let token = TestKey::shared(0).token(&access_claims(&issuer, CLIENT, now()));
        let auth = format!("Bearer {token}");
        let mut stream = request(
            "/api/x",
            &[("authorization", &auth), ("x-cognito-made-up", "forged")],
        );
        let (woken, wait) = mpsc::channel();
        let (step, parked) = on_request_headers(&config, None, &mut stream, || {
            move || woken.send(()).unwrap()
        });
        assert_eq!(step, Step::Pending, "the keys cannot be there yet");
        wait.recv_timeout(std::time::Duration::from_secs(10))
            .expect("the stream was woken");
        let parked = parked.expect("a parked check");
        let outcome = parked.take().expect("an outcome");
        assert!(parked.take().is_none(), "an outcome is taken once");
        assert_eq!(
            apply(outcome.as_ref(), parked.request(), &mut stream),
            Step::Continue,
            "{:?}",
            stream.reply
        );
        assert!(
            stream.removed.iter().any(|h| h == "x-cognito-made-up"),
            "{:?}",
            stream.removed
        );
        assert!(stream.set.iter().any(|(k, _)| k == "x-cognito-sub"));
    }

    #[test]
    fn failing_closed_is_a_500_that_says_why_in_the_access_log() {
        let mut stream = request("/api/x", &[]);
        fail_closed(&mut stream);
        assert_eq!(stream.reply, Some((500, INTERNAL_ERROR_BODY.to_string())));
        assert_eq!(
            stream.metadata,
            [
                ("decision".to_string(), "deny".to_string()),
                ("reason".to_string(), "internal_error".to_string())
            ]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn every_header_a_client_sent_is_replaced_never_added_beside() {
        // `add_header` is used only for a header the request lacks (FakeStream panics
        // otherwise): a client's identity, mapped claim and cookie headers, repeated or not, go
        // through `set_header`, on the check that waits for keys and on the cached one. Every
        // name an allow sets is one the filter reads, which is what makes that safe.
        let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
        let toml = "[identity]\nforward_token = false\ntoken_cookie = \"jwt\"\n\
                    [identity.claim_headers]\n\"origin_jti\" = \"x-tenant-id\"\n";
        let config = config_with(&idp.url("/jwks.json"), toml);
        let issuer = format!("https://cognito-idp.us-east-1.amazonaws.com/{POOL}");
        let token = TestKey::shared(0).token(&access_claims(&issuer, CLIENT, now()));
        let cookie = format!("jwt={token}; theme=dark");
        for _ in 0..2 {
            let mut stream = request(
                "/api/x",
                &[
                    ("cookie", &cookie),
                    ("x-cognito-sub", "forged"),
                    ("x-cognito-sub", "forged2"),
                    ("x-cognito-groups", "admins"),
                    ("x-tenant-id", "other-tenant"),
                ],
            );
            let step = check_to_the_end(&config, &mut stream);
            assert_eq!(step, Step::Continue, "{:?}", stream.reply);
            for name in ["x-cognito-sub", "x-cognito-groups", "x-tenant-id", "cookie"] {
                assert!(
                    stream.set.iter().any(|(k, _)| k == name),
                    "{name} not written: {:?}",
                    stream.set
                );
            }
            assert!(stream.set.contains(&("cookie".into(), "theme=dark".into())));
            for (name, _) in &stream.set {
                assert!(config.reads(name), "{name} is set but not read");
            }
        }
    }
}
