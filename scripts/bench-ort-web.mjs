// One network's evaluation time in onnxruntime-web's wasm backend under Node: the peer
// scripts/bench.py runs as `onnxruntime-web`, on the converted model (the same files sd.wasm
// runs). Usage:
//   node scripts/bench-ort-web.mjs NETWORK_DIR LATENT RUNS [NETWORK]
// NETWORK: unet (default), vae-decoder, taesd-decoder or text-encoder, whose model.onnx is in
// NETWORK_DIR (the model dir's unet/, vae_decoder/, vae_decoder_taesd/, text_encoder/); LATENT is
// "-" for the text encoder, which has none. Prints one JSON line on stdout, as
// `sd --bench NETWORK` and bench.py's other peers do:
//   {"network", "latent", "load_s", "warmup_s", "runs_s": [...], "threads": 1, "config"}
// or {"error": "..."} when it cannot load or run the model. onnxruntime-web is imported from the
// npm prefix $ORT_WEB_PREFIX (default ~/.cache/sd-wasm/npm, where bench.py installs it).

import { openSync, readSync, closeSync, fstatSync, existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { homedir } from "node:os";
import { pathToFileURL } from "node:url";

const TEXT_LEN = 77;
// bench.py's TOKENS and END_TOKEN: start, "a photo of", then the end token as padding.
const TOKENS = [49406, 320, 1125, 539];
const END_TOKEN = 49407;
const TIMESTEP = 500;
const SEED = 0;
const EXTERNAL_DATA = "model.onnx_data";

function fail(message) {
  let line = message.split("\n")[0].slice(0, 300);
  // wasm32 caps the module's heap at 4 GiB, whatever the machine has: say so next to the error.
  if (/memory|alloc|abort|out of bounds/i.test(line)) line += " (the wasm32 heap is at most 4 GiB)";
  console.log(JSON.stringify({ error: line }));
  process.exit(1);
}

function errorText(e) {
  return String((e && e.message) || e || "unknown error").trim();
}

// An abort inside the wasm module (e.g. out of its 4 GiB) can surface outside the awaited
// promise; it is a result, not a silent crash.
process.on("uncaughtException", (e) => fail(`crashed: ${errorText(e)}`));
process.on("unhandledRejection", (e) => fail(`crashed: ${errorText(e)}`));

const [networkDir, latentArg, runsArg, network = "unet"] = process.argv.slice(2);
const latent = latentArg === "-" ? null : Number(latentArg);
const runs = Number(runsArg);
const NETWORK_NAMES = ["unet", "vae-decoder", "taesd-decoder", "text-encoder"];
if (!networkDir || !(latent === null ? network === "text-encoder" : latent > 0) || !(runs >= 1)
    || !NETWORK_NAMES.includes(network)) {
  console.error(`usage: node bench-ort-web.mjs NETWORK_DIR LATENT RUNS [${NETWORK_NAMES.join("|")}]` +
    " (LATENT: - for the text encoder)");
  process.exit(2);
}

const prefix = process.env.ORT_WEB_PREFIX || join(homedir(), ".cache", "sd-wasm", "npm");
const pkgDir = join(prefix, "node_modules", "onnxruntime-web");
if (!existsSync(join(pkgDir, "package.json"))) {
  fail(`onnxruntime-web not installed in ${prefix} (bench.py installs it)`);
}
const pkg = JSON.parse(readFileSync(join(pkgDir, "package.json"), "utf8"));
// The package's own Node entry (exports["."].node.import): the wasm backend, loading its
// .wasm from dist/ by file path. A file URL, since this script lives outside that prefix.
const entry = pkg.exports?.["."]?.node?.import ?? "./dist/ort.node.min.mjs";
const ort = await import(pathToFileURL(join(pkgDir, entry)).href);

/** The whole file in one Uint8Array, read in pieces: fs.readFileSync stops at 2 GiB. */
function readAll(path) {
  const fd = openSync(path, "r");
  try {
    const bytes = new Uint8Array(fstatSync(fd).size);
    for (let at = 0; at < bytes.length; ) {
      const n = readSync(fd, bytes, at, Math.min(1 << 30, bytes.length - at), at);
      if (n === 0) throw new Error(`${path}: short read`);
      at += n;
    }
    return bytes;
  } finally {
    closeSync(fd);
  }
}

/** Deterministic standard normals (mulberry32 + Box-Muller): the values do not affect timing. */
function normals(seed) {
  let s = seed >>> 0;
  const uniform = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = Math.imul(s ^ (s >>> 15), 1 | s);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return (((t ^ (t >>> 14)) >>> 0) + 1) / 4294967297;
  };
  return () => Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform());
}

/** IEEE half bits of a float, truncating the mantissa: random inputs need no exact rounding. */
function toHalf(x) {
  const f = new Float32Array([x]);
  const u = new Uint32Array(f.buffer)[0];
  const sign = (u >>> 16) & 0x8000;
  const exp = ((u >>> 23) & 0xff) - 127 + 15;
  const mant = u & 0x7fffff;
  if (exp >= 0x1f) return sign | 0x7c00;
  if (exp <= 0) return exp < -10 ? sign : sign | ((mant | 0x800000) >> (14 - exp));
  return sign | (exp << 10) | (mant >> 13);
}

/** A tensor of `type` with element i = value(i) (a float, rounded for the integer types). */
function tensor(type, dims, value) {
  const n = dims.reduce((a, b) => a * b, 1);
  const data = {
    float32: () => Float32Array.from({ length: n }, (_, i) => value(i)),
    float64: () => Float64Array.from({ length: n }, (_, i) => value(i)),
    float16: () => Uint16Array.from({ length: n }, (_, i) => toHalf(value(i))),
    int64: () => BigInt64Array.from({ length: n }, (_, i) => BigInt(Math.round(value(i)))),
    int32: () => Int32Array.from({ length: n }, (_, i) => Math.round(value(i))),
  }[type];
  if (!data) throw new Error(`unsupported input type ${type}`);
  return new ort.Tensor(type, data(), dims);
}

const fixed = (dim, otherwise) => (typeof dim === "number" && dim > 0 ? dim : otherwise);

function unexpected(name) {
  return new Error(`unexpected ${network} input ${JSON.stringify(name)}`);
}

/** The graph's latent channel count when it fixes one, else the model dir's
 * vae_decoder/config.json latent_channels (as bench.py and sd.wasm read it), else 4. */
function latentChannels(dim) {
  if (typeof dim === "number" && dim > 0) return dim;
  try {
    const config = JSON.parse(readFileSync(join(dirname(networkDir), "vae_decoder", "config.json"), "utf8"));
    return Number(config.latent_channels) || 4;
  } catch {
    return 4;
  }
}

/** Inputs shaped from the graph, as bench.py's unet_feeds: batch 1 unless the graph fixes it,
 * the latent channels and text width from the graph, a scalar or [1] timestep per its rank. */
function unetFeeds(session, normal) {
  const feeds = {};
  for (const meta of session.inputMetadata) {
    const shape = meta.shape ?? [];
    if (meta.name === "sample") {
      feeds.sample = tensor(meta.type, [fixed(shape[0], 1), latentChannels(shape[1]), latent, latent], normal);
    } else if (meta.name === "encoder_hidden_states") {
      feeds.encoder_hidden_states = tensor(meta.type, [fixed(shape[0], 1), TEXT_LEN, fixed(shape[2], 768)], normal);
    } else if (meta.name === "timestep") {
      feeds.timestep = tensor(meta.type, shape.map(() => 1), () => TIMESTEP);
    } else {
      throw unexpected(meta.name);
    }
  }
  return feeds;
}

/** The VAE and TAESD decoders, as bench.py's decoder_feeds: latent_sample [1, C, L, L]. */
function decoderFeeds(session, normal) {
  const feeds = {};
  for (const meta of session.inputMetadata) {
    if (meta.name !== "latent_sample") throw unexpected(meta.name);
    const shape = meta.shape ?? [];
    feeds.latent_sample = tensor(meta.type, [fixed(shape[0], 1), latentChannels(shape[1]), latent, latent], normal);
  }
  return feeds;
}

/** The text encoder, as bench.py's text_feeds: input_ids [1, 77] in the graph's integer type. */
function textFeeds(session) {
  const ids = [...TOKENS, ...Array(TEXT_LEN - TOKENS.length).fill(END_TOKEN)];
  const feeds = {};
  for (const meta of session.inputMetadata) {
    if (meta.name !== "input_ids") throw unexpected(meta.name);
    feeds.input_ids = tensor(meta.type, [1, TEXT_LEN], (i) => ids[i]);
  }
  return feeds;
}

/** Per network: its feeds and the output the pipeline reads (fetched alone when the graph has it). */
const NETWORKS = {
  unet: { feeds: unetFeeds, output: "out_sample" },
  "vae-decoder": { feeds: decoderFeeds, output: "sample" },
  "taesd-decoder": { feeds: decoderFeeds, output: "sample" },
  "text-encoder": { feeds: textFeeds, output: "last_hidden_state" },
};

ort.env.wasm.numThreads = 1; // no worker threads: the single-threaded peer
ort.env.wasm.simd = true;
const options = {
  executionProviders: ["wasm"],
  // Otherwise constant folding turns the fp16 weights' Casts into 3.4 GB of f32 initializers,
  // which does not fit the wasm32 heap next to the fp16 ones; sd.wasm keeps them fp16 too.
  graphOptimizationLevel: "disabled",
};
const config = {
  "onnxruntime-web": pkg.version,
  entry,
  node: process.version,
  numThreads: 1,
  simd: true,
  graphOptimizationLevel: options.graphOptimizationLevel,
  executionProviders: options.executionProviders,
};

let session;
let start = performance.now();
try {
  const model = readAll(join(networkDir, "model.onnx"));
  const dataPath = join(networkDir, EXTERNAL_DATA);
  if (existsSync(dataPath)) options.externalData = [{ path: EXTERNAL_DATA, data: readAll(dataPath) }];
  session = await ort.InferenceSession.create(model, options);
  delete options.externalData; // the session copied it into the wasm heap
} catch (e) {
  fail(`does not load: ${errorText(e)}`);
}
const loadS = (performance.now() - start) / 1000;

const times = [];
try {
  const spec = NETWORKS[network];
  const feeds = spec.feeds(session, normals(SEED));
  // Only the output the pipeline reads (the text encoder also gives pooler_output and the
  // clip_skip_N hidden states); all of them when the graph names it otherwise.
  const fetches = session.outputNames.includes(spec.output) ? [spec.output] : undefined;
  config.outputs = fetches ?? null;
  for (let i = 0; i <= runs; i++) {
    start = performance.now();
    const out = await (fetches ? session.run(feeds, fetches) : session.run(feeds));
    times.push((performance.now() - start) / 1000);
    for (const value of Object.values(out)) value.dispose?.();
  }
} catch (e) {
  fail(`does not run: ${errorText(e)}`);
}
// Peak resident set of the whole process (the Node heap, the file buffers and the wasm heap).
config.max_rss_gib = Math.round((process.resourceUsage().maxRSS / (1 << 20)) * 100) / 100;
console.log(JSON.stringify({ network, latent, load_s: loadS, warmup_s: times[0], runs_s: times.slice(1), threads: 1, config }));
await session.release();
process.exit(0);
