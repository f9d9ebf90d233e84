//! Header hygiene, owned in one place: for an allowed request, every header Envoy sets on the
//! upstream request and every header it removes.
//!
//! The plan works from the managed list (the fixed identity headers, the mapped claim headers
//! and, with `forward_token = false`, the token's own headers), never from what the request
//! happened to show. What Envoy shows the check is a platform's choice (Envoy Gateway sends only
//! `headersToExtAuth`, Istio's HTTP provider only `includeRequestHeadersInCheck`), so a client's
//! forged `x-cognito-groups` must be removed whether or not the check saw it. Every allow
//! (valid, anonymous, public, preflight, dry-run) therefore removes every managed header it
//! does not set, and no header is ever both set and removed: Envoy applies removals after
//! setting, so a header in both would never reach the app.

use std::sync::Arc;

use crate::credential::strip_cookie;
use crate::headers::Headers;
use crate::identity::{self, Identity, IDENTITY_PREFIX};

/// Which headers an allow sets and removes, for every verdict and both protocols. Built once
/// per configuration.
#[derive(Debug, Clone, Default)]
pub struct HeaderPlan {
    /// Every identity header we manage: the fixed ones, then the mapped ones.
    managed: Vec<String>,
    /// The mapped claim headers, `(claim, header)`, in the order identities hold them.
    claim_headers: Vec<(String, String)>,
    /// Headers carrying the token, removed on every allow (`forward_token = false`).
    token_headers: Vec<String>,
    /// The cookie carrying the token, cut out of `cookie` on every allow (`forward_token =
    /// false`): the app keeps its other cookies.
    token_cookie: Option<String>,
    /// For each place in [`identity::header_names`], that header's index in `managed` (the
    /// first 64 only).
    managed_at: Vec<Option<u8>>,
}

/// What Envoy does to the upstream request on an allow. No name is in both lists.
///
/// Read through [`Rewrite::set`] and [`Rewrite::remove`], which borrow the names from the plan
/// and the values from the identity: an allow copies no header name or value. Only what the
/// request itself adds is owned: a cookie header without the token, and any other header in
/// our namespace Envoy showed.
#[derive(Debug, Clone)]
pub struct Rewrite {
    plan: Arc<HeaderPlan>,
    identity: Option<Identity>,
    /// Bit `i` set: the identity sets `plan.managed[i]` (the first 64; past them, the
    /// identity's headers are searched).
    set_mask: u64,
    /// Headers in our namespace the request showed that the plan does not manage.
    shown: Vec<String>,
    /// The `cookie` header without the token cookie, when the request carried that cookie: set
    /// when something remains, else removed.
    cookie: Option<String>,
}

impl Rewrite {
    /// Headers to set, each replacing the client's value: the identity's, fixed ones first,
    /// then a `cookie` without the token.
    pub fn set(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        let identity = self
            .identity
            .iter()
            .flat_map(|i| i.headers(&self.plan.claim_headers));
        let cookie = self
            .cookie
            .as_deref()
            .filter(|rest| !rest.is_empty())
            .map(|rest| ("cookie", rest));
        identity.chain(cookie)
    }

    /// Headers to remove: every managed header not set, the namespace headers the request
    /// showed, the token's headers when it must not be forwarded, and a `cookie` that held
    /// only the token.
    pub fn remove(&self) -> impl Iterator<Item = &str> + '_ {
        let managed = self
            .plan
            .managed
            .iter()
            .enumerate()
            .filter(
                |(i, name)| match u32::try_from(*i).ok().and_then(|i| 1u64.checked_shl(i)) {
                    Some(bit) => self.set_mask & bit == 0,
                    None => !self.sets(name),
                },
            )
            .map(|(_, name)| name.as_str());
        let cookie = self
            .cookie
            .as_deref()
            .filter(|rest| rest.is_empty())
            .map(|_| "cookie");
        managed
            .chain(self.shown.iter().map(String::as_str))
            .chain(self.plan.token_headers.iter().map(String::as_str))
            .chain(cookie)
    }

    /// Whether the identity sets the header `name`.
    fn sets(&self, name: &str) -> bool {
        self.identity
            .as_ref()
            .is_some_and(|i| i.headers(&self.plan.claim_headers).any(|(k, _)| k == name))
    }
}

impl PartialEq for Rewrite {
    fn eq(&self, other: &Rewrite) -> bool {
        self.set().eq(other.set()) && self.remove().eq(other.remove())
    }
}

impl Eq for Rewrite {}

impl HeaderPlan {
    /// A plan over `managed` identity headers (names lowercase), the `claim_headers` mappings
    /// (their headers are among `managed`) and, when the token must not reach the app
    /// (`forward_token = false`), the places a token may come from.
    pub fn new(
        managed: Vec<String>,
        claim_headers: Vec<(String, String)>,
        forward_token: bool,
        token_header: Option<&str>,
        token_cookie: Option<&str>,
    ) -> HeaderPlan {
        let (token_headers, token_cookie) = if forward_token {
            (Vec::new(), None)
        } else {
            let mut headers = vec!["authorization".to_string()];
            headers.extend(token_header.map(str::to_string));
            (headers, token_cookie.map(str::to_string))
        };
        let managed_at = identity::header_names(&claim_headers)
            .map(|name| {
                let index = managed.iter().take(64).position(|m| m == name)?;
                u8::try_from(index).ok()
            })
            .collect();
        HeaderPlan {
            managed,
            claim_headers,
            token_headers,
            token_cookie,
            managed_at,
        }
    }

    /// Every header an allow may set or remove, besides any other in our namespace that a
    /// request shows: the managed ones, the token's headers when it must not be forwarded, and
    /// `cookie` when the token cookie is cut out of it.
    pub fn rewritten(&self) -> impl Iterator<Item = &str> + '_ {
        self.managed
            .iter()
            .chain(&self.token_headers)
            .map(String::as_str)
            .chain(self.token_cookie.is_some().then_some("cookie"))
    }

    /// The rewrite for an allow: the identity's headers set (none when anonymous), every other
    /// managed header removed, the token's headers removed when it must not be forwarded.
    ///
    /// `request` is read for two things only, neither of which the guarantee rests on: the
    /// `cookie` header, to cut the token cookie out of it, and any other header in our
    /// namespace that Envoy happened to show, removed as well (defence in depth).
    pub fn allow(
        self: &Arc<Self>,
        identity: Option<&Identity>,
        request: &(impl Headers + ?Sized),
    ) -> Rewrite {
        // Which managed headers the identity sets, looked up once: each removal is then a bit.
        // From the places of the headers with a value, each mapped once by the plan: no name
        // is compared.
        let mut set_mask = 0u64;
        let mut places = identity.map_or(0, Identity::header_places);
        while places != 0 {
            let place = places.trailing_zeros() as usize;
            places &= places - 1;
            if let Some(Some(index)) = self.managed_at.get(place) {
                set_mask |= 1 << index;
            }
        }
        debug_assert_eq!(
            set_mask,
            identity
                .iter()
                .flat_map(|i| i.headers(&self.claim_headers))
                .filter_map(|(name, _)| self.managed.iter().take(64).position(|m| m == name))
                .fold(0u64, |mask, i| mask | 1 << i),
            "the places of an identity's headers name the headers it sets"
        );
        let mut rewrite = Rewrite {
            plan: Arc::clone(self),
            identity: identity.cloned(),
            set_mask,
            shown: Vec::new(),
            cookie: None,
        };
        let mut shown = Vec::new();
        request.each_name(&mut |name| {
            if name.starts_with(IDENTITY_PREFIX)
                && !self.managed.iter().any(|m| m == name)
                && !shown.iter().any(|s: &String| s == name)
            {
                shown.push(name.to_string());
            }
        });
        rewrite.shown = shown;
        if let Some(cookie) = &self.token_cookie {
            rewrite.cookie = request.get("cookie").and_then(|c| strip_cookie(c, cookie));
        }
        debug_assert!(
            rewrite
                .set()
                .all(|(k, _)| !rewrite.remove().any(|r| r == k)),
            "a header is both set and removed"
        );
        rewrite
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::identity::IDENTITY_HEADERS;

    fn plan(forward_token: bool) -> Arc<HeaderPlan> {
        let mut managed: Vec<String> = IDENTITY_HEADERS.iter().map(|h| h.to_string()).collect();
        managed.push("x-tenant-id".to_string());
        Arc::new(HeaderPlan::new(
            managed,
            vec![("custom:tenant".into(), "x-tenant-id".into())],
            forward_token,
            Some("x-access-token"),
            Some("jwt"),
        ))
    }

    /// Past the 64 managed headers the set is looked up bit by bit, the identity's headers
    /// are searched: a header it sets is still never removed, one it lacks still always is.
    #[test]
    fn past_64_managed_headers_a_set_header_is_never_removed() {
        use crate::identity::{ClaimSet, TokenUse};
        let mapping: Vec<(String, String)> = (0..80)
            .map(|i| (format!("custom:c{i}"), format!("x-c{i}")))
            .collect();
        let mut managed: Vec<String> = IDENTITY_HEADERS.iter().map(|h| h.to_string()).collect();
        managed.extend(mapping.iter().map(|(_, header)| header.clone()));
        let plan = Arc::new(HeaderPlan::new(managed, mapping.clone(), true, None, None));
        let raw: serde_json::Map<String, serde_json::Value> = (0..80)
            .filter(|i| i % 2 == 0)
            .map(|i| (format!("custom:c{i}"), serde_json::json!("v")))
            .collect();
        let claims = ClaimSet {
            pool: 0,
            kid: "k",
            exp: 1,
            token_use: TokenUse::Access,
            sub: "s",
            username: None,
            client_id: "c",
            groups: &[],
            scopes: &[],
            email: None,
            preferred_username: None,
            jti: None,
            origin_jti: None,
            iat: 0,
            raw: &raw,
        };
        let identity = Identity::from_claims(&claims, &mapping).unwrap();
        let rewrite = plan.allow(Some(&identity), &HashMap::<String, String>::new());
        let set: Vec<&str> = rewrite.set().map(|(name, _)| name).collect();
        for (i, (_, header)) in mapping.iter().enumerate() {
            let expected = i % 2 == 0;
            assert_eq!(set.contains(&header.as_str()), expected, "{header}");
            assert_eq!(rewrite.remove().any(|r| r == header), !expected, "{header}");
        }
        assert!(rewrite.remove().any(|r| r == "x-cognito-email"));
        assert!(!rewrite.remove().any(|r| r == "x-cognito-sub"));
    }

    #[test]
    fn an_anonymous_allow_removes_every_managed_header_the_request_did_not_show() {
        let rewrite = plan(true).allow(None, &HashMap::<String, String>::new());
        assert!(rewrite.set().next().is_none());
        for header in IDENTITY_HEADERS.iter().copied().chain(["x-tenant-id"]) {
            assert!(rewrite.remove().any(|h| h == header), "{header}");
        }
        assert!(!rewrite.remove().any(|h| h == "authorization"));
    }

    #[test]
    fn other_headers_in_our_namespace_that_envoy_shows_are_removed_too() {
        let request: HashMap<String, String> =
            [("x-cognito-is-admin".to_string(), "true".to_string())].into();
        let rewrite = plan(true).allow(None, &request);
        assert!(rewrite.remove().any(|h| h == "x-cognito-is-admin"));
    }

    #[test]
    fn without_forward_token_the_token_goes_and_the_other_cookies_stay_set_not_removed() {
        let request: HashMap<String, String> =
            [("cookie".to_string(), "jwt=abc; theme=dark".to_string())].into();
        let rewrite = plan(false).allow(None, &request);
        assert!(rewrite.remove().any(|h| h == "authorization"));
        assert!(rewrite.remove().any(|h| h == "x-access-token"));
        assert_eq!(
            rewrite.set().collect::<Vec<_>>(),
            vec![("cookie", "theme=dark")]
        );
        assert!(!rewrite.remove().any(|h| h == "cookie"));
    }

    #[test]
    fn a_cookie_header_holding_only_the_token_is_removed() {
        let request: HashMap<String, String> =
            [("cookie".to_string(), "jwt=abc".to_string())].into();
        let rewrite = plan(false).allow(None, &request);
        assert!(rewrite.remove().any(|h| h == "cookie"));
        assert!(rewrite.set().next().is_none());
    }
}
