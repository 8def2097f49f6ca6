// The contour of f on a <canvas>: a colour map of the surface grid, iso-lines by marching
// squares (log-spaced levels when f spans decades), and paths, starts, ends and minima on top.

const PALETTE = [[255, 255, 217], [199, 233, 180], [127, 205, 187], [65, 182, 196], [29, 145, 192], [34, 94, 168]];
export const PATH_COLORS = ["#d62728", "#ff7f0e", "#9467bd", "#e377c2", "#8c564b", "#17becf", "#bcbd22", "#1f77b4"];

/** Iso-levels for values from lo to hi: log-spaced (over f - lo + a small offset when lo <= 0)
 * when the finite values span more than two decades, else evenly spaced. */
export function contourLevels(values, count = 14) {
  const finite = values.filter(Number.isFinite).sort((a, b) => a - b);
  const flat = { levels: [], log: false, lo: 0, hi: 0, offset: 0 };
  if (finite.length < 2 || finite[0] === finite[finite.length - 1]) return flat;
  const lo = finite[0];
  const hi = finite[finite.length - 1];
  let offset = 0; // f + offset > 0 everywhere
  if (lo <= 0) {
    const above = finite.map((v) => v - lo).filter((v) => v > 0);
    offset = -lo + (above.length ? above[Math.floor(above.length * 0.01)] : (hi - lo) * 1e-3);
  }
  const decades = Math.log10((hi + offset) / (lo + offset));
  const median = finite[Math.floor(finite.length / 2)];
  const skewed = (median - lo) / (hi - lo) < 0.1;
  const levels = [];
  if (decades > 2 || (skewed && decades > 1)) {
    const a = Math.log10(lo + offset), b = Math.log10(hi + offset);
    for (let k = 1; k <= count; k++) levels.push(10 ** (a + ((b - a) * k) / (count + 1)) - offset);
    return { levels, log: true, lo, hi, offset };
  }
  for (let k = 1; k <= count; k++) levels.push(lo + ((hi - lo) * k) / (count + 1));
  return { levels, log: false, lo, hi, offset: 0 };
}

/** Segments [x1, y1, x2, y2] of the iso-line f = level over the grid (f[j][i] at xs[i], ys[j]). */
export function marchingSquares(xs, ys, f, level) {
  const segments = [];
  const lerp = (a, b, fa, fb) => a + ((level - fa) / (fb - fa)) * (b - a);
  for (let j = 0; j + 1 < ys.length; j++) {
    for (let i = 0; i + 1 < xs.length; i++) {
      const f00 = f[j][i], f10 = f[j][i + 1], f11 = f[j + 1][i + 1], f01 = f[j + 1][i];
      if (!(Number.isFinite(f00) && Number.isFinite(f10) && Number.isFinite(f11) && Number.isFinite(f01))) continue;
      const code = (f00 > level ? 1 : 0) | (f10 > level ? 2 : 0) | (f11 > level ? 4 : 0) | (f01 > level ? 8 : 0);
      if (code === 0 || code === 15) continue;
      const x0 = xs[i], x1 = xs[i + 1], y0 = ys[j], y1 = ys[j + 1];
      const bottom = () => [lerp(x0, x1, f00, f10), y0];
      const right = () => [x1, lerp(y0, y1, f10, f11)];
      const top = () => [lerp(x0, x1, f01, f11), y1];
      const left = () => [x0, lerp(y0, y1, f00, f01)];
      const add = (p, q) => segments.push([p[0], p[1], q[0], q[1]]);
      const centreAbove = (f00 + f10 + f11 + f01) / 4 > level;
      switch (code) {
        case 1: case 14: add(left(), bottom()); break;
        case 2: case 13: add(bottom(), right()); break;
        case 3: case 12: add(left(), right()); break;
        case 4: case 11: add(right(), top()); break;
        case 6: case 9: add(bottom(), top()); break;
        case 7: case 8: add(left(), top()); break;
        case 5: // f00 and f11 above: a saddle
          if (centreAbove) { add(left(), top()); add(bottom(), right()); } else { add(left(), bottom()); add(right(), top()); }
          break;
        case 10: // f10 and f01 above
          if (centreAbove) { add(left(), bottom()); add(right(), top()); } else { add(left(), top()); add(bottom(), right()); }
          break;
        default: break;
      }
    }
  }
  return segments;
}

function colour(t) {
  const u = Math.min(1, Math.max(0, t)) * (PALETTE.length - 1);
  const k = Math.min(PALETTE.length - 2, Math.floor(u));
  const w = u - k;
  return PALETTE[k].map((c, n) => Math.round(c + (PALETTE[k + 1][n] - c) * w));
}

function niceTicks(lo, hi, count = 6) {
  const span = hi - lo;
  if (!(span > 0)) return [lo];
  const raw = span / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => span / s <= count) || raw;
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(Math.abs(v) < step * 1e-9 ? 0 : v);
  return ticks;
}

function tickText(v) {
  const abs = Math.abs(v);
  if (abs !== 0 && (abs < 1e-3 || abs >= 1e5)) return v.toExponential(1);
  return String(Number(v.toPrecision(4)));
}

/** A canvas showing a surface with paths. setSurface / setPaths / setMinima, then draw(). */
export class ContourPlot {
  constructor(canvas, { xLabel = "x[0]", yLabel = "x[1]" } = {}) {
    this.canvas = canvas;
    this.surface = null;
    this.paths = [];
    this.minima = [];
    this.levels = { levels: [], log: false };
    this.xLabel = xLabel;
    this.yLabel = yLabel;
    this.margin = { left: 56, right: 16, top: 12, bottom: 40 };
    canvas.addEventListener("mousemove", (event) => this.hover(event));
  }

  setSurface(surface) {
    this.surface = surface;
    this.levels = contourLevels(surface.f.flat().map(Number));
    this.colourMap = null;
  }

  setPaths(paths) { this.paths = paths; }

  setMinima(minima) { this.minima = minima; }

  /** The plotted extent: the surface's grid, else the paths' bounding box. */
  extent() {
    if (this.surface) {
      const { x, y } = this.surface;
      return [x[0], x[x.length - 1], y[0], y[y.length - 1]];
    }
    const points = this.paths.flatMap((p) => p.points);
    return boundingBox(points, 0.1);
  }

  layout() {
    const ratio = window.devicePixelRatio || 1;
    const width = this.canvas.clientWidth || 600;
    const height = this.canvas.clientHeight || 420;
    if (this.canvas.width !== Math.round(width * ratio)) this.canvas.width = Math.round(width * ratio);
    if (this.canvas.height !== Math.round(height * ratio)) this.canvas.height = Math.round(height * ratio);
    return { ratio, width, height };
  }

  /** Width over height of the plotting area, in pixels. */
  aspect() {
    const { width, height } = this.layout();
    const m = this.margin;
    return (width - m.left - m.right) / Math.max(1, height - m.top - m.bottom);
  }

  draw() {
    const { ratio, width, height } = this.layout();
    const ctx = this.canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const m = this.margin;
    const plotW = width - m.left - m.right, plotH = height - m.top - m.bottom;
    const [x0, x1, y0, y1] = this.extent();
    const sx = (x) => m.left + ((x - x0) / (x1 - x0 || 1)) * plotW;
    const sy = (y) => m.top + plotH - ((y - y0) / (y1 - y0 || 1)) * plotH;
    this.toData = (px, py) => [x0 + ((px - m.left) / plotW) * (x1 - x0), y0 + ((m.top + plotH - py) / plotH) * (y1 - y0)];
    ctx.save();
    ctx.beginPath();
    ctx.rect(m.left, m.top, plotW, plotH);
    ctx.clip();
    if (this.surface) this.drawSurface(ctx, m, plotW, plotH, sx, sy);
    this.drawPaths(ctx, sx, sy);
    ctx.restore();
    this.drawAxes(ctx, m, plotW, plotH, x0, x1, y0, y1, sx, sy);
  }

  normalise(v) {
    const { lo, hi, log, offset } = this.levels;
    if (!Number.isFinite(v) || hi === lo) return null;
    if (!log) return (v - lo) / (hi - lo);
    const a = Math.log10(lo + offset), b = Math.log10(hi + offset);
    return (Math.log10(Math.max(v + offset, 1e-300)) - a) / (b - a);
  }

  drawSurface(ctx, m, plotW, plotH, sx, sy) {
    const { x, y, f } = this.surface;
    if (!this.colourMap) {
      const map = document.createElement("canvas");
      map.width = x.length;
      map.height = y.length;
      const mctx = map.getContext("2d");
      const image = mctx.createImageData(x.length, y.length);
      for (let j = 0; j < y.length; j++) {
        for (let i = 0; i < x.length; i++) {
          const t = this.normalise(Number(f[j][i]));
          const [r, g, b] = t === null ? [255, 255, 255] : colour(t);
          const at = ((y.length - 1 - j) * x.length + i) * 4;
          image.data[at] = r; image.data[at + 1] = g; image.data[at + 2] = b; image.data[at + 3] = 255;
        }
      }
      mctx.putImageData(image, 0, 0);
      this.colourMap = map;
    }
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(this.colourMap, m.left, m.top, plotW, plotH);
    const values = f.map((row) => row.map(Number));
    ctx.lineWidth = 1;
    ctx.strokeStyle = "rgba(40, 40, 60, 0.55)";
    for (const level of this.levels.levels) {
      ctx.beginPath();
      for (const [ax, ay, bx, by] of marchingSquares(x, y, values, level)) {
        ctx.moveTo(sx(ax), sy(ay));
        ctx.lineTo(sx(bx), sy(by));
      }
      ctx.stroke();
    }
  }

  drawPaths(ctx, sx, sy) {
    for (const [n, path] of this.paths.entries()) {
      const points = path.points.filter(([a, b]) => Number.isFinite(a) && Number.isFinite(b));
      if (!points.length) continue;
      const color = path.color || PATH_COLORS[n % PATH_COLORS.length];
      ctx.strokeStyle = color;
      ctx.lineWidth = 2;
      ctx.beginPath();
      points.forEach(([a, b], k) => (k ? ctx.lineTo(sx(a), sy(b)) : ctx.moveTo(sx(a), sy(b))));
      ctx.stroke();
      ctx.fillStyle = color;
      for (const [a, b] of points.length < 200 ? points : []) {
        ctx.beginPath();
        ctx.arc(sx(a), sy(b), 1.8, 0, 2 * Math.PI);
        ctx.fill();
      }
      marker(ctx, sx(points[0][0]), sy(points[0][1]), "start", color);
      marker(ctx, sx(points[points.length - 1][0]), sy(points[points.length - 1][1]), "end", color);
    }
    for (const [a, b] of this.minima) marker(ctx, sx(a), sy(b), "minimum", "#111");
  }

  drawAxes(ctx, m, plotW, plotH, x0, x1, y0, y1, sx, sy) {
    const ink = getComputedStyle(this.canvas).color || "#222"; // the page's text colour (dark mode too)
    ctx.strokeStyle = ink;
    ctx.lineWidth = 1;
    ctx.strokeRect(m.left, m.top, plotW, plotH);
    ctx.fillStyle = ink;
    ctx.font = "11px system-ui, sans-serif";
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    for (const t of niceTicks(x0, x1)) {
      ctx.fillText(tickText(t), sx(t), m.top + plotH + 4);
      ctx.beginPath(); ctx.moveTo(sx(t), m.top + plotH); ctx.lineTo(sx(t), m.top + plotH + 3); ctx.stroke();
    }
    ctx.fillText(this.xLabel, m.left + plotW / 2, m.top + plotH + 22);
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (const t of niceTicks(y0, y1)) {
      ctx.fillText(tickText(t), m.left - 5, sy(t));
      ctx.beginPath(); ctx.moveTo(m.left - 3, sy(t)); ctx.lineTo(m.left, sy(t)); ctx.stroke();
    }
    ctx.save();
    ctx.translate(12, m.top + plotH / 2);
    ctx.rotate(-Math.PI / 2);
    ctx.textAlign = "center";
    ctx.fillText(this.yLabel, 0, 0);
    ctx.restore();
  }

  hover(event) {
    if (!this.toData || !this.onHover) return;
    const rect = this.canvas.getBoundingClientRect();
    const [x, y] = this.toData(event.clientX - rect.left, event.clientY - rect.top);
    this.onHover(x, y, this.surface ? this.valueAt(x, y) : null);
  }

  /** f at (x, y) by bilinear interpolation of the grid; null outside it. */
  valueAt(x, y) {
    const { x: xs, y: ys, f } = this.surface;
    const i = ((x - xs[0]) / (xs[xs.length - 1] - xs[0])) * (xs.length - 1);
    const j = ((y - ys[0]) / (ys[ys.length - 1] - ys[0])) * (ys.length - 1);
    if (!(i >= 0 && j >= 0 && i <= xs.length - 1 && j <= ys.length - 1)) return null;
    const i0 = Math.min(Math.floor(i), xs.length - 2), j0 = Math.min(Math.floor(j), ys.length - 2);
    const u = i - i0, v = j - j0;
    const g = (a, b) => Number(f[b][a]);
    return (1 - u) * (1 - v) * g(i0, j0) + u * (1 - v) * g(i0 + 1, j0) + (1 - u) * v * g(i0, j0 + 1) + u * v * g(i0 + 1, j0 + 1);
  }
}

function marker(ctx, x, y, kind, color) {
  ctx.save();
  ctx.lineWidth = 2;
  if (kind === "start") {
    ctx.fillStyle = "#fff";
    ctx.strokeStyle = color;
    ctx.beginPath(); ctx.arc(x, y, 6, 0, 2 * Math.PI); ctx.fill(); ctx.stroke();
  } else if (kind === "end") {
    ctx.fillStyle = color;
    ctx.strokeStyle = "#fff";
    ctx.beginPath(); ctx.arc(x, y, 5, 0, 2 * Math.PI); ctx.fill(); ctx.stroke();
  } else {
    ctx.strokeStyle = color;
    ctx.beginPath();
    ctx.moveTo(x - 6, y - 6); ctx.lineTo(x + 6, y + 6); ctx.moveTo(x + 6, y - 6); ctx.lineTo(x - 6, y + 6);
    ctx.stroke();
  }
  ctx.restore();
}

/** [xlo, xhi, ylo, yhi] around the points, padded by `pad` of the span (a unit box around one point). */
export function boundingBox(points, pad = 0.15) {
  const finite = points.filter(([a, b]) => Number.isFinite(a) && Number.isFinite(b));
  if (!finite.length) return [-1, 1, -1, 1];
  let [xlo, xhi, ylo, yhi] = [Infinity, -Infinity, Infinity, -Infinity];
  for (const [a, b] of finite) {
    xlo = Math.min(xlo, a); xhi = Math.max(xhi, a); ylo = Math.min(ylo, b); yhi = Math.max(yhi, b);
  }
  const spanX = xhi - xlo, spanY = yhi - ylo;
  // Never thinner than a thousandth of the coordinates' size: the surface needs lo < hi.
  const scale = Math.max(...finite.map(([a, b]) => Math.max(Math.abs(a), Math.abs(b))));
  const size = Math.max(spanX, spanY, 1e-3 * scale, 1e-6);
  // Neither side thinner than a fifth of the other: a straight path still shows its surroundings.
  const padX = (Math.max(spanX, size / 5) - spanX) / 2 + pad * Math.max(spanX, size / 5);
  const padY = (Math.max(spanY, size / 5) - spanY) / 2 + pad * Math.max(spanY, size / 5);
  return [xlo - padX, xhi + padX, ylo - padY, yhi + padY];
}
