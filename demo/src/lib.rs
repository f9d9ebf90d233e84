//! The bootcamp app ("Cruddur") in miniature, behind Envoy and cognito-authz.
//!
//! # Layout
//! - [`app`]: the upstream, which trusts identity headers and never parses a token.
//! - [`cognito`]: the Cognito API calls the app's front end makes.
//! - [`envoy_config`]: the shipped Envoy configs, generated from `envoy/envoy.yaml` as parsed YAML.
//! - [`stack`]: the emulator, cognito-authz, the app and Envoy as real local processes.
//! - [`walkthrough`]: the app's flows through Envoy, each step checked.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod app;
pub mod cognito;
pub mod envoy_config;
pub mod error;
pub mod frontend;
pub mod ports;
pub mod stack;
pub mod walkthrough;
