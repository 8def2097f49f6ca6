// The job list: filters (kept in the page's URL), newest first, a page at a time (older / newer,
// with the API's cursor), the page shown refreshed every couple of seconds.

import {
  ApiError, STATUSES, STOP_REASONS, banner, el, failureBanner, fmt, getJSON, jobOutcome, num, objectiveText, optimizerText,
  statusBadge, unreachable, when,
} from "./api.js";

const POLL_MS = 2000;
const FILTERS = ["status", "name", "stop_reason", "tag"];
const PAGE_SIZES = [25, 50, 100, 200];
const DEFAULT_PAGE = 100;
const MAX_PAGE = 1000; // the API's bound on limit

export async function listPage(main) {
  const params = new URLSearchParams(location.search);
  const input = (name, attrs) => {
    const node = el("input", { name, id: `filter-${name}`, ...attrs });
    node.value = params.get(name) || "";
    return node;
  };
  const select = (name, options, value) => {
    const node = el("select", { name, id: `filter-${name}` },
      ...options.map((o) => el("option", { value: o, text: o || "any" })));
    node.value = value;
    return node;
  };
  const asked = Number(params.get("limit"));
  const limit = Number.isInteger(asked) && asked >= 1 && asked <= MAX_PAGE ? asked : DEFAULT_PAGE;
  const sizes = [...new Set([...PAGE_SIZES, limit])].sort((a, b) => a - b).map(String);
  const form = el("form", { class: "filters", id: "filters" },
    el("label", {}, "status ", select("status", ["", ...STATUSES], params.get("status") || "")),
    el("label", {}, "name ", input("name", { size: 16 })),
    el("label", {}, "stop reason ", select("stop_reason", ["", ...STOP_REASONS], params.get("stop_reason") || "")),
    el("label", {}, "tag ", input("tag", { size: 16, placeholder: "key:value" })),
    el("label", {}, "per page ", select("limit", sizes, String(limit))),
    el("button", { type: "submit", text: "Filter" }),
  );
  const compare = el("button", { type: "button", id: "compare-selected", text: "Compare selected", disabled: true });
  const body = el("tbody", { id: "jobs-body" });
  const table = el("table", { class: "jobs", id: "jobs" },
    el("thead", {}, el("tr", {}, ...["", "status", "name", "sweep", "objective", "optimizer", "final f", "stop reason", "created"]
      .map((h) => el("th", { text: h })))), body);
  const info = el("p", { class: "muted", id: "jobs-info" });
  const newest = el("button", { type: "button", id: "page-newest", text: "« newest" });
  const newer = el("button", { type: "button", id: "page-newer", text: "‹ newer" });
  const older = el("button", { type: "button", id: "page-older", text: "older ›" });
  const where = el("span", { class: "muted", id: "page-where" });
  const pager = el("p", { class: "pager", id: "pager" }, newest, " ", newer, " ", where, " ", older);
  main.replaceChildren(el("h1", { text: "Jobs" }), form, el("p", {}, compare, " ", el("a", { href: "/submit", text: "submit a job" })),
    table, pager, info);

  // The page shown: the cursors that lead to it from the newest page ([] for the newest). Kept in
  // the tab's history entry, so a reload stays on the page; a cursor anchors a page at a job, so
  // jobs submitted meanwhile do not shift the older pages.
  const kept = history.state && history.state.listQuery === location.search && history.state.cursors;
  const paging = { cursors: Array.isArray(kept) ? kept : [], next: null };
  const remember = () => history.replaceState({ ...(history.state || {}), listQuery: location.search, cursors: paging.cursors }, "");

  const selected = new Set();
  compare.addEventListener("click", () => { location.assign(`/compare?jobs=${[...selected].join(",")}`); });
  const current = () => {
    const q = new URLSearchParams();
    for (const name of FILTERS) {
      const value = form.elements[name].value.trim();
      if (value) q.set(name, value);
    }
    if (form.elements.limit.value !== String(DEFAULT_PAGE)) q.set("limit", form.elements.limit.value);
    return q;
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const q = current();
    history.replaceState(null, "", q.toString() ? `/?${q}` : "/");
    paging.cursors = [];
    remember();
    load();
  });
  const go = (cursors) => {
    paging.cursors = cursors;
    remember();
    load();
  };
  form.elements.limit.addEventListener("change", () => form.requestSubmit());
  newest.addEventListener("click", () => go([]));
  newer.addEventListener("click", () => go(paging.cursors.slice(0, -1)));
  older.addEventListener("click", () => { if (paging.next) go([...paging.cursors, paging.next]); });

  let timer = null;
  let lastOk = null; // when the rows shown were read
  let loading = 0; // the latest load wins: a slow answer for a page left behind is dropped
  async function load() {
    clearTimeout(timer);
    const mine = ++loading;
    const q = current();
    q.set("order", "desc");
    q.set("limit", form.elements.limit.value);
    const cursor = paging.cursors[paging.cursors.length - 1];
    if (cursor) q.set("cursor", cursor);
    try {
      const page = await getJSON(`/v1/jobs?${q}`);
      if (mine !== loading) return;
      paging.next = page.next_cursor;
      body.replaceChildren(...page.jobs.map((job) => row(job, selected, compare)));
      const first = paging.cursors.length * Number(form.elements.limit.value);
      where.textContent = page.jobs.length ? `jobs ${first + 1}–${first + page.jobs.length}, newest first` : "no jobs here";
      newest.disabled = newer.disabled = paging.cursors.length === 0;
      older.disabled = !paging.next;
      lastOk = new Date();
      info.textContent = `${page.jobs.length} job${page.jobs.length === 1 ? "" : "s"} on this page · refreshed ${lastOk.toLocaleTimeString()}`;
      table.classList.remove("stale");
      delete table.dataset.stale;
      banner("");
    } catch (err) {
      if (mine !== loading) return;
      if (err instanceof ApiError && err.field === "cursor" && paging.cursors.length) {
        go([]); // a cursor this service no longer reads (an old tab): start again from the newest
        return;
      }
      failureBanner(err, lastOk);
      // The rows shown are as of the last answer: greyed, and said so, never passed off as current.
      table.classList.add("stale");
      table.dataset.stale = "true";
      info.textContent = lastOk
        ? `${unreachable(err) ? "The API cannot be reached" : "The last refresh failed"}: the rows above are as of ${lastOk.toLocaleTimeString()}, not current.`
        : "No jobs could be read yet.";
    }
    timer = setTimeout(load, POLL_MS);
  }
  await load();
}

function row(job, selected, compare) {
  const result = job.result || {};
  const box = el("input", { type: "checkbox", class: "pick", "data-job": job.id, checked: selected.has(job.id) });
  box.addEventListener("change", () => {
    if (box.checked) selected.add(job.id); else selected.delete(job.id);
    compare.disabled = selected.size < 1;
    compare.textContent = selected.size ? `Compare selected (${selected.size})` : "Compare selected";
  });
  const link = el("a", { href: `/jobs/${encodeURIComponent(job.id)}`, text: job.name || job.id.slice(0, 8) });
  return el("tr", { "data-job": job.id, "data-status": job.status, "data-outcome": jobOutcome(job) },
    el("td", {}, box),
    el("td", {}, statusBadge(job.status, null, result.stop_reason)),
    el("td", {}, link),
    el("td", { class: "sweep-cell" }, job.sweep ? el("a", { href: `/sweeps/${encodeURIComponent(job.sweep.id)}`,
      class: "sweep-link", title: `job #${job.sweep.index} of sweep ${job.sweep.id}`, text: `${job.sweep.id.slice(0, 8)} #${job.sweep.index}` }) : "—"),
    el("td", { class: "mono", text: objectiveText(job.spec) }),
    el("td", { text: optimizerText(job.spec) }),
    el("td", { class: "num", text: fmt(num(result.f)) }),
    el("td", { text: result.stop_reason || "—" }),
    el("td", { text: when(job.created_at) }),
  );
}
