//! Reload: a new configuration swapped in whole while the listeners keep serving, with the keys
//! of unchanged pools and Cognito's verdicts carried over.

use std::sync::Arc;

use tracing::{info, warn};

use super::{Running, ServerError};
use crate::config::Config;
use crate::decision::Authorizer;
use crate::jwks::KeyStore;
use crate::lock;
use crate::metrics::Metrics;
use crate::revocation_check::RevocationChecker;
use crate::shared::Shared;

impl Running {
    /// Swaps in a new configuration's pools, app clients, routes and identity settings at once.
    /// Unchanged pools (same id and JWKS URI) keep their keys; new ones are fetched before the
    /// swap. Listener addresses and the runtime are not reloaded (a warning says so). The
    /// control API's secret and the revocation cap take effect at once.
    pub async fn reload(&self, config: Config) -> Result<(), ServerError> {
        let old_config = self.running_config.load_full();
        if config.server.grpc_addr != old_config.server.grpc_addr
            || config.server.admin_addr != old_config.server.admin_addr
        {
            warn!("listener addresses changed: they take effect at the next restart");
        }
        if config.server.redis_url != old_config.server.redis_url
            || config.server.redis_cluster != old_config.server.redis_cluster
            || config.server.redis_signing_key != old_config.server.redis_signing_key
        {
            warn!("the Redis URL or signing keys changed: they take effect at the next restart");
        }
        let old = self.authorizer.verifier();
        let keys =
            KeyStore::with_observer(&config.pools, &config.jwks, Arc::new(self.metrics.clone()))
                .map_err(ServerError::Client)?;
        for (index, pool) in config.pools.iter().enumerate() {
            if let Some(previous) = old
                .pools()
                .iter()
                .position(|p| p.id == pool.id && p.jwks_uri == pool.jwks_uri)
            {
                keys.adopt(index, old.keys().snapshot(previous));
            }
        }
        keys.refresh_all().await;
        if let Some(pool) = config
            .pools
            .iter()
            .enumerate()
            .find(|(index, _)| keys.snapshot(*index).is_empty())
        {
            keys.retire();
            return Err(ServerError::ReloadWithoutKeys(pool.1.id.clone()));
        }
        let mut checker = revocation_checker(
            &config,
            &self.authorizer,
            self.shared.clone(),
            &self.metrics,
        )?;
        // What Cognito said about tokens stays true across a reload.
        if let Some(previous) = self.authorizer.revocation_checker() {
            checker = checker.keeping_verdicts_of(&previous);
        }
        let verifier = config.verifier(keys.clone());
        self.authorizer
            .replace(verifier, config.routes.clone(), config.token_cache_entries);
        self.authorizer.set_revocation_checker(Some(checker));
        self.authorizer
            .revocations()
            .set_cap(config.server.max_revocations);
        self.authorizer.set_dry_run(config.server.dry_run);
        self.authorizer
            .set_full_metadata(config.server.full_metadata);
        // The old store's loops end, including any its start-up task has yet to spawn.
        old.keys().retire();
        let mut refresh = lock(&self.refresh);
        for task in refresh.drain(..) {
            task.abort();
        }
        refresh.extend(keys.spawn_refresh());
        info!(
            pools = config.pools.len(),
            routes = config.routes.rules.len(),
            "configuration reloaded"
        );
        self.running_config.store(Arc::new(config));
        Ok(())
    }
}

/// The Cognito revocation checker for a configuration: each pool's `GetUser` endpoint, revoked
/// sessions recorded in the authorizer's list and shared through Redis.
pub(super) fn revocation_checker(
    config: &Config,
    authorizer: &Authorizer,
    shared: Option<Shared>,
    metrics: &Metrics,
) -> Result<RevocationChecker, ServerError> {
    RevocationChecker::new(
        config.revocation.clone(),
        config.idp_endpoints(),
        authorizer.revocations(),
        shared,
        crate::revocation::entry_lifetime(config.leeway),
        Some(Arc::new(metrics.clone())),
    )
    .map(|checker| checker.with_clock(authorizer.clock().clone()))
    .map_err(ServerError::CognitoClient)
}
