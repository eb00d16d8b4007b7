// Types of lastevent.js (the JSDoc in that file says the same).

export type State = "connecting" | "open" | "closed";

/** The data of a `sync-required` event: frames may have been lost here. */
export interface SyncInfo {
  /** e.g. "evicted", "malformed-id", "unknown-id", "upstream-reconnect", "slow-client" */
  reason: string;
  /** the id the event carries: the stream goes on after it */
  id: string;
}

export interface Options {
  /** where the last id is kept across page loads; default "session" */
  storage?: "session" | "local" | "none" | Pick<Storage, "getItem" | "setItem">;
  /** default "lastevent:" + url */
  storageKey?: string;
  /** query parameter for the stored id (LASTEVENT_LAST_EVENT_ID_PARAM); default "lastEventId"; "" never sends it */
  param?: string;
  /** how many recent ids are remembered to drop duplicates; default 500 */
  dedup?: number;
  /** ms before reopening a stream the browser closed for good (doubling while it keeps failing, up to a minute); default 5000; negative: never */
  reopenDelay?: number;
  withCredentials?: boolean;
  /** frames may have been lost: reload the state from the app's API */
  onSyncRequired?: (info: SyncInfo, e: MessageEvent) => void;
  /** the buffer is gone: take a fresh snapshot; data is LASTEVENT_SYSTEM_SYNC_DATA ("{}" by default) */
  onSystemSync?: (data: string, e: MessageEvent) => void;
  onStateChange?: (state: State) => void;
  /** constructor to use; default globalThis.EventSource */
  EventSource?: typeof EventSource;
}

export class LastEvent {
  /** Opens the stream at once. */
  constructor(url: string, options?: Options);
  readonly url: string;
  readonly state: State;
  /** The last id received (or restored from storage); "" when none. */
  readonly lastEventId: string;
  /** Events dropped as duplicates so far. */
  duplicates: number;
  /** Calls fn for every event of this type ("message" for events without `event:`), duplicates dropped. */
  on(type: string, fn: (e: MessageEvent) => void): this;
  off(type: string, fn: (e: MessageEvent) => void): this;
  /** Closes the current EventSource and opens a new one that resumes after lastEventId. */
  reconnect(): void;
  /** Closes the stream for good (the stored id stays for the next page load). */
  close(): void;
}
