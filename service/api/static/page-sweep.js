// A sweep: its counts, its summary table, a heat map of final f over two grid keys, and a link
// to compare the whole sweep (the compare view draws its best jobs by final f, as many as it
// can show). Refreshed while any of its jobs is queued or running.

import { banner, deleteAfterAsking, el, errorText, fmt, getJSON, num, statusBadge } from "./api.js";
import { contourLevels } from "./contour.js";
import { MAX_SWEEP_PATHS } from "./page-compare.js";

const POLL_MS = 3000;

export async function sweepPage(main, sweepId) {
  const state = { keyA: null, keyB: null };
  const head = el("section", { class: "job-head" });
  const heat = el("section", { class: "panel" });
  const table = el("section", { class: "panel wide" });
  main.replaceChildren(head, heat, table);
  const load = async () => {
    try {
      const sweep = await getJSON(`/v1/sweeps/${encodeURIComponent(sweepId)}?limit=1000&sort=created`);
      render(sweep, state, head, heat, table);
      banner("");
      const counts = sweep.counts || {};
      if ((counts.queued || 0) + (counts.running || 0) > 0) setTimeout(load, POLL_MS);
    } catch (err) {
      banner(errorText(err));
    }
  };
  await load();
}

function render(sweep, state, head, heat, table) {
  const items = sweep.summary || [];
  const counts = Object.entries(sweep.counts || {}).filter(([, n]) => n).map(([s, n]) => `${n} ${s}`).join(" · ");
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
    el("p", { id: "sweep-counts", text: `${sweep.jobs} jobs: ${counts || "none yet"}` }),
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
      el("span", { class: "muted", text: " (each cell: the lowest final f among its jobs; lighter is lower)" })));
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
      el("td", {}, statusBadge(item.status)),
      el("td", { class: "num", text: fmt(num(item.f)) }),
      el("td", { text: item.stop_reason || "—" }),
      el("td", { class: "num", text: fmt(num(item.distance_to_minimum)) }),
      el("td", { class: "num", text: fmt(item.steps_to_tolerance) }),
    )))));
  if (sweep.next_cursor) table.append(el("p", { class: "muted", text: "The first 1,000 jobs are shown." }));
}

function heatMap(sweep, items, keyA, keyB) {
  const rowsOf = keyA ? sweep.grid[keyA] : [null];
  const colsOf = keyB ? sweep.grid[keyB] : [null];
  const key = (v) => JSON.stringify(v);
  const cells = new Map();
  for (const item of items) {
    const f = num(item.f);
    if (f === null || Number.isNaN(f)) continue;
    const at = `${keyA ? key(item.grid[keyA]) : ""}|${keyB ? key(item.grid[keyB]) : ""}`;
    cells.set(at, Math.min(cells.has(at) ? cells.get(at) : Infinity, f));
  }
  const scale = contourLevels([...cells.values()].filter(Number.isFinite));
  const shade = (f) => {
    if (!Number.isFinite(f) || scale.hi === scale.lo) return 0;
    const t = scale.log ? (Math.log10(f + scale.offset) - Math.log10(scale.lo + scale.offset))
      / (Math.log10(scale.hi + scale.offset) - Math.log10(scale.lo + scale.offset)) : (f - scale.lo) / (scale.hi - scale.lo);
    return Math.max(0, Math.min(9, Math.floor(t * 10)));
  };
  return el("table", { class: "heat", id: "heat-map" },
    el("thead", {}, el("tr", {}, el("th", { text: `${keyA || ""} \\ ${keyB || ""}` }),
      ...colsOf.map((c) => el("th", { text: keyB ? JSON.stringify(c) : "f" })))),
    el("tbody", {}, ...rowsOf.map((r) => el("tr", {}, el("th", { text: keyA ? JSON.stringify(r) : "" }),
      ...colsOf.map((c) => {
        const at = `${keyA ? key(r) : ""}|${keyB ? key(c) : ""}`;
        const f = cells.get(at);
        return el("td", { class: f === undefined ? "heat-none" : `heat-${shade(f)}`, "data-f": f, text: f === undefined ? "—" : fmt(f, 4) });
      })))));
}
