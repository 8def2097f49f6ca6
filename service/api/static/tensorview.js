// A big tensor on the page: the job document carries it as a summary ({shape, size, sha256,
// norm, min, max, href}) or, for x0, a reference ({sha256, shape}); its values come as a .npy
// file, read here (header and little-endian float64 data) and drawn as a histogram of its values
// and, for a 2-D tensor, as an image (a heat map, block means where it has more cells than pixels).

import { banner, download, el, errorText, fmt, num, request } from "./api.js";

// Above this many elements the values are fetched only when asked (a button): 2,000,000 is 16 MB.
export const AUTO_DRAW_ELEMENTS = 2_000_000;
const BINS = 40;
// viridis, in nine stops
const VIRIDIS = [[68, 1, 84], [71, 44, 122], [59, 81, 139], [44, 113, 142], [33, 144, 141], [39, 173, 129],
  [92, 200, 99], [170, 220, 50], [253, 231, 37]];
const cache = new Map(); // href|sha256 -> Promise of {shape, values}

/** A result's x or grad kept out of the document: its summary (it has an href). */
export function isSummary(value) {
  return !!value && typeof value === "object" && !Array.isArray(value) && Array.isArray(value.shape)
    && typeof value.href === "string";
}

/** A big x0 as the spec keeps it: a reference to its stored values ({sha256, shape}). */
export function isReference(value) {
  return !!value && typeof value === "object" && !Array.isArray(value) && typeof value.sha256 === "string"
    && Array.isArray(value.shape) && value.href === undefined;
}

/** A .npy file (versions 1-3, '<f8' or '<f4', C order) as {shape, values: Float64Array}. */
export function parseNpy(buffer) {
  const bytes = new Uint8Array(buffer);
  const magic = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // \x93NUMPY
  if (bytes.length < 10 || magic.some((b, i) => bytes[i] !== b)) throw new Error("not a .npy file");
  const view = new DataView(buffer);
  const major = bytes[6];
  const [start, length] = major === 1 ? [10, view.getUint16(8, true)] : [12, view.getUint32(8, true)];
  const header = new TextDecoder("latin1").decode(bytes.subarray(start, start + length));
  const descr = (header.match(/'descr':\s*'([^']+)'/) || [])[1];
  if ((header.match(/'fortran_order':\s*(True|False)/) || [])[1] !== "False") throw new Error("a .npy file in Fortran order");
  const dims = (header.match(/'shape':\s*\(([^)]*)\)/) || [null, null])[1];
  if (dims === null) throw new Error("a .npy header without a shape");
  const shape = dims.split(",").map((d) => d.trim()).filter(Boolean).map(Number);
  const count = shape.reduce((a, b) => a * b, 1);
  const width = { "<f8": 8, "<f4": 4 }[descr];
  if (!width) throw new Error(`a .npy file of dtype ${descr} (expected <f8)`);
  const offset = start + length;
  if (buffer.byteLength < offset + count * width) throw new Error("the .npy file is cut short");
  const values = new Float64Array(count);
  for (let k = 0; k < count; k++) values[k] = width === 8 ? view.getFloat64(offset + 8 * k, true) : view.getFloat32(offset + 4 * k, true);
  return { shape, values };
}

/** Counts of the finite values in `bins` equal bins from their min to their max, and the
 * non-finite ones apart. */
export function histogram(values, bins = BINS) {
  let lo = Infinity, hi = -Infinity, nan = 0, inf = 0, ninf = 0;
  for (const v of values) {
    if (Number.isNaN(v)) nan += 1;
    else if (v === Infinity) inf += 1;
    else if (v === -Infinity) ninf += 1;
    else { if (v < lo) lo = v; if (v > hi) hi = v; }
  }
  const finite = values.length - nan - inf - ninf;
  const n = finite ? (hi > lo ? bins : 1) : 0;
  const counts = new Array(n).fill(0);
  for (const v of values) {
    if (!Number.isFinite(v)) continue;
    counts[n === 1 ? 0 : Math.min(n - 1, Math.floor(((v - lo) / (hi - lo)) * n))] += 1;
  }
  return { lo: finite ? lo : null, hi: finite ? hi : null, counts, nan, inf, ninf };
}

function themeColour(name, fallback) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || fallback;
}

/** A canvas sized for the screen's pixel ratio: its 2-D context scaled to CSS pixels. */
function context(canvas, width, height) {
  const ratio = window.devicePixelRatio || 1;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  return ctx;
}

/** The histogram's bars, its value axis (lowest, middle, highest) and its tallest count. */
export function drawHistogram(canvas, hist) {
  const width = Math.max(240, Math.min(640, canvas.clientWidth || 480));
  const height = 160;
  const ctx = context(canvas, width, height);
  const ink = themeColour("--fg", "#1d2330"), line = themeColour("--line", "#d9dde5");
  const left = 8, right = width - 8, top = 16, bottom = height - 22;
  ctx.clearRect(0, 0, width, height);
  ctx.strokeStyle = line;
  ctx.beginPath(); ctx.moveTo(left, bottom + 0.5); ctx.lineTo(right, bottom + 0.5); ctx.stroke();
  const tallest = Math.max(1, ...hist.counts);
  const step = (right - left) / Math.max(1, hist.counts.length);
  ctx.fillStyle = themeColour("--accent", "#3b6fd4");
  hist.counts.forEach((c, k) => {
    const h = ((bottom - top) * c) / tallest;
    if (c) ctx.fillRect(left + k * step + 0.5, bottom - Math.max(1, h), Math.max(1, step - 1), Math.max(1, h));
  });
  ctx.fillStyle = ink;
  ctx.font = "11px system-ui, sans-serif";
  ctx.textBaseline = "top";
  if (hist.lo !== null) {
    ctx.textAlign = "left"; ctx.fillText(fmt(hist.lo, 4), left, bottom + 5);
    ctx.textAlign = "right"; ctx.fillText(fmt(hist.hi, 4), right, bottom + 5);
    ctx.textAlign = "center"; ctx.fillText(fmt((hist.lo + hist.hi) / 2, 4), (left + right) / 2, bottom + 5);
  }
  ctx.textAlign = "left";
  ctx.fillText(`tallest bar: ${tallest.toLocaleString()} values`, left, 1);
  canvas.dataset.drawn = "histogram";
  canvas.dataset.bins = String(hist.counts.length);
  canvas.dataset.counted = String(hist.counts.reduce((a, b) => a + b, 0));
  canvas.dataset.counts = hist.counts.join(",");
}

function colourOf(t) {
  const at = Math.max(0, Math.min(1, t)) * (VIRIDIS.length - 1);
  const k = Math.min(VIRIDIS.length - 2, Math.floor(at)), u = at - k;
  return VIRIDIS[k].map((c, i) => Math.round(c + (VIRIDIS[k + 1][i] - c) * u));
}

/** A 2-D tensor as an image: row r of the tensor is row r of the picture, each pixel the mean of
 * the finite values it covers (grey where there are none), coloured from the lowest to the highest. */
export function drawImage(canvas, values, rows, cols, maxWidth = 640, maxHeight = 360) {
  const h = Math.min(rows, maxHeight), w = Math.min(cols, maxWidth);
  const sums = new Float64Array(h * w), counts = new Uint32Array(h * w);
  for (let r = 0; r < rows; r++) {
    const pr = Math.floor((r * h) / rows);
    for (let c = 0; c < cols; c++) {
      const v = values[r * cols + c];
      if (!Number.isFinite(v)) continue;
      const at = pr * w + Math.floor((c * w) / cols);
      sums[at] += v;
      counts[at] += 1;
    }
  }
  let lo = Infinity, hi = -Infinity;
  for (let k = 0; k < h * w; k++) {
    if (!counts[k]) continue;
    const m = sums[k] / counts[k];
    if (m < lo) lo = m;
    if (m > hi) hi = m;
  }
  const image = new ImageData(w, h);
  for (let k = 0; k < h * w; k++) {
    const rgb = counts[k] ? colourOf(hi > lo ? (sums[k] / counts[k] - lo) / (hi - lo) : 0.5) : [128, 128, 128];
    image.data.set([...rgb, 255], 4 * k);
  }
  // Cells at least 2 px wide when the tensor is small; the picture at most maxWidth x maxHeight.
  const scale = Math.max(1, Math.min(Math.floor(maxWidth / w), Math.floor(maxHeight / h), 8));
  const source = document.createElement("canvas");
  source.width = w; source.height = h;
  source.getContext("2d").putImageData(image, 0, 0);
  canvas.width = w * scale; canvas.height = h * scale;
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(source, 0, 0, w * scale, h * scale);
  canvas.dataset.drawn = "image";
  canvas.dataset.pixels = `${h}x${w}`;
  return { lo: lo === Infinity ? null : lo, hi: hi === -Infinity ? null : hi, pixels: [h, w] };
}

/** The tensor's values from `href` (.npy), read once per page for a given digest. */
export function loadTensor(href, sha256 = "") {
  const key = `${href}|${sha256}`;
  if (!cache.has(key)) {
    const load = (async () => {
      const resp = await request(href, { headers: { Accept: "application/x-npy" } });
      if (!resp.ok) {
        let message = `HTTP ${resp.status}`;
        try { message = (await resp.json()).error.message; } catch (err) { /* keep the status */ }
        throw new Error(message);
      }
      return parseNpy(await resp.arrayBuffer());
    })();
    cache.set(key, load);
    load.catch(() => cache.delete(key)); // a failed read may be tried again
  }
  return cache.get(key);
}

/** Download `href` as `name`, with the page's token when it has one (a plain link cannot send it). */
async function save(href, name, link) {
  try {
    await download(href, name, { headers: { Accept: "application/x-npy" } });
  } catch (err) {
    banner(`${link.textContent}: ${errorText(err)}`);
  }
}

function megabytes(elements) {
  const mb = (elements * 8) / 1e6;
  return mb < 0.1 ? `${Math.max(1, Math.round(elements * 8 / 1e3))} KB` : `${mb.toFixed(mb < 10 ? 1 : 0)} MB`;
}

/** The body of a big tensor's view (element `id`): its size and summary numbers, a link to the
 * .npy, and its histogram (and image, for 2-D), drawn once its values have come. `value` is a
 * result's summary or x0's reference; `href` where its values are. */
export function bigTensorView(id, value, href) {
  const shape = value.shape;
  const size = value.size !== undefined ? value.size : shape.reduce((a, b) => a * b, 1);
  const name = href.split("/").slice(-2).join("-");
  const facts = [["shape", `[${shape.join(", ")}]`], ["size", `${size.toLocaleString()} values`]];
  for (const key of ["norm", "min", "max"]) if (value[key] !== undefined) facts.push([key, fmt(num(value[key]))]);
  facts.push(["sha256", `${value.sha256.slice(0, 16)}…`]);
  const link = el("a", { href, id: `${id}-download`, download: `${name}.npy`, text: `download .npy (${megabytes(size)})`,
    title: "float64, little-endian, bit for bit (numpy.load reads it)" });
  link.addEventListener("click", (event) => { event.preventDefault(); save(href, `${name}.npy`, link); });
  const note = el("p", { class: "muted tensor-note", id: `${id}-note` });
  const bars = el("canvas", { class: "tensor-hist", id: `${id}-hist`, "aria-label": "histogram of the values" });
  const image = shape.length === 2 ? el("canvas", { class: "tensor-image", id: `${id}-image`, "aria-label": "the tensor as an image" }) : null;
  const scale = el("p", { class: "muted tensor-scale", id: `${id}-scale` });
  const box = el("div", { class: "tensor-big", id, "data-size": size },
    el("dl", { class: "tensor-facts", id: `${id}-facts` },
      ...facts.map(([k, v]) => el("div", {}, el("dt", { text: k }), el("dd", { class: "mono", title: k === "sha256" ? value.sha256 : null, text: v })))),
    el("p", {}, link),
    el("div", { class: "tensor-figures" },
      el("figure", {}, bars, el("figcaption", { class: "muted", text: "histogram of the values" })),
      image ? el("figure", {}, image, el("figcaption", { class: "muted", text: `the values as an image: ${shape[0]} rows × ${shape[1]} columns` }), scale) : null),
    note);
  const draw = async () => {
    note.textContent = "reading its values…";
    try {
      const tensor = await loadTensor(href, value.sha256);
      const hist = histogram(tensor.values);
      drawHistogram(bars, hist);
      const apart = [["NaN", hist.nan], ["+Infinity", hist.inf], ["-Infinity", hist.ninf]].filter(([, n]) => n);
      const bins = hist.counts.length;
      let text = bins ? `${bins} bin${bins === 1 ? "" : "s"} over the finite values` : "no finite values";
      if (apart.length) text += `; not finite: ${apart.map(([k, n]) => `${n.toLocaleString()} ${k}`).join(", ")}`;
      if (image) {
        const drawn = drawImage(image, tensor.values, shape[0], shape[1]);
        const [h, w] = drawn.pixels;
        scale.replaceChildren("dark ", el("span", { class: "mono", text: fmt(drawn.lo, 4) }), " → light ",
          el("span", { class: "mono", text: fmt(drawn.hi, 4) }),
          h < shape[0] || w < shape[1] ? ` (each pixel the mean of a ${Math.ceil(shape[0] / h)} × ${Math.ceil(shape[1] / w)} block)` : "");
      }
      note.textContent = text;
      box.dataset.drawn = image ? "histogram image" : "histogram";
    } catch (err) {
      note.textContent = `Its values could not be read: ${errorText(err)}. The link above downloads them.`;
      box.dataset.drawn = "failed";
    }
  };
  if (size <= AUTO_DRAW_ELEMENTS) draw();
  else {
    note.replaceChildren(el("button", { type: "button", id: `${id}-draw`, text: `draw its histogram (reads ${megabytes(size)})`,
      onclick: () => draw() }));
  }
  return box;
}
