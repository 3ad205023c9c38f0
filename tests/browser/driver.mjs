// Drives web/ in a real headless chromium (Debian's, through playwright-core) and reports what
// happened as JSON; tests/platforms/browser.rs makes the assertions (PNG bytes against the CLI's, request
// counts, error texts). Usage:
//   node driver.mjs --model DIR --out DIR [--checkpoints DIR [--big DIR]] [--turbo DIR]
//                   [--init PNG] [--lora FILE] [--chromium /usr/bin/chromium]
// It serves the page with web/serve.py (the model dir at /models/tiny/, --checkpoints' dir at
// /models/ckpt/, --big's at /models/big/, --turbo's at /models/turbo/) and counts the model file
// requests from the server's log. With --checkpoints (fixtures/tiny-checkpoint: template/ and
// single files), it also runs checkpoints with the picked template folder: picked, fetched by
// URL (then from the cache, then again when the cached copy is cut short), with a picked VAE,
// and two that must fail; with --big, its
// padded.safetensors by URL, too large for the Cache API of this private context. With --init: image-to-image from that
// picture, with a mask painted by the mouse (two strokes, the second undone; the mask the page
// sent saved as mask.png) and two pictures, then without the mask; a file that is no picture.
// With --lora: that LoRA named in the prompt, and a name not picked. With --turbo: one step
// with TAESD. Always: Cancel while a network loads (?slowReads).

import { writeFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { repo, serve, launch, runEnded, linkBytes } from "./page.mjs";

const { values: opts } = parseArgs({
  options: { model: { type: "string" }, out: { type: "string" }, checkpoints: { type: "string" }, big: { type: "string" }, turbo: { type: "string" }, init: { type: "string" }, lora: { type: "string" }, chromium: { type: "string", default: process.env.CHROMIUM || "/usr/bin/chromium" } },
});
mkdirSync(opts.out, { recursive: true });

const models = [`tiny=${opts.model}`, ...(opts.checkpoints ? [`ckpt=${opts.checkpoints}`] : []),
  ...(opts.big ? [`big=${opts.big}`] : []), ...(opts.turbo ? [`turbo=${opts.turbo}`] : [])];

const results = {};
const server = await serve(models);
const plain = await serve(models, ["--no-isolation"]);
const browser = await launch(opts.chromium, { viewport: { width: 1100, height: 760 } });
const context = browser.context;
const page = await context.newPage();
const consoleLines = [];
page.on("console", (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
page.on("pageerror", (e) => consoleLines.push(`pageerror: ${e.message}`));

const params = { prompt: "a red cube on a table", negative: "blurry", steps: "12", guidance: "7.5", seed: "42", width: "16", height: "16", scheduler: "euler", decoder: "full", "num-images": "1" };

async function fill(p, overrides = {}) {
  const v = { ...params, ...overrides };
  for (const id of ["prompt", "negative", "steps", "guidance", "seed", "width", "height", "num-images"]) await p.fill(`#${id}`, v[id]);
  if (overrides.strength) await p.fill("#strength", v.strength); // shown with a picture only
  await p.selectOption("#scheduler", v.scheduler);
  await p.selectOption("#decoder", v.decoder);
  await p.fill("#model-url", v.url || "models/tiny/");
}

/** Presses Generate and waits for the run to end; returns its state, texts, and PNG bytes. */
async function generate(p, name, overrides) {
  await fill(p, overrides);
  await p.click("#generate");
  await runEnded(p, 120000);
  const state = await p.evaluate(() => ({
    state: document.body.dataset.state,
    status: document.getElementById("status").textContent,
    error: document.getElementById("error").hidden ? "" : document.getElementById("error").textContent,
    parameters: document.getElementById("parameters").textContent,
    build: document.getElementById("build").textContent,
    fileName: document.getElementById("download").download,
    fileNames: [...document.querySelectorAll("#gallery a")].map((a) => a.download),
    downloads: Object.fromEntries([...document.querySelectorAll("#downloads > div")].map((r) => [r.dataset.path, r.dataset.state])),
    downloadNotes: Object.fromEntries([...document.querySelectorAll("#downloads > div")].map((r) => [r.dataset.path, r.children[2].textContent])),
  }));
  if (state.state === "done") {
    writeFileSync(join(opts.out, `${name}.png`), await linkBytes(p));
    state.png = `${name}.png`;
    // Several pictures: each from its gallery link, as NAME-1.png, NAME-2.png, …
    const all = await p.evaluate(async () => Promise.all([...document.querySelectorAll("#gallery a")].map(async (a) =>
      Array.from(new Uint8Array(await (await fetch(a.href)).arrayBuffer())))));
    all.forEach((b, i) => writeFileSync(join(opts.out, `${name}-${i + 1}.png`), Buffer.from(b)));
  }
  return state;
}

/** A stroke over the mask canvas from (x0, y0) to (x1, y1), in fractions of its size. */
async function paint(p, [x0, y0], [x1, y1]) {
  await p.locator("#mask-canvas").scrollIntoViewIfNeeded(); // the mouse works in the viewport
  const box = await p.locator("#mask-canvas").boundingBox();
  await p.mouse.move(box.x + box.width * x0, box.y + box.height * y0);
  await p.mouse.down();
  await p.mouse.move(box.x + box.width * x1, box.y + box.height * y1, { steps: 10 });
  await p.mouse.up();
}

/** Starts a long run, presses Cancel once step 5 has shown, and reports the steps finished
 *  when Cancel was pressed and when the run ended (the page records both). */
async function cancelRun(p) {
  await fill(p, { steps: "1000" });
  await p.click("#generate");
  await p.waitForFunction(() => /Step ([5-9]|\d\d+)\/1000/.test(document.getElementById("status").textContent), null, { timeout: 120000 });
  const t0 = Date.now();
  await p.click("#cancel");
  await p.waitForFunction(() => document.body.dataset.state !== "running", null, { timeout: 60000 });
  const after = await p.evaluate(() => ({
    state: document.body.dataset.state,
    status: document.getElementById("status").textContent,
    cancelAt: Number(document.body.dataset.cancelAt),
    stoppedAt: Number(document.body.dataset.stoppedAt),
    generateEnabled: !document.getElementById("generate").disabled,
  }));
  return { seconds: (Date.now() - t0) / 1000, ...after };
}

try {
  await page.goto(server.url);
  results.crossOriginIsolated = await page.evaluate(() => self.crossOriginIsolated);
  results.hardwareConcurrency = await page.evaluate(() => navigator.hardwareConcurrency);
  results.first = await generate(page, "first");
  results.firstRequests = server.requests();

  results.cancel = await cancelRun(page);
  results.afterCancel = await generate(page, "after-cancel");

  let before = server.requests().length;
  await page.reload();
  results.reload = await generate(page, "after-reload");
  results.reloadRequests = server.requests().slice(before);

  results.brokenUrl = await generate(page, "broken-url", { url: "models/no-such-model/" });
  results.badSize = await generate(page, "bad-size", { width: "20" });
  results.tooLarge = await generate(page, "too-large", { width: "2048", height: "2048" });

  // A partial file in the cache: the first 100 bytes of the UNet's weights under its URL; and
  // the text encoder whole but with one byte changed at 200,000 (its fourth 64 KiB piece).
  await page.evaluate(async () => {
    const cache = await caches.open("sd-wasm-models-v1");
    const url = new URL("models/tiny/unet/model.onnx_data", location.href).href;
    const whole = await (await cache.match(url)).arrayBuffer();
    await cache.put(url, new Response(whole.slice(0, 100)));
    const encoderUrl = new URL("models/tiny/text_encoder/model.onnx", location.href).href;
    const bytes = new Uint8Array(await (await cache.match(encoderUrl)).arrayBuffer());
    bytes[200000] ^= 0xff;
    await cache.put(encoderUrl, new Response(bytes));
  });
  before = server.requests().length;
  results.corrupt = await generate(page, "after-corrupt");
  results.corruptRequests = server.requests().slice(before);
  await page.screenshot({ path: join(opts.out, "screenshot.png"), fullPage: true });

  // The same model dir picked as a local folder (no download, no manifest).
  before = server.requests().length;
  await page.check("input[name=source][value=folder]");
  await page.setInputFiles("#model-folder", opts.model);
  results.folder = await generate(page, "from-folder");
  results.folderRequests = server.requests().slice(before);
  await page.check("input[name=source][value=url]");

  if (opts.checkpoints) {
    // Single-file checkpoints with the picked template folder (named "template", as the CLI's).
    const file = (name) => join(opts.checkpoints, name);
    const weights = async (checkpoint, vae, url = "") => {
      await page.setInputFiles("#checkpoint-file", checkpoint ? file(checkpoint) : []);
      await page.setInputFiles("#vae-file", vae ? file(vae) : []);
      await page.fill("#checkpoint-url", url);
    };
    await page.check("input[name=source][value=folder]");
    await page.setInputFiles("#model-folder", join(opts.checkpoints, "template"));
    await weights("tiny-fp32-ema.safetensors");
    results.ckptPicked = await generate(page, "ckpt-picked");
    await weights(null, null, "models/ckpt/tiny-fp32-ema.safetensors");
    before = server.requests().length;
    results.ckptFetched = await generate(page, "ckpt-fetched");
    results.ckptFetchedRequests = server.requests().slice(before);
    before = server.requests().length;
    results.ckptCached = await generate(page, "ckpt-cached");
    results.ckptCachedRequests = server.requests().slice(before);
    // The cached checkpoint cut to its first 1000 bytes, still labelled with the whole size
    // (as a download cut short by a closed tab could leave it): fetched again, never used.
    await page.evaluate(async () => {
      const cache = await caches.open("sd-wasm-models-v1");
      const url = new URL("models/ckpt/tiny-fp32-ema.safetensors", location.href).href;
      const hit = await cache.match(url);
      const bytes = await hit.arrayBuffer();
      await cache.put(url, new Response(bytes.slice(0, 1000), { headers: { "x-sd-size": hit.headers.get("x-sd-size") } }));
    });
    before = server.requests().length;
    results.ckptPartial = await generate(page, "ckpt-partial");
    results.ckptPartialRequests = server.requests().slice(before);
    if (opts.big) {
      // --big DIR: padded.safetensors, too large for this (private) context's Cache API.
      await weights(null, null, "models/big/padded.safetensors");
      before = server.requests().length;
      results.ckptUncached = await generate(page, "ckpt-uncached");
      results.ckptUncachedRequests = server.requests().slice(before);
    }
    await weights("tiny-fp16-novae.safetensors", "tiny-vae.safetensors");
    results.ckptVae = await generate(page, "ckpt-vae");
    await weights("tiny-fp16-novae.safetensors");
    results.ckptNoVae = await generate(page, "ckpt-novae");
    await weights("ema.png");
    results.ckptNotSafetensors = await generate(page, "ckpt-not-safetensors");
    await weights(null);
    await page.check("input[name=source][value=url]");
  }

  if (opts.init) {
    // Image-to-image with a painted mask: a stroke across the top, one across the bottom that
    // is undone; strength 0.6, two pictures. Then the mask cleared: image-to-image alone.
    await page.setInputFiles("#init-file", opts.init);
    await page.waitForSelector("#mask-canvas", { state: "visible" });
    await paint(page, [0.1, 0.25], [0.9, 0.3]);
    await paint(page, [0.1, 0.85], [0.9, 0.9]);
    await page.click("#undo");
    results.inpaint = await generate(page, "inpaint", { strength: "0.6", "num-images": "2" });
    await page.screenshot({ path: join(opts.out, "screenshot-inpaint.png"), fullPage: true });
    writeFileSync(join(opts.out, "mask.png"), await linkBytes(page, "#mask-download"));
    await page.click("#clear-mask");
    results.img2img = await generate(page, "img2img", { strength: "0.6" });
    results.img2imgMaskShown = await page.isVisible("#mask-download");
    await page.click("#remove-init");
    // A file that is no picture, picked as one.
    await page.setInputFiles("#init-file", join(repo, "Cargo.toml"));
    await page.waitForFunction(() => !document.getElementById("error").hidden, null, { timeout: 10000 });
    results.notPicture = await page.evaluate(() => document.getElementById("error").textContent);
    await page.click("#remove-init");
  }

  if (opts.lora) {
    await page.setInputFiles("#lora-files", opts.lora);
    results.lora = await generate(page, "lora", { prompt: "a red cube on a table <lora:style:0.8>" });
    results.loraMissing = await generate(page, "lora-missing", { prompt: "a red cube on a table <lora:nothere:1>" });
    await page.setInputFiles("#lora-files", []);
  }

  if (opts.turbo) {
    results.turbo = await generate(page, "turbo-taesd", { url: "models/turbo/", steps: "1", guidance: "0", decoder: "taesd", scheduler: "euler" });
  }

  // Cancel while a network loads: every model read waits 50 ms (?slowReads=50), so the UNet
  // takes seconds to load; Cancel must stop it at the next read, and the page be ready again.
  const slow = await context.newPage();
  await slow.goto(`${server.url}?slowReads=50`);
  await fill(slow);
  await slow.click("#generate");
  await slow.waitForFunction(() => /Loading UNet/.test(document.getElementById("status").textContent), null, { timeout: 120000 });
  const t0 = Date.now();
  await slow.click("#cancel");
  await slow.waitForFunction(() => document.body.dataset.state !== "running", null, { timeout: 60000 });
  results.cancelLoad = await slow.evaluate(() => ({
    state: document.body.dataset.state,
    status: document.getElementById("status").textContent,
    generateEnabled: !document.getElementById("generate").disabled,
  }));
  results.cancelLoad.seconds = (Date.now() - t0) / 1000;
  await slow.close();

  // A plain static server (no cross-origin isolation): Cancel terminates the worker.
  const plainPage = await context.newPage();
  await plainPage.goto(plain.url);
  results.plainIsolated = await plainPage.evaluate(() => self.crossOriginIsolated);
  results.plainCancel = await cancelRun(plainPage);
  results.plainAfterCancel = await generate(plainPage, "plain-after-cancel");
} catch (e) {
  results.failure = String(e.stack || e);
} finally {
  results.console = consoleLines;
  writeFileSync(join(opts.out, "results.json"), JSON.stringify(results, null, 1));
  await browser.close();
  server.stop();
  plain.stop();
}
console.log(JSON.stringify(results, null, 1));
process.exit(results.failure ? 1 : 0);
