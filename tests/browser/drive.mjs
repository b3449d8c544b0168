// Drives headless Chromium through the example page for tests/browser.rs, which starts
// tokend and the page servers and passes their addresses in the environment. Prints one
// line per passed check and exits non-zero at the first failed one.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const API = env("TOKEND_API");
const PAGE = env("PAGE_ORIGIN");
const OTHER = env("OTHER_ORIGIN");
const EMAIL = env("USER_EMAIL");
const PASSWORD = env("USER_PASSWORD");
const SCREENSHOT = env("SCREENSHOT");
const COOKIE = env("COOKIE_NAME");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const DEADLINE_MS = Number(process.env.DEADLINE_MS || 45000);

function check(ok, what) {
  if (!ok) throw new Error(`FAILED: ${what}`);
  console.log(`ok: ${what}`);
}

async function refreshCookie(context) {
  const cookies = await context.cookies(API + "/v1/auth/refresh");
  return cookies.find((c) => c.name === COOKIE);
}

async function waitState(page, state) {
  await page.waitForSelector(`body[data-state="${state}"]`, { timeout: 10000 });
}

async function run(context) {
  const page = context.pages()[0] || (await context.newPage());

  // Log in with cookie transport.
  await page.goto(PAGE + "/index.html");
  await waitState(page, "signed-out");
  await page.fill('input[name="email"]', EMAIL);
  await page.fill('input[name="password"]', PASSWORD);
  const loginAnswer = page.waitForResponse((r) => r.url().endsWith("/v1/auth/login"));
  await page.click('button[type="submit"]');
  const loginBody = await (await loginAnswer).json();
  await waitState(page, "signed-in");
  await page.waitForSelector("#sessions tr.current");
  check(!("refresh_token" in loginBody), "the login answer carries no refresh token");
  const first = await refreshCookie(context);
  check(first !== undefined, "the browser stored the refresh cookie");
  check(
    first.httpOnly && first.secure && first.sameSite === "Strict" && first.path === "/v1/auth",
    "the cookie is HttpOnly, Secure, SameSite=Strict, Path=/v1/auth"
  );
  const lifetime = first.expires - Date.now() / 1000;
  check(lifetime > 86000 && lifetime <= 86401, "the cookie lives to the session's absolute end");
  await page.screenshot({ path: SCREENSHOT, fullPage: true });
  console.log(`screenshot: ${SCREENSHOT}`);

  // Script can read the cookie neither from the page nor from under the cookie's path.
  check(!(await page.evaluate(() => document.cookie)).includes(first.value), "document.cookie on the page lacks the refresh token");
  const probe = await context.newPage();
  await probe.goto(API + "/v1/auth/refresh");
  const underPath = await probe.evaluate(() => document.cookie);
  check(!underPath.includes(COOKIE) && !underPath.includes(first.value), "document.cookie under /v1/auth lacks it too");
  await probe.close();

  // A reload keeps no token in memory: the page restores the session through the cookie.
  const restore = page.waitForResponse((r) => r.url().endsWith("/v1/auth/refresh"));
  await page.reload();
  check((await restore).status() === 200, "after a reload the page refreshes through the cookie");
  await waitState(page, "signed-in");
  await page.waitForSelector("#sessions tr.current");
  const rotated = await refreshCookie(context);
  check(rotated && rotated.value !== first.value, "the refresh replaced the cookie");

  // A page on another, unlisted origin (another site) attacks the session.
  const other = await context.newPage();
  await other.goto(OTHER + "/other.html");
  const attempts = await other.evaluate(async (api) => {
    const attempt = async (path, headers) => {
      try {
        const r = await fetch(api + path, { method: "POST", credentials: "include", headers });
        return `answered ${r.status}`;
      } catch (e) {
        return "failed";
      }
    };
    return {
      refreshWithHeader: await attempt("/v1/auth/refresh", { "X-Requested-With": "tokend" }),
      refresh: await attempt("/v1/auth/refresh", {}),
      logout: await attempt("/v1/auth/logout", {}),
      logoutAll: await attempt("/v1/auth/logout-all", { "X-Requested-With": "tokend" }),
    };
  }, API);
  for (const [what, outcome] of Object.entries(attempts)) {
    check(outcome === "failed", `fetch with credentials from the other origin fails (${what})`);
  }
  await other.close();
  for (const path of ["/v1/auth/refresh", "/v1/auth/logout", "/v1/auth/logout-all"]) {
    // A fresh page each time: the form's navigation must not race the next one.
    const attacker = await context.newPage();
    await attacker.goto(OTHER + "/other.html");
    const request = attacker.waitForRequest((r) => r.url() === API + path);
    const answer = attacker.waitForResponse((r) => r.url() === API + path);
    await attacker.evaluate(
      ({ api, path }) => {
        const form = document.createElement("form");
        form.method = "POST";
        form.action = api + path;
        document.body.append(form);
        form.submit();
      },
      { api: API, path }
    );
    const headers = await (await request).allHeaders();
    const status = (await answer).status();
    check(
      status === 403 && !(headers.cookie || "").includes(COOKIE),
      `a form the other site posts to ${path} carries no cookie and gets 403`
    );
    await attacker.waitForURL(API + path);
    await attacker.close();
  }
  const still = await refreshCookie(context);
  check(still && still.value === rotated.value, "the cookie is untouched after the attacks");
  const back = page.waitForResponse((r) => r.url().endsWith("/v1/auth/refresh"));
  await page.reload();
  check((await back).status() === 200, "the session is still live after the attacks");
  await waitState(page, "signed-in");
  const live = await refreshCookie(context);

  // Logout clears the cookie in the jar, and the old cookie no longer works.
  const logoutAnswer = page.waitForResponse((r) => r.url().endsWith("/v1/auth/logout"));
  await page.click("#logout");
  check((await logoutAnswer).status() === 204, "logout answers 204");
  await waitState(page, "signed-out");
  check((await refreshCookie(context)) === undefined, "logout removed the cookie from the jar");
  const replay = await fetch(API + "/v1/auth/refresh", {
    method: "POST",
    headers: { cookie: `${COOKIE}=${live.value}`, "x-requested-with": "tokend" },
  });
  check(replay.status === 401, "the old refresh cookie no longer works");
}

const profile = mkdtempSync(join(tmpdir(), "tokend-chromium-"));
let context;
const deadline = setTimeout(() => {
  console.error(`FAILED: the browser test took over ${DEADLINE_MS} ms`);
  process.exitCode = 1;
  Promise.resolve(context && context.close()).finally(() => process.exit(1));
}, DEADLINE_MS);
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
    viewport: { width: 1000, height: 640 },
  });
  context.setDefaultTimeout(10000);
  await run(context);
} catch (e) {
  console.error(e && e.stack ? e.stack : String(e));
  process.exitCode = 1;
} finally {
  clearTimeout(deadline);
  if (context) await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}
