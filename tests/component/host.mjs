// A host for the sd.wasm component (wit/sd.wit, world `sd`) in Node: jco transpiles the
// component to an ES module, preview2-shim provides WASI with the model dir preopened at
// /models, and this file implements the `progress` import. It runs a few generations and
// reports what happened as JSON; tests/platforms/component.rs makes the assertions. Usage:
//   node host.mjs --component dist/sd-component.wasm --models DIR --out DIR

import { transpile, writeFiles } from "@bytecodealliance/jco-transpile";
import { _setPreopens } from "@bytecodealliance/preview2-shim/filesystem";
import { writeFileSync, mkdirSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";

const { values: opts } = parseArgs({
  options: { component: { type: "string" }, models: { type: "string" }, checkpoints: { type: "string" }, out: { type: "string" } },
});
const here = dirname(fileURLToPath(import.meta.url));
// Inside tests/component, so the generated module's preview2-shim imports resolve.
const gen = join(here, "generated");
mkdirSync(opts.out, { recursive: true });
mkdirSync(gen, { recursive: true });

// The `progress` import: records events; `cancelled` asks the current run's policy.
writeFileSync(join(gen, "progress.js"), `
export function report(event) { globalThis.sdProgress.events.push(event); }
export function cancelled() { return globalThis.sdProgress.cancelled(); }
`);
const { files } = await transpile(opts.component, {
  outDir: gen,
  name: "sd",
  map: { "sd-wasm:generator/progress": "./progress.js", "sd-wasm:generator/progress@0.1.0": "./progress.js" },
});
await writeFiles(files);
// fixtures/tiny-checkpoint: its template and single-file checkpoints.
_setPreopens({ "/models": opts.models, "/ckpt": opts.checkpoints });
const { generator } = await import(pathToFileURL(join(gen, "sd.js")).href);

const base = {
  prompt: "a red cube on a table", negativePrompt: "blurry", steps: 12, guidanceScale: 7.5, seed: 42n,
  width: 16, height: 16, scheduler: "euler", eta: 0, vae: "full", previewEvery: 4,
};

/** One call of generator.generate: { ok, value | error, events }. */
function run(models, overrides = {}, cancelled = () => false) {
  globalThis.sdProgress = { events: [], cancelled };
  try {
    const g = generator.generate(models, { ...base, ...overrides });
    return { ok: true, value: g, events: globalThis.sdProgress.events };
  } catch (e) {
    // jco throws the `error` variant itself ({ tag, val }); anything else is a host failure.
    const error = e && typeof e.tag === "string" ? e : e && e.payload ? e.payload : { tag: "thrown", val: String((e && e.stack) || e) };
    return { ok: false, error, events: globalThis.sdProgress.events };
  }
}

const summary = (r) => ({
  ok: r.ok,
  error: r.error,
  events: r.events.map((e) => e.tag === "preview" ? { tag: "preview", index: e.val.index, pngBytes: e.val.png.length } : e),
  value: r.ok ? { ...r.value, png: undefined, seed: Number(r.value.seed) } : undefined,
});

const results = {};
const first = run("/models");
if (first.ok) writeFileSync(join(opts.out, "component.png"), first.value.png);
results.first = summary(first);
results.cancel = summary(run("/models", { steps: 1000 }, () => globalThis.sdProgress.events.filter((e) => e.tag === "step").length >= 3));
results.missingModel = summary(run("/models/no-such-dir"));
results.badSize = summary(run("/models", { width: 20 }));
// Automatic1111's GPU noise: the same bytes as the CLI's --rng cuda.
const cuda = run("/models", { rng: "cuda" });
if (cuda.ok) writeFileSync(join(opts.out, "component-cuda.png"), cuda.value.png);
results.cuda = summary(cuda);
results.badRng = summary(run("/models", { rng: "gpu0" }));
// A single-file checkpoint through its template: the same bytes as the CLI's --checkpoint.
const checkpoint = run("/ckpt/template", { checkpoint: "/ckpt/tiny-fp32-ema.safetensors" });
if (checkpoint.ok) writeFileSync(join(opts.out, "component-checkpoint.png"), checkpoint.value.png);
results.checkpoint = summary(checkpoint);
results.vaeFileAlone = summary(run("/models", { vaeFile: "/ckpt/tiny-vae.safetensors" }));
const again = run("/models");
if (again.ok) writeFileSync(join(opts.out, "component-again.png"), again.value.png);
results.again = { ok: again.ok };
writeFileSync(join(opts.out, "results.json"), JSON.stringify(results, (k, v) => typeof v === "bigint" ? Number(v) : v, 1));
console.log("component host: done");
