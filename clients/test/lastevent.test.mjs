import { test, beforeEach, afterEach, mock } from "node:test";
import assert from "node:assert/strict";
import { LastEvent } from "../lastevent.js";
import { FakeEventSource as ES, FakeStorage, id } from "./fake.mjs";

beforeEach(() => ES.reset());
afterEach(() => {
  delete globalThis.sessionStorage;
  delete globalThis.localStorage;
  delete globalThis.EventSource;
});

/** A stream on a fake EventSource that records what the app sees. */
function open(url = "/events", opts = {}) {
  const seen = { events: [], states: [], syncs: [], systems: [] };
  const s = new LastEvent(url, {
    EventSource: ES,
    storage: new FakeStorage(),
    onStateChange: (st) => seen.states.push(st),
    onSyncRequired: (info, e) => seen.syncs.push({ info, id: e.lastEventId }),
    onSystemSync: (data, e) => seen.systems.push({ data, id: e.lastEventId }),
    ...opts,
  });
  s.on("message", (e) => seen.events.push([e.type, e.data, e.lastEventId]));
  return { s, seen, es: ES.last };
}

test("opens at once, without lastEventId when nothing is stored", () => {
  const { s, seen, es } = open("/events?x=1");
  assert.equal(ES.all.length, 1);
  assert.equal(es.url, "/events?x=1");
  assert.equal(s.state, "connecting");
  assert.equal(s.lastEventId, "");
  assert.deepEqual(seen.states, ["connecting"]);
});

test("delivers events and drops a repeated id", () => {
  const { s, seen, es } = open();
  es.open();
  es.emit("message", "a", id(1));
  es.emit("message", "b", id(2));
  es.emit("message", "a again", id(1));
  es.emit("message", "c", id(3));
  es.emit("message", "b again", id(2));
  assert.deepEqual(
    seen.events.map((e) => e[1]),
    ["a", "b", "c"],
  );
  assert.equal(s.duplicates, 2);
  assert.equal(s.lastEventId, id(3));
});

test("events without an id are always delivered", () => {
  const { seen, es } = open();
  es.emit("message", "x");
  es.emit("message", "x");
  assert.equal(seen.events.length, 2);
});

test("the duplicate filter is bounded (LRU of `dedup` ids)", () => {
  const { s, seen, es } = open("/events", { dedup: 3 });
  for (let i = 1; i <= 4; i++) es.emit("message", "m" + i, id(i)); // id(1) falls out
  es.emit("message", "m3 again", id(3)); // still known: dropped, and now the most recent
  for (let i = 5; i <= 6; i++) es.emit("message", "m" + i, id(i)); // id(2), then id(4) fall out, not id(3)
  es.emit("message", "m3 twice", id(3));
  es.emit("message", "m1 again", id(1)); // forgotten: delivered
  assert.deepEqual(
    seen.events.map((e) => e[1]),
    ["m1", "m2", "m3", "m4", "m5", "m6", "m1 again"],
  );
  assert.equal(s.duplicates, 2);
});

test("the default filter remembers 500 ids", () => {
  const { s, seen, es } = open();
  for (let i = 1; i <= 501; i++) es.emit("message", "", id(i));
  es.emit("message", "", id(2)); // the 500 newest are 2..501
  es.emit("message", "", id(1));
  assert.equal(s.duplicates, 1);
  assert.equal(seen.events.length, 502);
});

test("other event types through on(), also added after the stream opened", () => {
  const { s, seen, es } = open();
  const ticks = [];
  s.on("tick", (e) => ticks.push(e.data));
  es.emit("tick", "t1", id(1));
  es.emit("tick", "t1 dup", id(1));
  es.emit("message", "m", id(2));
  const fn = (e) => ticks.push("second " + e.data);
  s.on("tick", fn);
  es.emit("tick", "t3", id(3));
  s.off("tick", fn);
  es.emit("tick", "t4", id(4));
  assert.deepEqual(ticks, ["t1", "t3", "second t3", "t4"]);
  assert.deepEqual(
    seen.events.map((e) => e[1]),
    ["m"],
  );
});

test("one filter across event types: an id is processed once whatever its type", () => {
  const { s, seen, es } = open();
  const ticks = [];
  s.on("tick", (e) => ticks.push(e.data));
  es.emit("message", "m", id(1));
  es.emit("tick", "t", id(1));
  assert.equal(seen.events.length, 1);
  assert.deepEqual(ticks, []);
});

test("sync-required: the callback gets reason and id; the filter is kept", () => {
  const { s, seen, es } = open();
  es.emit("message", "a", id(1));
  es.emit("sync-required", JSON.stringify({ reason: "upstream-reconnect", id: id(2) }), id(2));
  es.emit("message", "a again", id(1));
  es.emit("message", "b", id(3));
  assert.deepEqual(seen.syncs, [{ info: { reason: "upstream-reconnect", id: id(2) }, id: id(2) }]);
  assert.deepEqual(
    seen.events.map((e) => e[1]),
    ["a", "b"],
  );
  assert.equal(s.duplicates, 1);
  assert.equal(s.lastEventId, id(3));
});

test("sync-required with data that is not JSON still calls back", () => {
  const { seen, es } = open();
  es.emit("sync-required", "oops", id(7));
  assert.deepEqual(seen.syncs, [{ info: { reason: "", id: id(7) }, id: id(7) }]);
});

test("sync events are never dropped as duplicates", () => {
  const { seen, es } = open();
  const data = JSON.stringify({ reason: "evicted", id: id(5) });
  es.emit("sync-required", data, id(5));
  es.emit("sync-required", data, id(5));
  assert.equal(seen.syncs.length, 2);
});

test("system-sync: the callback gets the data, the filter is cleared", () => {
  const { s, seen, es } = open();
  es.emit("message", "a", id(1));
  es.emit("system-sync", "{}", id(0, "01M8YS2AHZ7JZTKTYDM3GCF999"));
  es.emit("message", "a again", id(1)); // a new generation may reuse nothing, but the old ids are gone
  assert.deepEqual(seen.systems, [{ data: "{}", id: id(0, "01M8YS2AHZ7JZTKTYDM3GCF999") }]);
  assert.deepEqual(
    seen.events.map((e) => e[1]),
    ["a", "a again"],
  );
  assert.equal(s.duplicates, 0);
});

test("sync events reach on() handlers of their type too", () => {
  const { s, es } = open();
  const got = [];
  s.on("sync-required", (e) => got.push(e.type)).on("system-sync", (e) => got.push(e.type));
  es.emit("sync-required", "{}", id(1));
  es.emit("system-sync", "{}", id(2));
  assert.deepEqual(got, ["sync-required", "system-sync"]);
});

test("the last id is stored on every event, and a new stream starts after it", () => {
  const storage = new FakeStorage();
  const a = open("/events", { storage });
  a.es.emit("message", "1", id(1));
  a.es.emit("message", "2", id(2));
  assert.equal(storage.getItem("lastevent:/events"), id(2));
  a.s.close();
  // a page reload: a new helper, a new EventSource
  const b = open("/events", { storage });
  assert.equal(b.es.url, "/events?lastEventId=" + encodeURIComponent(id(2)));
  assert.equal(b.s.lastEventId, id(2));
});

test("sync events move the stored id too", () => {
  const storage = new FakeStorage();
  const { es } = open("/events", { storage });
  es.emit("sync-required", "{}", id(9));
  assert.equal(storage.getItem("lastevent:/events"), id(9));
  es.emit("system-sync", "{}", id(0, "01M8YS2AHZ7JZTKTYDM3GCF999"));
  assert.equal(storage.getItem("lastevent:/events"), id(0, "01M8YS2AHZ7JZTKTYDM3GCF999"));
});

test("sessionStorage by default, localStorage on request", () => {
  globalThis.sessionStorage = new FakeStorage({ "lastevent:/s": id(4) });
  globalThis.localStorage = new FakeStorage({ "lastevent:/s": id(8) });
  new LastEvent("/s", { EventSource: ES });
  assert.equal(ES.last.url, "/s?lastEventId=" + id(4));
  new LastEvent("/s", { EventSource: ES, storage: "local" });
  assert.equal(ES.last.url, "/s?lastEventId=" + id(8));
  ES.last.emit("message", "", id(9));
  assert.equal(globalThis.localStorage.getItem("lastevent:/s"), id(9));
  assert.equal(globalThis.sessionStorage.getItem("lastevent:/s"), id(4));
});

test("storage: none keeps the id in memory only", () => {
  globalThis.sessionStorage = new FakeStorage({ "lastevent:/s": id(4) });
  const s = new LastEvent("/s", { EventSource: ES, storage: "none" });
  assert.equal(ES.last.url, "/s");
  ES.last.emit("message", "", id(5));
  assert.equal(globalThis.sessionStorage.getItem("lastevent:/s"), id(4));
  s.reconnect();
  assert.equal(ES.last.url, "/s?lastEventId=" + id(5));
});

test("storage that throws (denied, quota) does not break the stream", () => {
  const bad = {
    getItem() {
      throw new Error("SecurityError");
    },
    setItem() {
      throw new Error("QuotaExceededError");
    },
  };
  const { s, seen, es } = open("/e", { storage: bad });
  es.emit("message", "x", id(1));
  assert.equal(seen.events.length, 1);
  assert.equal(s.lastEventId, id(1));
  Object.defineProperty(globalThis, "sessionStorage", {
    configurable: true,
    get() {
      throw new Error("SecurityError");
    },
  });
  new LastEvent("/e", { EventSource: ES });
  assert.equal(ES.last.url, "/e");
});

test("storageKey, param and an existing query string", () => {
  const storage = new FakeStorage({ mine: "a b&c" });
  open("/events?topic=x#frag", { storage, storageKey: "mine", param: "since" });
  assert.equal(ES.last.url, "/events?topic=x&since=a%20b%26c");
  open("/events", { storage, storageKey: "mine", param: "" });
  assert.equal(ES.last.url, "/events");
});

test("the global EventSource is used by default, withCredentials passed on", () => {
  globalThis.EventSource = ES;
  new LastEvent("/g", { storage: "none", withCredentials: true });
  assert.equal(ES.last.url, "/g");
  assert.equal(ES.last.withCredentials, true);
});

test("connection state follows the EventSource, the callback only on changes", () => {
  const { s, seen, es } = open("/events", { reopenDelay: -1 });
  es.open();
  assert.equal(s.state, "open");
  es.fail(); // the browser reconnects by itself
  es.fail();
  assert.equal(s.state, "connecting");
  es.open();
  es.fail(true); // the browser gave up
  assert.equal(s.state, "closed");
  assert.deepEqual(seen.states, ["connecting", "open", "connecting", "open", "closed"]);
  assert.equal(ES.all.length, 1);
});

test("a stream the browser closed for good is reopened after reopenDelay, resuming", () => {
  mock.timers.enable({ apis: ["setTimeout"] });
  try {
    const { s, seen, es } = open("/events", { reopenDelay: 2000 });
    es.open();
    es.emit("message", "1", id(1));
    es.fail(true);
    assert.equal(s.state, "connecting");
    mock.timers.tick(1999);
    assert.equal(ES.all.length, 1);
    mock.timers.tick(1);
    assert.equal(ES.all.length, 2);
    assert.equal(ES.last.url, "/events?lastEventId=" + id(1));
    ES.last.open();
    ES.last.emit("message", "1 again", id(1));
    ES.last.emit("message", "2", id(2));
    es.emit("message", "from the old one", id(3)); // ignored: not the current EventSource
    assert.deepEqual(
      seen.events.map((e) => e[1]),
      ["1", "2"],
    );
    assert.deepEqual(seen.states, ["connecting", "open", "connecting", "open"]);
  } finally {
    mock.timers.reset();
  }
});

test("reopening backs off while the stream keeps failing, and starts over once it opened", () => {
  mock.timers.enable({ apis: ["setTimeout"] });
  try {
    open("/events", { reopenDelay: 1000 });
    const waits = [];
    const failAndWait = () => {
      const n = ES.all.length;
      ES.last.fail(true);
      let ms = 0;
      while (ES.all.length === n && ms < 100000) {
        mock.timers.tick(100);
        ms += 100;
      }
      waits.push(ms);
    };
    for (let i = 0; i < 8; i++) failAndWait();
    ES.last.open();
    failAndWait();
    assert.deepEqual(waits, [1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 1000]);
  } finally {
    mock.timers.reset();
  }
});

test("reconnect() replaces the EventSource and resumes after the last id", () => {
  const { s, seen, es } = open();
  es.open();
  es.emit("message", "1", id(1));
  s.reconnect();
  assert.equal(es.readyState, 2);
  assert.equal(ES.all.length, 2);
  assert.equal(ES.last.url, "/events?lastEventId=" + id(1));
  assert.equal(s.state, "connecting");
  es.fail(true); // late error of the old one: no effect
  ES.last.open();
  ES.last.emit("message", "2", id(2));
  assert.deepEqual(
    seen.events.map((e) => e[1]),
    ["1", "2"],
  );
  assert.deepEqual(seen.states, ["connecting", "open", "connecting", "open"]);
});

test("close() closes for good: no events, no reopen, state closed", () => {
  mock.timers.enable({ apis: ["setTimeout"] });
  try {
    const { s, seen, es } = open("/events", { reopenDelay: 10 });
    es.open();
    es.fail(true); // a reopen is pending
    s.close();
    mock.timers.tick(100);
    assert.equal(ES.all.length, 1);
    assert.equal(es.readyState, 2);
    es.emit("message", "late", id(1));
    assert.equal(seen.events.length, 0);
    assert.equal(s.state, "closed");
    assert.deepEqual(seen.states, ["connecting", "open", "connecting", "closed"]);
  } finally {
    mock.timers.reset();
  }
});
