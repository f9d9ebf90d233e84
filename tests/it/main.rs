//! The integration tests, as one binary so the crate links once: a module per area.
//! `no_token_in_logs` stays a binary of its own: it installs a global log subscriber.

mod common;

mod architecture;
mod authz;
mod browser;
mod cli;
mod control_plane;
mod deployment;
mod e2e;
mod e2e_http;
mod edge;
mod envoy_module;
mod fuzz_replay;
mod hostile;
mod http_authz;
mod jwt_authn_peer;
mod key_store;
mod listeners;
mod module_deploy;
mod module_revocation;
mod operator_input;
mod platforms;
mod properties;
mod readme;
mod redis_cluster;
mod redis_rotation;
mod redis_signing;
mod reload;
mod revocation;
mod revocation_check;
mod server;
mod tls;
mod token_cache;
mod traces;
