// The job list: filters (kept in the page's URL), newest first, refreshed every couple of seconds.

import { banner, el, errorText, fmt, getJSON, num, objectiveText, optimizerText, statusBadge, when } from "./api.js";

const POLL_MS = 2000;
const STATUSES = ["", "queued", "running", "succeeded", "failed", "cancelled"];
const STOP_REASONS = ["", "steps", "grad_norm", "time_limit", "diverged", "cancelled"];
const FILTERS = ["status", "name", "stop_reason", "tag"];

export async function listPage(main) {
  const params = new URLSearchParams(location.search);
  const input = (name, attrs) => {
    const node = el("input", { name, id: `filter-${name}`, ...attrs });
    node.value = params.get(name) || "";
    return node;
  };
  const select = (name, options) => {
    const node = el("select", { name, id: `filter-${name}` },
      ...options.map((o) => el("option", { value: o, text: o || "any" })));
    node.value = params.get(name) || "";
    return node;
  };
  const form = el("form", { class: "filters", id: "filters" },
    el("label", {}, "status ", select("status", STATUSES)),
    el("label", {}, "name ", input("name", { size: 16 })),
    el("label", {}, "stop reason ", select("stop_reason", STOP_REASONS)),
    el("label", {}, "tag ", input("tag", { size: 16, placeholder: "key:value" })),
    el("button", { type: "submit", text: "Filter" }),
  );
  const compare = el("button", { type: "button", id: "compare-selected", text: "Compare selected", disabled: true });
  const body = el("tbody", { id: "jobs-body" });
  const table = el("table", { class: "jobs", id: "jobs" },
    el("thead", {}, el("tr", {}, ...["", "status", "name", "objective", "optimizer", "final f", "stop reason", "created"]
      .map((h) => el("th", { text: h })))), body);
  const info = el("p", { class: "muted", id: "jobs-info" });
  main.replaceChildren(el("h1", { text: "Jobs" }), form, el("p", {}, compare, " ", el("a", { href: "/submit", text: "submit a job" })), table, info);

  const selected = new Set();
  compare.addEventListener("click", () => { location.assign(`/compare?jobs=${[...selected].join(",")}`); });
  const current = () => {
    const q = new URLSearchParams();
    for (const name of FILTERS) {
      const value = form.elements[name].value.trim();
      if (value) q.set(name, value);
    }
    return q;
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const q = current();
    history.replaceState(null, "", q.toString() ? `/?${q}` : "/");
    load();
  });

  let timer = null;
  async function load() {
    clearTimeout(timer);
    const q = current();
    q.set("order", "desc");
    q.set("limit", "100");
    try {
      const page = await getJSON(`/v1/jobs?${q}`);
      body.replaceChildren(...page.jobs.map((job) => row(job, selected, compare)));
      info.textContent = `${page.jobs.length} job${page.jobs.length === 1 ? "" : "s"}${page.next_cursor ? " (newest 100 shown)" : ""} · refreshed ${new Date().toLocaleTimeString()}`;
      banner("");
    } catch (err) {
      banner(errorText(err));
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
  });
  const link = el("a", { href: `/jobs/${encodeURIComponent(job.id)}`, text: job.name || job.id.slice(0, 8) });
  return el("tr", { "data-job": job.id, "data-status": job.status },
    el("td", {}, box),
    el("td", {}, statusBadge(job.status)),
    el("td", {}, link),
    el("td", { class: "mono", text: objectiveText(job.spec) }),
    el("td", { text: optimizerText(job.spec) }),
    el("td", { class: "num", text: fmt(num(result.f)) }),
    el("td", { text: result.stop_reason || "—" }),
    el("td", { text: when(job.created_at) }),
  );
}
