// The job page: what the job is, its curves, and its path on the contour of f; live while it
// runs (the events stream, read with fetch; polling the job if the stream fails).

import {
  FINISHED, banner, blobURL, deleteAfterAsking, download, el, errorText, failureBanner, fmt, getJSON, jobOutcome, num, objectiveText,
  optimizerText, postJSON, readEvents, request, shapeOf, sleep, statusBadge, tensorText, unreachable, unreachableText, when,
} from "./api.js";
import { ChartGroup, LineChart, wantsLog } from "./charts.js";
import { ContourPlot } from "./contour.js";
import { bigTensorView, isReference, isSummary } from "./tensorview.js";
import {
  contains, elementCount, loadHistory, loadSurface, minimaOf, pathOf, recordsX, regionFor, series, tamePath,
} from "./jobdata.js";

const REFRESH_MS = 1000;
const POLL_MS = 2000;

export async function jobPage(main, jobId) {
  const state = { id: jobId, job: null, rows: [], coords: [0, 1], surface: null, minima: [], finalDone: false };
  window.descent.plotted = { job: jobId, path: [], contourLevels: [], steps: [], ready: false };
  state.job = await firstRead(main, jobId);
  document.title = `Descent · ${state.job.name || jobId}`;

  const head = el("section", { class: "job-head" });
  const answer = el("section", { class: "panel answer", id: "answer" });
  const contourPanel = el("section", { class: "panel" });
  const chartsPanel = el("section", { class: "panel" });
  // A steps-0 job (the lesson's cases 1 and 2) has one point: its answer is the gradient and the
  // backward graph, shown in place of empty curves.
  const gradientOnly = state.job.spec && state.job.spec.steps === 0;
  const plots = el("div", { class: gradientOnly ? "plots hidden" : "plots", id: "plots" }, contourPanel, chartsPanel);
  main.replaceChildren(head, answer, plots);
  state.head = head;
  state.answer = answer;
  state.gradientOnly = gradientOnly;

  // Curves: one zoom (a drag on any of them; a double click shows every step), one smoothing, and
  // the view (?log=1|0&zoom=first,last&smooth=w) kept in the page's URL, so that it can be shared.
  const view = new URLSearchParams(location.search);
  const logBox = el("input", { type: "checkbox", id: "log-scale" });
  const smooth = el("input", { type: "range", id: "smoothing", min: 0, max: 0.99, step: 0.01, value: 0 });
  const smoothShown = el("span", { class: "mono", id: "smoothing-value", text: "0" });
  const group = new ChartGroup((zoom, w) => keepView(state, { zoom: zoom ? zoom.join(",") : null, smooth: w ? String(w) : null }));
  const charts = {
    f: group.add(new LineChart(el("div", { id: "chart-f", class: "chart" }), { title: "loss f", yLabel: "f" })),
    grad_norm: group.add(new LineChart(el("div", { id: "chart-grad", class: "chart" }), { title: "gradient norm", yLabel: "|grad|" })),
    lr: group.add(new LineChart(el("div", { id: "chart-lr", class: "chart" }), { title: "learning rate", yLabel: "lr" })),
  };
  const unzoom = el("button", { type: "button", class: "link", id: "zoom-reset", text: "all steps", onclick: () => group.setZoom(null) });
  chartsPanel.append(el("h2", { text: "Curves" }),
    el("p", { class: "controls" }, el("label", { class: "switch" }, logBox, " log scale"), " · ",
      el("label", { class: "switch" }, "smoothing ", smooth, smoothShown), " · ", unzoom,
      el("span", { class: "muted", text: " (drag over a chart to zoom all three)" })),
    ...Object.values(charts).map((c) => c.container));
  logBox.addEventListener("change", () => {
    state.logChosen = true; // the user's choice holds; until then the data decides (log when f spans decades)
    Object.values(charts).forEach((c) => c.setLog(logBox.checked));
    keepView(state, { log: logBox.checked ? "1" : "0" });
  });
  smooth.addEventListener("input", () => {
    smoothShown.textContent = smooth.value;
    group.setSmoothing(Number(smooth.value));
  });
  const zoom = (view.get("zoom") || "").split(",").map(Number);
  if (zoom.length === 2 && zoom.every(Number.isFinite) && zoom[1] > zoom[0]) group.setZoom(zoom, false);
  const w = Number(view.get("smooth"));
  if (w > 0 && w < 1) {
    smooth.value = String(w);
    smoothShown.textContent = smooth.value;
    group.setSmoothing(Number(smooth.value), false);
  }
  if (view.get("log") === "1" || view.get("log") === "0") {
    state.logChosen = true;
    logBox.checked = view.get("log") === "1";
    Object.values(charts).forEach((c) => c.setLog(logBox.checked));
  }
  state.charts = charts;
  state.group = group;
  state.logBox = logBox;

  // Contour
  const canvas = el("canvas", { id: "contour", class: "contour" });
  const note = el("p", { id: "contour-note", class: "muted" });
  const readout = el("p", { id: "contour-readout", class: "readout" });
  state.plot = new ContourPlot(canvas);
  state.plot.onHover = (x, y, f) => { readout.textContent = `(${fmt(x, 4)}, ${fmt(y, 4)})${f === null ? "" : `  f ≈ ${fmt(f, 4)}`}`; };
  state.note = note;
  const coordsRow = el("div", { class: "coords hidden", id: "coords" });
  contourPanel.append(el("h2", { text: "Path on the contour of f" }), coordsRow, canvas, readout, note,
    el("p", { class: "legend muted", text: "○ start   ● end   ✕ known minimum" }));
  state.coordsRow = coordsRow;
  window.addEventListener("resize", () => state.plot.draw());

  renderHead(state);
  await refresh(state);
  if (!FINISHED.has(state.job.status)) follow(state);
  else await finish(state);
}

/** The page's URL with `changes` to its query (null: removed), in place (no new history entry). */
function keepView(state, changes) {
  const q = new URLSearchParams(location.search);
  for (const [key, value] of Object.entries(changes)) {
    if (value === null || value === undefined) q.delete(key); else q.set(key, value);
  }
  history.replaceState(history.state, "", `${location.pathname}${q.toString() ? `?${q}` : ""}`);
}

/** The job, read until the API answers: while it cannot be reached the page says so and retries;
 * any other error (a 404) is thrown for the page to show. */
async function firstRead(main, jobId) {
  for (;;) {
    try {
      const job = await getJSON(`/v1/jobs/${encodeURIComponent(jobId)}`);
      banner("");
      return job;
    } catch (err) {
      if (!unreachable(err)) throw err;
      failureBanner(err, null);
      main.replaceChildren(el("p", { class: "error", id: "page-error", text: `${unreachableText(null)}.` }));
      await sleep(POLL_MS);
    }
  }
}

/** How long the job ran (started to finished, or to now while it runs), in words. */
export function duration(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return "—";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 2 : 1)} s`;
  const m = Math.floor(seconds / 60), s = Math.round(seconds % 60);
  if (m < 60) return `${m} min ${s} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

function durationText(job) {
  if (!job.started_at) return "—";
  const start = new Date(job.started_at).getTime();
  const end = job.finished_at ? new Date(job.finished_at).getTime() : Date.now();
  const text = duration((end - start) / 1000);
  return job.finished_at ? text : `${text} so far`;
}

function rateText(job) {
  const result = job.result || {};
  const seconds = num(result.seconds);
  if (!result.steps || !(seconds > 0)) return "—";
  return `${Math.round(result.steps / seconds).toLocaleString()} steps/s (${duration(seconds)} computing)`;
}

/** JSON with two-space indents, but a list of numbers (a tensor) kept on one line. */
export function compactJSON(value, indent = "") {
  const flatNumbers = (v) => Array.isArray(v) && v.every((e) => typeof e === "number" || e === null || flatNumbers(e));
  if (flatNumbers(value)) return JSON.stringify(value).replaceAll(",", ", ");
  const inner = indent + "  ";
  if (Array.isArray(value)) {
    if (!value.length) return "[]";
    return `[\n${value.map((v) => inner + compactJSON(v, inner)).join(",\n")}\n${indent}]`;
  }
  if (value && typeof value === "object") {
    const entries = Object.entries(value);
    if (!entries.length) return "{}";
    return `{\n${entries.map(([k, v]) => `${inner}${JSON.stringify(k)}: ${compactJSON(v, inner)}`).join(",\n")}\n${indent}}`;
  }
  return JSON.stringify(value);
}

/** A tensor (final x, x0, the gradient): rounded to 4 places (many numbers summarised: shape and
 * first values), with its shape and a button that copies it whole as JSON. A big one (a result's
 * summary, x0's stored reference) shows its size, summary numbers, a .npy link and its histogram
 * (and image, for 2-D) instead (``href``: where its values are). */
function tensorView(id, label, value, href = null) {
  if (value === undefined || value === null) return null;
  const big = isSummary(value) ? value.href : isReference(value) ? href : null;
  if (big) {
    const copy = el("button", { type: "button", class: "link copy", id: `${id}-copy`, text: "copy summary as JSON" });
    copy.addEventListener("click", () => copyText(JSON.stringify(value), copy));
    return el("div", { class: "tensor" },
      el("h3", {}, label, el("span", { class: "muted", text: ` · shape [${value.shape.join(", ")}] · kept apart (too big for the job document)` }), " ", copy),
      bigTensorView(id, value, big));
  }
  const isTensor = Array.isArray(value);
  const text = isTensor || typeof value === "number" || typeof value === "string" ? tensorText(value) : JSON.stringify(value);
  const shape = isTensor ? shapeOf(value) : [];
  const copy = el("button", { type: "button", class: "link copy", id: `${id}-copy`, text: "copy as JSON" });
  copy.addEventListener("click", () => copyText(JSON.stringify(value), copy));
  return el("div", { class: "tensor" },
    el("h3", {}, label, shape.length ? el("span", { class: "muted", text: ` · shape [${shape.join(", ")}]` }) : null, " ", copy),
    el("pre", { class: "tensor-values", id, text }));
}

async function copyText(text, button) {
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = "copied";
  } catch (err) {
    button.textContent = "copy failed (select the text)";
  }
  const before = button.textContent;
  setTimeout(() => { button.textContent = before; }, 1500);
}

/** The answer: final x, x0, the gradient and backward graph (for a steps-0 job, the answer
 * itself), and the spec, collapsed. */
function renderAnswer(state) {
  const job = state.job;
  const result = job.result || {};
  const spec = job.spec || {};
  const parts = [];
  const x0Href = `/v1/jobs/${encodeURIComponent(job.id)}/x0`;
  if (state.gradientOnly) {
    parts.push(el("h2", { text: "The gradient at x0" }),
      el("p", { class: "muted", text: "steps: 0 — the job computed f and its gradient once and took no step." }));
    parts.push(tensorView("job-grad", "gradient ∂f/∂x", result.grad));
    parts.push(tensorView("job-x0", "x0", spec.x0, x0Href));
    if (result.f !== undefined) parts.push(el("p", {}, "f(x0) = ", el("span", { class: "mono", id: "job-f0", text: fmt(num(result.f)) })));
  } else {
    parts.push(el("h2", { text: "The answer" }));
    parts.push(tensorView("job-x", "final x", result.x));
    parts.push(tensorView("job-x0", "x0", spec.x0, x0Href));
    if (result.grad !== undefined) parts.push(tensorView("job-grad", "gradient at the final x", result.grad));
  }
  if (Array.isArray(result.graph) && result.graph.length) {
    parts.push(el("div", { class: "tensor" }, el("h3", { text: "backward graph (output first)" }),
      el("p", { class: "mono graph", id: "job-graph", text: result.graph.join(" → ") })));
  }
  if (!result.x && !state.gradientOnly) {
    parts.push(el("p", { class: "muted", id: "job-no-result",
      text: FINISHED.has(job.status) ? "This job has no result." : "The final x shows here when the job ends." }));
  }
  const specText = compactJSON(spec);
  const copy = el("button", { type: "button", class: "link copy", id: "job-spec-copy", text: "copy as JSON" });
  copy.addEventListener("click", () => copyText(specText, copy));
  const details = el("details", { class: "spec", id: "job-spec" },
    el("summary", {}, "spec (JSON) ", copy), el("pre", { class: "spec", id: "job-spec-text", text: specText }));
  if (state.answer.querySelector("#job-spec")?.open) details.open = true;
  parts.push(details);
  state.answer.replaceChildren(...parts.filter(Boolean));
}

function renderHead(state) {
  const job = state.job;
  const result = job.result || {};
  const progress = job.progress;
  const cancel = FINISHED.has(job.status) ? null : el("button", {
    type: "button", id: "cancel-job", text: job.cancel_requested ? "cancel requested" : "Cancel",
    disabled: job.cancel_requested,
    onclick: async () => {
      try { setJob(state, await postJSON(`/v1/jobs/${encodeURIComponent(job.id)}/cancel`, {})); } catch (err) { banner(errorText(err)); }
    },
  });
  const rows = [
    ["id", job.id],
    ...(job.sweep ? [["sweep", el("a", { href: `/sweeps/${encodeURIComponent(job.sweep.id)}`, id: "job-sweep-link",
      text: `job #${job.sweep.index} of sweep ${job.sweep.id.slice(0, 8)}` }), "job-sweep"]] : []),
    ["duration", durationText(job), "job-duration"],
    ["speed", rateText(job), "job-rate"],
    ["objective", objectiveText(job.spec)],
    ["optimizer", optimizerText(job.spec)],
    ["steps asked", fmt(job.spec && job.spec.steps)],
    ["progress", progress ? `step ${progress.step} / ${progress.steps} · f ${fmt(num(progress.f))}` : "—", "job-progress"],
    ["final f", fmt(num(result.f)), "job-f"],
    ["steps done", fmt(result.steps)],
    ["stop reason", result.stop_reason || "—", "job-stop-reason"],
    ["distance to minimum", fmt(num(result.distance_to_minimum))],
    ["grad norm", fmt(num(result.grad_norm))],
    ["created", when(job.created_at)],
    ["started", when(job.started_at)],
    ["finished", when(job.finished_at)],
    ["worker", job.worker || result.worker || "—"],
  ];
  if (job.history_dropped_at) rows.push(["history", `dropped by the retention clean-up on ${when(job.history_dropped_at)}`, "job-history-dropped"]);
  if (job.tags && Object.keys(job.tags).length) rows.push(["tags", Object.entries(job.tags).map(([k, v]) => `${k}:${v}`).join(" ")]);
  const csv = el("button", {
    type: "button", class: "link", text: "history CSV",
    onclick: () => save(`/v1/jobs/${encodeURIComponent(job.id)}/history?format=csv`, `${job.id}.csv`),
  });
  const png = el("button", { type: "button", class: "link", id: "show-png", text: "server plot (PNG)", onclick: () => showPng(state) });
  const remove = el("button", {
    type: "button", class: "danger", id: "delete-job", text: "Delete…",
    onclick: async () => {
      const running = FINISHED.has(job.status) ? "" : " It is cancelled first.";
      try {
        const gone = await deleteAfterAsking(`/v1/jobs/${encodeURIComponent(job.id)}`,
          `Delete job ${job.name || job.id}, its history and its data?${running} This cannot be undone.`,
          () => stopFollowing(state));
        if (gone) location.assign("/");
      } catch (err) { banner(errorText(err)); }
    },
  });
  const notices = [];
  if (job.waiting) notices.push(el("p", { class: "notice", id: "job-waiting" }, el("strong", { text: "Waiting: " }), job.waiting));
  if (job.worker_lost_at) {
    notices.push(el("p", { class: "notice", id: "job-worker-lost",
      text: `Its worker stopped answering at ${when(job.worker_lost_at)}; the job is queued again after ${when(job.reclaim_at)}.` }));
  }
  if (jobOutcome(job) === "diverged") {
    notices.push(el("p", { class: "notice notice-bad", id: "job-diverged",
      text: `Diverged: f became ${fmt(num(result.f))} after ${fmt(result.steps)} steps; the run stopped there. Try a smaller learning rate.` }));
  }
  if (job.error) {
    notices.push(el("div", { class: "notice notice-bad", id: "job-error-box" }, el("strong", { text: "Error" }),
      el("pre", { class: "error-text", id: "job-error", text: job.error })));
  }
  state.head.replaceChildren(
    el("h1", {}, job.name || `Job ${job.id.slice(0, 8)}`, " ", statusBadge(job.status, "job-status", result.stop_reason)),
    ...notices,
    el("dl", { class: "facts" }, ...rows.map(([k, v, id]) => el("div", {}, el("dt", { text: k }),
      v instanceof Node ? el("dd", { id }, v) : el("dd", { id, text: String(v) })))),
    el("p", { class: "actions" }, cancel, " ", csv, " · ", png, " · ",
      el("a", { href: `/compare?jobs=${encodeURIComponent(job.id)}`, text: "compare…" }), " ", remove),
    el("div", { id: "png-holder" }),
  );
  if (state.answer) renderAnswer(state);
}

/** Stop reading the job (before it is deleted: no read may meet its 404). */
async function stopFollowing(state) {
  state.finalDone = true;
  state.leaving = true;
  if (state.abort) state.abort.abort();
  clearTimeout(state.pending);
  while (state.refreshing) await sleep(50);
}

async function save(path, name) {
  try {
    await download(path, name);
  } catch (err) {
    banner(errorText(err));
  }
}

async function showPng(state) {
  const holder = document.getElementById("png-holder");
  try {
    const url = await blobURL(`/v1/jobs/${encodeURIComponent(state.id)}/plot.png?kind=contour`);
    holder.replaceChildren(el("img", { src: url, alt: "contour plot rendered by the service", id: "plot-png", class: "png" }));
  } catch (err) {
    holder.replaceChildren(el("p", { class: "error", text: errorText(err) }));
  }
}

function setJob(state, job) {
  const before = state.job;
  state.job = { ...job, progress: job.progress !== undefined ? job.progress : before.progress };
  renderHead(state);
  if (FINISHED.has(job.status)) finish(state);
}

function setProgress(state, progress) {
  state.job = { ...state.job, progress };
  const node = document.getElementById("job-progress");
  if (node) node.textContent = `step ${progress.step} / ${progress.steps} · f ${fmt(num(progress.f))}`;
  scheduleRefresh(state);
}

function scheduleRefresh(state) {
  if (state.pending) return;
  const wait = Math.max(0, (state.lastRefresh || 0) + REFRESH_MS - Date.now());
  state.pending = setTimeout(async () => {
    try { await refresh(state); } finally { state.pending = null; }
  }, wait);
}

async function finish(state) {
  if (state.finalDone) return;
  state.finalDone = true;
  if (state.abort) state.abort.abort();
  while (state.refreshing) await sleep(50);
  await refresh(state);
  window.descent.plotted.ready = true;
}

/** Read the history again and redraw; the surface is read again when the path has left it. */
async function refresh(state) {
  if (state.leaving) return;
  state.refreshing = true;
  state.lastRefresh = Date.now();
  try {
    const rows = await loadHistory(state.job);
    state.lastOk = new Date();
    state.rows = rows;
    const steps = rows.map((r) => r.step);
    if (!state.logChosen) {
      const log = wantsLog(series(rows, "f"));
      state.logBox.checked = log;
      Object.values(state.charts).forEach((c) => c.setLog(log));
    }
    state.charts.f.setData(steps, [{ label: "f", values: series(rows, "f") }]);
    state.charts.grad_norm.setData(steps, [{ label: "grad norm", values: series(rows, "grad_norm") }]);
    state.charts.lr.setData(steps, [{ label: "lr", values: series(rows, "lr") }]);
    window.descent.plotted.steps = steps;
    if (!state.gradientOnly) await drawContour(state);
    if (state.offline) banner("");
    state.offline = false;
  } catch (err) {
    if (state.leaving) return;
    state.offline = true;
    failureBanner(err, state.lastOk || null);
  } finally {
    state.refreshing = false;
  }
}

async function drawContour(state) {
  const numel = elementCount(state.job, state.rows);
  if (!recordsX(state.job)) {
    state.note.textContent = "This job does not record x (record.x is false): no path to draw.";
    return;
  }
  if (numel < 2) {
    state.note.textContent = "x has one element: the loss curve is the picture.";
    state.plot.canvas.classList.add("hidden");
    return;
  }
  renderCoords(state, numel);
  const path = pathOf(state.rows, state.coords);
  if (!path.length) return;
  state.minima = await minimaOf(state.job, state.coords, numel);
  const diverged = jobOutcome(state.job) === "diverged";
  // A diverged path runs off to huge values: the picture keeps to where it started.
  const region = regionFor([diverged ? tamePath(path) : path], state.minima, state.plot.aspect());
  const stale = !state.surface || (!diverged && !contains(state.surface.range, boundingBoxOf(path)))
    || (FINISHED.has(state.job.status) && state.surfaceFor !== "final");
  if (stale && !state.surfaceFailed) {
    try {
      state.surface = await loadSurface(state.id, region, state.coords, numel);
      state.surfaceFor = FINISHED.has(state.job.status) ? "final" : "live";
      state.plot.setSurface(state.surface);
      state.note.textContent = numel > 2
        ? `f over x[${state.coords[0]}] and x[${state.coords[1]}], the other elements as the service fixes them.` : "";
    } catch (err) {
      state.surfaceFailed = true;
      state.note.textContent = `No surface of f: ${errorText(err)}. The path is drawn alone.`;
    }
  }
  state.plot.xLabel = `x[${state.coords[0]}]`;
  state.plot.yLabel = `x[${state.coords[1]}]`;
  state.plot.setPaths([{ points: path, label: state.job.name || state.id }]);
  state.plot.setMinima(state.minima);
  state.plot.draw();
  Object.assign(window.descent.plotted, {
    path, coords: [...state.coords], minima: state.minima,
    contourLevels: state.plot.surface ? state.plot.levels.levels : [], logLevels: state.plot.levels.log,
    surfaceRange: state.surface ? state.surface.range : null,
  });
  state.plot.canvas.dataset.pathPoints = String(path.length);
}

function boundingBoxOf(path) {
  const xs = path.map((p) => p[0]).filter(Number.isFinite), ys = path.map((p) => p[1]).filter(Number.isFinite);
  return [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
}

function renderCoords(state, numel) {
  if (numel <= 2 || state.coordsRow.dataset.ready) return;
  state.coordsRow.dataset.ready = "1";
  state.coordsRow.classList.remove("hidden");
  const pick = (which) => {
    const select = el("select", { id: `coord-${which}` },
      ...Array.from({ length: Math.min(numel, 1000) }, (_, k) => el("option", { value: k, text: `x[${k}]` })));
    select.value = String(state.coords[which]);
    select.addEventListener("change", async () => {
      const next = [...state.coords];
      next[which] = Number(select.value);
      if (next[0] === next[1]) return;
      state.coords = next;
      state.surface = null;
      state.surfaceFailed = false;
      await drawContour(state);
    });
    return select;
  };
  state.coordsRow.append("coordinates ", pick(0), " and ", pick(1));
}

/** Follow the job live: the events stream, reconnected when it times out; polling when it fails. */
async function follow(state) {
  let failures = 0;
  while (!FINISHED.has(state.job.status) && !state.finalDone) {
    state.abort = new AbortController();
    const opened = Date.now();
    try {
      await readEvents(`/v1/jobs/${encodeURIComponent(state.id)}/events`, (name, data) => {
        window.descent.live = "stream";
        if (name === "comment") return;
        let body;
        try { body = JSON.parse(data); } catch (err) { return; }
        if (name === "status" || name === "end") setJob(state, body);
        else if (name === "progress") setProgress(state, body);
      }, state.abort.signal);
      failures = 0;
      if (Date.now() - opened < 1000) await sleep(1000); // closed at once: do not hammer the service
    } catch (err) {
      if (state.finalDone) return;
      failures += 1;
      if (failures >= 2 || (err && [404, 405, 501].includes(err.status))) {
        window.descent.live = "polling";
        return poll(state);
      }
      await sleep(1000);
    }
  }
}

async function poll(state) {
  while (!FINISHED.has(state.job.status) && !state.finalDone) {
    await sleep(POLL_MS);
    try {
      const resp = await request(`/v1/jobs/${encodeURIComponent(state.id)}`);
      if (resp.ok) {
        const job = await resp.json();
        setJob(state, job);
        if (!FINISHED.has(job.status)) scheduleRefresh(state);
      }
      if (state.offline) { banner(""); state.offline = false; }
    } catch (err) {
      // the service is briefly unreachable: say so, and try again
      if (state.leaving) return;
      state.offline = true;
      failureBanner(err, state.lastOk || null);
    }
  }
}
