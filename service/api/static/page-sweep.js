// A sweep: its counts (diverged apart), a heat map of final f over two grid keys with a colour bar
// (the API's grid: every job of the sweep, each cell's min, median or mean, computed in SQL), its
// summary table a page at a time in the API's order (by creation or by final f), and a link to
// compare the whole sweep. The heat map's keys and stat, the table's order and page size are kept
// in the page's URL. Refreshed while any of its jobs is queued or running.

import { UNFINISHED, banner, deleteAfterAsking, el, errorText, failureBanner, fmt, getJSON, num, statusBadge } from "./api.js";
import { contourLevels } from "./contour.js";
import { MAX_SWEEP_PATHS } from "./page-compare.js";
import { outcomeText } from "./page-sweeps.js";

const POLL_MS = 3000;
const STATS = { min: "the lowest", median: "the median", mean: "the mean" };
const SORTS = { created: "the sweep's order", f: "final f, best first" };
const PAGE_SIZES = [25, 100, 500, 1000];
const SHADES = 10;

export async function sweepPage(main, sweepId) {
  const params = new URLSearchParams(location.search);
  const asked = Number(params.get("limit"));
  const state = {
    id: sweepId, rows: params.get("rows"), cols: params.get("cols"),
    stat: STATS[params.get("stat")] ? params.get("stat") : "min",
    sort: SORTS[params.get("sort")] ? params.get("sort") : "created",
    limit: PAGE_SIZES.includes(asked) ? asked : 100,
    cursors: [], next: null, sweep: null,
  };
  const head = el("section", { class: "job-head" });
  const heat = el("section", { class: "panel" });
  const table = el("section", { class: "panel wide" });
  main.replaceChildren(head, heat, table);
  Object.assign(state, { main, head, heat, table });
  let lastOk = null;
  const load = async () => {
    try {
      await refresh(state);
      lastOk = new Date();
      main.classList.remove("stale");
      banner("");
      const counts = state.sweep.counts || {};
      if (UNFINISHED.some((status) => (counts[status] || 0) > 0)) setTimeout(load, POLL_MS);
    } catch (err) {
      if (!lastOk) throw err; // nothing shown yet: the page says why
      failureBanner(err, lastOk);
      main.classList.add("stale");
      setTimeout(load, POLL_MS);
    }
  };
  await load();
}

/** The page's choices in its URL, so that a view can be shared or reloaded. */
function keepInUrl(state) {
  const q = new URLSearchParams();
  if (state.rows) q.set("rows", state.rows);
  if (state.cols) q.set("cols", state.cols);
  if (state.stat !== "min") q.set("stat", state.stat);
  if (state.sort !== "created") q.set("sort", state.sort);
  if (state.limit !== 100) q.set("limit", String(state.limit));
  history.replaceState(history.state, "", `${location.pathname}${q.toString() ? `?${q}` : ""}`);
}

/** Read the summary page shown and the grid, and draw everything. */
async function refresh(state) {
  const cursor = state.cursors[state.cursors.length - 1];
  const sweep = await getJSON(`/v1/sweeps/${encodeURIComponent(state.id)}?limit=${state.limit}&sort=${state.sort}`
    + (cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""));
  state.sweep = sweep;
  state.next = sweep.next_cursor;
  const all = Object.keys(sweep.grid || {});
  const varied = all.filter((k) => (sweep.grid[k] || []).length > 1);
  if (!all.includes(state.rows)) state.rows = varied[0] || all[0] || null;
  if (!all.includes(state.cols) || state.cols === state.rows) state.cols = varied.find((k) => k !== state.rows) || null;
  if (!state.rows) state.cols = null;
  keepInUrl(state);
  const q = new URLSearchParams({ stat: state.stat });
  if (state.rows) q.set("rows", state.rows);
  if (state.cols) q.set("cols", state.cols);
  const grid = await getJSON(`/v1/sweeps/${encodeURIComponent(state.id)}/grid?${q}`);
  renderHead(state);
  renderHeat(state, grid);
  renderTable(state);
  window.descent.plotted = { sweep: sweep.id, grid, ready: true };
}

function renderHead(state) {
  const sweep = state.sweep;
  const remove = el("button", {
    type: "button", class: "danger", id: "delete-sweep", text: "Delete…",
    onclick: async () => {
      try {
        const gone = await deleteAfterAsking(`/v1/sweeps/${encodeURIComponent(sweep.id)}`,
          `Delete sweep ${sweep.name || sweep.id} and its ${sweep.jobs.toLocaleString()} jobs, with their histories and `
          + "data? Unfinished jobs are cancelled first. This cannot be undone.");
        if (gone) location.assign("/sweeps");
      } catch (err) { banner(errorText(err)); }
    },
  });
  state.head.replaceChildren(
    el("p", { class: "muted crumbs" }, el("a", { href: "/sweeps", text: "Sweeps" }), " /"),
    el("h1", { text: sweep.name || `Sweep ${sweep.id.slice(0, 8)}` }),
    el("p", { id: "sweep-counts", text: `${sweep.jobs.toLocaleString()} jobs: ${outcomeText(sweep)}` }),
    el("p", { class: "actions" }, el("a", { id: "compare-sweep", href: `/compare?sweep=${encodeURIComponent(sweep.id)}`,
      text: sweep.jobs <= MAX_SWEEP_PATHS ? `compare its ${sweep.jobs} jobs`
        : `compare the sweep (its ${MAX_SWEEP_PATHS} best of ${sweep.jobs.toLocaleString()} jobs drawn)` }), " ", remove),
  );
}

/** A grid value as a label: a string as it is, a number or anything else as JSON. */
function valueText(v) {
  return typeof v === "string" ? v : JSON.stringify(v);
}

/** The heat map: each cell the chosen stat of its jobs' finite final f (the API's grid, over every
 * job); a cell whose finished jobs all diverged is drawn apart ("diverged", hatched dark red), never
 * in the scale's colours; the colour bar under it. */
function renderHeat(state, grid) {
  const sweep = state.sweep;
  const all = Object.keys(sweep.grid || {});
  state.heat.replaceChildren(el("h2", { text: "Final f over the grid" }));
  if (!all.length) {
    state.heat.append(el("p", { class: "muted", text: "This sweep has no grid (only starts)." }));
  } else {
    const pick = (which, none) => {
      const select = el("select", { id: `heat-${which}` }, ...(none ? [el("option", { value: "", text: "—" })] : []),
        ...all.map((k) => el("option", { value: k, text: k })));
      select.value = state[which] || "";
      select.addEventListener("change", () => { state[which] = select.value || null; refresh(state).catch(showError); });
      return select;
    };
    const stat = el("select", { id: "heat-stat" }, ...Object.keys(STATS).map((k) => el("option", { value: k, text: k })));
    stat.value = state.stat;
    stat.addEventListener("change", () => { state.stat = stat.value; refresh(state).catch(showError); });
    state.heat.append(el("p", { class: "controls" }, "rows ", pick("rows", false), " columns ", pick("cols", true), " cell ", stat,
      el("span", { class: "muted", text: ` (each cell: ${STATS[state.stat]} finite final f of its jobs, over all `
        + `${sweep.jobs.toLocaleString()}; lighter is lower; a cell whose jobs all diverged is hatched red)` })));
  }
  state.heat.append(heatMap(grid));
}

function showError(err) {
  banner(errorText(err));
}

function heatMap(grid) {
  const finite = grid.cells.flat().map(num).filter((f) => f !== null && Number.isFinite(f));
  const scale = contourLevels(finite);
  if (finite.length && scale.hi === scale.lo) Object.assign(scale, { lo: Math.min(...finite), hi: Math.max(...finite) });
  const position = (f) => {
    if (scale.hi === scale.lo) return 0;
    return scale.log ? (Math.log10(f + scale.offset) - Math.log10(scale.lo + scale.offset))
      / (Math.log10(scale.hi + scale.offset) - Math.log10(scale.lo + scale.offset)) : (f - scale.lo) / (scale.hi - scale.lo);
  };
  const shade = (f) => Math.max(0, Math.min(SHADES - 1, Math.floor(position(f) * SHADES)));
  const word = (n, noun) => `${n.toLocaleString()} ${noun}${n === 1 ? "" : "s"}`;
  const td = (i, j) => {
    const f = num(grid.cells[i][j]);
    const n = grid.counts[i][j], bad = grid.diverged[i][j], ranked = grid.finite[i][j];
    const where = [grid.rows_key && `${grid.rows_key}=${valueText(grid.rows[i])}`, grid.cols_key && `${grid.cols_key}=${valueText(grid.cols[j])}`]
      .filter(Boolean).join(", ");
    const about = `${where ? `${where}: ` : ""}${word(n, "job")}, ${ranked} with a finite final f, ${bad} diverged`;
    if (f === null) {
      if (bad) {
        return el("td", { class: "heat-diverged", "data-f": "diverged", "data-diverged": bad, "data-count": n, title: about,
          text: bad === n ? "diverged" : `diverged (${bad} of ${n})` });
      }
      return el("td", { class: "heat-none", "data-count": n, title: about, text: "—" });
    }
    const some = bad ? el("span", { class: "heat-some", text: ` (${bad} diverged)` }) : null;
    return el("td", { class: `heat-${shade(f)}`, "data-f": f, "data-diverged": bad, "data-count": n, title: `${about}; ${grid.stat} f ${f}` },
      fmt(f, 4), some);
  };
  const table = el("table", { class: "heat", id: "heat-map", "data-stat": grid.stat },
    el("thead", {}, el("tr", {}, el("th", { text: `${grid.rows_key || ""} \\ ${grid.cols_key || ""}` }),
      ...grid.cols.map((c) => el("th", { text: grid.cols_key ? valueText(c) : "f" })))),
    el("tbody", {}, ...grid.rows.map((r, i) => el("tr", {}, el("th", { text: grid.rows_key ? valueText(r) : "all jobs" }),
      ...grid.cols.map((_, j) => td(i, j))))));
  // The colour bar: the shades from the lowest to the highest cell (log-spaced when they span
  // decades), and the diverged cells' colour apart.
  const legend = el("div", { class: "heat-legend", id: "heat-legend" });
  if (finite.length) {
    legend.append(el("span", { class: "muted", text: `${grid.stat} final f ` }), el("span", { class: "mono", id: "heat-lo", text: fmt(scale.lo, 4) }),
      el("span", { class: "heat-bar" }, ...Array.from({ length: SHADES }, (_, k) => el("span", { class: `heat-${k}` }))),
      el("span", { class: "mono", id: "heat-hi", text: fmt(scale.hi, 4) }),
      el("span", { class: "muted", text: scale.log ? " (log scale)" : "" }));
  }
  if (grid.diverged.flat().some(Boolean)) {
    legend.append(el("span", { class: "heat-key" }, el("span", { class: "swatch heat-diverged" }),
      el("span", { id: "heat-diverged-key", text: " diverged: f infinite or NaN (no finite f to rank)" })));
  }
  const total = grid.counts.flat().reduce((a, b) => a + b, 0);
  return el("div", {}, table, legend, el("p", { class: "muted", id: "heat-total", text: `${total.toLocaleString()} jobs in the grid` }));
}

/** The summary: a page of the sweep's jobs in the API's order, with older / newer. */
function renderTable(state) {
  const sweep = state.sweep;
  const items = sweep.summary || [];
  const gridKeys = Object.keys(sweep.grid || {});
  const sort = el("select", { id: "summary-sort" }, ...Object.entries(SORTS).map(([k, text]) => el("option", { value: k, text })));
  sort.value = state.sort;
  sort.addEventListener("change", () => { state.sort = sort.value; state.cursors = []; refresh(state).catch(showError); });
  const size = el("select", { id: "summary-limit" }, ...PAGE_SIZES.map((n) => el("option", { value: n, text: String(n) })));
  size.value = String(state.limit);
  size.addEventListener("change", () => { state.limit = Number(size.value); state.cursors = []; refresh(state).catch(showError); });
  const go = (cursors) => { state.cursors = cursors; refresh(state).catch(showError); };
  const first = el("button", { type: "button", id: "summary-first", text: "« first", disabled: !state.cursors.length, onclick: () => go([]) });
  const back = el("button", { type: "button", id: "summary-back", text: "‹ back", disabled: !state.cursors.length,
    onclick: () => go(state.cursors.slice(0, -1)) });
  const on = el("button", { type: "button", id: "summary-next", text: "next ›", disabled: !state.next,
    onclick: () => go([...state.cursors, state.next]) });
  const from = state.cursors.length * state.limit;
  const where = el("span", { class: "muted", id: "summary-where",
    text: items.length ? `jobs ${(from + 1).toLocaleString()}–${(from + items.length).toLocaleString()} of ${sweep.jobs.toLocaleString()}` : "no jobs" });
  state.table.replaceChildren(el("h2", { text: "Summary" }),
    el("p", { class: "controls" }, "order ", sort, " per page ", size),
    el("table", { class: "jobs", id: "sweep-summary" },
      el("thead", {}, el("tr", {}, ...["#", ...gridKeys, "start", "status", "final f", "stop reason", "distance to min", "steps to tol."]
        .map((h) => el("th", { text: h })))),
      el("tbody", {}, ...items.map((item) => el("tr", { "data-job": item.id },
        el("td", {}, el("a", { href: `/jobs/${encodeURIComponent(item.id)}`, text: String(item.index) })),
        ...gridKeys.map((k) => el("td", { text: valueText((item.grid || {})[k]) })),
        el("td", { text: String(item.start ?? "—") }),
        el("td", {}, statusBadge(item.status, null, item.stop_reason)),
        el("td", { class: "num", text: fmt(num(item.f)) }),
        el("td", { text: item.stop_reason || "—" }),
        el("td", { class: "num", text: fmt(num(item.distance_to_minimum)) }),
        el("td", { class: "num", text: fmt(item.steps_to_tolerance) }),
      )))),
    el("p", { class: "pager", id: "summary-pager" }, first, " ", back, " ", where, " ", on));
}
