// lastevent.js: a small EventSource wrapper for streams served through
// lastevent. Plain ES module, no dependencies, no build step: copy this file.
//
// - drops duplicates: an LRU of the last `dedup` (500) processed ids;
// - surfaces `sync-required` and `system-sync` as callbacks (system-sync also
//   clears the duplicate filter: the old ids are gone);
// - remembers the last id in sessionStorage (or localStorage) and passes it as
//   `?lastEventId=` when a new EventSource starts, e.g. after a page reload
//   (EventSource itself sends Last-Event-ID only on its own reconnects);
// - exposes the connection state: "connecting", "open" or "closed";
// - reopens a stream the browser gave up on (any non-200 answer, e.g. a 502
//   from a load balancer during a deploy, closes an EventSource for good).

/** @typedef {"connecting" | "open" | "closed"} State */

/**
 * The data of a `sync-required` event: frames may have been lost at this
 * point; reload the state from the app's API.
 * @typedef {object} SyncInfo
 * @property {string} reason e.g. "evicted", "malformed-id", "upstream-reconnect"
 * @property {string} id the id the event carries: the stream goes on after it
 */

/**
 * @typedef {object} Options
 * @property {"session" | "local" | "none" | Pick<Storage, "getItem" | "setItem">} [storage]
 *   where the last id is kept across page loads; default "session"
 * @property {string} [storageKey] default "lastevent:" + url
 * @property {string} [param] query parameter for the stored id (LASTEVENT_LAST_EVENT_ID_PARAM);
 *   default "lastEventId"; "" never sends it
 * @property {number} [dedup] how many recent ids are remembered to drop duplicates; default 500
 * @property {number} [reopenDelay] ms before reopening a stream the browser closed for good
 *   (doubling while it keeps failing, up to a minute); default 5000; a negative value never reopens
 * @property {boolean} [withCredentials] passed to EventSource
 * @property {(info: SyncInfo, e: MessageEvent) => void} [onSyncRequired]
 * @property {(data: string, e: MessageEvent) => void} [onSystemSync]
 *   data is LASTEVENT_SYSTEM_SYNC_DATA ("{}" by default)
 * @property {(state: State) => void} [onStateChange]
 * @property {typeof EventSource} [EventSource] constructor to use; default globalThis.EventSource
 */

const CONTROL = ["sync-required", "system-sync"];

export class LastEvent {
  /** @type {State} */ #state = "closed";
  /** @type {EventSource | null} */ #es = null;
  /** @type {Map<string, Set<(e: MessageEvent) => void>>} */ #handlers = new Map();
  /** @type {Map<string, true>} */ #seen = new Map();
  /** @type {string} */ #lastId = "";
  /** @type {ReturnType<typeof setTimeout> | undefined} */ #timer;
  #closed = false;
  #reopens = 0; // reopens since the last open: the delay doubles with each
  #opts;
  #storage;
  #key;
  #listener = (/** @type {MessageEvent} */ e) => this.#receive(e);

  /** Events dropped as duplicates so far. */
  duplicates = 0;

  /**
   * Opens the stream at once.
   * @param {string} url
   * @param {Options} [options]
   */
  constructor(url, options = {}) {
    this.url = url;
    this.#opts = { param: "lastEventId", dedup: 500, reopenDelay: 5000, ...options };
    this.#storage = pickStorage(this.#opts.storage ?? "session");
    this.#key = this.#opts.storageKey ?? "lastevent:" + url;
    try {
      this.#lastId = this.#storage?.getItem(this.#key) ?? "";
    } catch {
      // storage denied (sandboxed frame, privacy mode): start live
    }
    this.#open();
  }

  /** @returns {State} */
  get state() {
    return this.#state;
  }

  /** The last id received (or restored from storage); "" when none. */
  get lastEventId() {
    return this.#lastId;
  }

  /**
   * Calls fn for every event of this type ("message" for events without
   * `event:`), duplicates dropped.
   * @param {string} type
   * @param {(e: MessageEvent) => void} fn
   * @returns {this}
   */
  on(type, fn) {
    let set = this.#handlers.get(type);
    if (!set) {
      this.#handlers.set(type, (set = new Set()));
      if (!CONTROL.includes(type)) this.#es?.addEventListener(type, this.#listener);
    }
    set.add(fn);
    return this;
  }

  /**
   * @param {string} type
   * @param {(e: MessageEvent) => void} fn
   * @returns {this}
   */
  off(type, fn) {
    this.#handlers.get(type)?.delete(fn);
    return this;
  }

  /** Closes the current EventSource and opens a new one that resumes after lastEventId. */
  reconnect() {
    this.#closed = false;
    this.#open();
  }

  /** Closes the stream for good (the stored id stays for the next page load). */
  close() {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#es?.close();
    this.#es = null;
    this.#set("closed");
  }

  #open() {
    clearTimeout(this.#timer);
    this.#es?.close();
    const { param, withCredentials } = this.#opts;
    const ES = this.#opts.EventSource ?? globalThis.EventSource;
    const es = new ES(this.#lastId && param ? withParam(this.url, param, this.#lastId) : this.url, { withCredentials: !!withCredentials });
    this.#es = es;
    for (const type of new Set(["message", ...CONTROL, ...this.#handlers.keys()])) es.addEventListener(type, this.#listener);
    es.addEventListener("open", () => {
      if (es !== this.#es) return;
      this.#reopens = 0;
      this.#set("open");
    });
    es.addEventListener("error", () => {
      if (es !== this.#es) return;
      if (es.readyState !== 2) return this.#set("connecting"); // the browser reconnects by itself
      const delay = this.#opts.reopenDelay ?? 5000;
      if (delay < 0) return this.#set("closed");
      this.#set("connecting");
      this.#timer = setTimeout(() => this.#open(), Math.min(delay * 2 ** this.#reopens++, Math.max(delay, 60000)));
    });
    this.#set("connecting");
  }

  /** @param {MessageEvent} e */
  #receive(e) {
    if (this.#closed || e.target !== this.#es) return;
    const id = e.lastEventId;
    if (e.type === "sync-required" || e.type === "system-sync") {
      if (e.type === "system-sync") this.#seen.clear();
      this.#save(id);
      if (e.type === "system-sync") this.#opts.onSystemSync?.(e.data, e);
      else this.#opts.onSyncRequired?.(parseSync(e), e);
    } else if (id) {
      if (this.#seen.delete(id)) {
        this.#seen.set(id, true); // most recently seen again
        this.duplicates++;
        return;
      }
      this.#seen.set(id, true);
      if (this.#seen.size > (this.#opts.dedup ?? 500)) this.#seen.delete(this.#seen.keys().next().value ?? "");
      this.#save(id);
    }
    for (const fn of this.#handlers.get(e.type) ?? []) fn(e);
  }

  /** @param {string} id */
  #save(id) {
    if (!id || id === this.#lastId) return;
    this.#lastId = id;
    try {
      this.#storage?.setItem(this.#key, id);
    } catch {
      // quota or denied: the id is still kept in memory
    }
  }

  /** @param {State} s */
  #set(s) {
    if (s === this.#state) return;
    this.#state = s;
    this.#opts.onStateChange?.(s);
  }
}

/**
 * @param {Options["storage"]} s
 * @returns {Pick<Storage, "getItem" | "setItem"> | null}
 */
function pickStorage(s) {
  try {
    if (s === "session") return globalThis.sessionStorage ?? null;
    if (s === "local") return globalThis.localStorage ?? null;
  } catch {
    return null; // reading the property itself can throw where storage is denied
  }
  return s === "none" || !s ? null : s;
}

/**
 * @param {string} url
 * @param {string} name
 * @param {string} id
 */
function withParam(url, name, id) {
  const hash = url.indexOf("#");
  const base = hash < 0 ? url : url.slice(0, hash);
  return base + (base.includes("?") ? "&" : "?") + encodeURIComponent(name) + "=" + encodeURIComponent(id);
}

/**
 * @param {MessageEvent} e
 * @returns {SyncInfo}
 */
function parseSync(e) {
  try {
    const v = JSON.parse(e.data);
    return { reason: String(v.reason ?? ""), id: String(v.id ?? e.lastEventId) };
  } catch {
    return { reason: "", id: e.lastEventId };
  }
}
