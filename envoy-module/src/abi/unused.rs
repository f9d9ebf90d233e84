//! The hooks Envoy resolves when it loads the filter config and this filter has no use for:
//! the response passes untouched, and the module makes no callouts through Envoy (its network
//! work runs on its own runtime) and is not a terminal filter. None dereferences a pointer.

use std::ffi::c_void;

use super::{FilterEnvoyPtr, BODY_CONTINUE, HEADERS_CONTINUE, TRAILERS_CONTINUE};

/// Hooks Envoy requires but this filter has no use for: the response passes untouched.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    _filter_envoy: FilterEnvoyPtr,
    _module: *const c_void,
    _end_of_stream: bool,
) -> u32 {
    HEADERS_CONTINUE
}

/// See [`envoy_dynamic_module_on_http_filter_response_headers`].
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    _filter_envoy: FilterEnvoyPtr,
    _module: *const c_void,
    _end_of_stream: bool,
) -> u32 {
    BODY_CONTINUE
}

/// See [`envoy_dynamic_module_on_http_filter_response_headers`].
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
    _filter_envoy: FilterEnvoyPtr,
    _module: *const c_void,
) -> u32 {
    TRAILERS_CONTINUE
}

/// See [`envoy_dynamic_module_on_http_filter_response_headers`].
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
    _filter_envoy: FilterEnvoyPtr,
    _module: *const c_void,
) {
}

/// This filter makes no HTTP callouts through Envoy (its network work runs on its runtime).
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    _filter_envoy: FilterEnvoyPtr,
    _module: *const c_void,
    _callout_id: u64,
    _result: u32,
    _headers: *const EnvoyHttpHeaderOpaque,
    _headers_size: usize,
    _body_chunks: *const EnvoyBufferOpaque,
    _body_chunks_size: usize,
) {
}

/// No streamed callouts either.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    _filter_envoy: FilterEnvoyPtr,
    _module: *const c_void,
    _stream_id: u64,
    _headers: *const EnvoyHttpHeaderOpaque,
    _headers_size: usize,
    _end_stream: bool,
) {
}

/// See [`envoy_dynamic_module_on_http_filter_http_stream_headers`].
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    _filter_envoy: FilterEnvoyPtr,
    _module: *const c_void,
    _stream_id: u64,
    _data: *const EnvoyBufferOpaque,
    _data_count: usize,
    _end_stream: bool,
) {
}

/// See [`envoy_dynamic_module_on_http_filter_http_stream_headers`].
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    _filter_envoy: FilterEnvoyPtr,
    _module: *const c_void,
    _stream_id: u64,
    _trailers: *const EnvoyHttpHeaderOpaque,
    _trailers_size: usize,
) {
}

/// See [`envoy_dynamic_module_on_http_filter_http_stream_headers`].
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(
    _filter_envoy: FilterEnvoyPtr,
    _module: *const c_void,
    _stream_id: u64,
) {
}

/// See [`envoy_dynamic_module_on_http_filter_http_stream_headers`].
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
    _filter_envoy: FilterEnvoyPtr,
    _module: *const c_void,
    _stream_id: u64,
    _reason: u32,
) {
}

/// Downstream write-buffer watermarks (terminal filters only; this one is not).
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
    _filter_envoy: FilterEnvoyPtr,
    _module: *const c_void,
) {
}

/// See [`envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark`].
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
    _filter_envoy: FilterEnvoyPtr,
    _module: *const c_void,
) {
}

/// Header and buffer arrays in hooks this filter ignores: never dereferenced.
#[repr(C)]
pub struct EnvoyHttpHeaderOpaque {
    _private: [u8; 0],
}

/// See [`EnvoyHttpHeaderOpaque`].
#[repr(C)]
pub struct EnvoyBufferOpaque {
    _private: [u8; 0],
}
