// A sweep: its counts, its summary table, a heat map of final f over two grid keys, and a link
// to compare the whole sweep (the compare view draws its best jobs by final f, as many as it
// can show). Refreshed while any of its jobs is queued or running.

import { banner, deleteAfterAsking, el, errorText, failureBanner, fmt, getJSON, num, outcome, statusBadge } from "./api.js";
import { contourLevels } from "./contour.js";
import { MAX_SWEEP_PATHS } from "./page-compare.js";

const POLL_MS = 3000;

export async function sweepPage(main, sweepId) {
  const state = { keyA: null, keyB: null };
  const head = el("section", { class: "job-head" });
  const heat = el("section", { class: "panel" });
  const table = el("section", { class: "panel wide" });
  main.replaceChildren(head, heat, table);
  let lastOk = null;
  const load = async () => {
    try {
      const sweep = await getJSON(`/v1/sweeps/${encodeURIComponent(sweepId)}?limit=1000&sort=created`);
      lastOk = new Date();
      render(sweep, state, head, heat, table);
      main.classList.remove("stale");
      banner("");
      const counts = sweep.counts || {};
      if ((counts.queued || 0) + (counts.running || 0) > 0) setTimeout(load, POLL_MS);
    } catch (err) {
      if (!lastOk) throw err; // nothing shown yet: the page says why
      failureBanner(err, lastOk);
      main.classList.add("stale");
      setTimeout(load, POLL_MS);
    }
  };
  await load();
}

function render(sweep, state, head, heat, table) {
  const items = sweep.summary || [];
  // A diverged job "succeeded" (it stopped on divergence): counted as diverged, not as a success,
  // when the summary read holds every job; else said apart for the jobs read.
  const divergedRead = items.filter((i) => outcome(i.status, i.stop_reason) === "diverged").length;
  const byOutcome = { ...(sweep.counts || {}) };
  if (divergedRead && !sweep.next_cursor) {
    byOutcome.succeeded = (byOutcome.succeeded || 0) - divergedRead;
    byOutcome.diverged = divergedRead;
  }
  const counts = Object.entries(byOutcome).filter(([, n]) => n).map(([s, n]) => `${n} ${s}`).join(" · ");
  const remove = el("button", {
    type: "button", class: "danger", id: "delete-sweep", text: "Delete…",
    onclick: async () => {
      try {
        const gone = await deleteAfterAsking(`/v1/sweeps/${encodeURIComponent(sweep.id)}`,
          `Delete sweep ${sweep.name || sweep.id} and its ${sweep.jobs.toLocaleString()} jobs, with their histories and `
          + "data? Unfinished jobs are cancelled first. This cannot be undone.");
        if (gone) location.assign("/");
      } catch (err) { banner(errorText(err)); }
    },
  });
  head.replaceChildren(
    el("h1", { text: sweep.name || `Sweep ${sweep.id.slice(0, 8)}` }),
    el("p", { id: "sweep-counts", text: `${sweep.jobs} jobs: ${counts || "none yet"}${divergedText(items, sweep)}` }),
    el("p", { class: "actions" }, el("a", { id: "compare-sweep", href: `/compare?sweep=${encodeURIComponent(sweep.id)}`,
      text: sweep.jobs <= MAX_SWEEP_PATHS ? `compare its ${sweep.jobs} jobs`
        : `compare the sweep (its ${MAX_SWEEP_PATHS} best of ${sweep.jobs.toLocaleString()} jobs drawn)` }), " ", remove),
  );

  const keys = Object.keys(sweep.grid || {}).filter((k) => (sweep.grid[k] || []).length > 1);
  const all = Object.keys(sweep.grid || {});
  if (!state.keyA) [state.keyA, state.keyB] = [keys[0] || all[0] || null, keys[1] || null];
  heat.replaceChildren(el("h2", { text: "Final f over the grid" }));
  if (state.keyA) {
    const pick = (which) => {
      const select = el("select", { id: `heat-${which}` }, el("option", { value: "", text: "—" }),
        ...all.map((k) => el("option", { value: k, text: k })));
      select.value = state[which] || "";
      select.addEventListener("change", () => { state[which] = select.value || null; render(sweep, state, head, heat, table); });
      return select;
    };
    heat.append(el("p", {}, "rows ", pick("keyA"), " columns ", pick("keyB"),
      el("span", { class: "muted", text: " (each cell: the lowest finite final f among its jobs; lighter is lower; "
        + "a cell whose jobs all diverged is dark red and says so)" })));
    heat.append(heatMap(sweep, items, state.keyA, state.keyB));
  } else {
    heat.append(el("p", { class: "muted", text: "This sweep has no grid (only starts)." }));
  }

  const gridKeys = all;
  table.replaceChildren(el("h2", { text: "Summary" }), el("table", { class: "jobs", id: "sweep-summary" },
    el("thead", {}, el("tr", {}, ...["#", ...gridKeys, "start", "status", "final f", "stop reason", "distance to min", "steps to tol."]
      .map((h) => el("th", { text: h })))),
    el("tbody", {}, ...items.map((item) => el("tr", { "data-job": item.id },
      el("td", {}, el("a", { href: `/jobs/${encodeURIComponent(item.id)}`, text: String(item.index) })),
      ...gridKeys.map((k) => el("td", { text: JSON.stringify((item.grid || {})[k]) })),
      el("td", { text: String(item.start ?? "—") }),
      el("td", {}, statusBadge(item.status, null, item.stop_reason)),
      el("td", { class: "num", text: fmt(num(item.f)) }),
      el("td", { text: item.stop_reason || "—" }),
      el("td", { class: "num", text: fmt(num(item.distance_to_minimum)) }),
      el("td", { class: "num", text: fmt(item.steps_to_tolerance) }),
    )))));
  if (sweep.next_cursor) table.append(el("p", { class: "muted", text: "The first 1,000 jobs are shown." }));
}

/** With more jobs than the summary read: " (N of the first 1,000 read diverged)". */
function divergedText(items, sweep) {
  const n = items.filter((i) => outcome(i.status, i.stop_reason) === "diverged").length;
  if (!n || !sweep.next_cursor) return "";
  return ` (${n} of the first ${items.length.toLocaleString()} read diverged; they count as succeeded above)`;
}

const SHADES = 10;

/** Each cell: the lowest finite final f among its jobs; a cell whose finished jobs all diverged
 * (f infinite or NaN) is drawn apart ("diverged", dark red, hatched), never in the scale's colours. */
function heatMap(sweep, items, keyA, keyB) {
  const rowsOf = keyA ? sweep.grid[keyA] : [null];
  const colsOf = keyB ? sweep.grid[keyB] : [null];
  const key = (v) => JSON.stringify(v);
  const cells = new Map(); // at -> {best, diverged, jobs}
  for (const item of items) {
    const f = num(item.f);
    const diverged = outcome(item.status, item.stop_reason) === "diverged" || (f !== null && !Number.isFinite(f));
    if (f === null && !diverged) continue;
    const at = `${keyA ? key(item.grid[keyA]) : ""}|${keyB ? key(item.grid[keyB]) : ""}`;
    const cell = cells.get(at) || { best: null, diverged: 0, jobs: 0 };
    cell.jobs += 1;
    if (diverged) cell.diverged += 1;
    else if (Number.isFinite(f)) cell.best = cell.best === null ? f : Math.min(cell.best, f);
    cells.set(at, cell);
  }
  const finite = [...cells.values()].map((c) => c.best).filter((f) => f !== null);
  const scale = contourLevels(finite);
  if (finite.length && scale.hi === scale.lo) Object.assign(scale, { lo: finite[0], hi: finite[0] });
  const position = (f) => {
    if (scale.hi === scale.lo) return 0;
    return scale.log ? (Math.log10(f + scale.offset) - Math.log10(scale.lo + scale.offset))
      / (Math.log10(scale.hi + scale.offset) - Math.log10(scale.lo + scale.offset)) : (f - scale.lo) / (scale.hi - scale.lo);
  };
  const shade = (f) => Math.max(0, Math.min(SHADES - 1, Math.floor(position(f) * SHADES)));
  const anyDiverged = [...cells.values()].some((c) => c.diverged);
  const td = (at) => {
    const cell = cells.get(at);
    if (!cell) return el("td", { class: "heat-none", text: "—" });
    if (cell.best === null) {
      return el("td", { class: "heat-diverged", "data-f": "diverged", "data-diverged": cell.diverged,
        title: `all ${cell.jobs} job${cell.jobs === 1 ? "" : "s"} diverged`, text: "diverged" });
    }
    const some = cell.diverged ? el("span", { class: "heat-some", text: ` (${cell.diverged} diverged)` }) : null;
    return el("td", { class: `heat-${shade(cell.best)}`, "data-f": cell.best, "data-diverged": cell.diverged,
      title: `lowest final f ${cell.best}` + (cell.diverged ? `; ${cell.diverged} of ${cell.jobs} jobs diverged` : "") },
    fmt(cell.best, 4), some);
  };
  const table = el("table", { class: "heat", id: "heat-map" },
    el("thead", {}, el("tr", {}, el("th", { text: `${keyA || ""} \\ ${keyB || ""}` }),
      ...colsOf.map((c) => el("th", { text: keyB ? JSON.stringify(c) : "f" })))),
    el("tbody", {}, ...rowsOf.map((r) => el("tr", {}, el("th", { text: keyA ? JSON.stringify(r) : "" }),
      ...colsOf.map((c) => td(`${keyA ? key(r) : ""}|${keyB ? key(c) : ""}`))))));
  // The colour bar: the shades from the lowest to the highest final f (log-spaced when f spans
  // decades), and the diverged cells' colour apart.
  const legend = el("div", { class: "heat-legend", id: "heat-legend" });
  if (finite.length) {
    legend.append(el("span", { class: "muted", text: "lowest final f " }), el("span", { class: "mono", id: "heat-lo", text: fmt(scale.lo, 4) }),
      el("span", { class: "heat-bar" }, ...Array.from({ length: SHADES }, (_, k) => el("span", { class: `heat-${k}` }))),
      el("span", { class: "mono", id: "heat-hi", text: fmt(scale.hi, 4) }),
      el("span", { class: "muted", text: scale.log ? " (log scale)" : "" }));
  }
  if (anyDiverged) {
    legend.append(el("span", { class: "heat-key" }, el("span", { class: "swatch heat-diverged" }),
      el("span", { id: "heat-diverged-key", text: " diverged: f infinite or NaN (no finite f to rank)" })));
  }
  return el("div", {}, table, legend);
}
