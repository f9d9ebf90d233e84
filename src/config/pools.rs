//! The user pools: the file's `[[pools]]` joined with the environment's one pool, each
//! validated (region, app clients, issuers, key and API endpoints), and the checks only the
//! whole list can make.

use super::*;

/// A pool before validation, with the name of the key each field came from.
pub(super) struct RawPool {
    key: String,
    id: String,
    region: Option<(String, String)>,
    client_ids: (String, Vec<String>),
    token_use: Option<(String, String)>,
    issuer: Option<(String, String)>,
    jwks_uri: Option<(String, String)>,
    idp_endpoint: Option<(String, String)>,
}

/// What only the whole configuration shows: every pool that revocation checks may ask has an
/// endpoint, and no issuer belongs to two pools.
pub(super) fn check_pools(
    var: &dyn Fn(&str) -> Option<String>,
    pools: &[PoolConfig],
    routes: &RouteConfig,
) -> Result<(), ConfigError> {
    let checks_cognito = routes.fallback.revocation == RevocationMode::Cognito
        || routes
            .rules
            .iter()
            .any(|r| r.requirements.revocation == RevocationMode::Cognito);
    if checks_cognito {
        if let Some((i, pool)) = pools
            .iter()
            .enumerate()
            .find(|(_, p)| p.idp_endpoint.is_none())
        {
            return Err(ConfigError::invalid(
                if i + 1 == pools.len() && var(ENV_POOL_ID).as_deref() == Some(pool.id.as_str())
                {
                    ENV_IDP_ENDPOINT.to_string()
                } else {
                    format!("pools[{i}].idp_endpoint")
                },
                format!(
                    "revocation checks ask Cognito, and pool {} has no region to derive its endpoint from",
                    pool.id
                ),
            ));
        }
    }
    let mut seen = HashSet::new();
    for (i, pool) in pools.iter().enumerate() {
        for issuer in &pool.issuers {
            if !seen.insert(issuer.clone()) {
                return Err(ConfigError::invalid(
                    format!("pools[{i}].issuer"),
                    format!("issuer {issuer} is claimed by two pools"),
                ));
            }
        }
    }

    Ok(())
}

pub(super) fn split_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Joins the file's pools with the environment's one pool (see the module docs for the order).
pub(super) fn merge_pools(
    var: &dyn Fn(&str) -> Option<String>,
    file_pools: Vec<FilePool>,
) -> Result<Vec<RawPool>, ConfigError> {
    let mut pools = Vec::with_capacity(file_pools.len() + 1);
    for (i, pool) in file_pools.into_iter().enumerate() {
        let key = format!("pools[{i}]");
        let id = pool
            .id
            .filter(|id| !id.trim().is_empty())
            .ok_or_else(|| ConfigError::invalid(format!("{key}.id"), "missing pool id"))?;
        pools.push(RawPool {
            id: id.trim().to_string(),
            region: pool.region.map(|v| (format!("{key}.region"), v)),
            client_ids: (format!("{key}.client_ids"), pool.client_ids),
            token_use: pool.token_use.map(|v| (format!("{key}.token_use"), v)),
            issuer: pool.issuer.map(|v| (format!("{key}.issuer"), v)),
            jwks_uri: pool.jwks_uri.map(|v| (format!("{key}.jwks_uri"), v)),
            idp_endpoint: pool
                .idp_endpoint
                .map(|v| (format!("{key}.idp_endpoint"), v)),
            key,
        });
    }

    let env_only = [
        ENV_CLIENT_IDS,
        ENV_ISSUER,
        ENV_JWKS_URI,
        ENV_TOKEN_USE,
        ENV_IDP_ENDPOINT,
    ];
    let Some(env_id) = var(ENV_POOL_ID) else {
        if let Some(stray) = env_only.iter().find(|k| var(k).is_some()) {
            return Err(ConfigError::invalid(
                *stray,
                format!("is set but {ENV_POOL_ID} is not: it describes the environment's pool"),
            ));
        }
        return Ok(pools);
    };
    let env_id = env_id.trim().to_string();
    let with_key = |k: &str| var(k).map(|v| (k.to_string(), v));
    let existing = pools.iter_mut().find(|p| p.id == env_id);
    match existing {
        Some(pool) => {
            if let Some(ids) = var(ENV_CLIENT_IDS) {
                pool.client_ids = (ENV_CLIENT_IDS.to_string(), split_list(&ids));
            }
            pool.token_use = with_key(ENV_TOKEN_USE).or(pool.token_use.take());
            pool.issuer = with_key(ENV_ISSUER).or(pool.issuer.take());
            pool.jwks_uri = with_key(ENV_JWKS_URI).or(pool.jwks_uri.take());
            pool.idp_endpoint = with_key(ENV_IDP_ENDPOINT).or(pool.idp_endpoint.take());
        }
        None => pools.push(RawPool {
            key: ENV_POOL_ID.to_string(),
            id: env_id,
            region: None,
            client_ids: (
                ENV_CLIENT_IDS.to_string(),
                var(ENV_CLIENT_IDS)
                    .map(|ids| split_list(&ids))
                    .unwrap_or_default(),
            ),
            token_use: with_key(ENV_TOKEN_USE),
            issuer: with_key(ENV_ISSUER),
            jwks_uri: with_key(ENV_JWKS_URI),
            idp_endpoint: with_key(ENV_IDP_ENDPOINT),
        }),
    }
    Ok(pools)
}

/// `us-east-1_AbC` -> `us-east-1`; `None` for ids not in the AWS shape (`local_abc`).
pub fn region_from_pool_id(pool_id: &str) -> Option<&str> {
    let (prefix, rest) = pool_id.split_once('_')?;
    (is_region(prefix) && !rest.is_empty()).then_some(prefix)
}

pub(super) fn is_region(text: &str) -> bool {
    let parts: Vec<&str> = text.split('-').collect();
    parts.len() >= 3
        && parts[0].len() == 2
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1].bytes().all(|b| b.is_ascii_digit())
        && !parts[parts.len() - 1].is_empty()
}

pub(super) fn validate_url(key: &str, value: &str) -> Result<String, ConfigError> {
    let value = value.trim().trim_end_matches('/');
    let url = reqwest::Url::parse(value)
        .map_err(|err| ConfigError::invalid(key, format!("'{value}' is not a URL: {err}")))?;
    if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
        return Err(ConfigError::invalid(
            key,
            format!("'{value}' must be an http(s) URL with a host"),
        ));
    }
    Ok(value.to_string())
}

/// A pool's region: the one its id carries (a configured one must agree), else the configured
/// one, else the default (`AWS_DEFAULT_REGION`) when it is a region.
pub(super) fn pool_region(
    id: &str,
    given: Option<(String, String)>,
    default_region: Option<String>,
) -> Result<Option<String>, ConfigError> {
    let derived = region_from_pool_id(id).map(str::to_string);
    let region = match (&derived, given) {
        (Some(derived), Some((key, given))) if given.trim() != derived => {
            return Err(ConfigError::invalid(
                key,
                format!("'{given}' contradicts the pool id's region '{derived}'"),
            ))
        }
        (Some(derived), _) => Some(derived.clone()),
        (None, Some((key, given))) => {
            if !is_region(given.trim()) {
                return Err(ConfigError::invalid(
                    key,
                    format!("'{given}' is not an AWS region"),
                ));
            }
            Some(given.trim().to_string())
        }
        (None, None) => default_region
            .map(|r| r.trim().to_string())
            .filter(|r| is_region(r)),
    };
    Ok(region)
}

/// A pool's app client ids, trimmed and without repeats; at least one.
pub(super) fn unique_clients(
    id: &str,
    (key, client_ids): (String, Vec<String>),
) -> Result<Vec<String>, ConfigError> {
    let mut unique = Vec::new();
    for id in client_ids
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
    {
        if !unique.iter().any(|u: &String| u == id) {
            unique.push(id.to_string());
        }
    }
    if unique.is_empty() {
        return Err(ConfigError::invalid(
            key,
            format!(
                "pool {} needs at least one app client id: a token for any other client must be refused",
                id
            ),
        ));
    }
    Ok(unique)
}

pub(super) fn validate_pool(
    raw: RawPool,
    default_region: Option<String>,
) -> Result<PoolConfig, ConfigError> {
    let region = pool_region(&raw.id, raw.region, default_region)?;
    let client_ids = unique_clients(&raw.id, raw.client_ids)?;

    let token_use = match raw.token_use {
        Some((key, value)) => {
            TokenUsePolicy::parse(&value).map_err(|p| ConfigError::invalid(key, p))?
        }
        None => TokenUsePolicy::Access,
    };

    let issuers = match (raw.issuer, &region) {
        (Some((key, issuer)), _) => vec![validate_url(&key, &issuer)?],
        (None, Some(region)) => vec![
            format!("https://cognito-idp.{region}.amazonaws.com/{}", raw.id),
            format!(
                "https://issuer-cognito-idp.{region}.amazonaws.com/{}",
                raw.id
            ),
        ],
        (None, None) => {
            let key = if raw.key == ENV_POOL_ID {
                ENV_ISSUER.to_string()
            } else {
                format!("{}.issuer", raw.key)
            };
            return Err(ConfigError::invalid(
                key,
                format!(
                    "pool {} has no region in its id and none is configured: set the expected issuer",
                    raw.id
                ),
            ));
        }
    };

    let jwks_uri = match raw.jwks_uri {
        Some((key, uri)) => validate_url(&key, &uri)?,
        None => format!("{}/.well-known/jwks.json", issuers[0]),
    };

    let idp_endpoint = match (raw.idp_endpoint, &region) {
        (Some((key, endpoint)), _) => Some(format!("{}/", validate_url(&key, &endpoint)?)),
        (None, Some(region)) => Some(format!("https://cognito-idp.{region}.amazonaws.com/")),
        (None, None) => None,
    };

    Ok(PoolConfig {
        idp_endpoint,
        id: raw.id,
        region,
        client_ids,
        token_use,
        issuers,
        jwks_uri,
    })
}
