// Issue 7: the demo page and lastevent.js in headless Chromium, against the
// demo command itself (its upstream, its in-process lastevent and its hooks):
// the live stream, a dropped connection (the gap filled, no duplicate), a
// reload (?lastEventId= from sessionStorage), sync-required (the upstream
// dropped), system-sync (the proxy restarted), a stored id lastevent cannot
// use. Screenshots go to test/artifacts/demo-*.png.
import { test, before } from "node:test";
import assert from "node:assert/strict";
import { startDemo, launch, screenshot, until, sleep, ID } from "./lib.mjs";

let demo, context, page;
const sseRequests = []; // URLs of the page's /broadcast requests, in order

before(async () => {
  demo = await startDemo({ LASTEVENT_RETRY: "500ms", LASTEVENT_LOG_LEVEL: "warn" }, "100ms");
  ({ context, page } = await launch());
  page.on("request", (r) => r.url().includes("/broadcast") && sseRequests.push(r.url()));
  await page.goto(`http://${demo.listen}/`);
});

const rows = (p = page) => p.evaluate(() => window.demo.rows);
const states = (p = page) => p.evaluate(() => window.demo.states);
const text = (sel, p = page) => p.textContent(sel);
const ticks = (rs) => rs.filter((r) => r.type === "tick");

// Crockford base32 of an id's sequence part.
const seqOf = (id) => [...id.slice(27)].reduce((n, c) => n * 32 + "0123456789ABCDEFGHJKMNPQRSTVWXYZ".indexOf(c), 0);

/** The page's own check holds, and what it showed is consistent: a report, "" when right. */
async function pageProblems(p = page) {
  const out = [];
  for (const [sel, what] of [["#gaps", "silent gaps"], ["#repeats", "repeats"], ["#dups", "duplicates dropped"]])
    if ((await text(sel, p)) !== "0") out.push(`${what}: ${await text(sel, p)}`);
  const rs = await rows(p);
  const bad = rs.filter((r) => r.cls === "bad");
  if (bad.length) out.push("rows marked bad: " + JSON.stringify(bad.slice(0, 5)));
  // Between sync events, the ticks are consecutive and their ids increase.
  let prev = null;
  for (const r of rs) {
    if (r.type !== "tick") {
      prev = null;
      continue;
    }
    if (!ID.test(r.id)) out.push(`tick ${r.n}: id ${r.id}`);
    if (prev && (r.n !== prev.n + 1 || !(r.id > prev.id))) out.push(`tick ${r.n} (${r.id}) after tick ${prev.n} (${prev.id})`);
    prev = r;
  }
  return out.length ? out.join("\n") + "\nrows: " + JSON.stringify(rs.slice(-30)) : "";
}

async function waitTicks(n, p = page) {
  const ok = await until(async () => ticks(await rows(p)).length >= n, 15000);
  assert.ok(ok, `${n} ticks shown; rows: ${JSON.stringify((await rows(p)).slice(-10))}`);
}

test("the page shows the live stream through lastevent, with ids and the connection state", async () => {
  await waitTicks(5);
  assert.equal(await text("#state"), "open");
  assert.deepEqual(await states(), ["connecting", "open"]);
  assert.ok(sseRequests[0].endsWith("/broadcast"), `the first stream starts live, without lastEventId: ${sseRequests[0]}`);
  const p = await pageProblems();
  if (p) assert.fail(p);
  assert.match(await text("#lastid"), ID);
  await screenshot(page, "demo-live");
});

test("drop the connection: the browser reconnects by itself and gets exactly what it missed", async () => {
  const s0 = (await states()).length;
  const r0 = (await rows()).length;
  await page.click("#drop");
  const back = await until(async () => (await states()).slice(s0).join(",") === "connecting,open", 8000);
  assert.ok(back, `state went connecting, then open: ${(await states()).slice(s0)}`);
  await sleep(500);
  const after = (await rows()).slice(r0);
  assert.ok(
    after.some((r) => r.cls === "replayed"),
    `ticks sent while disconnected were replayed: ${JSON.stringify(after.slice(0, 10))}`,
  );
  assert.ok(!after.some((r) => r.type !== "tick"), "no sync event: the resume was exact");
  const p = await pageProblems();
  if (p) assert.fail(p);
  await screenshot(page, "demo-after-drop");
});

test("reload the page: the helper passes the stored id as ?lastEventId= and the stream resumes exactly", async () => {
  const n0 = sseRequests.length;
  await page.click("#reload");
  await page.waitForLoadState("load");
  await waitTicks(5);
  const url = new URL(sseRequests[n0]);
  const stored = url.searchParams.get("lastEventId");
  assert.match(stored ?? "", ID, `the new EventSource resumes with ?lastEventId=: ${url}`);
  const first = ticks(await rows())[0];
  assert.ok(first.note.includes("first after reload"), JSON.stringify(first));
  assert.equal(first.id.slice(0, 26), stored.slice(0, 26), "same stream (generation) as before the reload");
  assert.equal(seqOf(first.id), seqOf(stored) + 1, `the first event after the reload follows the stored id ${stored}: ${first.id}`);
  assert.match(await text("#msg"), /resumed after/);
  const p = await pageProblems(); // the page's tick check spans the reload
  if (p) assert.fail(p);
  await screenshot(page, "demo-after-reload");
});

test("drop the upstream: sync-required (upstream-reconnect) reaches onSyncRequired, then the stream goes on", async () => {
  const r0 = (await rows()).length;
  await page.click("#drop-upstream");
  const sync = await until(async () => (await rows()).slice(r0).find((r) => r.type === "sync-required"), 8000);
  assert.ok(sync, "a sync-required row");
  assert.match(sync.note, /upstream-reconnect/);
  assert.match(sync.id, ID);
  await until(async () => ticks((await rows()).slice(r0)).length >= 5, 8000);
  assert.equal(await text("#state"), "open", "the client connection stayed open");
  const p = await pageProblems();
  if (p) assert.fail(p);
  await screenshot(page, "demo-sync-required");
});

test("restart the proxy: the resume gets system-sync, new ids sort after the old, the stream goes on", async () => {
  const r0 = (await rows()).length;
  const oldId = await text("#lastid");
  await page.click("#restart");
  const sys = await until(async () => (await rows()).slice(r0).find((r) => r.type === "system-sync"), 15000);
  assert.ok(sys, `a system-sync row; rows: ${JSON.stringify((await rows()).slice(r0))}`);
  assert.ok(sys.id > oldId, `the new generation's id ${sys.id} sorts after the old ${oldId}`);
  const afterSync = async () => {
    const all = (await rows()).slice(r0);
    return { all, ticks: ticks(all.slice(all.findIndex((r) => r.type === "system-sync"))) };
  };
  await until(async () => (await afterSync()).ticks.length >= 5, 8000);
  assert.equal(await text("#state"), "open");
  const { all, ticks: after } = await afterSync();
  assert.ok(
    after.length >= 5 && after.every((r) => r.id.slice(0, 26) === sys.id.slice(0, 26) && r.id > sys.id),
    `ticks after system-sync follow it in its generation: ${JSON.stringify(all)}`,
  );
  const p = await pageProblems();
  if (p) assert.fail(p);
  await screenshot(page, "demo-system-sync");
});

test("a stored id lastevent cannot use: sync-required (malformed-id) on load; a new tab starts live", async () => {
  const tab = await context.newPage();
  const urls = [];
  tab.on("request", (r) => r.url().includes("/broadcast") && urls.push(r.url()));
  await tab.addInitScript(() => {
    if (location.pathname === "/" && !sessionStorage.getItem("test:seeded")) {
      sessionStorage.setItem("test:seeded", "1");
      sessionStorage.setItem("lastevent:/broadcast", "nonsense");
    }
  });
  await tab.goto(`http://${demo.listen}/`);
  const sync = await until(async () => (await rows(tab)).find((r) => r.type === "sync-required"), 8000);
  assert.ok(sync, "a sync-required row");
  assert.match(sync.note, /malformed-id/);
  assert.match(urls[0], /\?lastEventId=nonsense$/);
  await waitTicks(3, tab);
  const p = await pageProblems(tab);
  if (p) assert.fail(p);
  await screenshot(tab, "demo-malformed-id");
  const fresh = await context.newPage(); // sessionStorage is per tab: nothing stored
  const freshUrls = [];
  fresh.on("request", (r) => r.url().includes("/broadcast") && freshUrls.push(r.url()));
  await fresh.goto(`http://${demo.listen}/`);
  await waitTicks(2, fresh);
  assert.ok(freshUrls[0].endsWith("/broadcast"), freshUrls[0]);
});
