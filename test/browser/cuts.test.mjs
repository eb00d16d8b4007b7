// Issue 4 (b): the connection between a real client and lastevent is cut
// from the server side at random points (the relay, seeded: the seed is
// printed), and the client reconnects by itself, with Last-Event-ID: at the
// end it saw every upstream event exactly once, in order, with no sync event
// (the upstream never broke). Chromium's EventSource, then the npm
// eventsource package in Node.
import { test, before } from "node:test";
import assert from "node:assert/strict";
import { EventSource } from "eventsource";
import { startUpstream, startLastevent, startRelay, launch, diff, idProblems, until, seed } from "./lib.mjs";

const N = 150; // events each client must get
const CUTS = 15; // random cuts per client
const TYPES = ["message", "other", "sync-required", "system-sync"];
const URL_PATH = "/count?interval=15ms";

let le;
before(async () => {
  const up = await startUpstream();
  le = await startLastevent(up.addr, { LASTEVENT_RETRY: "150ms" });
});

/** What the upstream's /count sends as event n (mirrors count in upstream/main.go). */
export function expected(n) {
  return { type: n % 5 === 0 ? "other" : "message", data: JSON.stringify({ n, pad: "x".repeat((n * 37) % 300) }) + (n % 7 === 0 ? "\nsecond line" : "") };
}

/** Checks what a client saw against 1..k; returns a report, "" when right. */
function check(client, s, events, log) {
  const cuts = log.filter((e) => e.kind === "cut");
  const resumes = log.filter((e) => e.kind === "request" && e.sse && e.lastEventId);
  const want = events.map((_, i) => expected(i + 1));
  const show = (e) => JSON.stringify([e.type, e.data.replace(/x{10,}/, (m) => `x*${m.length}`)]); // exact, but short
  const problems = [];
  const d = diff(want, events, show);
  if (d) problems.push(d);
  problems.push(...idProblems(events));
  if (events.length < N) problems.push(`only ${events.length} of ${N} events arrived`);
  if (cuts.length < 5) problems.push(`only ${cuts.length} cuts were made`);
  if (resumes.length < cuts.length / 2) problems.push(`only ${resumes.length} reconnects carried Last-Event-ID after ${cuts.length} cuts`);
  if (!problems.length) return "";
  return (
    `${client}, seed ${s} (SEED=${seed}): ${problems.join("\n")}\n` +
    `cuts (conn, how, bytes into the response): ${cuts.map((c) => `${c.conn}/${c.how}/${c.bytes}`).join(" ")}\n` +
    `requests: ${log
      .filter((e) => e.kind === "request")
      .map((e) => `${e.conn}:${e.line.split(" ")[1]}${e.lastEventId ? " LEI=" + e.lastEventId.slice(-6) : ""}`)
      .join(" | ")}`
  );
}

test("(b) Chromium: cut at random points, the page reconnects by itself and sees every event once, in order", async () => {
  const s = seed;
  const relay = await startRelay(le.listen, { seed: s, cuts: CUTS, min: 1, max: 2500 });
  const { page } = await launch();
  await page.goto(`http://${relay.listen}/harness.html`);
  await page.evaluate(([u, t]) => window.start("b", u, t), [URL_PATH, TYPES]);
  const cutsDone = async () => (await relay.log()).filter((e) => e.kind === "cut").length >= CUTS;
  await until(async () => (await page.evaluate(() => window.count("b"))) >= N && (await cutsDone()), 60000, 200);
  await page.evaluate(() => window.stop("b"));
  const got = await page.evaluate(() => window.get("b"));
  const report = check("chromium", s, got.events, await relay.log());
  if (report) assert.fail(report);
  console.log(`chromium: ${got.events.length} events, ${got.errors.length} reconnects, seed ${s}`);
});

test("(b) npm eventsource: cut at random points, it reconnects by itself and sees every event once, in order", async () => {
  const s = seed + 1;
  const relay = await startRelay(le.listen, { seed: s, cuts: CUTS, min: 1, max: 2500 });
  const events = [];
  let errors = 0;
  const es = new EventSource(`http://${relay.listen}${URL_PATH}`);
  for (const type of TYPES) es.addEventListener(type, (e) => events.push({ type: e.type, data: e.data, id: e.lastEventId }));
  es.onerror = () => errors++;
  const cutsDone = async () => (await relay.log()).filter((e) => e.kind === "cut").length >= CUTS;
  await until(async () => events.length >= N && (await cutsDone()), 60000, 200);
  es.close();
  const report = check("eventsource", s, events, await relay.log());
  if (report) assert.fail(report);
  console.log(`eventsource: ${events.length} events, ${errors} reconnects, seed ${s}`);
});
