//! Shared by the fuzz targets: one verifier per process over a key the store trusts.
use std::sync::OnceLock;

use cognito_authz::authz::Authorizer;
use cognito_authz::config::Config;
use cognito_authz::jwks::KeyStore;
use cognito_authz::metrics::Metrics;
use cognito_authz::testkit::{jwks, TestKey};

pub const ISS: &str = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Fuzz";

pub fn authorizer() -> &'static (Authorizer, tokio::runtime::Runtime) {
    static ONCE: OnceLock<(Authorizer, tokio::runtime::Runtime)> = OnceLock::new();
    ONCE.get_or_init(|| {
        let vars = [
            ("AWS_COGNITO_USER_POOL_ID", "us-east-1_Fuzz"),
            ("AWS_COGNITO_USER_POOL_CLIENT_ID", "fuzz-client"),
            // Nothing listens here: an unknown kid's refetch fails at once.
            ("COGNITO_JWKS_URI", "http://127.0.0.1:9/jwks.json"),
            ("COGNITO_JWKS_MIN_REFETCH_SECONDS", "100000"),
        ];
        let routes = "[[routes]]\nprefix = \"/home\"\nmode = \"optional\"\n[[routes]]\nprefix = \"/admin\"\nmode = \"required\"\ngroups_any = [\"admins\"]\n[identity.claim_headers]\n\"custom:tenant\" = \"x-tenant\"\n";
        let config = Config::from_toml(
            |k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string()),
            routes,
        )
        .expect("fuzz configuration");
        let keys = KeyStore::new(&config.pools, &config.jwks).expect("key store");
        keys.preload(0, jwks(&[TestKey::shared(0)]).to_string().as_bytes())
            .expect("keys");
        let verifier = config.verifier(keys);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        (
            Authorizer::new(verifier, config.routes.clone(), 64, Metrics::new()),
            runtime,
        )
    })
}
