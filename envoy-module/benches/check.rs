//! `cargo bench -p cognito-authz-envoy --bench check`: what the module spends on one request
//! on Envoy's worker thread, without Envoy: the whole filter step for a cached token (headers
//! in, rewrites and metadata out, through a stream that only records), the same for 64 cached
//! tokens in turn, and the step with the verified-token cache off, interleaved in one run
//! (medians). Also counts the heap
//! allocations of one cached step.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cognito_authz::testkit::{access_claims, jwks, now, Behaviour, JwksServer, TestKey};
use cognito_authz_envoy::filter::{on_request_headers, FilterConfig, RouteOverrides, Step, Stream};

const POOL: &str = "us-east-1_BenchPool";
const CLIENT: &str = "bench-client";
const ROUND: Duration = Duration::from_secs(1);
/// The most heap allocations one cached check may make (issue 29).
const MAX_ALLOCATIONS: usize = 8;

/// The system allocator, counting allocations (reallocations included).
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed to the system allocator unchanged; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as the caller guarantees for `GlobalAlloc::alloc`.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as the caller guarantees for `GlobalAlloc::dealloc`.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as the caller guarantees for `GlobalAlloc::realloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A stream that hands out fixed headers and counts what the filter does.
struct Recording {
    headers: Vec<(String, String)>,
    calls: usize,
}

impl Stream for Recording {
    fn request_headers(&self, wanted: &dyn Fn(&str) -> bool, each: &mut dyn FnMut(&str, &str)) {
        for (k, v) in self.headers.iter().filter(|(k, _)| wanted(k)) {
            each(k, v);
        }
    }
    fn set_header(&mut self, _: &str, _: &str) {
        self.calls += 1;
    }
    fn add_header(&mut self, _: &str, _: &str) {
        self.calls += 1;
    }
    fn remove_header(&mut self, _: &str) {
        self.calls += 1;
    }
    fn set_metadata(&mut self, _: &str, _: &[(&str, &str)]) {
        self.calls += 1;
    }
    fn send_local_reply(&mut self, _: u16, _: &[(&str, &str)], _: &str) {
        self.calls += 1;
    }
    fn request_trailer_names(&self) -> Vec<String> {
        Vec::new()
    }
    fn remove_request_trailer(&mut self, _: &str) {}
    fn continue_decoding(&mut self) {}
}

fn rate(mut f: impl FnMut()) -> f64 {
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < ROUND {
        for _ in 0..64 {
            f();
        }
        n += 64;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    // Run as a test (`cargo test`, `cargo nextest`), a bench is one quick pass.
    let quick = match cognito_authz::testkit::bench_run() {
        cognito_authz::testkit::BenchRun::Listed => return,
        cognito_authz::testkit::BenchRun::Quick => true,
        cognito_authz::testkit::BenchRun::Full => false,
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let idp = runtime.block_on(JwksServer::start(Behaviour::Json(jwks(&[
        TestKey::shared(0),
    ]))));
    let env: HashMap<&str, String> = [
        ("AWS_COGNITO_USER_POOL_ID", POOL.to_string()),
        ("AWS_COGNITO_USER_POOL_CLIENT_ID", CLIENT.to_string()),
        ("AWS_DEFAULT_REGION", "us-east-1".to_string()),
        ("COGNITO_JWKS_URI", idp.url("/jwks.json")),
    ]
    .into();
    let config =
        FilterConfig::new("", |k| env.get(k).cloned()).unwrap_or_else(|e| panic!("{}", e.0));
    // The same with the verified-token cache off: every check verifies the token.
    let mut uncached_env = env.clone();
    uncached_env.insert("COGNITO_TOKEN_CACHE_SIZE", "0".to_string());
    let uncached = FilterConfig::new("", |k| uncached_env.get(k).cloned())
        .unwrap_or_else(|e| panic!("{}", e.0));
    let issuer = format!("https://cognito-idp.us-east-1.amazonaws.com/{POOL}");
    let token = TestKey::shared(0).token(&access_claims(&issuer, CLIENT, now()));
    // What a browser's API call through Envoy carries.
    let headers: Vec<(String, String)> = [
        (":authority", "api.example.com"),
        (":path", "/api/activities/home"),
        (":method", "GET"),
        (":scheme", "https"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",
        ),
        ("accept", "application/json"),
        ("accept-encoding", "gzip, deflate, br"),
        ("origin", "https://app.example.com"),
        ("x-forwarded-proto", "https"),
        ("x-request-id", "7f2c1f0e-1b2a-4c3d-9e8f-0a1b2c3d4e5f"),
        ("authorization", &format!("Bearer {token}")),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    // Many users: 64 cached tokens in turn, more than a thread remembers (four), so each
    // check finds its token in the cache but not in the thread's memory of recent tokens.
    let many: Vec<Recording> = (0..64)
        .map(|i| {
            let mut claims = access_claims(&issuer, CLIENT, now());
            claims["sub"] = format!("8f1e2d3c-0000-4000-8000-{i:012}").into();
            let token = TestKey::shared(0).token(&claims);
            let mut headers = headers.clone();
            if let Some(auth) = headers.iter_mut().find(|(k, _)| k == "authorization") {
                auth.1 = format!("Bearer {token}");
            }
            Recording { headers, calls: 0 }
        })
        .collect();
    let mut stream = Recording { headers, calls: 0 };
    // The first check fetches the keys and caches the token.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (step, _) = on_request_headers(&config, None, &mut stream, || || {});
        if step == Step::Continue {
            break;
        }
        assert!(Instant::now() < deadline, "the token never passed");
        std::thread::sleep(Duration::from_millis(50));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while on_request_headers(&uncached, None, &mut stream, || || {}).0 != Step::Continue {
        assert!(
            Instant::now() < deadline,
            "the token never passed without the cache"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut many = many;
    for stream in &mut many {
        let (step, _) = on_request_headers(&config, None, stream, || || {});
        assert_eq!(step, Step::Continue, "a user's token did not pass");
    }
    let mut turn = 0;
    let (mut filter, mut verifying, mut users) = (Vec::new(), Vec::new(), Vec::new());
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 1 } else { 5 });
    for _ in 0..rounds {
        filter.push(rate(|| {
            let (step, _) = on_request_headers(&config, None, &mut stream, || || {});
            assert_eq!(step, Step::Continue);
        }));
        users.push(rate(|| {
            turn = (turn + 1) % many.len();
            let (step, _) = on_request_headers(&config, None, &mut many[turn], || || {});
            assert_eq!(step, Step::Continue);
        }));
        verifying.push(rate(|| {
            let (step, _) = on_request_headers(&uncached, None, &mut stream, || || {});
            assert_eq!(step, Step::Continue);
        }));
    }
    let (filter, verifying, users) = (median(filter), median(verifying), median(users));
    let before = stream.calls;
    let allocations = ALLOCATIONS.load(Ordering::Relaxed);
    on_request_headers(&config, None, &mut stream, || || {});
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - allocations;
    let calls = stream.calls - before;
    // A route with overrides, as the shipped configs give each route: parsed once, then shared.
    let route = RouteOverrides::parse(
        br#"{"cognito_authz.mode": "required", "cognito_authz.token_use": "access", "cognito_authz.rule": "api"}"#,
    )
    .unwrap();
    on_request_headers(&config, Some(&route), &mut stream, || || {});
    let routed = ALLOCATIONS.load(Ordering::Relaxed);
    let (step, _) = on_request_headers(&config, Some(&route), &mut stream, || || {});
    let routed = ALLOCATIONS.load(Ordering::Relaxed) - routed;
    assert_eq!(step, Step::Continue);
    println!(
        "module filter step, cached token: {:.0} checks/s, {:.2} µs each ({} calls into Envoy, {} allocations each, {} with route overrides)",
        filter,
        1e6 / filter,
        calls,
        allocations,
        routed
    );
    println!(
        "module filter step, 64 cached tokens in turn (none remembered by the thread): {:.0} checks/s, {:.2} µs each",
        users,
        1e6 / users
    );
    println!(
        "module filter step, cache off (the token verified each time): {:.0} checks/s, {:.2} µs each",
        verifying,
        1e6 / verifying
    );
    // Issue 29's bound, counted across the whole step (the headers' copy out of the stream
    // included): a count, not a time, so it holds on any machine.
    assert!(
        allocations <= MAX_ALLOCATIONS && routed <= MAX_ALLOCATIONS,
        "a cached check made {allocations} allocations ({routed} with route overrides), at most {MAX_ALLOCATIONS} allowed"
    );
    drop(idp);
}
