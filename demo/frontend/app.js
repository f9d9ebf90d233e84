// The bootcamp's week-3 pages in plain JavaScript: sign up, confirm, sign in, forgot password,
// the home feed and global sign-out. Cognito is called as Amplify calls it (JSON over POST with
// X-Amz-Target, USER_PASSWORD_AUTH); the API is called cross-origin through Envoy with
// `Authorization: Bearer`, so the browser sends real CORS preflights.
"use strict";
const config = window.CRUDDUR;
const page = document.getElementById("page");

async function cognito(action, body) {
  const response = await fetch(config.cognitoUrl, {
    method: "POST",
    headers: {
      "Content-Type": "application/x-amz-json-1.1",
      "X-Amz-Target": `AWSCognitoIdentityProviderService.${action}`,
    },
    body: JSON.stringify(body),
  });
  const text = await response.text();
  let value = {};
  try {
    value = text ? JSON.parse(text) : {};
  } catch (_) {
    // Not Cognito's JSON (the emulator answers an action it lacks with an HTML page).
    throw Object.assign(new Error(`${action} failed (HTTP ${response.status})`), { kind: "NotImplemented" });
  }
  if (!response.ok) {
    const kind = (value.__type || "Error").split("#").pop();
    throw Object.assign(new Error(value.message || kind), { kind });
  }
  return { value, headers: response.headers };
}

// Tokens live where the bootcamp app kept them.
const tokens = {
  get access() { return localStorage.getItem("access_token"); },
  get id() { return localStorage.getItem("id_token"); },
  save(result) {
    localStorage.setItem("access_token", result.AccessToken);
    localStorage.setItem("id_token", result.IdToken);
  },
  clear() {
    localStorage.removeItem("access_token");
    localStorage.removeItem("id_token");
  },
};

function claims(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(decodeURIComponent(escape(atob(part))));
  } catch (_) {
    return {};
  }
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "onclick" || k === "onsubmit") node[k] = v;
    else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child);
  return node;
}

function field(id, label, type = "text", value = "") {
  return el("label", { for: id }, label, el("input", { id, name: id, type, value, required: "" }));
}

function message(text, kind = "error") {
  const node = document.getElementById("message");
  if (node) { node.className = kind; node.textContent = text; }
}

function showCode(what, code) {
  const codes = document.getElementById("codes");
  codes.textContent = `${what}: `;
  codes.append(el("code", { id: "code" }, code));
}

function params() {
  return new URLSearchParams(location.hash.split("?")[1] || "");
}

function form(title, id, fields, submit, onsubmit, extra = []) {
  page.replaceChildren(
    el("h1", {}, title),
    el("form", { id, onsubmit: (e) => { e.preventDefault(); onsubmit().catch((err) => message(err.message)); } },
      ...fields, el("button", { class: "primary", type: "submit", id: `${id}-submit` }, submit), ...extra,
      el("p", { id: "message" })),
  );
}

function renderNav() {
  const nav = document.getElementById("nav");
  if (tokens.access) {
    nav.replaceChildren(
      el("a", { href: "#/" }, "Home"),
      el("button", { id: "signout", onclick: signOut }, "Sign out everywhere"),
    );
  } else {
    nav.replaceChildren(
      el("a", { href: "#/signin", id: "nav-signin" }, "Sign in"),
      el("a", { href: "#/signup", id: "nav-signup" }, "Sign up"),
    );
  }
}

async function home() {
  const headers = tokens.access ? { Authorization: `Bearer ${tokens.access}` } : {};
  page.replaceChildren(el("p", {}, "Loading…"));
  let feed;
  try {
    const response = await fetch(`${config.apiUrl}/api/activities/home`, { headers });
    feed = await response.json();
  } catch (err) {
    page.replaceChildren(el("p", { class: "error", id: "message" }, `The API is unreachable: ${err.message}`));
    return;
  }
  const children = [];
  if (tokens.access && feed.viewer) {
    const id = claims(tokens.id);
    children.push(el("div", { class: "viewer", id: "viewer" },
      `Signed in as ${id.name || "?"} `, el("strong", { id: "handle" }, `@${id.preferred_username || "?"}`)));
  } else {
    children.push(el("div", { class: "join", id: "join" },
      el("strong", {}, "Join the party! "), "Have something to say? ",
      el("a", { href: "#/signup" }, "Sign up"), " or ", el("a", { href: "#/signin" }, "sign in"), "."));
  }
  const list = el("section", { id: "activities" });
  for (const a of feed.activities) {
    list.append(el("article", { class: a.shown_to ? "activity exclusive" : "activity" },
      el("div", { class: "handle" }, `@${a.handle}`), el("div", {}, a.message)));
  }
  children.push(el("h1", {}, "Home"), list);
  if (tokens.access) {
    children.push(el("p", {},
      el("button", { class: "primary", id: "check-session", onclick: checkSession }, "Call a signed-in-only API"),
      " ", el("span", { id: "session-result" })));
  }
  page.replaceChildren(...children);
}

// What a refusal's reason means to a person. Envoy's CORS filter adds the CORS grant to
// denials too, so the page can read cognito-authz's JSON body and its WWW-Authenticate.
const REFUSALS = {
  revoked: "signed out everywhere: sign in again",
  expired: "your session has expired: sign in again",
  no_token: "you are not signed in",
  missing_group: "you are not allowed to do this",
};

// A cross-origin call to a route that requires a valid token (Envoy asks cognito-authz).
async function callApi(token) {
  let response;
  try {
    response = await fetch(`${config.apiUrl}/api/echo`, { headers: { Authorization: `Bearer ${token}` } });
  } catch (_) {
    // No answer the browser lets us read: the API is unreachable.
    return "refused (the API is unreachable)";
  }
  if (!response.ok) {
    let reason = "";
    try {
      reason = (await response.json()).reason || "";
    } catch (_) {
      // Not cognito-authz's JSON (Envoy's own 503, say): the status is all there is.
    }
    const meaning = REFUSALS[reason] || `refused by the API`;
    return `refused: ${meaning} (${reason || "no reason"}, HTTP ${response.status})`;
  }
  const body = await response.json();
  return `accepted for ${body.identity_headers["x-cognito-sub"]}`;
}

async function checkSession() {
  document.getElementById("session-result").textContent = await callApi(tokens.access);
}

function signUp() {
  form("Sign up", "signup", [
    field("signup-name", "Name"), field("signup-email", "Email", "email"),
    field("signup-handle", "Handle"), field("signup-password", "Password", "password"),
  ], "Sign up", async () => {
    const email = document.getElementById("signup-email").value;
    const { value } = await cognito("SignUp", {
      ClientId: config.clientId, Username: email, Password: document.getElementById("signup-password").value,
      UserAttributes: [
        { Name: "name", Value: document.getElementById("signup-name").value },
        { Name: "email", Value: email },
        { Name: "preferred_username", Value: document.getElementById("signup-handle").value },
      ],
    });
    location.hash = `#/confirm?email=${encodeURIComponent(email)}&sent=${value.UserSub ? 1 : 0}`;
  });
}

function confirm() {
  const email = params().get("email") || "";
  showCode("Confirmation code (the emulator accepts any code)", "123456");
  form("Confirm your email", "confirm", [
    field("confirm-email", "Email", "email", email), field("confirm-code", "Confirmation code"),
  ], "Confirm", async () => {
    await cognito("ConfirmSignUp", {
      ClientId: config.clientId, Username: document.getElementById("confirm-email").value,
      ConfirmationCode: document.getElementById("confirm-code").value,
    });
    location.hash = `#/signin?email=${encodeURIComponent(document.getElementById("confirm-email").value)}&confirmed=1`;
  }, [el("button", { type: "button", id: "resend", onclick: () => resend().catch((e) => message(e.message)) }, "Resend code")]);
}

async function resend() {
  try {
    await cognito("ResendConfirmationCode", { ClientId: config.clientId, Username: document.getElementById("confirm-email").value });
    message("A new code is on its way.", "notice");
  } catch (err) {
    if (err.kind !== "NotImplemented") throw err;
    message("The emulator cannot resend codes, and accepts any code: use the one shown below.", "notice");
  }
}

function signIn() {
  form("Sign into your Cruddur account", "signin", [
    field("signin-email", "Email", "email", params().get("email") || ""),
    field("signin-password", "Password", "password"),
  ], "Sign in", async () => {
    const email = document.getElementById("signin-email").value;
    try {
      const { value } = await cognito("InitiateAuth", {
        ClientId: config.clientId, AuthFlow: "USER_PASSWORD_AUTH",
        AuthParameters: { USERNAME: email, PASSWORD: document.getElementById("signin-password").value },
      });
      tokens.save(value.AuthenticationResult);
      location.hash = "#/";
    } catch (err) {
      // As the bootcamp app did: an unconfirmed user goes to confirm.
      if (err.kind === "UserNotConfirmedException") location.hash = `#/confirm?email=${encodeURIComponent(email)}`;
      else throw err;
    }
  }, [el("a", { href: "#/forgot", id: "forgot-link" }, "Forgot password?")]);
  if (params().get("reset")) message("Your password has been reset: sign in with the new one.", "notice");
}

function forgot() {
  form("Recover your password", "forgot", [field("forgot-email", "Email", "email")], "Send recovery code", async () => {
    const email = document.getElementById("forgot-email").value;
    const { headers } = await cognito("ForgotPassword", { ClientId: config.clientId, Username: email });
    const code = headers.get("x-moto-forgot-password-confirmation-code");
    if (code) showCode("Recovery code", code);
    form("Recover your password", "reset", [
      field("reset-email", "Email", "email", email), field("reset-code", "Recovery code"),
      field("reset-password", "New password", "password"), field("reset-password-again", "New password again", "password"),
    ], "Reset password", async () => {
      const password = document.getElementById("reset-password").value;
      if (password !== document.getElementById("reset-password-again").value) throw new Error("The passwords do not match.");
      await cognito("ConfirmForgotPassword", {
        ClientId: config.clientId, Username: document.getElementById("reset-email").value,
        ConfirmationCode: document.getElementById("reset-code").value, Password: password,
      });
      location.hash = `#/signin?email=${encodeURIComponent(email)}&reset=1`;
    });
  });
}

async function signOut() {
  // Auth.signOut({ global: true }): every session of the user ends at Cognito.
  const access = tokens.access;
  try { await cognito("GlobalSignOut", { AccessToken: access }); } catch (_) { /* signed out anyway */ }
  tokens.clear();
  location.hash = "#/";
  route();
}

function route() {
  document.getElementById("codes").replaceChildren();
  renderNav();
  const path = location.hash.split("?")[0];
  const pages = { "#/signup": signUp, "#/confirm": confirm, "#/signin": signIn, "#/forgot": forgot };
  (pages[path] || home)();
}

window.addEventListener("hashchange", route);
route();
