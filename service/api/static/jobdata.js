// What the job, compare and sweep pages read about a job: its size, its history (bounded with
// points=), its path in two coordinates, the surface of f around it and its known minima.

import { getJSON, num } from "./api.js";
import { boundingBox } from "./contour.js";

export const SURFACE_N = 80;
// The surface endpoint's bound on n * n * (elements of x).
const SURFACE_VALUES = 16_000_000;
// At most this many x values per history read: a wide x gets fewer rows.
const HISTORY_VALUES = 400_000;
let catalog = null;

export function flatten(value) {
  return Array.isArray(value) ? value.flat(Infinity) : [value];
}

/** How many elements the job's x has (from its spec; a sweep start may say only its shape). */
export function elementCount(job, rows = []) {
  const x0 = job.spec && job.spec.x0;
  if (Array.isArray(x0)) return flatten(x0).length;
  if (x0 && Array.isArray(x0.shape)) return x0.shape.reduce((a, b) => a * b, 1);
  const row = rows.find((r) => r.x);
  return row ? flatten(row.x).length : 0;
}

export function recordsX(job) {
  return !(job.spec && job.spec.record && job.spec.record.x === false);
}

/** The job's history, at most `points` rows spread over its steps (first and last included). */
export async function loadHistory(job, { points = 2000, withX = true } = {}) {
  const numel = elementCount(job);
  const x = withX && recordsX(job) && numel > 0 && numel <= HISTORY_VALUES / 2;
  const bounded = x ? Math.max(2, Math.min(points, Math.floor(HISTORY_VALUES / Math.max(numel, 1)))) : points;
  const fields = ["step", "f", "grad_norm", "lr", ...(x ? ["x"] : [])].join(",");
  const page = await getJSON(`/v1/jobs/${encodeURIComponent(job.id)}/history?points=${bounded}&fields=${fields}`);
  return page.rows;
}

/** [[x_i, x_j], ...] of the rows that hold x. */
export function pathOf(rows, [i, j]) {
  return rows.filter((r) => r.x !== undefined && r.x !== null).map((r) => {
    const flat = flatten(r.x);
    return [num(flat[i]), num(flat[j])];
  });
}

export function series(rows, field) {
  return rows.map((r) => num(r[field]));
}

async function objectives() {
  if (!catalog) catalog = getJSON("/v1/objectives").then((body) => body.objectives).catch(() => []);
  return catalog;
}

/** Known minima [[x_i, x_j], ...] of a catalog objective at its default parameters and size. */
export async function minimaOf(job, [i, j], numel) {
  const objective = job.spec && job.spec.objective;
  if (!objective || typeof objective !== "object" || !objective.name) return [];
  const entry = (await objectives()).find((o) => o.name === objective.name);
  if (!entry) return [];
  const params = objective.params || {};
  if (Object.entries(params).some(([k, v]) => entry.params[k] !== v)) return []; // minima known for the defaults
  const out = [];
  for (const minimum of entry.minima || []) {
    const x = minimum.x;
    if (x.length === numel) out.push([x[i], x[j]]);
    else if (x.length && x.every((v) => v === x[0])) out.push([x[0], x[0]]); // same in every coordinate
  }
  return out;
}

/** The region to draw: the paths, and the minima when they are not far off; widened to the
 * plot's width/height `aspect` (one unit as long on both axes) unless the sides differ tenfold. */
export function regionFor(paths, minima, aspect = null) {
  const points = paths.flat();
  const around = boundingBox(points, 0.12);
  const size = (b) => Math.max(b[1] - b[0], b[3] - b[2]);
  const both = minima.length ? boundingBox([...points, ...minima], 0.12) : around;
  const box = size(both) <= 10 * size(around) ? both : around;
  const [w, h] = [box[1] - box[0], box[3] - box[2]];
  if (!aspect || !(w > 0 && h > 0) || Math.max(w / h, h / w) > 10) return box;
  if (w / h < aspect) {
    const grow = (h * aspect - w) / 2;
    return [box[0] - grow, box[1] + grow, box[2], box[3]];
  }
  const grow = (w / aspect - h) / 2;
  return [box[0], box[1], box[2] - grow, box[3] + grow];
}

export function contains(outer, inner) {
  return outer && inner[0] >= outer[0] && inner[1] <= outer[1] && inner[2] >= outer[2] && inner[3] <= outer[3];
}

/** f on an n x n grid over `range` ([xlo, xhi, ylo, yhi]) in coordinates [i, j]. */
export async function loadSurface(jobId, range, [i, j], numel = 2) {
  const n = Math.min(SURFACE_N, Math.floor(Math.sqrt(SURFACE_VALUES / Math.max(numel, 1))));
  if (n < 2) throw new Error(`x has too many elements (${numel}) for a grid of f`);
  const r = range.map((v) => Number(v.toPrecision(8)));
  const query = `n=${n}&x_range=${r[0]},${r[1]}&y_range=${r[2]},${r[3]}&coords=${i},${j}`;
  const body = await getJSON(`/v1/jobs/${encodeURIComponent(jobId)}/surface?${query}`);
  return { x: body.x.map(num), y: body.y.map(num), f: body.f.map((row) => row.map((v) => (v === null ? NaN : num(v)))), range: r };
}

/** The part of a path that has not run away: its points up to the first that is non-finite or
 * lies more than `factor` times farther out than the start (a diverged path reaches 1e13). */
export function tamePath(points, factor = 100) {
  if (!points.length) return points;
  const size = ([a, b]) => Math.max(Math.abs(a), Math.abs(b));
  const bound = factor * Math.max(1, size(points[0]));
  const out = [];
  for (const p of points) {
    if (!(Number.isFinite(p[0]) && Number.isFinite(p[1])) || size(p) > bound) break;
    out.push(p);
  }
  return out.length ? out : [points[0]];
}
