// The sweeps: newest first, a page at a time (older / newer, with the API's cursor), each with its
// jobs by outcome (diverged apart from succeeded) and its grid; refreshed while any of them runs.

import { ApiError, STATUSES, UNFINISHED, banner, el, failureBanner, getJSON, unreachable, when } from "./api.js";

const POLL_MS = 3000;
const PAGE = 50;

/** The outcomes a sweep's jobs are counted by: the statuses, with "diverged" after "succeeded". */
function outcomeNames() {
  return STATUSES.flatMap((status) => (status === "succeeded" ? [status, "diverged"] : [status]));
}

/** A sweep's jobs by outcome: a diverged job (counted in succeeded by the API) only as diverged. */
export function outcomes(sweep) {
  const counts = { ...(sweep.counts || {}) };
  counts.diverged = sweep.diverged || 0;
  counts.succeeded = (counts.succeeded || 0) - counts.diverged;
  return counts;
}

/** "4 succeeded · 2 diverged", the outcomes that have jobs, in lifecycle order. */
export function outcomeText(sweep) {
  const counts = outcomes(sweep);
  return outcomeNames().filter((k) => counts[k]).map((k) => `${counts[k].toLocaleString()} ${k}`).join(" · ") || "none yet";
}

/** The grid in words: "optimizer.name (sgd, adam) × optimizer.lr (0.001, 0.01) × 1000 starts". */
export function gridText(sweep) {
  const keys = Object.entries(sweep.grid || {}).map(([k, values]) => `${k} (${values.map((v) => JSON.stringify(v)).join(", ")})`);
  const perCombination = sweep.jobs / Object.values(sweep.grid || {}).reduce((n, values) => n * values.length, 1);
  if (perCombination > 1) keys.push(`${perCombination.toLocaleString()} starts`);
  return keys.join(" × ") || "one job";
}

export async function sweepsPage(main) {
  document.title = "Descent · sweeps";
  const body = el("tbody", { id: "sweeps-body" });
  const table = el("table", { class: "jobs", id: "sweeps" },
    el("thead", {}, el("tr", {}, ...["name", "jobs", "outcomes", "grid", "owner", "created"].map((h) => el("th", { text: h })))),
    body);
  const newest = el("button", { type: "button", id: "sweeps-newest", text: "« newest" });
  const newer = el("button", { type: "button", id: "sweeps-newer", text: "‹ newer" });
  const older = el("button", { type: "button", id: "sweeps-older", text: "older ›" });
  const where = el("span", { class: "muted", id: "sweeps-where" });
  const info = el("p", { class: "muted", id: "sweeps-info" });
  main.replaceChildren(el("h1", { text: "Sweeps" }),
    el("p", { class: "muted", text: "Many jobs from one request (POST /v1/sweeps, descent sweep FILE): newest first." }),
    table, el("p", { class: "pager" }, newest, " ", newer, " ", where, " ", older), info);

  const paging = { cursors: [], next: null };
  let timer = null, lastOk = null, loading = 0;
  const go = (cursors) => { paging.cursors = cursors; load(); };
  newest.addEventListener("click", () => go([]));
  newer.addEventListener("click", () => go(paging.cursors.slice(0, -1)));
  older.addEventListener("click", () => { if (paging.next) go([...paging.cursors, paging.next]); });

  async function load() {
    clearTimeout(timer);
    const mine = ++loading;
    const cursor = paging.cursors[paging.cursors.length - 1];
    let active = false;
    try {
      const page = await getJSON(`/v1/sweeps?limit=${PAGE}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
      if (mine !== loading) return;
      paging.next = page.next_cursor;
      body.replaceChildren(...page.sweeps.map(row));
      active = page.sweeps.some((s) => UNFINISHED.some((status) => (s.counts[status] || 0) > 0));
      const first = paging.cursors.length * PAGE;
      where.textContent = page.sweeps.length ? `sweeps ${first + 1}–${first + page.sweeps.length}, newest first` : "";
      newest.disabled = newer.disabled = paging.cursors.length === 0;
      older.disabled = !paging.next;
      lastOk = new Date();
      info.textContent = page.sweeps.length || paging.cursors.length
        ? `refreshed ${lastOk.toLocaleTimeString()}` : "No sweeps yet: submit one with POST /v1/sweeps or descent sweep FILE.";
      table.classList.remove("stale");
      delete table.dataset.stale;
      banner("");
    } catch (err) {
      if (mine !== loading) return;
      if (err instanceof ApiError && err.field === "cursor" && paging.cursors.length) { go([]); return; }
      if (!lastOk && !unreachable(err)) throw err; // nothing shown yet: the page says why
      failureBanner(err, lastOk);
      table.classList.add("stale");
      table.dataset.stale = "true";
      info.textContent = lastOk ? `The rows above are as of ${lastOk.toLocaleTimeString()}, not current.` : "No sweeps could be read yet.";
      active = true; // try again
    }
    if (active) timer = setTimeout(load, POLL_MS);
  }
  await load();
}

function row(sweep) {
  const counts = outcomes(sweep);
  const bar = el("span", { class: "outcome-bar", title: outcomeText(sweep) },
    ...outcomeNames().filter((k) => counts[k]).map((k) => el("span", { class: `status-${k}`, "data-outcome": k,
      "data-share": (counts[k] / sweep.jobs).toFixed(4) })));
  // The bar's segments are sized by a CSS custom property set from script (no inline styles).
  bar.childNodes.forEach((segment) => segment.style.setProperty("--share", segment.dataset.share));
  return el("tr", { "data-sweep": sweep.id, "data-diverged": sweep.diverged },
    el("td", {}, el("a", { href: `/sweeps/${encodeURIComponent(sweep.id)}`, text: sweep.name || sweep.id.slice(0, 8) })),
    el("td", { class: "num", text: sweep.jobs.toLocaleString() }),
    el("td", { class: "outcomes" }, bar, " ", el("span", { class: "sweep-outcomes", text: outcomeText(sweep) })),
    el("td", { class: "mono", text: gridText(sweep) }),
    el("td", { text: sweep.owner }),
    el("td", { text: when(sweep.created_at) }),
  );
}
