// Line charts over steps (loss, gradient norm, learning rate) with uPlot (static/vendor), with
// a log scale that drops the values it cannot show (zero, negative, NaN, infinite).

import { fmt } from "./api.js";
import { PATH_COLORS } from "./contour.js";

export class LineChart {
  constructor(container, { title, yLabel, height = 220, legend = true }) {
    this.container = container;
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
    const rebuild = !this.plot || shape !== this.shape;
    this.xs = xs;
    this.series = series;
    this.shape = shape;
    if (rebuild) this.render();
    else this.plot.setData(this.data());
  }

  setLog(log) {
    if (log === this.log) return;
    this.log = log;
    this.render();
  }

  data() {
    const keep = (v) => (v === null || !Number.isFinite(v) || (this.log && v <= 0) ? null : v);
    return [this.xs, ...this.series.map((s) => s.values.map(keep))];
  }

  render() {
    if (this.plot) this.plot.destroy();
    const data = this.data();
    const anyValue = data.slice(1).some((values) => values.some((v) => v !== null));
    const log = this.log && anyValue;
    const options = {
      title: this.title,
      ...this.size(),
      scales: { x: { time: false }, y: log ? { distr: 3 } : {} },
      series: [
        { label: "step" },
        ...this.series.map((s, n) => ({
          label: s.label, stroke: s.color || PATH_COLORS[n % PATH_COLORS.length], width: 1.5, spanGaps: true,
          points: { show: false },
        })),
      ],
      axes: [{ label: "step" }, { label: this.yLabel + (log ? " (log)" : ""), size: 70, values: (u, splits) => splits.map((v) => (v === null ? "" : fmt(v, 3))) }],
      cursor: { drag: { x: true, y: false } },
      legend: { show: this.legend },
    };
    this.container.dataset.scale = log ? "log" : "linear";
    this.plot = new uPlot(options, data, this.container); // eslint-disable-line no-undef
  }
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
