// A lastevent restart (SIGTERM, then a new process on the same port, as a
// pod restart looks to a browser): Chromium's EventSource must reconnect by
// itself, and the resume gets system-sync (the buffer is gone). Any non-200
// answer closes an EventSource for good, so neither a reconnect that reaches
// the draining process (over a kept-alive connection, when LASTEVENT_RETRY is
// shorter than the drain) nor a stream still opening at SIGTERM (lastevent
// waiting for the upstream's first answer) may get one.
import { test, before } from "node:test";
import assert from "node:assert/strict";
import { startUpstream, startLastevent, launch, until, idProblems } from "./lib.mjs";

let up, page;
before(async () => {
  up = await startUpstream();
  ({ page } = await launch());
});

/** SIGTERMs lastevent and starts a new one on the same address once it has exited. */
async function restart(le, env) {
  const exited = new Promise((r) => le.child.once("exit", r));
  le.child.kill("SIGTERM");
  await exited;
  return startLastevent(up.addr, { ...env, LASTEVENT_LISTEN_ADDR: le.listen });
}

test("SIGTERM with a live stream: the reconnect is not refused for good, the new process answers system-sync, then events", async () => {
  const env = { LASTEVENT_RETRY: "100ms" }; // reconnects while the old process still drains
  const le = await startLastevent(up.addr, env);
  await page.goto(`http://${le.listen}/harness.html`);
  await page.evaluate(() => window.start("live", "/count?interval=50ms", ["message", "other", "system-sync", "sync-required"]));
  assert.ok(await until(() => page.evaluate(() => window.count("live") >= 5), 10000), "events before the restart");
  const le2 = await restart(le, env);
  const ok = await until(
    () => page.evaluate(() => (window.count("live", "system-sync") === 1 && window.get("live").events.at(-1).type !== "system-sync") || window.get("live").readyState === 2),
    10000,
  );
  const got = await page.evaluate(() => window.get("live"));
  assert.ok(
    !got.errors.some((e) => e.readyState === 2),
    `the EventSource closed for good after the SIGTERM: its reconnect got a non-200 answer from the draining process (errors ${JSON.stringify(got.errors)})\n` +
      le.output().split("\n").slice(-4).join("\n"),
  );
  assert.ok(ok, `system-sync, then events, after the restart: ${JSON.stringify(got.events.slice(-3))}`);
  const i = got.events.findIndex((e) => e.type === "system-sync");
  const problems = idProblems(got.events);
  assert.deepEqual(problems, [], "ids keep increasing across the restart");
  assert.equal(JSON.parse(got.events[i + 1].data).n, 1, "after system-sync, a new upstream stream from its start");
  await page.evaluate(() => window.stop("live"));
  le2.child.kill("SIGTERM");
});

test("SIGTERM while a stream is opening: the EventSource is not closed for good (no 503), it reconnects", async () => {
  const le = await startLastevent(up.addr);
  await page.goto(`http://${le.listen}/harness.html`);
  // The upstream answers after 1.5 s; the SIGTERM comes while lastevent waits.
  await page.evaluate(() => window.start("opening", "/slow?delay=1500ms", ["message", "system-sync", "sync-required"]));
  await new Promise((r) => setTimeout(r, 400));
  const le2 = await restart(le, {});
  const ok = await until(() => page.evaluate(() => window.count("opening") >= 1 || window.get("opening").readyState === 2), 12000);
  const got = await page.evaluate(() => window.get("opening"));
  assert.ok(
    got.readyState !== 2,
    `the EventSource closed for good: lastevent answered the pending request with a non-200 while shutting down (errors ${JSON.stringify(got.errors)})\n` +
      le.output().split("\n").slice(-5).join("\n"),
  );
  assert.ok(ok && got.events.length >= 1, `an event from the new process: ${JSON.stringify(got)}`);
  le2.child.kill("SIGTERM");
});
