// The threaded browser build (web/pkg-threads/, scripts/build-web-threads.sh) in a real
// headless chromium: the page on a cross-origin isolated server runs it at ?threads=N, on a
// plain server the single-threaded web/pkg/; each run's PNG and the per-step seconds the worker
// reports are written out, for tests/platforms/browser_threads.rs to compare. Usage:
//   node threads.mjs --model DIR --out DIR [--threads 1,2] [--size 16] [--steps 12] [--chromium /usr/bin/chromium]
// Runs: plain (single-threaded build), then isolated at each thread count, each in a fresh page
// (a worker starts its pool once), then a page whose pool thread panics (`pool-panic`).

import { writeFileSync, mkdirSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { serve, launch, runEnded, linkBytes } from "./page.mjs";

const { values: opts } = parseArgs({
  options: {
    model: { type: "string" },
    out: { type: "string" },
    threads: { type: "string", default: "1,2" },
    size: { type: "string", default: "16" },
    steps: { type: "string", default: "12" },
    chromium: { type: "string", default: process.env.CHROMIUM || "/usr/bin/chromium" },
  },
});
mkdirSync(opts.out, { recursive: true });

const results = { date: new Date().toISOString(), size: Number(opts.size), steps: Number(opts.steps), runs: {} };
const isolated = await serve([`tiny=${opts.model}`]);
const plain = await serve([`tiny=${opts.model}`], ["--no-isolation"]);
const browser = await launch(opts.chromium);
const context = browser.context;
// The worker's own messages (build, step seconds), seen beside the page's handler.
await context.addInitScript(() => {
  const Base = window.Worker;
  window.__events = [];
  window.Worker = class extends Base {
    constructor(...args) {
      super(...args);
      this.addEventListener("message", (e) => {
        const m = e.data;
        if (m && (m.type === "build" || m.type === "step" || m.type === "loaded")) window.__events.push({ ...m, png: undefined });
      });
    }
  };
});

/** CPU seconds (user + system) used so far by the live processes under `root` (Linux /proc):
 *  the browser's renderers and workers, to see how many cores a run kept busy. */
function cpuSeconds(root) {
  const procs = [];
  for (const pid of readdirSync("/proc").filter((d) => /^\d+$/.test(d))) {
    try {
      const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ").pop().split(" ");
      procs.push({ pid: Number(pid), ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]) });
    } catch {}
  }
  const tree = new Set([root]);
  for (let grew = true; grew; ) {
    grew = false;
    for (const p of procs) if (!tree.has(p.pid) && tree.has(p.ppid)) { tree.add(p.pid); grew = true; }
  }
  return procs.filter((p) => tree.has(p.pid)).reduce((s, p) => s + p.ticks, 0) / 100;
}

/** One run on a fresh page; with `again`, a run that must fail first (recorded as `before`),
 *  then a second one on the same page, which is the run reported. */
async function run(name, url, { again = false } = {}) {
  const page = await context.newPage();
  const lines = [];
  page.on("console", (m) => lines.push(`${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => lines.push(`pageerror: ${e.message}`));
  await page.goto(url);
  const v = { prompt: "a red cube on a table", negative: "blurry", steps: opts.steps, guidance: "7.5", seed: "42", width: opts.size, height: opts.size };
  for (const [id, value] of Object.entries(v)) await page.fill(`#${id}`, value);
  await page.selectOption("#scheduler", "euler");
  await page.fill("#model-url", "models/tiny/");
  const root = process.pid; // node, its servers and the browser it launched
  const cpu0 = root ? cpuSeconds(root) : 0;
  const t0 = Date.now();
  await page.click("#generate");
  await runEnded(page, 1800000);
  let before = null;
  if (again) {
    before = await page.evaluate(() => ({
      state: document.body.dataset.state,
      error: document.getElementById("error").textContent,
      generateEnabled: !document.getElementById("generate").disabled,
    }));
    await page.evaluate(() => { window.__events = []; });
    await page.click("#generate");
    await runEnded(page, 1800000);
  }
  const r = await page.evaluate(() => ({
    state: document.body.dataset.state,
    error: document.getElementById("error").hidden ? "" : document.getElementById("error").textContent,
    shown: document.getElementById("build").textContent,
    isolated: self.crossOriginIsolated,
    events: window.__events,
  }));
  if (before) r.before = before;
  r.wallSeconds = (Date.now() - t0) / 1000;
  if (root) r.cpuSeconds = cpuSeconds(root) - cpu0;
  const build = r.events.find((e) => e.type === "build");
  r.build = build && build.build;
  r.threads = build && build.threads;
  r.stepSeconds = r.events.filter((e) => e.type === "step").map((e) => e.seconds);
  r.loaded = r.events.filter((e) => e.type === "loaded").map((e) => [e.network, e.seconds]);
  delete r.events;
  if (r.state === "done") {
    writeFileSync(join(opts.out, `${name}.png`), await linkBytes(page));
    r.png = `${name}.png`;
  }
  r.console = lines;
  await page.close();
  return r;
}

try {
  results.runs.plain = await run("plain", plain.url);
  for (const n of opts.threads.split(",")) results.runs[`threads-${n}`] = await run(`threads-${n}`, `${isolated.url}?threads=${n}`);
  // A panic on a pool thread at step 3: the page ends that worker, says so, and runs again.
  results.runs["pool-panic"] = await run("pool-panic", `${isolated.url}?threads=2&poolPanicAtStep=3`, { again: true });
} catch (e) {
  results.failure = String(e.stack || e);
} finally {
  writeFileSync(join(opts.out, "results.json"), JSON.stringify(results, null, 1));
  await browser.close();
  isolated.stop();
  plain.stop();
}
console.log(JSON.stringify(results, null, 1));
process.exit(results.failure ? 1 : 0);
