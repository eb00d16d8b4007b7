// Shared pieces of the browser tests: the processes (lastevent, the scripted
// upstream, the cutting relay, the demo), headless Chromium, and failure
// reports that say what was expected and what was seen.
import { spawn, execFileSync } from "node:child_process";
import http from "node:http";
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { after } from "node:test";
import { chromium } from "playwright-core";

export const root = path.resolve(import.meta.dirname, "../..");
export const artifacts = path.join(root, "test/artifacts");
export const seed = Number(process.env.SEED || Math.floor(Math.random() * 1e9));

const children = new Set();
const cleanups = [];
after(async () => {
  for (const fn of cleanups.reverse()) await fn().catch(() => {});
  for (const c of children) c.kill("SIGKILL");
});
process.on("exit", () => {
  for (const c of children) c.kill("SIGKILL");
});

let binDir = process.env.BIN_DIR;
/** Path of a built program: lastevent, upstream, relay or demo (run.sh builds them; else built here). */
export function bin(name) {
  if (!binDir) {
    binDir = mkdtempSync(path.join(tmpdir(), "lastevent-browser-bin-"));
    const dir = binDir;
    process.on("exit", () => rmSync(dir, { recursive: true, force: true }));
    execFileSync("go", ["build", "-o", binDir + "/", ".", "./test/browser/upstream", "./test/browser/relay", "./test/cmd/demo"], { cwd: root, stdio: "inherit" });
  }
  return path.join(binDir, name);
}

/**
 * Starts a program and waits until `ready` returns a value for one of its
 * output lines (on stdout or stderr). Everything it printed is kept for
 * failure reports; it is killed when the test file ends.
 */
export function startProc(name, args, { env = {}, ready, timeout = 20000 } = {}) {
  const child = spawn(bin(name), args, { env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  children.add(child);
  const lines = [];
  const p = { child, name, output: () => lines.join("\n") };
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} not ready after ${timeout} ms:\n${p.output()}`)), timeout);
    let done = false;
    const onLine = (line) => {
      lines.push(line);
      if (lines.length > 5000) lines.splice(0, 1000);
      if (done) return;
      const v = ready(line);
      if (v) {
        done = true;
        clearTimeout(timer);
        resolve(Object.assign(p, v));
      }
    };
    createInterface({ input: child.stdout }).on("line", onLine);
    createInterface({ input: child.stderr }).on("line", onLine);
    child.on("exit", (code, sig) => {
      children.delete(child);
      if (!done) {
        clearTimeout(timer);
        reject(new Error(`${name} exited (${code ?? sig}) before it was ready:\n${p.output()}`));
      }
    });
  });
}

/** A plain HTTP request without keep-alive (a pooled socket would hold the test process open); resolves to the body. */
export function request(method, url) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, agent: false }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c) => (body += c));
      res.on("end", () => (res.statusCode < 400 ? resolve(body) : reject(new Error(`${method} ${url}: ${res.statusCode} ${body}`))));
    });
    req.on("error", reject);
    req.end();
  });
}

const json = (line) => {
  try {
    return JSON.parse(line);
  } catch {
    return null;
  }
};

/** The scripted upstream (test/browser/upstream): {addr}. */
export const startUpstream = () => startProc("upstream", [], { ready: (l) => json(l)?.addr && { addr: json(l).addr } });

/** The lastevent binary in front of addr: {listen, admin}. */
export function startLastevent(upstreamAddr, env = {}) {
  return startProc("lastevent", [], {
    env: {
      LASTEVENT_UPSTREAM_URL: "http://" + upstreamAddr,
      LASTEVENT_LISTEN_ADDR: "127.0.0.1:0",
      LASTEVENT_ADMIN_ADDR: "127.0.0.1:0",
      LASTEVENT_LOG_LEVEL: "debug",
      ...env,
    },
    ready: (l) => {
      const r = json(l);
      return r?.message === "lastevent started" && { listen: r.listen, admin: r.admin };
    },
  });
}

/** The cutting relay in front of target: {listen, control, log()}. */
export async function startRelay(target, { seed = 1, cuts = 0, min = 1, max = 3000 } = {}) {
  const r = await startProc("relay", ["-target", target, "-seed", String(seed), "-cuts", String(cuts), "-min", String(min), "-max", String(max)], {
    ready: (l) => json(l)?.control && json(l),
  });
  r.log = async () => JSON.parse(await request("GET", `http://${r.control}/log`));
  r.cut = async (kind = "reset") => Number(await request("POST", `http://${r.control}/cut?kind=${kind}`));
  return r;
}

/** The demo command with ephemeral ports: {upstream, listen, admin}. */
export async function startDemo(env = {}, interval = "200ms") {
  let upstream;
  return startProc("demo", ["-upstream", "127.0.0.1:0", "-interval", interval], {
    env: { LASTEVENT_LISTEN_ADDR: "127.0.0.1:0", LASTEVENT_ADMIN_ADDR: "127.0.0.1:0", ...env },
    ready: (l) => {
      const m = /legacy upstream on http:\/\/([^\s,]+).*lastevent on http:\/\/(\S+)/.exec(l);
      if (m) upstream = { upstream: m[1], listen: m[2] };
      return /^\s*page: http:\/\//.test(l) && upstream;
    },
  });
}

/** Headless Chromium (Debian's /usr/bin/chromium) with a fresh profile: {context, page}. */
export async function launch() {
  const dir = mkdtempSync(path.join(tmpdir(), "lastevent-chromium-"));
  const context = await chromium.launchPersistentContext(dir, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"],
    viewport: { width: 1100, height: 800 },
  });
  cleanups.push(async () => {
    await context.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const page = context.pages()[0] ?? (await context.newPage());
  return { context, page };
}

export async function screenshot(page, name) {
  mkdirSync(artifacts, { recursive: true });
  await page.screenshot({ path: path.join(artifacts, name + ".png"), fullPage: false });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls cond (async) every `every` ms until it returns truthy or timeout ms pass; returns its last value. */
export async function until(cond, timeout, every = 100) {
  const end = Date.now() + timeout;
  let v;
  while (!(v = await cond()) && Date.now() < end) await sleep(every);
  return v;
}

// An id lastevent issued: 26 + 1 + 13 characters of Crockford base32.
export const ID = /^[0-9A-HJKMNP-TV-Z]{26}-[0-9A-HJKMNP-TV-Z]{13}$/;

/** Problems with the ids of events seen through lastevent: each present, well-formed, greater than the one before. */
export function idProblems(events) {
  const out = [];
  events.forEach((e, i) => {
    if (!ID.test(e.id)) out.push(`event ${i} (${e.type}): id ${JSON.stringify(e.id)} is not a lastevent id`);
    else if (i > 0 && !(e.id > events[i - 1].id)) out.push(`event ${i} (${e.type}): id ${e.id} not above ${events[i - 1].id}`);
  });
  return out;
}

/**
 * A failure report for two lists: where they first differ, with a few
 * entries around it on both sides.
 */
export function diff(expected, seen, show = (x) => JSON.stringify(x)) {
  let i = 0;
  while (i < expected.length && i < seen.length && show(expected[i]) === show(seen[i])) i++;
  if (i === expected.length && i === seen.length) return "";
  const from = Math.max(0, i - 3);
  const win = (xs) =>
    xs
      .slice(from, i + 4)
      .map((x, k) => `    [${from + k}] ${show(x).slice(0, 300)}`)
      .join("\n") || "    (none)";
  return `first difference at index ${i} (expected ${expected.length} entries, seen ${seen.length})\n  expected:\n${win(expected)}\n  seen:\n${win(seen)}`;
}
