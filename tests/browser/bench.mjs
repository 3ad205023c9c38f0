// One picture through the page in headless chromium, timed, for scripts/bench_browser.py:
//   node bench.mjs --models NAME=DIR --out DIR [--plain] [--folder] [--query "threads=2"] [--size 512] [--steps 1]
//                  [--guidance 0] [--decoder taesd] [--chromium /usr/bin/chromium]
// Prints one JSON line: the page's state and error, its metadata (timings, peak_memory_bytes:
// the wasm memory's peak), the renderer processes' peak resident memory (VmHWM, which holds
// the worker), the build the page says it runs, and the PNG written to OUT/page.png. --plain
// serves the page without cross-origin isolation: the single-threaded web/pkg. --folder picks
// DIR as a folder instead of downloading it into the Cache API by its manifest. The browser
// runs with a new profile on disk (a user's normal window): a private window's Cache API
// refuses the full-size model's files, and the page then holds them in memory.

import { readFileSync, readdirSync, writeFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { serve, launch, runEnded, linkBytes } from "./page.mjs";

const { values: opts } = parseArgs({
  options: {
    models: { type: "string" }, out: { type: "string" }, query: { type: "string", default: "" }, plain: { type: "boolean", default: false }, folder: { type: "boolean", default: false },
    size: { type: "string", default: "512" }, steps: { type: "string", default: "1" }, guidance: { type: "string", default: "0" },
    decoder: { type: "string", default: "taesd" }, prompt: { type: "string", default: "a lighthouse at dusk, oil painting" },
    chromium: { type: "string", default: process.env.CHROMIUM || "/usr/bin/chromium" },
  },
});
mkdirSync(opts.out, { recursive: true });
const name = opts.models.split("=")[0];

const server = await serve([opts.models], opts.plain ? ["--no-isolation"] : []);

/** Peak resident memory (VmHWM, bytes) of each chromium renderer process. */
function rendererPeaks() {
  const peaks = [];
  for (const pid of readdirSync("/proc").filter((p) => /^\d+$/.test(p))) {
    try {
      if (!readFileSync(`/proc/${pid}/cmdline`, "utf8").includes("--type=renderer")) continue;
      const hwm = readFileSync(`/proc/${pid}/status`, "utf8").match(/VmHWM:\s+(\d+) kB/);
      if (hwm) peaks.push(Number(hwm[1]) * 1024);
    } catch { /* gone */ }
  }
  return peaks;
}

const result = {};
const browser = await launch(opts.chromium, { profile: true });
try {
  const page = await browser.context.newPage();
  await page.goto(`${server.url}${opts.query ? "?" + opts.query : ""}`);
  for (const [id, value] of [["prompt", opts.prompt], ["negative", ""], ["steps", opts.steps], ["guidance", opts.guidance], ["seed", "1"], ["width", opts.size], ["height", opts.size]]) {
    await page.fill(`#${id}`, value);
  }
  await page.fill("#model-url", `models/${name}/`);
  if (opts.folder) {
    await page.check("input[name=source][value=folder]");
    await page.setInputFiles("#model-folder", opts.models.split("=").slice(1).join("="));
  }
  await page.selectOption("#decoder", opts.decoder);
  const start = Date.now();
  await page.click("#generate");
  await runEnded(page, 3 * 3600 * 1000, 1000);
  result.wall_seconds = (Date.now() - start) / 1000;
  Object.assign(result, await page.evaluate(() => ({
    state: document.body.dataset.state,
    error: document.getElementById("error").hidden ? "" : document.getElementById("error").textContent,
    status: document.getElementById("status").textContent,
    build: document.getElementById("build").textContent,
  })));
  result.renderer_peak_bytes = Math.max(0, ...rendererPeaks());
  if (result.state === "done") {
    writeFileSync(join(opts.out, "page.png"), await linkBytes(page));
    result.metadata = await page.evaluate(() => window.lastMetadata);
    result.profile = await page.evaluate(() => window.lastProfile || "");
  }
} catch (e) {
  result.failure = String(e.stack || e);
} finally {
  await browser.close();
  server.stop();
}
console.log(JSON.stringify(result));
