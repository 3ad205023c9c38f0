// The generator's Web Worker: fetches and caches the model dir, then runs sd.wasm's
// `generate` (src/web.rs) synchronously here, so the page stays responsive.
//
// Models from a URL: <base>/sd-manifest.json (scripts/web-manifest.py) lists every file with
// its size and the SHA-256 of each of its `chunk_bytes` pieces (hashed piece by piece, so a
// 1.7 GB UNet weights file is never held whole in this worker's memory). Each file is kept in
// the Cache API; a cached copy is used only when its size and hashes match the manifest,
// otherwise it is deleted and downloaded again. A file the browser will not store (a private
// window's Cache API refuses entries of a few hundred MB) is kept in memory for that run.
// Models from a picked folder: the File objects themselves.
// A single-file checkpoint (and a separate VAE), picked or from a URL with no manifest, runs
// with the model dir as its template (src/models/checkpoint.rs), as the CLI's --checkpoint.
// Picked pictures (the init picture, the painted mask) and LoRA files go the same way, by name.
// Either way the wasm side reads byte ranges on demand (FileReaderSync over Blobs): only the
// network being loaded is held in wasm memory.

// The threaded build (web/pkg-threads/, scripts/build-web-threads.sh) when the page is
// cross-origin isolated and it was built; otherwise the single-threaded web/pkg/.
const CACHE = "sd-wasm-models-v1";
// The page's query (web/app.js passes it on): threads, the pool's failure channel, test knobs.
const query = new URL(self.location.href).searchParams;
let generate, last_panic, testPanicOnPool, profileStart, profileReport, pool = null;
const load = async (path) => { const pkg = await import(path); await pkg.default(); return pkg; };
const ready = (async () => {
  const pkg = (self.crossOriginIsolated && (await load("./pkg-threads/sd_wasm.js").catch(() => null))) || (await load("./pkg/sd_wasm.js"));
  ({ generate, last_panic, testPanicOnPool, profileStart, profileReport } = pkg);
  return pkg;
})();
/** Starts the threaded build's pool once: ?threads=N on the page, else every core. */
async function startThreads(pkg) {
  if (!pkg.initThreads) return { build: "pkg", threads: 1, text: "Single-threaded build." };
  const threads = Number(query.get("threads")) || navigator.hardwareConcurrency || 1;
  // A pool thread's panic goes to the page on the channel it named (web/app.js).
  const failures = query.get("failures") || "";
  pool ||= pkg.initThreads(Math.max(1, threads), failures).then(() => pkg.threads());
  const n = await pool;
  return { build: "pkg-threads", threads: n, text: `Threaded build, ${n} thread${n > 1 ? "s" : ""}.` };
}
let cancelFlag = null; // Int32Array over a SharedArrayBuffer when the page is cross-origin isolated
let cancelRequested = false;
// For the tests (?slowReads=MS on the page): each model read waits MS ms, as from a slow disk,
// and wakes at once on Cancel; so a test can press Cancel while a network loads.
const slowReadsMs = Number(query.get("slowReads")) || 0;
// For the tests (?poolPanicAtStep=N): a thread of the threaded build's pool panics at step N.
const poolPanicAtStep = Number(query.get("poolPanicAtStep")) || 0;
// For scripts/bench_browser.py --profile (?profile=1): each network's per-op profile goes with
// the result (`profile`, the text examples/profile.rs prints natively).
const profiling = query.get("profile") === "1";

const post = (msg, transfer) => self.postMessage(msg, transfer || []);

class Failure extends Error {
  constructor(kind, message) { super(message); this.kind = kind; }
}

function isCancelled() {
  return cancelRequested || (cancelFlag !== null && Atomics.load(cancelFlag, 0) !== 0);
}

async function sha256Hex(blob) {
  const digest = await crypto.subtle.digest("SHA-256", await blob.arrayBuffer());
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** True when `blob` is exactly the manifest's `file`: its size, and each piece's SHA-256. */
async function matchesManifest(blob, file, chunkBytes) {
  if (blob.size !== file.size) return false;
  const pieces = Math.max(1, Math.ceil(blob.size / chunkBytes));
  if (pieces !== file.sha256_chunks.length) return false;
  for (let i = 0; i < pieces; i++) {
    if ((await sha256Hex(blob.slice(i * chunkBytes, (i + 1) * chunkBytes))) !== file.sha256_chunks[i]) return false;
  }
  return true;
}

/** The cached Blob for `url` if it is exactly the manifest's file, else null (and evicted). */
async function cachedCopy(cache, url, file, chunkBytes) {
  const hit = await cache.match(url);
  if (!hit) return null;
  const blob = await hit.blob();
  if (await matchesManifest(blob, file, chunkBytes)) return blob;
  await cache.delete(url);
  post({ type: "download", path: file.path, state: "corrupt", loaded: 0, total: file.size });
  return null;
}

/**
 * Fetches `url` for `path`, its body counted for progress (`total`: the expected size, 0:
 * unknown; `uncached`: said with the progress) and stopped by Cancel; with the size the server
 * announced (0: none).
 */
async function fetchCounted(url, path, total, uncached = false) {
  let response;
  try {
    response = await fetch(url, { cache: "no-store" });
  } catch (e) {
    throw new Failure("model", `Could not download ${url} (${e.message}). Check the address and that the server allows it (CORS).`);
  }
  if (!response.ok) throw new Failure("model", `Could not download ${url}: the server answered ${response.status} ${response.statusText}.`);
  // A compressed transfer's Content-Length is not the file's size: then the size is unknown.
  const announced = response.headers.get("content-encoding") ? 0 : Number(response.headers.get("content-length")) || 0;
  let loaded = 0, lastPost = 0;
  const body = response.body.pipeThrough(new TransformStream({
    transform(chunk, controller) {
      if (isCancelled()) { controller.error(new Failure("cancelled", "cancelled")); return; }
      loaded += chunk.length;
      const now = performance.now();
      if (now - lastPost > 100) { post({ type: "download", path, state: "downloading", loaded, total: total || announced || loaded, uncached }); lastPost = now; }
      controller.enqueue(chunk);
    },
  }));
  return { body, announced };
}

/**
 * Fetches `url` into the cache, streamed (a multi-GB weights file is never held in this
 * worker's memory), posting progress for `path`; resolves to the stored Blob (null if the cache
 * lost it), whether it is `uncached`, and the size the server announced (0: none). With
 * `keepSize`, the announced size is stored with it (x-sd-size).
 * When the browser will not store it (a private window keeps only a few hundred MB per entry;
 * a full disk), the file is fetched again into memory and used for this run only, uncached.
 */
/** Rethrows what the worker itself raised while a body streamed: Cancel, or a Failure. */
function throwIfOurs(e) {
  if (isCancelled() || e.kind === "cancelled") throw new Failure("cancelled", "cancelled");
  if (e instanceof Failure) throw e;
}

async function streamToCache(cache, url, path, total, keepSize = false) {
  const { body, announced } = await fetchCounted(url, path, total);
  let refused;
  try {
    const size = keepSize && announced ? { "x-sd-size": String(announced) } : {};
    await cache.put(url, new Response(body, { headers: { "content-type": "application/octet-stream", ...size } }));
    const stored = await cache.match(url);
    return { stored: stored ? await stored.blob() : null, uncached: false, announced };
  } catch (e) {
    await cache.delete(url).catch(() => {});
    throwIfOurs(e);
    // The store refused it: a DOMException (QuotaExceededError; UnknownError from a private
    // window's Cache API). Anything else (a dropped connection: TypeError) is a failed download.
    if (!(e instanceof DOMException)) throw new Failure("model", `Could not download ${url} (${e.message}).`);
    refused = e;
  }
  try {
    const again = await fetchCounted(url, path, total, true);
    return { stored: await new Response(again.body).blob(), uncached: true, announced: again.announced };
  } catch (e) {
    throwIfOurs(e);
    throw new Failure("model", `${path} from ${url} could not be kept: the browser would not store it (${refused.message}) nor hold it in memory (${e.message}). Open the page in a normal (not private) window, free some disk space, or pick the model's folder instead.`);
  }
}

async function download(cache, url, file, chunkBytes) {
  const { stored: blob, uncached } = await streamToCache(cache, url, file.path, file.size);
  if (!blob || !(await matchesManifest(blob, file, chunkBytes))) {
    await cache.delete(url);
    throw new Failure("model", `${url} does not match sd-manifest.json (got ${blob ? blob.size : 0} bytes, expected ${file.size}, or a different SHA-256): the download was cut short or the file changed. Try again, or regenerate the manifest.`);
  }
  return { blob, uncached };
}

/** Whether a run needs the manifest's `path`: the VAE encoder only with a picture to start from. */
const ENCODER = "vae_encoder/";
const needed = (path, request) => !path.startsWith(ENCODER) || "init_image" in request;

async function filesFromUrl(base, request) {
  base = new URL(base, self.location.href);
  if (!base.pathname.endsWith("/")) base.pathname += "/";
  const manifestUrl = new URL("sd-manifest.json", base);
  let manifest;
  try {
    const r = await fetch(manifestUrl, { cache: "no-store" });
    if (!r.ok) throw new Error(`the server answered ${r.status} ${r.statusText}`);
    manifest = await r.json();
  } catch (e) {
    throw new Failure("model", `No model at ${base.href}: ${manifestUrl.href} could not be read (${e.message}). A model URL must point at a model dir with sd-manifest.json (make it with scripts/web-manifest.py).`);
  }
  const cache = await caches.open(CACHE);
  const blobs = new Map();
  for (const file of manifest.files.filter((f) => needed(f.path, request))) {
    const url = new URL(file.path, base).href;
    const cached = await cachedCopy(cache, url, file, manifest.chunk_bytes);
    const { blob, uncached } = cached ? { blob: cached } : await download(cache, url, file, manifest.chunk_bytes);
    post({ type: "download", path: file.path, state: cached ? "cached" : "downloaded", loaded: file.size, total: file.size, uncached });
    blobs.set(file.path, blob);
  }
  return { name: base.href.replace(/\/$/, ""), blobs };
}

function filesFromFolder(name, files) {
  const blobs = new Map();
  for (const f of files) {
    // webkitRelativePath is "<folder>/unet/model.onnx"; the model dir's paths start below it.
    const rel = (f.webkitRelativePath || f.name).split("/").slice(1).join("/");
    blobs.set(rel, f);
  }
  return { name, blobs };
}

/** The ModelFiles seam's browser side (src/web.rs JsModelFiles). */
function modelFiles({ name, blobs }) {
  const reader = new FileReaderSync();
  return {
    describe: () => name,
    size: (rel) => blobs.get(rel)?.size,
    readRange: (rel, offset, len) => {
      if (slowReadsMs && cancelFlag) Atomics.wait(cancelFlag, 0, 0, slowReadsMs);
      return new Uint8Array(reader.readAsArrayBuffer(blobs.get(rel).slice(offset, offset + len)));
    },
  };
}

/** One file (a checkpoint or VAE) as model files holding just it, under its `name`. */
function singleFile(where, fileName, blob) {
  return { ...modelFiles({ name: where, blobs: new Map([[fileName, blob]]) }), name: fileName };
}

/**
 * A single file from a URL, with no manifest: kept in the Cache API with the size the server
 * announced (Content-Length); a cached copy is used only when it has that size, otherwise it
 * is fetched again (a file sent without a Content-Length is fetched every time).
 */
async function fileFromUrl(address) {
  const url = new URL(address, self.location.href);
  const fileName = decodeURIComponent(url.pathname.split("/").pop());
  if (!fileName) throw new Failure("usage", `${url.href} names a folder, not a .safetensors file.`);
  const where = url.href.slice(0, url.href.lastIndexOf("/"));
  const cache = await caches.open(CACHE);
  const hit = await cache.match(url.href);
  if (hit) {
    const blob = await hit.blob();
    if (String(blob.size) === hit.headers.get("x-sd-size")) {
      post({ type: "download", path: fileName, state: "cached", loaded: blob.size, total: blob.size });
      return singleFile(where, fileName, blob);
    }
    await cache.delete(url.href);
    post({ type: "download", path: fileName, state: "corrupt", loaded: 0, total: blob.size });
  }
  const { stored: blob, uncached, announced } = await streamToCache(cache, url.href, fileName, 0, true);
  if (!blob || (announced && blob.size !== announced)) {
    await cache.delete(url.href);
    throw new Failure("model", `${url.href}: the download was cut short (${blob ? blob.size : 0} of ${announced} bytes). Try again.`);
  }
  post({ type: "download", path: fileName, state: "downloaded", loaded: blob.size, total: blob.size, uncached });
  return singleFile(where, fileName, blob);
}

/** A checkpoint or VAE the page names: a picked File, or a URL. */
async function weightsFile(source) {
  if (!source) return undefined;
  if (source.kind === "url") return fileFromUrl(source.url);
  return singleFile("your files", source.file.name, source.file);
}

/** Picked files by name ([{ name, blob }] from the page, or Files), as model files. */
function pickedFiles(where, list) {
  return list ? modelFiles({ name: where, blobs: new Map(list.map((f) => [f.name, f.blob || f])) }) : undefined;
}

async function run({ source, checkpoint, vae, pictures, loras, request, cancelBuffer }) {
  cancelFlag = cancelBuffer ? new Int32Array(cancelBuffer) : null;
  cancelRequested = false;
  try {
    post({ type: "build", ...(await startThreads(await ready)) });
    const files = source.kind === "url" ? await filesFromUrl(source.base, request) : filesFromFolder(source.name, source.files);
    const hooks = {
      event(e) {
        if (e.type === "step" && cancelFlag) Atomics.store(cancelFlag, 1, e.index);
        if (e.type === "step" && e.index === poolPanicAtStep && testPanicOnPool) testPanicOnPool();
        if (e.type === "preview") post(e, [e.png.buffer]);
        else post(e);
      },
      cancelled: isCancelled,
    };
    const extras = {
      checkpoint: await weightsFile(checkpoint),
      vae: await weightsFile(vae),
      pictures: pickedFiles("your pictures", pictures),
      loras: pickedFiles("your LoRA files", loras),
    };
    if (profiling) profileStart();
    const result = generate(modelFiles(files), JSON.stringify(request), hooks, extras);
    if (profiling) result.profile = profileReport();
    post(result, result.pictures.map((p) => p.png.buffer));
  } catch (e) {
    if (e instanceof Failure) post({ type: "error", kind: e.kind, message: e.message });
    else if (e && e.type === "error") post(e);
    else if (e instanceof WebAssembly.RuntimeError) {
      const why = last_panic();
      post({ type: "error", kind: "crash", message: why || e.message });
    } else post({ type: "error", kind: "runtime", message: String(e && e.message || e) });
  }
}

self.onmessage = (event) => {
  const msg = event.data;
  if (msg.type === "generate") run(msg);
  else if (msg.type === "cancel") cancelRequested = true; // seen while downloading (the loop awaits)
};
