// A single-page app on tokend's cookie transport. The refresh token lives only in an
// HttpOnly cookie that this script cannot read; the short-lived access token lives only
// in this variable, so a reload restores the session by refreshing through the cookie.
"use strict";

const API = window.TOKEND_API || location.origin;
let accessToken = null;
let renewTimer = null;

// Every call sends cookies cross-origin (credentials: "include") and the anti-CSRF
// header that tokend requires for cookie refresh, logout and logout-all.
async function call(path, { method = "POST", body, bearer } = {}) {
  const headers = { "X-Requested-With": "tokend" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (bearer) headers["Authorization"] = "Bearer " + bearer;
  const response = await fetch(API + path, {
    method,
    headers,
    credentials: "include",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = response.status === 204 ? null : await response.json().catch(() => null);
  return { status: response.status, data, retryAfter: response.headers.get("Retry-After") };
}

const $ = (id) => document.getElementById(id);

function say(text) {
  $("status").textContent = text;
}

function show(state) {
  document.body.dataset.state = state;
  $("login").hidden = state !== "signed-out";
  $("app").hidden = state !== "signed-in";
}

// Renew a minute before the access token expires (a fifth of its life if shorter).
function scheduleRenewal(expiresIn) {
  clearTimeout(renewTimer);
  const delay = Math.max(1, expiresIn - Math.min(60, expiresIn / 5));
  renewTimer = setTimeout(renew, delay * 1000);
  $("renewed").textContent = new Date().toLocaleTimeString();
  $("next").textContent = Math.round(delay) + " s";
}

function signedIn(tokens) {
  accessToken = tokens.access_token;
  scheduleRenewal(tokens.expires_in);
  show("signed-in");
  return listSessions();
}

function signedOut(message) {
  accessToken = null;
  clearTimeout(renewTimer);
  show("signed-out");
  say(message);
}

// Refresh through the cookie: a new access token, and tokend replaces the cookie.
async function renew() {
  let r;
  try {
    r = await call("/v1/auth/refresh");
  } catch (e) {
    renewTimer = setTimeout(renew, 5000);
    return say("tokend is unreachable; retrying.");
  }
  if (r.status === 200) return signedIn(r.data);
  if (r.status === 503) {
    renewTimer = setTimeout(renew, 1000 * Number(r.retryAfter || 5));
    return say("tokend is busy; retrying.");
  }
  signedOut(r.status === 400 ? "Please sign in." : "Your session has ended; please sign in.");
}

async function login(event) {
  event.preventDefault();
  const form = new FormData($("login"));
  const r = await call("/v1/auth/login", {
    body: {
      email: form.get("email"),
      password: form.get("password"),
      device: "web example",
      transport: "cookie",
    },
  });
  if (r.status !== 200) return say(r.data ? r.data.message : "Sign-in failed.");
  $("login").reset();
  say("Signed in.");
  await signedIn(r.data);
}

async function register() {
  const form = new FormData($("login"));
  const r = await call("/v1/users", {
    body: { email: form.get("email"), password: form.get("password") },
  });
  say(r.status === 201 ? "Account created; now sign in." : r.data ? r.data.message : "Failed.");
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text || "–";
  if (className) td.className = className;
  return td;
}

async function listSessions() {
  const r = await call("/v1/sessions", { method: "GET", bearer: accessToken });
  if (r.status === 401) return renew();
  if (r.status !== 200) return say("Could not list sessions.");
  const body = $("sessions");
  body.replaceChildren();
  for (const s of r.data.sessions) {
    const row = body.insertRow();
    if (s.current) row.className = "current";
    row.dataset.sessionId = s.session_id;
    cell(row, s.device);
    cell(row, s.user_agent, "ua").title = s.user_agent || "";
    cell(row, new Date(s.created_at).toLocaleString());
    cell(row, new Date(s.last_used_at).toLocaleString());
    const actions = row.insertCell();
    if (!s.current) {
      const button = document.createElement("button");
      button.textContent = "Sign out";
      button.onclick = () => revoke(s.session_id);
      actions.append(button);
    }
  }
}

async function revoke(sessionId) {
  await call("/v1/sessions/" + encodeURIComponent(sessionId), {
    method: "DELETE",
    bearer: accessToken,
  });
  await listSessions();
}

async function logout(all) {
  // Logout needs no access token, and tokend clears the cookie in its answer.
  await call(all ? "/v1/auth/logout-all" : "/v1/auth/logout");
  signedOut(all ? "Signed out on every device." : "Signed out.");
}

$("login").addEventListener("submit", login);
$("register").addEventListener("click", register);
$("reload").addEventListener("click", listSessions);
$("logout").addEventListener("click", () => logout(false));
$("logout-all").addEventListener("click", () => logout(true));
renew();
