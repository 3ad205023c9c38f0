// What the browser scripts (driver.mjs, threads.mjs, bench.mjs) share: the page's server
// (web/serve.py), headless chromium, and reading a run's end and its picture off the page.

import { chromium } from "playwright-core";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";

export const repo = join(dirname(fileURLToPath(import.meta.url)), "../..");

/**
 * Starts web/serve.py on a free port with `models` ("NAME=DIR" each, served at /models/NAME/)
 * and `extra` flags; resolves to { url, requests(): the model files fetched so far as
 * "PATH STATUS" (the manifests left out), stop() }.
 */
export function serve(models, extra = []) {
  const flags = models.flatMap((m) => ["--models", m]);
  const child = spawn("python3", [join(repo, "web/serve.py"), "--port", "0", ...flags, ...extra], { stdio: ["ignore", "pipe", "pipe"] });
  const log = [];
  let partial = "";
  child.stderr.on("data", (d) => {
    const lines = (partial + d).split("\n");
    partial = lines.pop();
    for (const line of lines) {
      const m = line.match(/"GET \/models\/[^/]+\/(\S+) HTTP[^"]*" (\d+)/);
      if (m && m[1] !== "sd-manifest.json") log.push(`${m[1]} ${m[2]}`);
    }
  });
  return new Promise((resolve, reject) => {
    child.on("error", reject);
    child.stdout.once("data", (d) => resolve({ url: d.toString().trim(), requests: () => log.slice(), stop: () => child.kill() }));
  });
}

/**
 * Headless chromium at `executablePath`; resolves to { context, close() }. By default a private
 * context, as Playwright makes it (its Cache API keeps entries of up to a few hundred MB); with
 * `profile`, a new profile on disk, as a user's normal window (removed on close).
 */
export async function launch(executablePath, { profile = false, ...contextOptions } = {}) {
  const args = ["--headless", "--no-sandbox", "--disable-gpu"];
  if (profile) {
    const dir = mkdtempSync(join(tmpdir(), "sd-wasm-profile-"));
    const context = await chromium.launchPersistentContext(dir, { executablePath, args, ...contextOptions });
    return { context, close: async () => { await context.close(); rmSync(dir, { recursive: true, force: true }); } };
  }
  const browser = await chromium.launch({ executablePath, args });
  const context = await browser.newContext(contextOptions);
  return { context, close: () => browser.close() };
}

/** Waits until the page's run has ended (done, error or cancelled). */
export function runEnded(page, timeout, polling = "raf") {
  return page.waitForFunction(() => ["done", "error", "cancelled"].includes(document.body.dataset.state), null, { timeout, polling });
}

/** The bytes behind one of the page's links (by default the picture's download link). */
export async function linkBytes(page, selector = "#download") {
  const bytes = await page.evaluate(async (sel) => Array.from(new Uint8Array(await (await fetch(document.querySelector(sel).href)).arrayBuffer())), selector);
  return Buffer.from(bytes);
}
