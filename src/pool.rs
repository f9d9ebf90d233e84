//! A configured user pool: its id, app clients, accepted token use, issuers and key source.
//! Validated by `config`; read by the key store and the verifier.

use serde::Serialize;

use crate::identity::TokenUsePolicy;

/// One user pool, validated and ready to use.
#[derive(Debug, Clone, Serialize)]
pub struct PoolConfig {
    /// The pool id (`us-east-1_AbC123`); not format-checked.
    pub id: String,
    /// The region, when known.
    pub region: Option<String>,
    /// Accepted app client ids (`client_id` of access tokens, `aud` of ID tokens).
    pub client_ids: Vec<String>,
    /// Which token uses this pool accepts.
    pub token_use: TokenUsePolicy,
    /// Accepted `iss` values: both AWS forms, or the one configured issuer.
    pub issuers: Vec<String>,
    /// Where the keys are fetched from.
    pub jwks_uri: String,
    /// Cognito's API endpoint for `GetUser` (revocation checks): the region's public endpoint,
    /// or the configured one (emulator, VPC endpoint); `None` when no region is known.
    pub idp_endpoint: Option<String>,
}
