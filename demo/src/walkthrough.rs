//! The bootcamp app's flows through Envoy, each step checked on what the client saw and what
//! the upstream received: sign-up, confirmation, sign-in, the home feed anonymous and signed in,
//! a tampered token, an ID token where an access token is required, a spoofed identity header,
//! the admin route without and with the group, and password recovery.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::Value;

use crate::cognito::Tokens;
use crate::stack::Stack;

/// One step's outcome.
#[derive(Debug, Clone)]
pub struct Step {
    /// What the step does.
    pub title: String,
    /// Whether every check held.
    pub ok: bool,
    /// What was observed, and any check that failed.
    pub lines: Vec<String>,
}

/// The demo user.
pub const EMAIL: &str = "andrew@example.com";
const PASSWORD: &str = "Cruddur-Bootcamp-1";
const NEW_PASSWORD: &str = "Cruddur-Bootcamp-2";

/// An HTTP answer as the client saw it.
pub struct Seen {
    /// The status.
    pub status: StatusCode,
    /// `www-authenticate`, if any.
    pub challenge: Option<String>,
    /// The JSON body (`null` when not JSON).
    pub body: Value,
}

/// GET through Envoy with an optional bearer token and extra headers.
pub async fn get(stack: &Stack, path: &str, token: Option<&str>, headers: &[(&str, &str)]) -> Seen {
    let mut request = reqwest::Client::new().get(stack.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    match request.send().await {
        Ok(response) => {
            let status = response.status();
            let challenge = response
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body = response.json().await.unwrap_or(Value::Null);
            Seen {
                status,
                challenge,
                body,
            }
        }
        Err(e) => Seen {
            status: StatusCode::BAD_GATEWAY,
            challenge: None,
            body: Value::String(format!("request failed: {e}")),
        },
    }
}

/// The unverified payload of a token (for display and for building a tampered copy).
pub fn payload(token: &str) -> Value {
    token
        .split('.')
        .nth(1)
        .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or(Value::Null)
}

/// The token with one claim changed and the signature left as it was.
pub fn tampered(token: &str, claim: &str, value: Value) -> String {
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    let mut claims = payload(token);
    claims[claim] = value;
    parts[1] = URL_SAFE_NO_PAD.encode(claims.to_string());
    parts.join(".")
}

struct Recorder<'a, F: FnMut(&Step)> {
    steps: Vec<Step>,
    on_step: &'a mut F,
}

impl<F: FnMut(&Step)> Recorder<'_, F> {
    fn step(&mut self, title: &str, checks: Vec<(bool, String)>) {
        let ok = checks.iter().all(|(ok, _)| *ok);
        let lines = checks
            .into_iter()
            .map(|(ok, line)| if ok { line } else { format!("FAILED: {line}") })
            .collect();
        let step = Step {
            title: title.to_string(),
            ok,
            lines,
        };
        (self.on_step)(&step);
        self.steps.push(step);
    }

    fn failed(&mut self, title: &str, error: impl std::fmt::Display) {
        self.step(title, vec![(false, error.to_string())]);
    }
}

fn check(ok: bool, line: impl Into<String>) -> (bool, String) {
    (ok, line.into())
}

fn denial(seen: &Seen, status: u16, reason: &str) -> Vec<(bool, String)> {
    vec![
        check(
            seen.status.as_u16() == status,
            format!(
                "client saw HTTP {} (expected {status})",
                seen.status.as_u16()
            ),
        ),
        check(
            seen.body["reason"] == reason,
            format!("reason {} (expected {reason})", seen.body["reason"]),
        ),
        check(
            true,
            format!(
                "WWW-Authenticate: {}",
                seen.challenge.as_deref().unwrap_or("(none)")
            ),
        ),
    ]
}

/// Runs every step, calling `on_step` as each ends; returns them all.
pub async fn run(stack: &Stack, mut on_step: impl FnMut(&Step)) -> Vec<Step> {
    let mut rec = Recorder {
        steps: Vec::new(),
        on_step: &mut on_step,
    };
    let cognito = stack.cognito();

    match cognito
        .sign_up(EMAIL, PASSWORD, "Andrew Brown", "andrewbrown")
        .await
    {
        Ok(answer) => rec.step(
            &format!("Sign up {EMAIL} (name, preferred_username andrewbrown)"),
            vec![check(
                answer["UserConfirmed"] == false,
                format!(
                    "UserConfirmed {}, UserSub {}",
                    answer["UserConfirmed"], answer["UserSub"]
                ),
            )],
        ),
        Err(e) => rec.failed("Sign up", e),
    }
    match cognito.confirm_sign_up(EMAIL, "123456").await {
        Ok(()) => rec.step(
            "Confirm the sign-up with the emailed code",
            vec![check(true, "confirmed")],
        ),
        Err(e) => rec.failed("Confirm the sign-up", e),
    }
    let tokens = match cognito.sign_in(EMAIL, PASSWORD).await {
        Ok(tokens) => {
            let claims = payload(&tokens.access);
            rec.step(
                "Sign in (USER_PASSWORD_AUTH)",
                vec![check(
                    claims["token_use"] == "access",
                    format!(
                        "access token: token_use {}, sub {}, client_id {}",
                        claims["token_use"], claims["sub"], claims["client_id"]
                    ),
                )],
            );
            tokens
        }
        Err(e) => {
            rec.failed("Sign in", e);
            return rec.steps;
        }
    };
    let sub = payload(&tokens.access)["sub"]
        .as_str()
        .unwrap_or("")
        .to_string();

    let anonymous = get(stack, "/api/activities/home", None, &[]).await;
    let count = |seen: &Seen| seen.body["activities"].as_array().map_or(0, Vec::len);
    let anonymous_count = count(&anonymous);
    rec.step(
        "Home feed, anonymous",
        vec![
            check(
                anonymous.status == StatusCode::OK,
                format!("HTTP {}", anonymous.status.as_u16()),
            ),
            check(
                anonymous.body["viewer"].is_null() && anonymous_count == 3,
                format!(
                    "{anonymous_count} activities, viewer {}",
                    anonymous.body["viewer"]
                ),
            ),
        ],
    );

    let signed_in = get(stack, "/api/activities/home", Some(&tokens.access), &[]).await;
    rec.step(
        "Home feed, signed in: the extra item appears",
        vec![
            check(
                signed_in.status == StatusCode::OK,
                format!("HTTP {}", signed_in.status.as_u16()),
            ),
            check(
                count(&signed_in) == anonymous_count + 1
                    && signed_in.body["viewer"] == sub.as_str(),
                format!(
                    "{} activities, first: {}, viewer {}",
                    count(&signed_in),
                    signed_in.body["activities"][0]["message"],
                    signed_in.body["viewer"]
                ),
            ),
        ],
    );

    let echo = get(stack, "/api/echo", Some(&tokens.access), &[]).await;
    let received = &echo.body["identity_headers"];
    rec.step(
        "What the app received with the access token",
        vec![
            check(
                echo.status == StatusCode::OK,
                format!("HTTP {}", echo.status.as_u16()),
            ),
            check(
                received["x-cognito-sub"] == sub.as_str(),
                format!("x-cognito-sub: {}", received["x-cognito-sub"]),
            ),
            check(
                received["x-cognito-client-id"] == stack.pool.client_id.as_str(),
                format!("x-cognito-client-id: {}", received["x-cognito-client-id"]),
            ),
            check(
                received["x-cognito-token-use"] == "access",
                format!("x-cognito-token-use: {}", received["x-cognito-token-use"]),
            ),
            check(
                true,
                format!("x-cognito-scope: {}", received["x-cognito-scope"]),
            ),
        ],
    );

    let before = stack.app_requests().await.unwrap_or(u64::MAX);
    let forged = tampered(&tokens.access, "sub", Value::String("someone-else".into()));
    let seen = get(stack, "/api/echo", Some(&forged), &[]).await;
    let mut checks = denial(&seen, 401, "bad_signature");
    let after = stack.app_requests().await.unwrap_or(0);
    checks.push(check(
        after == before,
        format!(
            "the app served {} requests meanwhile",
            after.saturating_sub(before)
        ),
    ));
    rec.step("A tampered token (sub edited, signature kept)", checks);

    let seen = get(stack, "/api/echo", Some(&tokens.id), &[]).await;
    rec.step(
        "An ID token where an access token is required",
        denial(&seen, 401, "wrong_token_use"),
    );

    let spoof = [
        ("x-cognito-sub", "spoofed-admin"),
        ("x-cognito-groups", "admins"),
    ];
    let home = get(stack, "/api/activities/home", None, &spoof).await;
    let health = get(stack, "/healthz", None, &spoof).await;
    let before = stack.app_requests().await.unwrap_or(u64::MAX);
    let echo = get(stack, "/api/echo", None, &spoof).await;
    let after = stack.app_requests().await.unwrap_or(0);
    rec.step(
        "A spoofed x-cognito-sub without a token",
        vec![
            check(
                home.status == StatusCode::OK
                    && home.body["viewer"].is_null()
                    && count(&home) == anonymous_count,
                format!(
                    "home feed: HTTP {}, viewer {} (stripped)",
                    home.status.as_u16(),
                    home.body["viewer"]
                ),
            ),
            check(
                health.body["identity_headers"] == serde_json::json!({}),
                format!(
                    "/healthz (authz disabled, Envoy strips): app saw {}",
                    health.body["identity_headers"]
                ),
            ),
            check(
                echo.status == StatusCode::UNAUTHORIZED && after == before,
                format!(
                    "/api/echo: HTTP {}, never reached the app",
                    echo.status.as_u16()
                ),
            ),
        ],
    );

    let seen = get(stack, "/api/admin/stats", Some(&tokens.access), &[]).await;
    rec.step(
        "The admin route without the admins group",
        denial(&seen, 403, "missing_group"),
    );

    let admin_tokens: Option<Tokens> = match cognito.add_to_group(EMAIL, "admins").await {
        Ok(()) => cognito.sign_in(EMAIL, PASSWORD).await.ok(),
        Err(e) => {
            rec.failed("Add the user to admins", e);
            None
        }
    };
    if let Some(admin) = admin_tokens {
        let seen = get(stack, "/api/admin/stats", Some(&admin.access), &[]).await;
        rec.step(
            "The admin route after joining admins and signing in again",
            vec![
                check(
                    payload(&admin.access)["cognito:groups"] == serde_json::json!(["admins"]),
                    format!(
                        "cognito:groups {}",
                        payload(&admin.access)["cognito:groups"]
                    ),
                ),
                check(
                    seen.status == StatusCode::OK,
                    format!("HTTP {}: {}", seen.status.as_u16(), seen.body),
                ),
            ],
        );
    }

    match cognito.forgot_password(EMAIL).await {
        Ok(Some(code)) => {
            let confirmed = cognito
                .confirm_forgot_password(EMAIL, &code, NEW_PASSWORD)
                .await;
            let old = cognito.sign_in(EMAIL, PASSWORD).await;
            let new = cognito.sign_in(EMAIL, NEW_PASSWORD).await;
            let works = match &new {
                Ok(t) => {
                    get(stack, "/api/echo", Some(&t.access), &[]).await.status == StatusCode::OK
                }
                Err(_) => false,
            };
            rec.step(
                "Forgot password, confirm a new one, sign in again",
                vec![
                    check(
                        true,
                        format!("confirmation code received ({} characters)", code.len()),
                    ),
                    check(
                        confirmed.is_ok(),
                        format!("new password confirmed: {:?}", confirmed.err()),
                    ),
                    check(old.is_err(), "the old password is refused"),
                    check(
                        new.is_ok() && works,
                        "the new password signs in and its token is accepted",
                    ),
                ],
            );
        }
        Ok(None) => rec.failed("Forgot password", "no confirmation code came back"),
        Err(e) => rec.failed("Forgot password", e),
    }

    // Sign out everywhere, as the app's `Auth.signOut({ global: true })` does.
    match cognito.sign_in(EMAIL, NEW_PASSWORD).await {
        Ok(tokens) => {
            let before = get(stack, "/api/echo", Some(&tokens.access), &[]).await;
            let signed_out = cognito.global_sign_out(&tokens.access).await;
            // The API confirms a token with Cognito at most once per TTL: wait one out.
            tokio::time::sleep(std::time::Duration::from_millis(
                crate::stack::REVOCATION_TTL_SECS * 1000 + 300,
            ))
            .await;
            let after = get(stack, "/api/echo", Some(&tokens.access), &[]).await;
            let again = cognito.sign_in(EMAIL, NEW_PASSWORD).await;
            let works = match &again {
                Ok(t) => {
                    get(stack, "/api/echo", Some(&t.access), &[]).await.status == StatusCode::OK
                }
                Err(_) => false,
            };
            let mut checks = vec![
                check(
                    before.status == StatusCode::OK,
                    format!("before: HTTP {}", before.status.as_u16()),
                ),
                check(
                    signed_out.is_ok(),
                    format!("GlobalSignOut: {:?}", signed_out.err()),
                ),
            ];
            checks.extend(denial(&after, 401, "revoked"));
            checks.push(check(works, "signing in again gives a token that works"));
            rec.step("Sign out everywhere: the old token is refused", checks);
        }
        Err(e) => rec.failed("Sign out everywhere", e),
    }
    rec.steps
}
