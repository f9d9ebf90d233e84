//! The bootcamp's pages in a real browser: Debian's Chromium, headless, driven through
//! chromedriver (WebDriver), against the whole stack (the front end on its own origin, the API
//! behind Envoy and cognito-authz, the Cognito emulator). Sign up and confirm, sign in (an
//! unconfirmed user is sent to confirm), the home feed anonymous and signed in, a cross-origin
//! call with a real CORS preflight, sign out everywhere, forgot password. Screenshots of the
//! home feed go to `.run/screenshots/`.
//!
//! Needs `chromium` and `chromium-driver` (the README's test command installs them); without
//! them it fails, naming what is missing.

use crate::common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cruddur_demo::stack::{Layout, Ports, Stack, REVOCATION_TTL_SECS};
use cruddur_demo::walkthrough::payload;
use fantoccini::{Client, ClientBuilder, Locator};

fn layout(name: &str) -> Layout {
    common::stack_layout(name)
}

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn browser(work: &Path) -> (Driver, Client) {
    for tool in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
        assert!(
            Path::new(tool).is_file(),
            "{tool} is missing: install Debian's chromium and chromium-driver (scripts/test does)"
        );
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let driver = Driver(
        Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver"),
    );
    let profile = work.join("chromium-profile");
    let caps = serde_json::json!({
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                "--window-size=1000,900", format!("--user-data-dir={}", profile.display()),
            ]
        }
    });
    let caps = caps.as_object().unwrap().clone();
    let url = format!("http://127.0.0.1:{port}");
    // reqwest links ring and tonic aws-lc-rs: choose one for fantoccini's rustls.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut last = None;
    for _ in 0..100 {
        match ClientBuilder::rustls()
            .expect("rustls")
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            Ok(client) => return (driver, client),
            Err(err) => last = Some(err),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver never started a session: {last:?}");
}

async fn fill(c: &Client, id: &str, text: &str) {
    let field = wait(c, &format!("#{id}")).await;
    field.clear().await.unwrap();
    field.send_keys(text).await.unwrap();
}

async fn wait(c: &Client, css: &str) -> fantoccini::elements::Element {
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css} never appeared: {e}"))
}

async fn click(c: &Client, css: &str) {
    wait(c, css).await.click().await.unwrap();
}

/// Waits until the element's text contains `needle`; returns the text.
async fn text_with(c: &Client, css: &str, needle: &str) -> String {
    let mut seen = String::new();
    for _ in 0..100 {
        if let Ok(el) = c.find(Locator::Css(css)).await {
            seen = el.text().await.unwrap_or_default();
            if seen.contains(needle) {
                return seen;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let page = c.source().await.unwrap_or_default();
    panic!("{css} never said {needle:?} (last: {seen:?}); page:\n{page}");
}

async fn wait_hash(c: &Client, prefix: &str) {
    for _ in 0..100 {
        let url = c.current_url().await.unwrap();
        if url.fragment().is_some_and(|f| f.starts_with(prefix)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "never reached #{prefix}: at {}",
        c.current_url().await.unwrap()
    );
}

async fn screenshot(c: &Client, name: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(".run/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    std::fs::write(dir.join(name), png).unwrap();
}

const EMAIL: &str = "browser@example.com";
const PASSWORD: &str = "Browser-Passw0rd-1";
const NEW_PASSWORD: &str = "Browser-Passw0rd-2";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bootcamp_pages_in_chromium() {
    let layout = layout("browser");
    let work = layout.work_dir.clone();
    let stack = Stack::start(layout, Ports::ephemeral().unwrap())
        .await
        .unwrap_or_else(|e| panic!("the stack did not start: {e}"));
    let (_driver, c) = browser(&work).await;
    let home = stack.frontend_url();

    // The anonymous home feed: the public activities and a "join" box.
    c.goto(&format!("{home}/#/")).await.unwrap();
    text_with(&c, "#join", "Join the party").await;
    let feed = text_with(&c, "#activities", "Cloud is fun!").await;
    assert!(!feed.contains("Only signed-in users"), "{feed}");
    screenshot(&c, "home-anonymous.png").await;

    // 1. Sign up, then confirm with the code the page shows (the emulator sends no e-mail).
    click(&c, "#nav-signup").await;
    fill(&c, "signup-name", "Browser User").await;
    fill(&c, "signup-email", EMAIL).await;
    fill(&c, "signup-handle", "browseruser").await;
    fill(&c, "signup-password", PASSWORD).await;
    click(&c, "#signup-submit").await;
    wait_hash(&c, "/confirm").await;
    let code = wait(&c, "#code").await.text().await.unwrap();
    click(&c, "#resend").await;
    // The emulator lacks ResendConfirmationCode; the page says what to do instead.
    text_with(&c, "#message", "code").await;
    let said = wait(&c, "#message").await.text().await.unwrap();
    assert!(
        said.contains("on its way") || said.contains("accepts any code"),
        "{said}"
    );
    fill(&c, "confirm-code", &code).await;
    click(&c, "#confirm-submit").await;
    wait_hash(&c, "/signin").await;

    // An unconfirmed user who signs in is sent to confirm.
    let cognito = stack.cognito();
    cognito
        .sign_up("unconfirmed@example.com", PASSWORD, "Later", "later")
        .await
        .unwrap();
    fill(&c, "signin-email", "unconfirmed@example.com").await;
    fill(&c, "signin-password", PASSWORD).await;
    click(&c, "#signin-submit").await;
    wait_hash(&c, "/confirm").await;

    // 2. Sign in: the home feed shows the extra activity and the handle.
    c.goto(&format!("{home}/#/signin")).await.unwrap();
    fill(&c, "signin-email", EMAIL).await;
    fill(&c, "signin-password", PASSWORD).await;
    click(&c, "#signin-submit").await;
    wait_hash(&c, "/").await;
    text_with(&c, "#viewer", "@browseruser").await;
    text_with(&c, "#viewer", "Browser User").await;
    text_with(&c, "#activities", "Only signed-in users can see this.").await;
    screenshot(&c, "home-signed-in.png").await;

    // 3. A cross-origin call to a route that requires a token succeeds, after a real preflight.
    let token = c
        .execute("return localStorage.getItem('access_token')", vec![])
        .await
        .unwrap()
        .as_str()
        .expect("the page keeps the access token")
        .to_string();
    let sub = payload(&token)["sub"].as_str().unwrap().to_string();
    let preflights = stack.app_preflights().await.unwrap();
    let checks = stack.authz_checks().await.unwrap();
    click(&c, "#check-session").await;
    text_with(&c, "#session-result", &format!("accepted for {sub}")).await;
    // The browser sent a real preflight; Envoy's CORS filter answered it, so neither the app
    // nor cognito-authz saw it: one check, the call itself.
    assert_eq!(
        stack.app_preflights().await.unwrap(),
        preflights,
        "a CORS preflight reached the app"
    );
    assert_eq!(
        stack.authz_checks().await.unwrap(),
        checks + 1,
        "cognito-authz saw only the call, not its preflight"
    );

    // 4. Sign out everywhere: the old token is refused by the API, and the page, holding it
    //    again as another tab would, reads why from the denial (Envoy adds CORS to it).
    click(&c, "#signout").await;
    text_with(&c, "#join", "Join the party").await;
    tokio::time::sleep(Duration::from_millis(REVOCATION_TTL_SECS * 1000 + 300)).await;
    let refused = c
        .execute_async(
            "const done = arguments[arguments.length - 1]; callApi(arguments[0]).then(done);",
            vec![serde_json::Value::String(token.clone())],
        )
        .await
        .unwrap();
    assert_eq!(
        refused.as_str().unwrap_or(""),
        "refused: signed out everywhere: sign in again (revoked, HTTP 401)",
    );
    c.execute(
        "localStorage.setItem('access_token', arguments[0]);",
        vec![serde_json::Value::String(token.clone())],
    )
    .await
    .unwrap();
    c.goto(&format!("{home}/#/")).await.unwrap();
    c.refresh().await.unwrap();
    click(&c, "#check-session").await;
    text_with(&c, "#session-result", "signed out everywhere").await;
    text_with(&c, "#session-result", "revoked, HTTP 401").await;
    let direct = reqwest::Client::new()
        .get(stack.url("/api/echo"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status().as_u16(), 401);
    let body: serde_json::Value = direct.json().await.unwrap();
    assert_eq!(body["reason"], "revoked");

    // 5. Forgot password, then sign in with the new one.
    c.goto(&format!("{home}/#/signin")).await.unwrap();
    click(&c, "#forgot-link").await;
    fill(&c, "forgot-email", EMAIL).await;
    click(&c, "#forgot-submit").await;
    wait(&c, "#reset-code").await;
    let code = text_with(&c, "#code", "").await;
    assert!(
        !code.is_empty(),
        "the recovery code is shown: {}",
        c.source().await.unwrap_or_default()
    );
    fill(&c, "reset-code", &code).await;
    fill(&c, "reset-password", NEW_PASSWORD).await;
    fill(&c, "reset-password-again", NEW_PASSWORD).await;
    click(&c, "#reset-submit").await;
    wait_hash(&c, "/signin").await;
    text_with(&c, "#message", "password has been reset").await;
    fill(&c, "signin-password", NEW_PASSWORD).await;
    click(&c, "#signin-submit").await;
    wait_hash(&c, "/").await;
    text_with(&c, "#viewer", "@browseruser").await;
    click(&c, "#check-session").await;
    text_with(&c, "#session-result", "accepted for").await;

    c.close().await.unwrap();
}
