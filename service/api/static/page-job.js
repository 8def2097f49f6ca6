// The job page: what the job is, its curves, and its path on the contour of f; live while it
// runs (the events stream, read with fetch; polling the job if the stream fails).

import {
  FINISHED, banner, blobURL, deleteAfterAsking, el, errorText, fmt, getJSON, num, objectiveText, optimizerText, postJSON,
  readEvents, request, sleep, statusBadge, when,
} from "./api.js";
import { LineChart } from "./charts.js";
import { ContourPlot } from "./contour.js";
import { contains, elementCount, loadHistory, loadSurface, minimaOf, pathOf, recordsX, regionFor, series } from "./jobdata.js";

const REFRESH_MS = 1000;
const POLL_MS = 2000;

export async function jobPage(main, jobId) {
  const state = { id: jobId, job: null, rows: [], coords: [0, 1], surface: null, minima: [], finalDone: false };
  window.descent.plotted = { job: jobId, path: [], contourLevels: [], steps: [], ready: false };
  state.job = await getJSON(`/v1/jobs/${encodeURIComponent(jobId)}`);
  document.title = `Descent · ${state.job.name || jobId}`;

  const head = el("section", { class: "job-head" });
  const contourPanel = el("section", { class: "panel" });
  const chartsPanel = el("section", { class: "panel" });
  main.replaceChildren(head, el("div", { class: "plots" }, contourPanel, chartsPanel));
  state.head = head;

  // Curves
  const logBox = el("input", { type: "checkbox", id: "log-scale" });
  const charts = {
    f: new LineChart(el("div", { id: "chart-f", class: "chart" }), { title: "loss f", yLabel: "f" }),
    grad_norm: new LineChart(el("div", { id: "chart-grad", class: "chart" }), { title: "gradient norm", yLabel: "|grad|" }),
    lr: new LineChart(el("div", { id: "chart-lr", class: "chart" }), { title: "learning rate", yLabel: "lr" }),
  };
  chartsPanel.append(el("h2", { text: "Curves" }), el("label", { class: "switch" }, logBox, " log scale"),
    ...Object.values(charts).map((c) => c.container));
  logBox.addEventListener("change", () => Object.values(charts).forEach((c) => c.setLog(logBox.checked)));
  state.charts = charts;

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
  if (job.error) rows.push(["error", job.error, "job-error"]);
  if (job.history_dropped_at) rows.push(["history", `dropped by the retention clean-up on ${when(job.history_dropped_at)}`, "job-history-dropped"]);
  if (job.tags && Object.keys(job.tags).length) rows.push(["tags", Object.entries(job.tags).map(([k, v]) => `${k}:${v}`).join(" ")]);
  const csv = el("button", {
    type: "button", class: "link", text: "history CSV",
    onclick: () => download(`/v1/jobs/${encodeURIComponent(job.id)}/history?format=csv`, `${job.id}.csv`),
  });
  const png = el("button", { type: "button", class: "link", id: "show-png", text: "server plot (PNG)", onclick: () => showPng(state) });
  const remove = el("button", {
    type: "button", class: "danger", id: "delete-job", text: "Delete…",
    onclick: async () => {
      const running = FINISHED.has(job.status) ? "" : " It is cancelled first.";
      try {
        const gone = await deleteAfterAsking(`/v1/jobs/${encodeURIComponent(job.id)}`,
          `Delete job ${job.name || job.id}, its history and its data?${running} This cannot be undone.`);
        if (gone) location.assign("/");
      } catch (err) { banner(errorText(err)); }
    },
  });
  state.head.replaceChildren(
    el("h1", {}, job.name || `Job ${job.id.slice(0, 8)}`, " ", statusBadge(job.status, "job-status")),
    el("dl", { class: "facts" }, ...rows.map(([k, v, id]) => el("div", {}, el("dt", { text: k }), el("dd", { id, text: String(v) })))),
    el("p", { class: "actions" }, cancel, " ", csv, " · ", png, " · ",
      el("a", { href: `/compare?jobs=${encodeURIComponent(job.id)}`, text: "compare…" }), " ", remove),
    el("div", { id: "png-holder" }),
  );
}

async function download(path, name) {
  try {
    const url = await blobURL(path);
    const a = el("a", { href: url, download: name });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
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
  state.refreshing = true;
  state.lastRefresh = Date.now();
  try {
    const rows = await loadHistory(state.job);
    state.rows = rows;
    const steps = rows.map((r) => r.step);
    state.charts.f.setData(steps, [{ label: "f", values: series(rows, "f") }]);
    state.charts.grad_norm.setData(steps, [{ label: "grad norm", values: series(rows, "grad_norm") }]);
    state.charts.lr.setData(steps, [{ label: "lr", values: series(rows, "lr") }]);
    window.descent.plotted.steps = steps;
    await drawContour(state);
  } catch (err) {
    banner(errorText(err));
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
  const region = regionFor([path], state.minima, state.plot.aspect());
  const stale = !state.surface || !contains(state.surface.range, boundingBoxOf(path))
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
    } catch (err) {
      // the service is briefly unreachable: try again
    }
  }
}
