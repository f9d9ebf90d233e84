//! The one module with `unsafe`: the C ABI of Envoy 1.40's dynamic modules, declared by hand
//! from `source/extensions/dynamic_modules/abi/abi.h` in envoyproxy/envoy (the types, the event
//! hooks this module exports, and the callbacks it calls; nothing is copied from the header or
//! Envoy's SDK). Every hook turns its raw pointers into safe values, runs the filter's logic
//! ([`crate::filter`]) under `catch_unwind`, and turns a panic into a fail-closed local reply:
//! no panic crosses into Envoy, and no request passes that was not decided.
//!
//! Threads: `program_init`, `config_new` and `per_route_config_new` run on Envoy's main thread;
//! every per-stream hook runs on the worker thread that owns the stream. A check that waits on
//! the network finishes on the module's runtime, which wakes the stream through a scheduler
//! (`scheduler_commit` may be called from any thread); `on_http_filter_scheduled` then runs
//! on the stream's worker thread again.

use std::cell::Cell;
use std::ffi::{c_char, c_void, CStr};
use std::mem::MaybeUninit;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

use crate::filter::{self, Filter, FilterConfig, RouteOverrides, Step, Stream};
use metrics::EnvoyStats;

mod issued;
mod metrics;
mod unused;

use issued::{Issued, Lookup};

/// The per-route configs this module made, the only ones it reads.
static ROUTES: Issued<RouteOverrides> = Issued::new();

/// The ABI version this module is written against: Envoy 1.40.0's, whose loader logs
/// "Dynamic module ABI version v0.2.0 matched." for it.
pub const ABI_VERSION: &CStr = c"v0.2.0";

/// Bytes owned by Envoy, valid for the current hook only (`envoy_dynamic_module_type_envoy_buffer`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EnvoyBuffer {
    ptr: *const c_char,
    length: usize,
}

/// Bytes owned by the module, read by Envoy during the call only.
#[repr(C)]
struct ModuleBuffer {
    ptr: *const c_char,
    length: usize,
}

impl ModuleBuffer {
    fn of(bytes: &[u8]) -> ModuleBuffer {
        ModuleBuffer {
            ptr: bytes.as_ptr().cast(),
            length: bytes.len(),
        }
    }

    /// The null buffer: `set_header` with it removes the header.
    fn null() -> ModuleBuffer {
        ModuleBuffer {
            ptr: std::ptr::null(),
            length: 0,
        }
    }
}

/// A key and value owned by the module (`envoy_dynamic_module_type_module_key_value_pair`).
#[repr(C)]
struct ModuleKeyValue {
    key_ptr: *const c_char,
    key_length: usize,
    value_ptr: *const c_char,
    value_length: usize,
}

/// A header owned by the module (local replies).
#[repr(C)]
struct ModuleHttpHeader {
    key_ptr: *const c_char,
    key_length: usize,
    value_ptr: *const c_char,
    value_length: usize,
}

/// How many headers a hook reads without allocating for Envoy's pointers to them (a browser's
/// request has about 15 to 25).
const HEADERS_ON_STACK: usize = 64;

/// A header owned by Envoy's header map, valid for the current hook only.
#[repr(C)]
#[derive(Clone, Copy)]
struct EnvoyHttpHeader {
    key_ptr: *const c_char,
    key_length: usize,
    value_ptr: *const c_char,
    value_length: usize,
}

/// Envoy's opaque per-stream filter (`DynamicModuleHttpFilter`).
type FilterEnvoyPtr = *mut c_void;
/// Envoy's opaque filter config.
type ConfigEnvoyPtr = *mut c_void;
/// A scheduler Envoy allocated and the module deletes.
type SchedulerPtr = *mut c_void;

/// `envoy_dynamic_module_type_http_header_type_RequestHeader`.
const REQUEST_HEADER: u32 = 0;
/// `envoy_dynamic_module_type_http_header_type_RequestTrailer`.
const REQUEST_TRAILER: u32 = 1;

// `envoy_dynamic_module_type_on_http_filter_request_headers_status`.
const HEADERS_CONTINUE: u32 = 0;
const HEADERS_STOP_ITERATION: u32 = 1;
const HEADERS_STOP_ALL_AND_WATERMARK: u32 = 4;
// `..._request_body_status`: Continue, StopIterationAndWatermark.
const BODY_CONTINUE: u32 = 0;
const BODY_STOP_AND_WATERMARK: u32 = 2;
// `..._request_trailers_status`.
const TRAILERS_CONTINUE: u32 = 0;
const TRAILERS_STOP: u32 = 1;

// The callbacks Envoy exports (its binary's dynamic symbol table), resolved when Envoy loads
// the module.
extern "C" {
    fn envoy_dynamic_module_callback_http_get_headers_size(
        filter: FilterEnvoyPtr,
        header_type: u32,
    ) -> usize;
    fn envoy_dynamic_module_callback_http_get_headers(
        filter: FilterEnvoyPtr,
        header_type: u32,
        result_headers: *mut EnvoyHttpHeader,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_set_header(
        filter: FilterEnvoyPtr,
        header_type: u32,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_add_header(
        filter: FilterEnvoyPtr,
        header_type: u32,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_send_response(
        filter: FilterEnvoyPtr,
        status_code: u32,
        headers: *mut ModuleHttpHeader,
        headers_size: usize,
        body: ModuleBuffer,
        details: ModuleBuffer,
    );
    fn envoy_dynamic_module_callback_http_set_dynamic_metadata_string_batch(
        filter: FilterEnvoyPtr,
        namespace: ModuleBuffer,
        entries: *const ModuleKeyValue,
        entries_size: usize,
    );
    fn envoy_dynamic_module_callback_http_filter_continue_decoding(filter: FilterEnvoyPtr);
    fn envoy_dynamic_module_callback_get_most_specific_route_config(
        filter: FilterEnvoyPtr,
    ) -> *const c_void;
    fn envoy_dynamic_module_callback_http_filter_scheduler_new(
        filter: FilterEnvoyPtr,
    ) -> SchedulerPtr;
    fn envoy_dynamic_module_callback_http_filter_scheduler_commit(
        scheduler: SchedulerPtr,
        event_id: u64,
    );
    fn envoy_dynamic_module_callback_http_filter_scheduler_delete(scheduler: SchedulerPtr);
    fn envoy_dynamic_module_callback_log(level: u32, message: ModuleBuffer);
}

/// `envoy_dynamic_module_type_log_level_Warn`.
const LOG_WARN: u32 = 3;
/// `envoy_dynamic_module_type_log_level_Error`.
const LOG_ERROR: u32 = 4;

/// Writes `message` to Envoy's log under the `dynamic_modules` logger.
fn log_error(message: &str) {
    let message = format!("cognito-authz: {message}");
    // SAFETY: the buffer points into `message`, alive for the call; Envoy copies it.
    unsafe { envoy_dynamic_module_callback_log(LOG_ERROR, ModuleBuffer::of(message.as_bytes())) }
}

/// The bytes of an Envoy buffer, borrowed for the current hook.
///
/// # Safety
/// The buffer must come from Envoy in the current hook (pointer and length valid, or null),
/// and the slice must be dropped before the hook returns or a header is set.
unsafe fn borrowed<'a>(ptr: *const c_char, length: usize) -> &'a [u8] {
    if ptr.is_null() || length == 0 {
        return &[];
    }
    // SAFETY: the caller guarantees `length` readable bytes at `ptr` for this hook.
    unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), length) }
}

/// The bytes of an Envoy buffer, copied.
///
/// # Safety
/// As for [`borrowed`].
unsafe fn copied(ptr: *const c_char, length: usize) -> Vec<u8> {
    // SAFETY: as the caller guarantees.
    unsafe { borrowed(ptr, length) }.to_vec()
}

/// Header bytes as text: borrowed when they are UTF-8 (always, but for a hostile client's),
/// with U+FFFD for the bytes that are not. ASCII first (a token, and nearly every header, is
/// ASCII): `is_ascii` reads a 1 KB token about three times faster than `from_utf8`, whose
/// ASCII path is in turn several times faster than the lossy one.
fn text(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    if bytes.is_ascii() {
        // SAFETY: ASCII bytes are UTF-8.
        return std::borrow::Cow::Borrowed(unsafe { std::str::from_utf8_unchecked(bytes) });
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => std::borrow::Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// One stream, reached through Envoy's callbacks. Only built inside a hook, on the stream's
/// worker thread, from the pointer Envoy passed to it.
struct EnvoyStream {
    filter: FilterEnvoyPtr,
    /// The stats a decided check's latency goes to, and when the check started (owned: the
    /// stream may outlive the filter that holds them, once a call has ended it).
    timing: Option<(Arc<EnvoyStats>, Instant)>,
}

impl EnvoyStream {
    /// The stream of the filter `filter`, its checks not timed.
    fn untimed(filter: FilterEnvoyPtr) -> EnvoyStream {
        EnvoyStream {
            filter,
            timing: None,
        }
    }

    /// Shows `each` the headers of the map `kind` (request headers or trailers) whose name
    /// `wanted` accepts, borrowed from Envoy for the call; the others are not converted. Up to
    /// [`HEADERS_ON_STACK`] headers, Envoy's pointers to them are collected without allocating.
    fn each_header(
        &self,
        kind: u32,
        wanted: &dyn Fn(&str) -> bool,
        each: &mut dyn FnMut(&str, &str),
    ) {
        // SAFETY: `self.filter` is the live filter of the current hook.
        let count =
            unsafe { envoy_dynamic_module_callback_http_get_headers_size(self.filter, kind) };
        let empty = EnvoyHttpHeader {
            key_ptr: std::ptr::null(),
            key_length: 0,
            value_ptr: std::ptr::null(),
            value_length: 0,
        };
        let mut on_stack = [const { MaybeUninit::<EnvoyHttpHeader>::uninit() }; HEADERS_ON_STACK];
        let mut on_heap = Vec::new();
        let headers: &mut [EnvoyHttpHeader] = if count <= HEADERS_ON_STACK {
            // Only the `count` entries Envoy fills are set (empty first, should it fill fewer):
            // the rest is never read, so never written (zeroing it all was a 2 KiB memset a
            // request).
            let slots = &mut on_stack[..count];
            for slot in slots.iter_mut() {
                slot.write(empty);
            }
            // SAFETY: every entry of `slots` was initialized just above, and
            // `MaybeUninit<T>` has the layout of `T`.
            unsafe {
                &mut *(slots as *mut [MaybeUninit<EnvoyHttpHeader>] as *mut [EnvoyHttpHeader])
            }
        } else {
            on_heap.resize(count, empty);
            &mut on_heap
        };
        // SAFETY: `headers` has room for the `count` entries Envoy reported; Envoy fills them
        // with pointers into its header map, valid until this hook returns or a header is set.
        let ok = unsafe {
            envoy_dynamic_module_callback_http_get_headers(self.filter, kind, headers.as_mut_ptr())
        };
        if !ok {
            return;
        }
        for h in headers.iter() {
            // SAFETY: filled by Envoy just above; read before this function returns, with no
            // header set in between.
            let (key, value) = unsafe {
                (
                    borrowed(h.key_ptr, h.key_length),
                    borrowed(h.value_ptr, h.value_length),
                )
            };
            let key = text(key);
            if wanted(&key) {
                each(&key, &text(value));
            }
        }
    }

    /// Removes every value of `name` from the map `kind`.
    fn remove(&mut self, kind: u32, name: &str) {
        // SAFETY: live filter of the current hook; a null value removes every value of the
        // header; the name's buffer outlives the call.
        unsafe {
            envoy_dynamic_module_callback_http_set_header(
                self.filter,
                kind,
                ModuleBuffer::of(name.as_bytes()),
                ModuleBuffer::null(),
            );
        }
    }
}

impl Stream for EnvoyStream {
    fn decided(&mut self) {
        if let Some((stats, started)) = self.timing.take() {
            // SAFETY: live filter of the current hook, on its worker thread, before any reply.
            unsafe { stats.record_check(self.filter, started.elapsed()) }
        }
    }

    fn request_headers(&self, wanted: &dyn Fn(&str) -> bool, each: &mut dyn FnMut(&str, &str)) {
        self.each_header(REQUEST_HEADER, wanted, each);
    }

    fn request_trailer_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        self.each_header(REQUEST_TRAILER, &|_| true, &mut |name, _| {
            names.push(name.to_string())
        });
        names
    }

    fn remove_request_trailer(&mut self, name: &str) {
        self.remove(REQUEST_TRAILER, name);
    }

    fn set_header(&mut self, name: &str, value: &str) {
        // SAFETY: live filter of the current hook; both buffers outlive the call.
        unsafe {
            envoy_dynamic_module_callback_http_set_header(
                self.filter,
                REQUEST_HEADER,
                ModuleBuffer::of(name.as_bytes()),
                ModuleBuffer::of(value.as_bytes()),
            );
        }
    }

    fn add_header(&mut self, name: &str, value: &str) {
        // SAFETY: live filter of the current hook; both buffers outlive the call.
        unsafe {
            envoy_dynamic_module_callback_http_add_header(
                self.filter,
                REQUEST_HEADER,
                ModuleBuffer::of(name.as_bytes()),
                ModuleBuffer::of(value.as_bytes()),
            );
        }
    }

    fn remove_header(&mut self, name: &str) {
        self.remove(REQUEST_HEADER, name);
    }

    fn set_metadata(&mut self, namespace: &str, entries: &[(&str, &str)]) {
        let mut pairs = [const {
            ModuleKeyValue {
                key_ptr: std::ptr::null(),
                key_length: 0,
                value_ptr: std::ptr::null(),
                value_length: 0,
            }
        }; filter::MAX_METADATA];
        let count = entries.len().min(pairs.len());
        for (pair, (key, value)) in pairs.iter_mut().zip(entries) {
            *pair = ModuleKeyValue {
                key_ptr: key.as_ptr().cast(),
                key_length: key.len(),
                value_ptr: value.as_ptr().cast(),
                value_length: value.len(),
            };
        }
        // SAFETY: live filter of the current hook; the array's first `count` entries point into
        // `entries`, which outlive the call, and Envoy copies them into one metadata merge.
        unsafe {
            envoy_dynamic_module_callback_http_set_dynamic_metadata_string_batch(
                self.filter,
                ModuleBuffer::of(namespace.as_bytes()),
                pairs.as_ptr(),
                count,
            );
        }
    }

    fn send_local_reply(&mut self, status: u16, headers: &[(&str, &str)], body: &str) {
        let mut headers: Vec<ModuleHttpHeader> = headers
            .iter()
            .map(|(k, v)| ModuleHttpHeader {
                key_ptr: k.as_ptr().cast(),
                key_length: k.len(),
                value_ptr: v.as_ptr().cast(),
                value_length: v.len(),
            })
            .collect();
        let details = b"cognito_authz_denied";
        // SAFETY: live filter of the current hook; the header array and every buffer it points
        // into outlive the call, and Envoy copies them.
        unsafe {
            envoy_dynamic_module_callback_http_send_response(
                self.filter,
                u32::from(status),
                headers.as_mut_ptr(),
                headers.len(),
                ModuleBuffer::of(body.as_bytes()),
                ModuleBuffer::of(details),
            );
        }
    }

    fn continue_decoding(&mut self) {
        // SAFETY: live filter of the current hook, whose request headers were stopped.
        unsafe { envoy_dynamic_module_callback_http_filter_continue_decoding(self.filter) }
    }
}

/// A scheduler for one stream, owned by the check that waits: committing wakes the stream on
/// its worker thread; dropping deletes it (after the commit, or unused when the runtime stops).
struct Scheduler(SchedulerPtr);

// SAFETY: Envoy's scheduler is made to be committed from any thread (it posts to the stream's
// dispatcher and holds the filter weakly: an event for a destroyed stream is dropped), and the
// module deletes it once, in `drop`.
unsafe impl Send for Scheduler {}

impl Scheduler {
    fn commit(&self) {
        // SAFETY: the scheduler is alive until `drop`.
        unsafe { envoy_dynamic_module_callback_http_filter_scheduler_commit(self.0, 0) }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        // SAFETY: created by `scheduler_new`, deleted exactly once, here.
        unsafe { envoy_dynamic_module_callback_http_filter_scheduler_delete(self.0) }
    }
}

/// Runs `body`, or answers 500 if it panics: the request is never let through undecided.
fn guarded<T>(filter: FilterEnvoyPtr, on_panic: T, body: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(value) => value,
        Err(_) => {
            log_error("the check panicked: the request is refused (500)");
            let replied = catch_unwind(AssertUnwindSafe(|| {
                filter::fail_closed(&mut EnvoyStream::untimed(filter));
            }));
            if replied.is_err() {
                log_error("refusing the request panicked too");
            }
            on_panic
        }
    }
}

/// Runs `body` where no request is at stake (config hooks): a panic becomes `fallback`.
fn contained<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|_| {
        log_error("a configuration hook panicked");
        fallback
    })
}

/// Called once when Envoy loads the module: the ABI version it was written against. The
/// decision core's warnings and errors (dry-run mode on, a key fetch failing) go to Envoy's
/// log from here on.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    contained((), || {
        let _ = tracing_subscriber::fmt()
            .with_writer(|| EnvoyLogLine(Vec::new()))
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .without_time()
            .try_init();
    });
    ABI_VERSION.as_ptr()
}

/// One log line for Envoy's log (`dynamic_modules`, at warning level), written when dropped.
struct EnvoyLogLine(Vec<u8>);

impl std::io::Write for EnvoyLogLine {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for EnvoyLogLine {
    fn drop(&mut self) {
        let line = String::from_utf8_lossy(&self.0);
        let line = line.trim_end();
        if !line.is_empty() {
            // SAFETY: the buffer points into `line`, alive for the call; Envoy copies it, and its
            // logger may be called from any thread.
            unsafe {
                envoy_dynamic_module_callback_log(LOG_WARN, ModuleBuffer::of(line.as_bytes()))
            }
        }
    }
}

/// A `DynamicModuleFilter` config: the TOML in `filter_config`. Null refuses the config.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    config_envoy: ConfigEnvoyPtr,
    _name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> *const c_void {
    contained(std::ptr::null(), || {
        // SAFETY: Envoy's buffer, valid during this hook.
        let bytes = unsafe { copied(config.ptr, config.length) };
        let Ok(text) = String::from_utf8(bytes) else {
            log_error("the filter config is not UTF-8");
            return std::ptr::null();
        };
        let mut defined = None;
        let made = FilterConfig::with_stats(
            &text,
            |key| std::env::var(key).ok(),
            |pools| {
                let stats = Arc::new(EnvoyStats::define(config_envoy, pools));
                defined = Some(Arc::clone(&stats));
                Some(stats as Arc<dyn cognito_authz::metrics::MetricsObserver>)
            },
        );
        match (made, defined) {
            (Ok(config), Some(stats)) => Box::into_raw(Box::new(ModuleConfig {
                filter: Arc::new(config),
                stats,
            })) as *const c_void,
            (Ok(_), None) => {
                log_error("the filter config is refused: its stats were not defined");
                std::ptr::null()
            }
            (Err(err), stats) => {
                if let Some(stats) = stats {
                    stats.close();
                }
                // Without the lines a TOML error quotes: they may hold a secret (a Redis URL).
                let reason: Vec<&str> = err.0.lines().filter(|l| !l.contains('|')).collect();
                log_error(&format!(
                    "the filter config is refused: {}",
                    reason.join(" ")
                ));
                std::ptr::null()
            }
        }
    })
}

/// What the module keeps for one `DynamicModuleFilter` config: the filter's config and the
/// Envoy stats defined for it.
struct ModuleConfig {
    filter: Arc<FilterConfig>,
    stats: Arc<EnvoyStats>,
}

/// One stream's state: the filter, and what times its check for the config's stats.
struct Hooked {
    filter: Filter,
    stats: Arc<EnvoyStats>,
    /// When the check started (timed on the worker thread, to when it is carried out).
    started: Cell<Option<Instant>>,
}

impl Hooked {
    /// The stream of this filter, its check timed from when it started.
    fn timed(&self, filter: FilterEnvoyPtr) -> EnvoyStream {
        EnvoyStream {
            filter,
            timing: self
                .started
                .get()
                .map(|started| (Arc::clone(&self.stats), started)),
        }
    }
}

/// The config is gone from Envoy: no filter of it remains.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(config: *const c_void) {
    contained((), || {
        // SAFETY: `config` came from `Box::into_raw` in `config_new`; Envoy destroys it once.
        let config = unsafe { Box::from_raw(config as *mut ModuleConfig) };
        // First: a count from the module's runtime must not reach Envoy's config once it goes.
        config.stats.close();
        drop(config);
    })
}

/// A `DynamicModuleFilterPerRoute` config: the route's overrides as a JSON object of strings.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_new(
    _name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> *const c_void {
    contained(std::ptr::null(), || {
        // SAFETY: Envoy's buffer, valid during this hook.
        let bytes = unsafe { copied(config.ptr, config.length) };
        match RouteOverrides::parse(&bytes) {
            Ok(route) => ROUTES.issue(route),
            Err(err) => {
                log_error(&format!("a per-route config is refused: {}", err.0));
                std::ptr::null()
            }
        }
    })
}

/// A per-route config is gone from Envoy.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_destroy(
    route: *const c_void,
) {
    contained((), || {
        if !ROUTES.retire(route) {
            log_error("Envoy destroyed a per-route config this module did not make");
        }
    })
}

/// A new stream.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(
    config: *const c_void,
    _filter_envoy: FilterEnvoyPtr,
) -> *const c_void {
    contained(std::ptr::null(), || {
        // SAFETY: `config` is the live `ModuleConfig` from `config_new`: Envoy destroys a
        // config only after every filter made from it.
        let config = unsafe { &*(config as *const ModuleConfig) };
        let hooked = Hooked {
            filter: Filter::new(Arc::clone(&config.filter)),
            stats: Arc::clone(&config.stats),
            started: Cell::new(None),
        };
        Box::into_raw(Box::new(hooked)) as *const c_void
    })
}

/// The filter of `module` in a hook.
///
/// # Safety
/// `module` must be the pointer `on_http_filter_new` returned, not yet destroyed. Envoy calls a
/// stream's hooks on its worker thread only, possibly one inside another: hence a shared
/// reference (`Filter` is not `Sync`, and never leaves that thread). The reference must end
/// before a call that may end the stream (which may destroy the filter): the filter's methods
/// return a [`filter::Finish`] that makes such calls without it.
unsafe fn filter_of<'a>(module: *const c_void) -> &'a Hooked {
    // SAFETY: as the caller guarantees.
    unsafe { &*(module as *const Hooked) }
}

/// The request headers: the check runs here.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    filter_envoy: FilterEnvoyPtr,
    module: *const c_void,
    _end_of_stream: bool,
) -> u32 {
    guarded(filter_envoy, HEADERS_STOP_ITERATION, || {
        // SAFETY: a hook of a live filter (see `filter_of`); the reference ends before the
        // finish runs.
        let hooked = unsafe { filter_of(module) };
        hooked.started.set(Some(Instant::now()));
        #[cfg(feature = "bench-outputs-only")]
        if let Some(status) = outputs_only(&mut hooked.timed(filter_envoy)) {
            return status;
        }
        let mut stream = hooked.timed(filter_envoy);
        // SAFETY: live filter of this hook; the pointer is only looked up, never read.
        let route =
            unsafe { envoy_dynamic_module_callback_get_most_specific_route_config(filter_envoy) };
        let route = match ROUTES.get(route) {
            Lookup::Absent => None,
            Lookup::Issued(route) => Some(route),
            Lookup::Foreign => {
                log_error(
                    "the route's per-route config was not made by this module: refused (500)",
                );
                filter::fail_closed(&mut stream);
                return HEADERS_STOP_ITERATION;
            }
        };
        let waker = || {
            // SAFETY: created on the stream's worker thread inside its hook, as required.
            let scheduler = Scheduler(unsafe {
                envoy_dynamic_module_callback_http_filter_scheduler_new(filter_envoy)
            });
            move || scheduler.commit()
        };
        let finish = hooked
            .filter
            .on_request_headers(route.as_deref(), &stream, waker);
        match finish.run(&mut stream) {
            Step::Continue => HEADERS_CONTINUE,
            Step::Replied => HEADERS_STOP_ITERATION,
            Step::Pending => HEADERS_STOP_ALL_AND_WATERMARK,
        }
    })
}

/// The bench's ceiling (feature `bench-outputs-only`): what a cached allow of the bench's token
/// writes, through the same callbacks (the check's stats, one metadata batch, six identity
/// headers added), with nothing read or decided. Always `Some`, which the hook returns: an
/// `Option` only so that the rest of the hook stays reachable code in this build.
#[cfg(feature = "bench-outputs-only")]
fn outputs_only(stream: &mut EnvoyStream) -> Option<u32> {
    const SUB: &str = "8f1e2d3c-0000-4000-8000-00000000abcd";
    const HEADERS: [(&str, &str); 6] = [
        ("x-cognito-sub", SUB),
        ("x-cognito-username", SUB),
        ("x-cognito-client-id", "bench-client"),
        ("x-cognito-token-use", "access"),
        ("x-cognito-groups", "admins,beta"),
        ("x-cognito-scope", "aws.cognito.signin.user.admin openid"),
    ];
    stream.decided();
    let metadata = [("decision", "allow"), ("reason", "valid"), ("sub", SUB)];
    stream.set_metadata(filter::METADATA_NAMESPACE, &metadata);
    for (name, value) in HEADERS {
        stream.add_header(name, value);
    }
    Some(HEADERS_CONTINUE)
}

/// A check that waited on the network is done: carry out its outcome on the worker thread.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
    filter_envoy: FilterEnvoyPtr,
    module: *const c_void,
    _event_id: u64,
) {
    guarded(filter_envoy, (), || {
        // SAFETY: a hook of a live filter (see `filter_of`); the reference ends here.
        let hooked = unsafe { filter_of(module) };
        let mut stream = hooked.timed(filter_envoy);
        let finish = hooked.filter.on_scheduled();
        let _ = finish.run(&mut stream);
    })
}

/// Request body: held back while the check is pending.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    filter_envoy: FilterEnvoyPtr,
    module: *const c_void,
    _end_of_stream: bool,
) -> u32 {
    guarded(filter_envoy, BODY_STOP_AND_WATERMARK, || {
        // SAFETY: a hook of a live filter (see `filter_of`).
        if unsafe { filter_of(module) }.filter.holds_body() {
            BODY_STOP_AND_WATERMARK
        } else {
            BODY_CONTINUE
        }
    })
}

/// Request trailers: our headers stripped from them, and held back while the check is pending.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
    filter_envoy: FilterEnvoyPtr,
    module: *const c_void,
) -> u32 {
    guarded(filter_envoy, TRAILERS_STOP, || {
        // SAFETY: a hook of a live filter (see `filter_of`).
        if unsafe { filter_of(module) }
            .filter
            .on_request_trailers(&mut EnvoyStream::untimed(filter_envoy))
        {
            TRAILERS_STOP
        } else {
            TRAILERS_CONTINUE
        }
    })
}

/// The stream is gone: free its state. A pending check's tasks are aborted; one that woke the
/// stream already is harmless (Envoy drops the event of a destroyed stream).
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_destroy(module: *const c_void) {
    contained((), || {
        // SAFETY: `module` came from `Box::into_raw` in `filter_new`; destroyed once.
        drop(unsafe { Box::from_raw(module as *mut Hooked) });
    })
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::text;

    #[test]
    fn header_bytes_become_the_same_text_by_every_path() {
        let token = "eyJhbGciOiJSUzI1NiJ9.".repeat(50);
        for (bytes, borrowed) in [
            (token.as_bytes(), true),
            (b"".as_slice(), true),
            ("caf\u{e9} \u{1f600}".as_bytes(), true),
            (b"a\xffb\xc3".as_slice(), false),
            (b"\x80".as_slice(), false),
        ] {
            let got = text(bytes);
            assert_eq!(got, String::from_utf8_lossy(bytes), "{bytes:?}");
            assert_eq!(matches!(got, Cow::Borrowed(_)), borrowed, "{bytes:?}");
        }
    }
}
