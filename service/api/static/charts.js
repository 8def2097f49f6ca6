// Line charts over steps (loss, gradient norm, learning rate) with uPlot (static/vendor), with
// a log scale that drops the values it cannot show (zero, negative, NaN, infinite), smoothing (an
// exponential moving average drawn over the faint raw curve) and a zoom shared by a ChartGroup.

import { sig } from "./api.js";
import { PATH_COLORS } from "./contour.js";

/** Log y by default: every finite value positive, spanning more than `decades` decades. */
export function wantsLog(values, decades = 3) {
  const finite = values.filter((v) => v !== null && Number.isFinite(v));
  if (finite.length < 2 || finite.some((v) => v <= 0)) return false;
  return Math.max(...finite) / Math.min(...finite) > 10 ** decades;
}

/** Tick labels that differ from each other: as many significant digits as it takes (up to 8);
 * a label still equal to the one before is left blank. */
export function tickLabels(splits) {
  const values = splits.map((v) => (v === null || v === undefined ? null : v));
  let labels = [];
  for (let digits = 2; digits <= 8; digits++) {
    labels = values.map((v) => (v === null ? "" : sig(v, digits)));
    const shown = labels.filter(Boolean);
    if (new Set(shown).size === shown.length) return labels;
  }
  return labels.map((text, n) => (n && text === labels[n - 1] ? "" : text));
}

function themeColour(name, fallback) {
  const value = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  return value || fallback;
}

/** An exponential moving average of `values` with weight `w` (0: none), debiased at the start as
 * TensorBoard's smoothing is; a null (a value the scale cannot show) is skipped and stays null. */
export function smoothed(values, w) {
  if (!(w > 0)) return values.slice();
  let last = 0, seen = 0;
  return values.map((v) => {
    if (v === null || !Number.isFinite(v)) return null;
    last = last * w + (1 - w) * v;
    seen += 1;
    return last / (1 - w ** seen);
  });
}

/** Charts over the same steps that zoom together: a drag on one zooms them all to its steps, a
 * double click shows every step again; `onChange(zoom, smoothing)` hears every change. */
export class ChartGroup {
  constructor(onChange = () => {}) {
    this.charts = [];
    this.zoom = null; // [first step, last step] shown, or null: all
    this.smoothing = 0;
    this.onChange = onChange;
  }

  add(chart) {
    this.charts.push(chart);
    chart.group = this;
    return chart;
  }

  setZoom(zoom, tell = true) {
    this.zoom = zoom && zoom[1] > zoom[0] ? zoom : null;
    this.charts.forEach((c) => c.applyZoom());
    if (tell) this.onChange(this.zoom, this.smoothing);
  }

  setSmoothing(w, tell = true) {
    this.smoothing = Math.max(0, Math.min(0.99, Number(w) || 0));
    this.charts.forEach((c) => c.plot && c.render());
    if (tell) this.onChange(this.zoom, this.smoothing);
  }
}

export class LineChart {
  constructor(container, { title, yLabel, height = 220, legend = true }) {
    this.container = container;
    this.group = null;
    this.legend = legend; // uPlot's legend under the plot: one entry per series
    this.title = title;
    this.yLabel = yLabel;
    this.height = height;
    this.log = false;
    this.xs = [];
    this.series = []; // [{label, values, color}]
    this.plot = null;
    window.addEventListener("resize", () => this.plot && this.plot.setSize(this.size()));
  }

  size() {
    return { width: Math.max(280, this.container.clientWidth || 600), height: this.height };
  }

  /** xs: the steps; series: [{label, values}] with values aligned to xs. */
  setData(xs, series) {
    const shape = series.map((s) => s.label).join("\u0000");
    this.xs = xs;
    this.series = series;
    // Rebuilt when the series change, or when the log scale comes into force (the first values).
    const rebuild = !this.plot || shape !== this.shape || this.drawnLog !== this.logInForce();
    this.shape = shape;
    if (rebuild) this.render();
    else {
      this.plot.setData(this.data());
      this.applyZoom();
    }
  }

  smoothing() {
    return this.group ? this.group.smoothing : 0;
  }

  /** The group's zoom (all steps when it has none) on this chart's x axis. */
  applyZoom() {
    if (!this.plot || !this.xs.length) return;
    const zoom = this.group && this.group.zoom;
    const [min, max] = zoom || [this.xs[0], this.xs[this.xs.length - 1]];
    this.container.dataset.zoomed = zoom ? "true" : "false";
    if (max > min) this.plot.setScale("x", { min, max });
  }

  /** The steps shown, on the container (for tests and the curious): uPlot may apply a scale later
   * than it is set (inside its own event handlers), and says so in its setScale hook. */
  shown(u, key) {
    if (key !== "x") return;
    this.container.dataset.xMin = String(u.scales.x.min);
    this.container.dataset.xMax = String(u.scales.x.max);
  }

  setLog(log) {
    if (log === this.log) return;
    this.log = log;
    this.render();
  }

  /** The plotted values: on a log scale, log10 of each (uPlot's own log axis breaks below about
   * 1e-24, and f reaches 1e-30), drawn on a linear axis whose labels read 10^v. */
  data() {
    const keep = (v) => (v === null || !Number.isFinite(v) || (this.log && v <= 0) ? null : this.log ? Math.log10(v) : v);
    const w = this.smoothing();
    // Smoothed in the plotted values (log10 of them on a log scale), after the raw curve.
    return [this.xs, ...this.series.flatMap((s) => {
      const values = s.values.map(keep);
      return w > 0 ? [values, smoothed(values, w)] : [values];
    })];
  }

  /** Log y, asked for and with a value it can show. */
  logInForce() {
    return this.log && this.data().slice(1).some((values) => values.some((v) => v !== null));
  }

  render() {
    if (this.plot) this.plot.destroy();
    const data = this.data();
    const log = this.logInForce();
    this.drawnLog = log;
    const ink = themeColour("--fg", "#1d2330");
    const grid = { stroke: themeColour("--grid", "rgba(0,0,0,0.07)"), width: 1 };
    const shown = (v) => (log ? 10 ** v : v); // a plotted value as the value it stands for
    const smooth = this.smoothing() > 0;
    const value = (u, v) => (v === null || v === undefined ? "—" : sig(shown(v), 4));
    const lines = this.series.flatMap((s, n) => {
      const colour = s.color || PATH_COLORS[n % PATH_COLORS.length];
      const line = { label: s.label, stroke: colour, width: 1.5, spanGaps: true, points: { show: false }, value };
      // Smoothing: the raw curve faint and thin under the smoothed one.
      return smooth ? [{ ...line, stroke: `${colour}55`, width: 1 }, { ...line, label: `${s.label} (smoothed)`, width: 2 }] : [line];
    });
    const options = {
      title: this.title,
      ...this.size(),
      scales: { x: { time: false }, y: log ? { range: decadeRange } : {} },
      series: [{ label: "step" }, ...lines],
      axes: [
        { label: "step", stroke: ink, grid, ticks: grid, values: (u, splits) => tickLabels(splits) },
        { label: this.yLabel + (log ? " (log)" : ""), size: 78, stroke: ink, grid, ticks: grid,
          ...(log ? { splits: decadeSplits } : {}), values: (u, splits) => tickLabels(splits.map((v) => (v === null ? null : shown(v)))) },
      ],
      // A drag selects steps; in a group it zooms every chart of the group (hooks below), alone it zooms this one.
      cursor: { drag: { x: true, y: false, setScale: !this.group } },
      legend: { show: this.legend },
      hooks: { setScale: [(u, key) => this.shown(u, key)], ...(this.group ? { setSelect: [(u) => this.selected(u)] } : {}) },
    };
    this.container.dataset.scale = log ? "log" : "linear";
    this.container.dataset.series = String(lines.length);
    this.plot = new uPlot(options, data, this.container); // eslint-disable-line no-undef
    if (this.group && !this.dblclick) {
      this.dblclick = true; // once per container: uPlot's own handler shows every step of this chart only
      this.container.addEventListener("dblclick", () => this.group.setZoom(null));
    }
    this.applyZoom();
  }

  /** A drag over the plot: the group zooms to the steps it covers. */
  selected(u) {
    if (!(u.select.width > 2)) return;
    const lo = u.posToVal(u.select.left, "x"), hi = u.posToVal(u.select.left + u.select.width, "x");
    u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
    this.group.setZoom([Math.round(lo), Math.round(hi)]);
  }
}

/** The y range of a log chart (log10 values): whole decades around the data, at least one. */
function decadeRange(u, min, max) {
  if (min === null || max === null || !Number.isFinite(min) || !Number.isFinite(max)) return [0, 1];
  let lo = Math.floor(min), hi = Math.ceil(max);
  if (hi - lo < 1) { lo = Math.floor(min - 0.5); hi = lo + 1; }
  if (hi === lo) hi = lo + 1;
  return [lo, hi];
}

/** Ticks of a log chart: whole decades, every k-th so that at most 8 show; within one decade,
 * 1, 2 and 5 times it. */
function decadeSplits(u, axis, min, max) {
  const lo = Math.ceil(min - 1e-9), hi = Math.floor(max + 1e-9);
  if (hi - lo < 1) {
    const out = [];
    for (let d = Math.floor(min); d <= Math.ceil(max); d++) {
      for (const m of [1, 2, 5]) {
        const v = d + Math.log10(m);
        if (v >= min - 1e-9 && v <= max + 1e-9) out.push(v);
      }
    }
    return out;
  }
  const every = Math.max(1, Math.ceil((hi - lo + 1) / 8));
  const out = [];
  for (let d = hi; d >= lo; d -= every) out.unshift(d);
  return out;
}

/** Steps and per-series values aligned on the union of every series' steps (gaps as null). */
export function alignSteps(runs) {
  const steps = [...new Set(runs.flatMap((run) => run.steps))].sort((a, b) => a - b);
  const index = new Map(steps.map((s, i) => [s, i]));
  const series = runs.map((run) => {
    const values = new Array(steps.length).fill(null);
    run.steps.forEach((s, i) => { values[index.get(s)] = run.values[i]; });
    return { label: run.label, values, color: run.color };
  });
  return { steps, series };
}
