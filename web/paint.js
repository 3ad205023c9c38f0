// The picture to start from and the inpainting mask painted over it: with the mouse, a pen or
// a finger (pointer events), a brush size, undo and clear. The mask is drawn at the picture's
// own size; sent as a PNG, white where painted (repaint), black elsewhere (keep), which is what
// the CLI's --mask takes. A picked PNG is sent as it is (so the page and the CLI read the same
// bytes); other formats are drawn once into a canvas and sent as PNG.

const UNDO_DEPTH = 30;

export class PictureAndMask {
  constructor({ input, area, image, canvas, brush, undo, clear, remove, help, tools, links, maskLink }) {
    Object.assign(this, { input, area, image, canvas, brush, undoButton: undo, clearButton: clear, help, tools, links, maskLink });
    this.ctx = canvas.getContext("2d", { willReadFrequently: true }); // undo snapshots read it back
    this.picture = null; // { name, blob, width, height }
    this.history = [];
    this.painted = false;
    this.drawing = null;
    input.addEventListener("change", () => this.pick(input.files[0]).catch((e) => this.onError(e.message)));
    undo.addEventListener("click", () => this.undo());
    clear.addEventListener("click", () => { this.snapshot(); this.ctx.clearRect(0, 0, canvas.width, canvas.height); this.changed(); });
    remove.addEventListener("click", () => { input.value = ""; this.pick(null); });
    canvas.addEventListener("pointerdown", (e) => this.down(e));
    canvas.addEventListener("pointermove", (e) => this.move(e));
    for (const type of ["pointerup", "pointercancel"]) canvas.addEventListener(type, () => this.up());
    this.onError = () => {};
  }

  /** Shows `file` (or nothing) as the picture to start from, with an empty mask. */
  async pick(file) {
    this.picture = null;
    this.history = [];
    this.painted = false;
    for (const el of [this.area, this.help, this.tools, this.links]) el.hidden = !file;
    this.maskLink.hidden = true;
    this.buttons();
    if (!file) return;
    let bitmap;
    try {
      bitmap = await createImageBitmap(file);
    } catch {
      throw new Error(`${file.name} is not a picture this browser can read (PNG, JPEG, WebP…).`);
    }
    let blob = file;
    if (file.type !== "image/png") {
      const c = new OffscreenCanvas(bitmap.width, bitmap.height);
      c.getContext("2d").drawImage(bitmap, 0, 0);
      blob = await c.convertToBlob({ type: "image/png" });
    }
    this.picture = { name: file.name.replace(/\.[^.]*$/, "") + ".png", blob, width: bitmap.width, height: bitmap.height };
    this.canvas.width = bitmap.width;
    this.canvas.height = bitmap.height;
    this.area.style.aspectRatio = `${bitmap.width} / ${bitmap.height}`; // the canvas's size before the image loads
    this.image.src = URL.createObjectURL(blob);
  }

  /** The canvas pixel under a pointer event. */
  at(e) {
    const r = this.canvas.getBoundingClientRect();
    return [(e.clientX - r.left) * (this.canvas.width / r.width), (e.clientY - r.top) * (this.canvas.height / r.height)];
  }

  down(e) {
    if (!this.picture) return;
    this.canvas.setPointerCapture(e.pointerId);
    this.snapshot();
    this.drawing = this.at(e);
    this.stroke(this.drawing);
  }

  move(e) {
    if (this.drawing) this.stroke(this.at(e));
  }

  up() {
    if (!this.drawing) return;
    this.drawing = null;
    this.changed();
  }

  /** A line from the last point to `to`, the brush's width in screen pixels. */
  stroke(to) {
    const ctx = this.ctx;
    const scale = this.canvas.width / this.canvas.getBoundingClientRect().width;
    ctx.strokeStyle = "#fff";
    ctx.lineCap = ctx.lineJoin = "round";
    ctx.lineWidth = Number(this.brush.value) * scale;
    ctx.beginPath();
    ctx.moveTo(...this.drawing);
    ctx.lineTo(...to);
    ctx.stroke();
    this.drawing = to;
  }

  snapshot() {
    this.history.push(this.ctx.getImageData(0, 0, this.canvas.width, this.canvas.height));
    if (this.history.length > UNDO_DEPTH) this.history.shift();
  }

  undo() {
    const last = this.history.pop();
    if (last) this.ctx.putImageData(last, 0, 0);
    this.changed();
  }

  changed() {
    const { data } = this.ctx.getImageData(0, 0, this.canvas.width, this.canvas.height);
    this.painted = data.some((v, i) => i % 4 === 3 && v !== 0);
    this.buttons();
    this.maskLink.hidden = true;
  }

  buttons() {
    this.undoButton.disabled = this.history.length === 0;
    this.clearButton.disabled = !this.painted;
  }

  /** The mask as a PNG Blob: white where painted, black elsewhere, the picture's size. */
  async maskPng() {
    const c = new OffscreenCanvas(this.canvas.width, this.canvas.height);
    const ctx = c.getContext("2d");
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, c.width, c.height);
    ctx.drawImage(this.canvas, 0, 0);
    return c.convertToBlob({ type: "image/png" });
  }

  /**
   * What the request takes from here: the picture and the painted mask as named files, or
   * nothing. The mask sent is also offered as a download (mask.png), to run it again elsewhere.
   */
  async files() {
    if (!this.picture) return [];
    const files = [{ name: this.picture.name, blob: this.picture.blob, key: "init_image" }];
    if (this.painted) {
      const mask = await this.maskPng();
      files.push({ name: "mask.png", blob: mask, key: "mask" });
      this.maskLink.href = URL.createObjectURL(mask);
      this.maskLink.hidden = false;
    }
    return files;
  }
}
