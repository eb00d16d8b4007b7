// Issue 4 (a): for byte streams covering the corners of the SSE format, the
// (type, data) events a real EventSource in Chromium sees through lastevent
// equal those it sees directly from the upstream, and every event seen
// through lastevent has a lastevent id, each above the one before.
import { test, before } from "node:test";
import assert from "node:assert/strict";
import { startUpstream, startLastevent, launch, diff, idProblems, request } from "./lib.mjs";

let up, le, direct, proxied, cases;

before(async () => {
  up = await startUpstream();
  le = await startLastevent(up.addr);
  const { context } = await launch();
  direct = await context.newPage();
  proxied = await context.newPage();
  await direct.goto(`http://${up.addr}/harness.html`);
  await proxied.goto(`http://${le.listen}/harness.html`); // a plain request: lastevent proxies it
  cases = JSON.parse(await request("GET", `http://${up.addr}/corners`));
});

/** Opens an EventSource on the page, waits for the "done" event (or for the EventSource to give up), returns what it saw. */
async function record(page, name, url, types) {
  await page.evaluate(([n, u, t]) => window.start(n, u, t), [name, url, types]);
  try {
    await page.waitForFunction(
      (n) => window.get(n).events.some((e) => e.type === "done") || window.get(n).readyState === 2,
      name,
      { timeout: 10000 },
    );
  } finally {
    await page.evaluate((n) => window.stop(n), name);
  }
  const r = await page.evaluate((n) => window.get(n), name);
  r.failed = r.errors.some((e) => e.readyState === 2); // gave up (stop() closes it too: look at the errors)
  return r;
}

const show = (e) => JSON.stringify([e.type, e.data]);

test("(a) corner-case byte streams: the same events through lastevent as from the upstream", async (t) => {
  assert.ok(cases.length >= 20, "the upstream lists its corner cases");
  let lastId = "";
  for (const c of cases) {
    await t.test(c.name, async () => {
      const types = ["message", "done", ...c.types];
      const [d, p] = await Promise.all([record(direct, c.name, "/corner/" + c.name, types), record(proxied, c.name, "/corner/" + c.name, types)]);
      const report = diff(d.events, p.events, show);
      if (report) assert.fail(`case ${c.name}: events through lastevent (seen) differ from the upstream's (expected)\n${report}`);
      const bad = idProblems(p.events);
      if (bad.length) assert.fail(`case ${c.name}: ids seen through lastevent:\n${bad.join("\n")}`);
      assert.equal(p.errors.length, 0, `case ${c.name}: the EventSource through lastevent had errors (a reconnect)`);
      // Each case is a new stream (session mode): its ids start a new
      // generation, after the previous case's.
      assert.ok(p.events[0].id > lastId, `case ${c.name}: first id ${p.events[0].id} not above the previous case's ${lastId}`);
      lastId = p.events[p.events.length - 1].id;
    });
  }
});

test("(a) the harness itself: known outcomes of a few cases, from the upstream directly", async () => {
  const want = {
    basic: [["message", "a"]],
    "multi-line-data": [["message", "a\nb\nc"]],
    "cr-only": [["message", "x\ny"], ["message", "z"]],
    "field-without-colon": [["message", ""]],
    "event-without-data-is-dropped": [["message", "after"]],
    "space-stripping": [["message", "nospace"], ["message", " two spaces"], ["message", "trailing "], ["message", "\tTab"]],
  };
  for (const [name, events] of Object.entries(want)) {
    const c = cases.find((x) => x.name === name);
    const d = await record(direct, "known-" + name, "/corner/" + name, ["message", "done", ...c.types]);
    const seen = d.events.filter((e) => e.type !== "done").map((e) => [e.type, e.data]);
    assert.deepEqual(seen, events, `case ${name} as Chromium parses it directly`);
  }
});

test("(a) the request target reaches the upstream as the page wrote it", async (t) => {
  // The upstream's /uri/ answers with the request target it got. (A
  // lastEventId parameter is removed on purpose; none here.)
  const targets = ["/uri/plain?x=1", "/uri/a%20b", "/uri/a%25b", "/uri/a%2Fb", "/uri/%41%42", "/uri/q?x=a%20b&t=%7e"];
  for (const target of targets) {
    await t.test(target, async () => {
      const name = "uri " + target;
      const [d, p] = await Promise.all([record(direct, name, target, ["message", "done"]), record(proxied, name, target, ["message", "done"])]);
      const seen = (r) => (r.failed ? "(the EventSource failed: a non-200 answer)" : r.events[0]?.data);
      assert.equal(seen(p), seen(d), `EventSource("${target}"): the upstream got ${JSON.stringify(seen(d))} directly, ${JSON.stringify(seen(p))} through lastevent`);
    });
  }
});

test("(a) a cross-origin page: the upstream's CORS headers come through, so the EventSource works as it does directly", async () => {
  // Each page opens the stream on the other origin; the upstream answers
  // with Access-Control-Allow-Origin: *.
  const path = "/corner/basic?cors=1";
  const d = await record(proxied, "cors", `http://${up.addr}${path}`, ["message", "done"]); // page on lastevent's origin, stream from the upstream
  const p = await record(direct, "cors", `http://${le.listen}${path}`, ["message", "done"]); // page on the upstream's origin, stream through lastevent
  assert.deepEqual(d.events.map(show), ['["message","a"]', '["done","done"]'], "directly, the cross-origin stream works");
  assert.deepEqual(
    p.events.map(show),
    d.events.map(show),
    `through lastevent the cross-origin EventSource ${p.failed ? "failed (CORS: no Access-Control-Allow-Origin on lastevent's answer)" : "saw other events"}`,
  );
});
