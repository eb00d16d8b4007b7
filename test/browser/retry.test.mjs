// Issue 4 (c): the retry: lastevent sends is what Chromium waits before it
// reconnects. The relay cuts the connection (a reset, from the server side)
// and logs when; the gap to the next request on that stream is the wait.
// LASTEVENT_RETRY=1500ms for a plain stream; 1000 ms after a sync event,
// which carries retry: 1000. Chromium's own default is 3000 ms.
import { test, before } from "node:test";
import assert from "node:assert/strict";
import { startUpstream, startLastevent, startRelay, launch, until } from "./lib.mjs";

let relay, page;
before(async () => {
  const up = await startUpstream();
  const le = await startLastevent(up.addr, { LASTEVENT_RETRY: "1500ms" });
  relay = await startRelay(le.listen);
  ({ page } = await launch());
  await page.goto(`http://${relay.listen}/harness.html`);
});

const TYPES = ["message", "other", "sync-required"];

test("(c) Chromium waits the retry: lastevent sends (1500 ms configured, 1000 ms after a sync event)", async () => {
  const streams = {
    plain: { path: "/count?interval=100ms", want: 1500 },
    sync: { path: "/count?interval=100ms&lastEventId=not-an-id", want: 1000 },
  };
  for (const [name, s] of Object.entries(streams)) await page.evaluate(([n, u, t]) => window.start(n, u, t), [name, s.path, TYPES]);
  const firstType = async (n) => (await page.evaluate((x) => window.get(x), n)).events[0]?.type;
  assert.ok(await until(async () => (await page.evaluate(() => window.count("plain") >= 3 && window.count("sync") >= 3)), 10000), "events arrive");
  assert.equal(await firstType("sync"), "sync-required", "a malformed id gets sync-required first");
  assert.equal(await firstType("plain"), "message");
  const rounds = 2;
  for (let round = 0; round < rounds; round++) {
    const before = (await relay.log()).length;
    assert.equal(await relay.cut("reset"), 2, "both streams cut");
    // Wait for a reconnect of each stream after the cut.
    const reconnects = await until(async () => {
      const log = (await relay.log()).slice(before);
      const got = Object.values(streams).map((s) => log.find((e) => e.kind === "request" && e.line.split(" ")[1] === s.path));
      return got.every(Boolean) && { log, got };
    }, 8000);
    assert.ok(reconnects, `round ${round}: both streams reconnected within 8 s`);
    const cutAt = reconnects.log.find((e) => e.kind === "cut").t;
    Object.values(streams).forEach((s, i) => {
      const waited = reconnects.got[i].t - cutAt;
      console.log(`round ${round}: ${s.path}: retry ${s.want} ms, Chromium waited ${waited.toFixed(0)} ms`);
      assert.ok(waited >= s.want - 100 && waited <= s.want + 1000, `${s.path}: waited ${waited.toFixed(0)} ms for retry ${s.want} ms (bounds ${s.want - 100}..${s.want + 1000})`);
      assert.ok(reconnects.got[i].lastEventId, `${s.path}: the reconnect carries Last-Event-ID`);
    });
    // The second round measures the first again: after the sync stream's
    // reconnect it resumes with a plain preamble, i.e. retry 1500.
    streams.sync.want = 1500;
    await until(async () => (await page.evaluate(() => window.get("plain").opens.length)) >= round + 2, 5000);
    await new Promise((r) => setTimeout(r, 300)); // a few events on the new connections
  }
});
