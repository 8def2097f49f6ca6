// Several jobs on one contour (the first job's surface of f) and one loss plot.

import { banner, el, errorText, fmt, getJSON, num, objectiveText, optimizerText, statusBadge } from "./api.js";
import { alignSteps, LineChart } from "./charts.js";
import { ContourPlot, PATH_COLORS } from "./contour.js";
import { elementCount, loadHistory, loadSurface, minimaOf, pathOf, recordsX, regionFor, series } from "./jobdata.js";

const MAX_JOBS = 20;

export async function comparePage(main) {
  const ids = (new URLSearchParams(location.search).get("jobs") || "").split(",").map((s) => s.trim()).filter(Boolean);
  const input = el("input", { name: "jobs", id: "compare-ids", size: 80, placeholder: "job ids, comma-separated" });
  input.value = ids.join(",");
  const form = el("form", { class: "filters" }, el("label", {}, "jobs ", input), el("button", { type: "submit", text: "Compare" }));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    location.assign(`/compare?jobs=${input.value.split(",").map((s) => s.trim()).filter(Boolean).join(",")}`);
  });
  main.replaceChildren(el("h1", { text: "Compare jobs" }), form);
  window.descent.plotted = { jobs: [], paths: {}, contourLevels: [], ready: false };
  if (!ids.length) {
    main.append(el("p", { class: "muted", text: "Pick jobs on the job list (the checkboxes), or give their ids here." }));
    return;
  }
  if (ids.length > MAX_JOBS) banner(`showing the first ${MAX_JOBS} of ${ids.length} jobs`);
  const jobs = [];
  for (const id of ids.slice(0, MAX_JOBS)) {
    try {
      const job = await getJSON(`/v1/jobs/${encodeURIComponent(id)}`);
      job.rows = await loadHistory(job, { points: 1000 });
      jobs.push(job);
    } catch (err) {
      banner(`${id}: ${errorText(err)}`);
    }
  }
  const colour = (n) => PATH_COLORS[n % PATH_COLORS.length];
  const legend = el("table", { class: "jobs", id: "compare-jobs" },
    el("thead", {}, el("tr", {}, ...["", "job", "status", "objective", "optimizer", "final f", "stop reason"].map((h) => el("th", { text: h })))),
    el("tbody", {}, ...jobs.map((job, n) => el("tr", { "data-job": job.id },
      el("td", {}, el("span", { class: `swatch swatch-${n % PATH_COLORS.length}` })),
      el("td", {}, el("a", { href: `/jobs/${encodeURIComponent(job.id)}`, text: job.name || job.id.slice(0, 8) })),
      el("td", {}, statusBadge(job.status)),
      el("td", { class: "mono", text: objectiveText(job.spec) }),
      el("td", { text: optimizerText(job.spec) }),
      el("td", { class: "num", text: fmt(num((job.result || {}).f)) }),
      el("td", { text: (job.result || {}).stop_reason || "—" }),
    ))));
  const canvas = el("canvas", { id: "contour", class: "contour" });
  const note = el("p", { class: "muted", id: "contour-note" });
  const logBox = el("input", { type: "checkbox", id: "log-scale" });
  const chart = new LineChart(el("div", { id: "chart-f", class: "chart" }), { title: "loss f", yLabel: "f", height: 300 });
  main.append(legend, el("div", { class: "plots" },
    el("section", { class: "panel" }, el("h2", { text: "Paths on the contour of f" }), canvas, note),
    el("section", { class: "panel" }, el("h2", { text: "Loss" }), el("label", { class: "switch" }, logBox, " log scale"), chart.container)));
  logBox.addEventListener("change", () => chart.setLog(logBox.checked));

  const aligned = alignSteps(jobs.map((job, n) => ({
    label: job.name || job.id.slice(0, 8), steps: job.rows.map((r) => r.step), values: series(job.rows, "f"), color: colour(n),
  })));
  chart.setData(aligned.steps, aligned.series);

  const drawable = jobs.filter((job) => recordsX(job) && elementCount(job, job.rows) >= 2);
  const plot = new ContourPlot(canvas);
  const paths = jobs.map((job, n) => ({ job, color: colour(n), points: drawable.includes(job) ? pathOf(job.rows, [0, 1]) : [] }));
  if (drawable.length) {
    const first = drawable[0];
    const minima = await minimaOf(first, [0, 1], elementCount(first, first.rows));
    const region = regionFor(paths.map((p) => p.points).filter((p) => p.length), minima, plot.aspect());
    try {
      plot.setSurface(await loadSurface(first.id, region, [0, 1], elementCount(first, first.rows)));
      const others = new Set(drawable.map((j) => JSON.stringify(j.spec.objective)));
      note.textContent = `f of ${first.name || first.id.slice(0, 8)} over x[0] and x[1]`
        + (others.size > 1 ? "; the jobs' objectives differ, so the others' paths are on its surface." : ".");
    } catch (err) {
      note.textContent = `No surface of f: ${errorText(err)}. The paths are drawn alone.`;
    }
    plot.setMinima(minima);
  } else {
    note.textContent = "None of these jobs has two recorded coordinates to draw.";
  }
  plot.setPaths(paths.filter((p) => p.points.length));
  plot.draw();
  window.addEventListener("resize", () => plot.draw());
  window.descent.plotted = {
    jobs: jobs.map((j) => j.id), paths: Object.fromEntries(paths.map((p) => [p.job.id, p.points])),
    contourLevels: plot.surface ? plot.levels.levels : [], ready: true,
  };
}
