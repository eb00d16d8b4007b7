// A fake EventSource and Storage for the helper's unit tests: the test drives
// the connection (open, events, errors) by hand.

export class FakeEventSource {
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSED = 2;
  /** @type {FakeEventSource[]} every instance, oldest first */
  static all = [];

  constructor(url, init) {
    this.url = url;
    this.withCredentials = !!init?.withCredentials;
    this.readyState = 0;
    this.listeners = new Map();
    FakeEventSource.all.push(this);
  }
  addEventListener(type, fn) {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type).add(fn);
  }
  removeEventListener(type, fn) {
    this.listeners.get(type)?.delete(fn);
  }
  close() {
    this.readyState = 2;
  }
  dispatch(e) {
    e.target = this;
    for (const fn of this.listeners.get(e.type) ?? []) fn(e);
  }
  // Test controls.
  open() {
    this.readyState = 1;
    this.dispatch({ type: "open" });
  }
  emit(type, data, lastEventId = "") {
    this.dispatch({ type, data, lastEventId });
  }
  fail(closed = false) {
    this.readyState = closed ? 2 : 0;
    this.dispatch({ type: "error" });
  }
  static reset() {
    FakeEventSource.all = [];
  }
  static get last() {
    return FakeEventSource.all[FakeEventSource.all.length - 1];
  }
}

export class FakeStorage {
  constructor(init = {}) {
    this.map = new Map(Object.entries(init));
  }
  getItem(k) {
    return this.map.has(k) ? this.map.get(k) : null;
  }
  setItem(k, v) {
    this.map.set(k, String(v));
  }
  removeItem(k) {
    this.map.delete(k);
  }
}

// An id as lastevent writes them: 26-char generation, dash, 13-char sequence.
export function id(seq, gen = "01M8YS2AHZ7JZTKTYDM3GCF421") {
  return gen + "-" + String(seq).padStart(13, "0");
}
