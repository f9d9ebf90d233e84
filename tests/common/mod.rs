//! Shared helpers for the integration tests: configurations pointing at a local JWKS server.
#![allow(dead_code)]

use std::collections::HashMap;

use cognito_authz::config::Config;
use cognito_authz::jwks::KeyStore;
use cognito_authz::verify::Verifier;

pub const POOL: &str = "us-east-1_IntegPool";
pub const ISS: &str = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_IntegPool";
pub const CLIENT: &str = "integ-client";

/// The environment a user would set, pointing the JWKS at `jwks_uri`, plus `extra`.
pub fn env_for(jwks_uri: &str, extra: &[(&str, &str)]) -> HashMap<String, String> {
    let mut vars: HashMap<String, String> = [
        ("AWS_COGNITO_USER_POOL_ID", POOL),
        ("AWS_COGNITO_USER_POOL_CLIENT_ID", CLIENT),
        ("COGNITO_JWKS_URI", jwks_uri),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in extra {
        vars.insert(k.to_string(), v.to_string());
    }
    vars
}

pub fn config_for(jwks_uri: &str, extra: &[(&str, &str)]) -> Config {
    let vars = env_for(jwks_uri, extra);
    Config::from_lookup(|k| vars.get(k).cloned(), None).expect("valid test configuration")
}

/// A verifier whose store has not fetched yet.
pub fn verifier_for(config: &Config) -> Verifier {
    let keys = KeyStore::new(&config.pools, &config.jwks).expect("key store");
    Verifier::new(config, keys)
}
