// Several jobs on one contour (the first job's surface of f) and one loss plot: the jobs named in
// ?jobs=id1,id2 (up to MAX_JOBS), or a whole sweep, ?sweep=ID: its best jobs by final f (the
// API's summary sorted by f, unfinished last), at most MAX_SWEEP_PATHS of them (?best=N for fewer),
// saying so when the sweep has more. However big the sweep, the page reads one page of its
// summary and the histories of the jobs it draws (a few at a time, fewer points each when many).

import { banner, el, errorText, fmt, getJSON, jobOutcome, num, objectiveText, optimizerText, outcome, statusBadge } from "./api.js";
import { alignSteps, LineChart, wantsLog } from "./charts.js";
import { ContourPlot, PATH_COLORS } from "./contour.js";
import { elementCount, loadHistory, loadSurface, minimaOf, pathOf, recordsX, regionFor, series, tamePath } from "./jobdata.js";

const MAX_JOBS = 20;
export const MAX_SWEEP_PATHS = 50;
const READS_AT_ONCE = 6;
const POINTS = 1000; // history rows per job, for a few jobs
const ALL_POINTS = 20_000; // history rows over every job drawn: many jobs get fewer each
const LEGEND_SERIES = 12; // more than this, and the table under the plots is the legend

export async function comparePage(main) {
  const params = new URLSearchParams(location.search);
  const sweepId = (params.get("sweep") || "").trim();
  const ids = (params.get("jobs") || "").split(",").map((s) => s.trim()).filter(Boolean);
  const input = el("input", { name: "jobs", id: "compare-ids", size: 80, placeholder: "job ids, comma-separated" });
  input.value = ids.join(",");
  const form = el("form", { class: "filters" }, el("label", {}, "jobs ", input), el("button", { type: "submit", text: "Compare" }));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    location.assign(`/compare?jobs=${input.value.split(",").map((s) => s.trim()).filter(Boolean).join(",")}`);
  });
  window.descent.plotted = { jobs: [], paths: {}, contourLevels: [], ready: false };
  if (sweepId) {
    main.replaceChildren(el("h1", { text: "Compare a sweep's jobs" }));
    const chosen = await sweepJobs(main, sweepId, params.get("best"));
    if (chosen) await draw(main, chosen.jobs, chosen.sweep, chosen.labels);
    return;
  }
  main.replaceChildren(el("h1", { text: "Compare jobs" }), form);
  if (!ids.length) {
    main.append(el("p", { class: "muted", text: "Pick jobs on the job list (the checkboxes), or give their ids here; "
      + "a sweep's page compares the whole sweep." }));
    return;
  }
  if (ids.length > MAX_JOBS) banner(`showing the first ${MAX_JOBS} of ${ids.length} jobs`);
  const jobs = (await readAll(ids.slice(0, MAX_JOBS), POINTS)).filter(Boolean);
  await draw(main, jobs, null);
}

/** The sweep's best jobs by final f, read with their histories; null when the sweep cannot be read. */
async function sweepJobs(main, sweepId, best) {
  const asked = Number(best);
  const cap = Number.isInteger(asked) && asked >= 1 && asked <= MAX_SWEEP_PATHS ? asked : MAX_SWEEP_PATHS;
  let sweep;
  try {
    sweep = await getJSON(`/v1/sweeps/${encodeURIComponent(sweepId)}?sort=f&limit=${cap}`);
  } catch (err) {
    banner(errorText(err));
    main.append(el("p", { class: "error", id: "compare-note", text: `No sweep to compare: ${errorText(err)}` }));
    return null;
  }
  const items = sweep.summary || [];
  // Diverged: stopped on divergence, or succeeded with an infinite or NaN f; apart from the
  // jobs with no final f yet (queued, running, cancelled, failed).
  const diverged = items.filter((i) => outcome(i.status, i.stop_reason) === "diverged"
    || (i.status === "succeeded" && num(i.f) !== null && !Number.isFinite(num(i.f))));
  const noF = items.filter((i) => !diverged.includes(i) && !Number.isFinite(num(i.f)));
  const name = sweep.name || sweep.id.slice(0, 8);
  const capped = sweep.jobs > items.length;
  const text = capped
    ? `Showing the ${items.length} best of the sweep's ${sweep.jobs.toLocaleString()} jobs by final f`
      + " (unfinished jobs last); the others are not drawn."
    : `Showing all ${sweep.jobs} jobs of the sweep.`;
  main.append(el("p", {},
    "Sweep ", el("a", { href: `/sweeps/${encodeURIComponent(sweep.id)}`, text: name }), ": ",
    el("span", { id: "compare-note", "data-capped": capped ? "true" : "false", text }),
    diverged.length ? el("span", { class: "diverged-note", id: "compare-diverged",
      text: ` ${diverged.length} of them diverged (${diverged.slice(0, 5).map((i) => `#${i.index}`).join(", ")}`
        + `${diverged.length > 5 ? ", …" : ""}): drawn, but the picture keeps to the other paths.` }) : null,
    noF.length ? el("span", { class: "muted", text: ` ${noF.length} of them have no final f `
      + "(not finished, cancelled or failed)." }) : null));
  const points = Math.max(50, Math.min(POINTS, Math.floor(ALL_POINTS / Math.max(items.length, 1))));
  const jobs = (await readAll(items.map((i) => i.id), points)).filter(Boolean);
  const starts = sweep.jobs / Object.values(sweep.grid || {}).reduce((n, values) => n * values.length, 1);
  const labels = Object.fromEntries(items.map((i) => [i.id, gridLabel(i.grid || {}, starts > 1 ? i.start : null)]));
  return { jobs, sweep: { id: sweep.id, total: sweep.jobs, drawn: jobs.length, capped }, labels };
}

/** A sweep's job named by its grid values, as a person reads them: "sgd, lr=0.01 · start 3" (a
 * name's value alone, another key by its last part); "start 3" when the grid is empty. */
export function gridLabel(grid, start = null) {
  const parts = Object.entries(grid).map(([key, value]) => {
    const shown = typeof value === "string" ? value : JSON.stringify(value);
    const last = key.split(".").pop();
    return last === "name" || key === "objective" ? shown : `${last}=${shown}`;
  });
  if (start !== null && start !== undefined) parts.push(`start ${start}`);
  return parts.length ? parts.join(", ").replace(/, (start \d+)$/, " · $1") : "";
}

/** Each job and its history (at most `points` rows), READS_AT_ONCE at a time, in the order given;
 * a job that cannot be read is null (and said in the banner). */
async function readAll(ids, points) {
  const out = new Array(ids.length).fill(null);
  const failures = [];
  let next = 0;
  const worker = async () => {
    while (next < ids.length) {
      const at = next++;
      try {
        const job = await getJSON(`/v1/jobs/${encodeURIComponent(ids[at])}`);
        job.rows = await loadHistory(job, { points });
        out[at] = job;
      } catch (err) {
        failures.push(`${ids[at]}: ${errorText(err)}`);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(READS_AT_ONCE, ids.length) }, worker));
  if (failures.length) banner(failures.slice(0, 3).join("; ") + (failures.length > 3 ? ` (and ${failures.length - 3} more)` : ""));
  return out;
}

async function draw(main, jobs, sweep, labels = {}) {
  const colour = (n) => PATH_COLORS[n % PATH_COLORS.length];
  const label = (job) => labels[job.id] || job.name || job.id.slice(0, 8);
  const legend = el("table", { class: "jobs", id: "compare-jobs" },
    el("thead", {}, el("tr", {}, ...["", "job", "status", "objective", "optimizer", "final f", "stop reason"].map((h) => el("th", { text: h })))),
    el("tbody", {}, ...jobs.map((job, n) => el("tr", { "data-job": job.id },
      el("td", {}, el("span", { class: `swatch swatch-${n % PATH_COLORS.length}` })),
      el("td", {}, el("a", { href: `/jobs/${encodeURIComponent(job.id)}`, text: label(job) })),
      el("td", {}, statusBadge(job.status, null, (job.result || {}).stop_reason)),
      el("td", { class: "mono", text: objectiveText(job.spec) }),
      el("td", { text: optimizerText(job.spec) }),
      el("td", { class: "num", text: fmt(num((job.result || {}).f)) }),
      el("td", { text: (job.result || {}).stop_reason || "—" }),
    ))));
  const canvas = el("canvas", { id: "contour", class: "contour" });
  const note = el("p", { class: "muted", id: "contour-note" });
  const logBox = el("input", { type: "checkbox", id: "log-scale" });
  const chart = new LineChart(el("div", { id: "chart-f", class: "chart" }),
    { title: "loss f", yLabel: "f", height: 300, legend: jobs.length <= LEGEND_SERIES });
  // The plots first: a sweep's table of 50 jobs would push them off the screen.
  main.append(el("div", { class: "plots" },
    el("section", { class: "panel" }, el("h2", { text: "Paths on the contour of f" }), canvas, note),
    el("section", { class: "panel" }, el("h2", { text: "Loss" }), el("label", { class: "switch" }, logBox, " log scale"), chart.container)),
  legend);
  logBox.addEventListener("change", () => chart.setLog(logBox.checked));
  // Log y by default when every f is positive and they span decades (unless the URL says ?log=0|1).
  const asked = new URLSearchParams(location.search).get("log");
  logBox.checked = asked === null ? wantsLog(jobs.flatMap((job) => series(job.rows, "f"))) : asked === "1";
  chart.setLog(logBox.checked);

  const aligned = alignSteps(jobs.map((job, n) => ({
    label: sweep ? `${n + 1}. ${label(job)}` : label(job), steps: job.rows.map((r) => r.step),
    values: series(job.rows, "f"), color: colour(n),
  })));
  chart.setData(aligned.steps, aligned.series);

  const drawable = jobs.filter((job) => recordsX(job) && elementCount(job, job.rows) >= 2);
  const plot = new ContourPlot(canvas);
  const paths = jobs.map((job, n) => ({ job, color: colour(n), points: drawable.includes(job) ? pathOf(job.rows, [0, 1]) : [] }));
  // The view box: the paths that did not diverge (a diverged one reaches 1e13 and would flatten
  // the rest to a dot); only when every path diverged, where they started.
  const runaway = (p) => jobOutcome(p.job) === "diverged" || p.points.some(([a, b]) => !Number.isFinite(a) || !Number.isFinite(b));
  const tame = paths.filter((p) => p.points.length && !runaway(p)).map((p) => p.points);
  const framing = tame.length ? tame : paths.filter((p) => p.points.length).map((p) => tamePath(p.points));
  const divergedNames = jobs.filter((job) => jobOutcome(job) === "diverged").map(label);
  if (drawable.length) {
    const first = drawable.find((job) => !runaway(paths[jobs.indexOf(job)])) || drawable[0];
    const minima = await minimaOf(first, [0, 1], elementCount(first, first.rows));
    const region = regionFor(framing, minima, plot.aspect());
    try {
      plot.setSurface(await loadSurface(first.id, region, [0, 1], elementCount(first, first.rows)));
      const others = new Set(drawable.map((j) => JSON.stringify(j.spec.objective)));
      note.textContent = `f of ${label(first)} over x[0] and x[1]`
        + (others.size > 1 ? "; the jobs' objectives differ, so the others' paths are on its surface." : ".")
        + (divergedNames.length ? ` Diverged (their paths leave the picture): ${divergedNames.join(", ")}.` : "");
    } catch (err) {
      note.textContent = `No surface of f: ${errorText(err)}. The paths are drawn alone.`;
    }
    plot.setMinima(minima);
  } else {
    note.textContent = "None of these jobs has two recorded coordinates to draw.";
  }
  // Drawn last to first: the best job's path (first) is on top.
  plot.setPaths(paths.filter((p) => p.points.length).reverse());
  plot.draw();
  window.addEventListener("resize", () => plot.draw());
  window.descent.plotted = {
    jobs: jobs.map((j) => j.id), paths: Object.fromEntries(paths.map((p) => [p.job.id, p.points])),
    contourLevels: plot.surface ? plot.levels.levels : [], sweep, ready: true,
    surfaceRange: plot.surface ? plot.surface.range : null, diverged: divergedNames,
  };
}
