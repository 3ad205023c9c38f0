// The page: reads the form, drives the worker (web/worker.js), shows progress, preview,
// result and errors. Cancel: when the page is cross-origin isolated (web/serve.py sends the
// headers) a SharedArrayBuffer flag that sd.wasm checks before every UNet evaluation
// (Hooks::cancelled), so the worker stops within one step and stays loaded; on a plain static
// server the worker is terminated and a fresh one started (also during a network load: each
// read of the model checks the flag, so Cancel stops a load too).

import { PictureAndMask } from "./paint.js";

const $ = (id) => document.getElementById(id);
let worker = null;
let running = null; // { cancelFlag, steps, cancelled }
const downloads = new Map();

// The page's query goes to the worker: ?slowReads=MS makes each model read wait MS ms (as a
// full-size model from a slow disk would), which the tests use to cancel during a load;
// ?poolPanicAtStep=N makes a thread of the threaded build's pool panic at step N, once.
const workerQuery = new URLSearchParams(location.search);
let poolFailures = null;

function startWorker() {
  // A panic on a pool thread (threaded build) leaves the worker waiting for that thread
  // forever: the pool posts it on this worker's own channel, and the page ends the worker.
  poolFailures?.close();
  const channel = `sd-wasm-pool-${Date.now()}-${Math.random().toString(36).slice(2)}`;
  poolFailures = new BroadcastChannel(channel);
  poolFailures.onmessage = (e) => finish({ type: "error", kind: "crash", message: `a thread of the pool failed: ${e.data}` });
  const query = new URLSearchParams(workerQuery);
  query.set("failures", channel);
  worker = new Worker(new URL(`worker.js?${query}`, import.meta.url), { type: "module" });
  worker.onmessage = (e) => onMessage(e.data);
  worker.onerror = (e) => finish({ type: "error", kind: "crash", message: e.message || "the worker failed to start" });
}

function setStatus(text) { $("status").textContent = text; }

function showError(text) {
  $("error").textContent = text;
  $("error").hidden = !text;
}

function mb(n) { return n < 1048576 ? (n / 1024).toFixed(1) + " KB" : (n / 1048576).toFixed(n < 10485760 ? 2 : 0) + " MB"; }

function onDownload(d) {
  let row = downloads.get(d.path);
  if (!row) {
    row = document.createElement("div");
    row.innerHTML = "<span></span><progress max='1' value='0'></progress><span></span>";
    row.dataset.path = d.path;
    $("downloads").append(row);
    downloads.set(d.path, row);
  }
  const [name, bar, text] = row.children;
  name.textContent = d.path;
  bar.value = d.total ? d.loaded / d.total : 1;
  row.dataset.state = d.state;
  // "uncached": the browser would not store the file (a private window keeps little), so the
  // worker fetches it again into memory, for this run only.
  const uncached = d.uncached ? " (not cached: the browser would not store it; kept for this run only)" : "";
  text.textContent = d.state === "cached" ? `cached, ${mb(d.total)}` :
    d.state === "corrupt" ? "bad cached copy: fetching again" :
    d.state === "downloaded" ? `${mb(d.total)}${uncached}` : `${mb(d.loaded)} / ${mb(d.total)}${uncached}`;
}

function plainError(e) {
  // The memory check before each network load (src/models/memory.rs) says how much it needs.
  if (/needs about [\d.]+ GiB of memory/.test(e.message)) return `Out of memory: ${e.message.replace(/ ?\(Bacalhau[^)]*\)/, "")}`;
  switch (e.kind) {
    case "usage": return `Check the settings: ${e.message.replace(/--([a-z-]+)/g, "$1")}`;
    case "model": return `The model could not be used: ${e.message}`;
    case "crash": return /alloc|memory/i.test(e.message) || /unreachable/.test(e.message)
      ? `Out of memory: the picture is too large for this tab's 4 GiB of WebAssembly memory (${e.message}). Try a smaller width and height.`
      : `The generator failed: ${e.message}`;
    default: return /out of memory/i.test(e.message) ? `Out of memory: ${e.message}. Try a smaller width and height.` : `Generation failed: ${e.message}`;
  }
}

function finish(outcome) {
  const run = running;
  running = null;
  $("generate").disabled = false;
  $("cancel").disabled = true;
  if (outcome.type === "result") {
    const pictures = outcome.pictures.map((p) => ({ ...p, url: URL.createObjectURL(new Blob([p.png], { type: "image/png" })) }));
    showPicture(pictures[0]);
    $("download").hidden = false;
    $("gallery").replaceChildren(...(pictures.length > 1 ? pictures.map(galleryItem) : []));
    $("parameters").hidden = false;
    const metadata = pictures.map((p) => JSON.parse(p.metadata));
    window.lastMetadata = metadata[0]; // for tests/browser/bench.mjs
    window.lastProfile = outcome.profile; // ?profile=1 only (web/worker.js)
    const total = metadata.reduce((sum, m) => sum + m.timings_seconds.total, 0);
    $("progress").value = 1;
    setStatus(`Done in ${total.toFixed(2)} s (${metadata[0].timings_seconds.seconds_per_step.toFixed(3)} s/step). ` +
      (pictures.length > 1 ? `${pictures.length} pictures, seeds ${metadata[0].seed}–${metadata.at(-1).seed}.` : `Seed ${metadata[0].seed}.`));
    document.body.dataset.state = "done";
  } else if (outcome.kind === "cancelled") {
    const where = run && run.loading ? ` while loading ${run.loading}` : run && run.step ? ` after step ${run.step}/${run.steps}` : "";
    setStatus(`Cancelled${where}. Ready.`);
    // For the tests: steps finished when Cancel was pressed, and when the run ended.
    document.body.dataset.cancelAt = run ? run.cancelAt : "";
    document.body.dataset.stoppedAt = run ? run.step : "";
    document.body.dataset.state = "cancelled";
  } else {
    showError(plainError(outcome));
    setStatus("Ready.");
    document.body.dataset.state = "error";
    // After a trap the instance's memory is not trustworthy: start over.
    if (outcome.kind === "crash") {
      workerQuery.delete("poolPanicAtStep"); // a test knob: once per page
      worker.terminate();
      startWorker();
    }
  }
}

/** `p` as the result: the picture, its download link and its parameters text. */
function showPicture(p) {
  $("result").src = p.url;
  $("download").href = p.url;
  $("download").download = p.fileName;
  $("parameters").textContent = p.parameters;
}

/** One of several pictures: a thumbnail that shows it above, and its download link. */
function galleryItem(p) {
  const figure = document.createElement("figure");
  figure.innerHTML = "<img alt='a picture of this run'><figcaption><a>Download</a></figcaption>";
  const [img, link] = [figure.querySelector("img"), figure.querySelector("a")];
  img.src = link.href = p.url;
  link.download = p.fileName;
  img.title = p.fileName;
  img.addEventListener("click", () => showPicture(p));
  return figure;
}

function onMessage(m) {
  if (m.type === "build") { $("build").textContent = m.text; return; }
  if (!running) return;
  switch (m.type) {
    case "download": onDownload(m); setStatus(`Fetching model files…`); break;
    case "loading": running.loading = m.network; setStatus(`Loading ${m.network}…`); break;
    case "loaded": running.loading = null; setStatus(`Loaded ${m.network} in ${m.seconds.toFixed(2)} s.`); break;
    case "step": {
      running.step = m.index;
      const eta = (m.elapsed / m.index) * (m.total - m.index);
      $("progress").value = m.index / m.total;
      setStatus(`Step ${m.index}/${m.total} · ETA ${eta.toFixed(1)} s`);
      break;
    }
    case "preview": $("preview").src = URL.createObjectURL(new Blob([m.png], { type: "image/png" })); break;
    case "warning": showError(`Warning: ${m.message}`); break;
    case "result": case "error": finish(m); break;
  }
}

function numberOrNull(id) {
  const v = $(id).value.trim();
  return v === "" ? null : Number(v);
}

function readRequest() {
  let seed = numberOrNull("seed");
  if (seed === null) {
    seed = crypto.getRandomValues(new Uint32Array(1))[0];
    $("seed").value = seed; // shown, so the picture can be made again
  }
  const request = {
    prompt: $("prompt").value,
    negative_prompt: $("negative").value,
    steps: numberOrNull("steps") ?? 20,
    guidance_scale: numberOrNull("guidance") ?? 7.5,
    seed,
    preview_every: 1,
  };
  const count = numberOrNull("num-images") ?? 1;
  if (count !== 1) request.num_images = count;
  if ($("decoder").value === "taesd") request.vae = "taesd";
  for (const [key, id] of [["width", "width"], ["height", "height"]]) {
    const v = numberOrNull(id);
    if (v !== null) request[key] = v;
  }
  if ($("scheduler").value) request.scheduler = $("scheduler").value;
  if ($("rng").value !== "torch") request.rng = $("rng").value;
  return request;
}

function readSource() {
  if (document.querySelector("input[name=source]:checked").value === "url") {
    return { kind: "url", base: new URL($("model-url").value, location.href).href };
  }
  const files = Array.from($("model-folder").files);
  if (!files.length) throw new Error("Pick the model folder first (the one holding unet/, vae_decoder/, …).");
  return { kind: "files", name: (files[0].webkitRelativePath || "folder").split("/")[0], files };
}

/** The checkpoint and VAE to run with the model as their template: picked files or a URL. */
function readWeights() {
  const picked = (id) => ($(id).files.length ? { kind: "file", file: $(id).files[0] } : undefined);
  const url = $("checkpoint-url").value.trim();
  const checkpoint = picked("checkpoint-file") || (url ? { kind: "url", url: new URL(url, location.href).href } : undefined);
  const loras = Array.from($("lora-files").files);
  return { checkpoint, vae: picked("vae-file"), loras: loras.length ? loras : undefined };
}

const picture = new PictureAndMask({
  input: $("init-file"), area: $("paint-area"), image: $("init-preview"), canvas: $("mask-canvas"), brush: $("brush"),
  undo: $("undo"), clear: $("clear-mask"), remove: $("remove-init"), help: $("paint-help"), tools: $("paint-tools"),
  links: $("paint-links"), maskLink: $("mask-download"),
});
picture.onError = (text) => showError(text);

/** The picture to start from and the painted mask, named in the request and sent as files. */
async function addPictures(request) {
  const files = await picture.files();
  for (const f of files) request[f.key] = f.name;
  if (files.length) request.strength = numberOrNull("strength") ?? 0.5;
  return files.length ? files : undefined;
}

$("form").addEventListener("submit", async (e) => {
  e.preventDefault();
  if (running) return;
  showError("");
  let source, weights, request, pictures;
  running = { starting: true };
  // Running from the click on: reading the picture and the mask takes a moment.
  document.body.dataset.state = "running";
  try {
    source = readSource();
    weights = readWeights();
    request = readRequest();
    pictures = await addPictures(request);
  } catch (err) {
    running = null;
    showError(err.message);
    document.body.dataset.state = "error";
    return;
  }
  // [0]: cancel requested (page → worker); [1]: steps finished so far (worker → page).
  const cancelBuffer = self.crossOriginIsolated ? new SharedArrayBuffer(8) : null;
  running = { cancelFlag: cancelBuffer && new Int32Array(cancelBuffer), steps: request.steps, step: 0 };
  $("generate").disabled = true;
  $("cancel").disabled = false;
  $("progress").value = 0;
  $("download").hidden = true;
  setStatus("Starting…");
  worker.postMessage({ type: "generate", source, ...weights, pictures, request, cancelBuffer });
});

$("cancel").addEventListener("click", () => {
  if (!running || running.starting) return;
  setStatus("Cancelling…");
  if (running.cancelFlag) {
    Atomics.store(running.cancelFlag, 0, 1); // seen before the next UNet evaluation and model read
    Atomics.notify(running.cancelFlag, 0); // wakes a read that waits (?slowReads)
    running.cancelAt = Atomics.load(running.cancelFlag, 1);
    worker.postMessage({ type: "cancel" }); // seen while downloading
  } else {
    running.cancelAt = running.step;
    worker.terminate(); // a plain static server: no SharedArrayBuffer to signal a busy worker
    startWorker();
    finish({ type: "error", kind: "cancelled", message: "cancelled" });
  }
});

startWorker();
