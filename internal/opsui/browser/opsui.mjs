// The operator's view of the ops UI, in a real browser.
//
//   node opsui.mjs --url http://127.0.0.1:PORT --token chom_… --out shot.png \
//        [--queue default] [--chromium /usr/bin/chromium] [--timeout-ms 30000]
//
// Launches Chromium headless through playwright-core (which never downloads a
// browser), logs in to URL/ops/queues with HTTP Basic credentials (any user
// name, the token as password: the browser answers the server's Basic
// challenge), waits until the queue table lists critical, default and low with
// a non-zero size for --queue, takes a full-page screenshot to --out, then opens
// the page again in a context without credentials and checks it gets 401 with a
// Basic challenge. Prints one JSON line of what it saw; exits 1 on any failure
// (with the JSON line's "error" saying why). internal/opsui's Go test runs it.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";

import { chromium } from "playwright-core";

const { values: args } = parseArgs({
  options: {
    url: { type: "string" },
    token: { type: "string" },
    out: { type: "string" },
    queue: { type: "string", default: "default" },
    chromium: { type: "string", default: "/usr/bin/chromium" },
    "timeout-ms": { type: "string", default: "30000" },
  },
});
if (!args.url || !args.token || !args.out) {
  console.error("usage: node opsui.mjs --url BASE --token TOKEN --out FILE.png [--queue NAME]");
  process.exit(2);
}
const timeout = Number(args["timeout-ms"]);
const wanted = ["critical", "default", "low"];
const page_url = args.url.replace(/\/+$/, "") + "/ops/queues";

// The machine's network is closed: these flags stop Chromium's own background
// connections (updates, sync, QUIC probes) so it only talks to the UI.
const chromiumArgs = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

const seen = { url: page_url, queues: {}, screenshot: args.out, csp_violations: [] };
const profiles = [];
const contexts = [];

// open launches Chromium on a fresh --user-data-dir (a persistent context is how
// playwright takes one), so no profile state carries over between runs or
// between the two contexts of a run.
async function open(httpCredentials) {
  const dir = mkdtempSync(join(tmpdir(), "chom-opsui-chromium-"));
  profiles.push(dir);
  const context = await chromium.launchPersistentContext(dir, {
    executablePath: args.chromium,
    headless: true,
    args: chromiumArgs,
    viewport: { width: 1400, height: 900 },
    httpCredentials,
    timeout,
  });
  contexts.push(context);
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(timeout);
  return page;
}

let code = 0;
try {
  // Any user name, the token as password: Chromium answers the server's Basic
  // challenge with them, as a person would in the login prompt.
  const page = await open({ username: "ops", password: args.token });
  // What the page's Content-Security-Policy blocked, as Chromium reports it on
  // the console: the UI must work under the policy the ingress sends.
  page.on("console", (msg) => {
    if (/Content Security Policy/i.test(msg.text())) seen.csp_violations.push(msg.text());
  });
  page.on("pageerror", (err) => {
    if (/Content Security Policy/i.test(String(err))) seen.csp_violations.push(String(err));
  });
  const res = await page.goto(page_url, { waitUntil: "domcontentloaded" });
  seen.status = res ? res.status() : 0;
  if (seen.status !== 200) throw new Error(`GET ${page_url} with credentials: status ${seen.status}`);

  // The dashboard's queue table: one row per queue, its first cell the name,
  // a "Size" column. Wait until every queue is listed and the one holding the
  // test's tasks has a non-zero size (the UI polls the server every few seconds).
  const handle = await page.waitForFunction(
    ({ wanted, queue }) => {
      for (const table of document.querySelectorAll("table")) {
        const heads = [...table.querySelectorAll("thead th")].map((th) => th.textContent.trim().toLowerCase());
        const sizeAt = heads.indexOf("size");
        if (sizeAt < 0) continue;
        const queues = {};
        for (const tr of table.querySelectorAll("tbody tr")) {
          const cells = [...tr.querySelectorAll("td, th")].map((td) => td.textContent.trim());
          if (cells.length > sizeAt) queues[cells[0]] = Number(cells[sizeAt].replace(/[^0-9]/g, ""));
        }
        if (wanted.every((q) => q in queues) && queues[queue] > 0) return queues;
      }
      return null;
    },
    { wanted, queue: args.queue },
    { polling: 250, timeout },
  );
  seen.queues = await handle.jsonValue();
  seen.read_only = await page.evaluate(() => String(window.FLAG_READ_ONLY));
  seen.title = await page.title();
  await page.screenshot({ path: args.out, fullPage: true });

  // A new context without credentials must get the 401 and its Basic challenge.
  // Chromium with no credentials to give cancels the login prompt, which
  // playwright reports as net::ERR_INVALID_AUTH_CREDENTIALS (a person would see
  // the prompt); the 401 itself arrives as the document's response event.
  const anon = await open(undefined);
  let anonRes = null;
  anon.on("response", (r) => {
    if (r.url() === page_url) anonRes = r;
  });
  try {
    anonRes = (await anon.goto(page_url, { waitUntil: "domcontentloaded" })) ?? anonRes;
    seen.unauthenticated_navigation = "loaded";
  } catch (err) {
    if (!/ERR_INVALID_AUTH_CREDENTIALS/.test(String(err && err.message))) throw err;
    seen.unauthenticated_navigation = "login prompt cancelled";
  }
  seen.unauthenticated_status = anonRes ? anonRes.status() : 0;
  seen.unauthenticated_challenge = anonRes ? ((await anonRes.headerValue("www-authenticate")) ?? "") : "";
  if (seen.unauthenticated_status !== 401) {
    throw new Error(`GET ${page_url} without credentials: status ${seen.unauthenticated_status}, want 401`);
  }
  if (!/^Basic /i.test(seen.unauthenticated_challenge)) {
    throw new Error(
      `GET ${page_url} without credentials: WWW-Authenticate ${JSON.stringify(seen.unauthenticated_challenge)}, want a Basic challenge`,
    );
  }
} catch (err) {
  seen.error = String(err && err.message ? err.message : err);
  code = 1;
} finally {
  for (const c of contexts) await c.close().catch(() => {});
  for (const dir of profiles) rmSync(dir, { recursive: true, force: true });
}
console.log(JSON.stringify(seen));
process.exit(code);
