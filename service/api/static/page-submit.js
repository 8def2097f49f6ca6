// The submit form, built from /v1/objectives and /v1/optimizers, with the lesson's five cases
// (DESIGN.md, "Where it comes from") as one-click examples. On 202 it goes to the job's page.

import { banner, el, errorText, getJSON, postJSON } from "./api.js";

const LOGLOG = "torch.log(torch.log(w + 7)).prod()";
const PARABOLA = "10 * (x ** 2).sum()";
const X12 = [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]];

export const LESSON = [
  { label: "1 · gradient of 10·Σx² at X (3×4)", spec: { name: "lesson 1: gradient of 10 sum x^2", objective: PARABOLA, x0: X12, steps: 0 } },
  { label: "2 · gradient of Π log log(w+7)", spec: { name: "lesson 2: loglog gradient", objective: LOGLOG, variable: "w", x0: [[5, 10], [1, 2]], steps: 0 } },
  { label: "3 · 500 manual SGD steps, lr 0.001", spec: { name: "lesson 3: 500 SGD steps", objective: LOGLOG, variable: "w", x0: [[5, 10], [1, 2]], steps: 500, optimizer: { name: "sgd", lr: 0.001 } } },
  { label: "4 · the same with torch.optim.SGD", spec: { name: "lesson 4: torch.optim.SGD", objective: LOGLOG, variable: "w", x0: [[5, 10], [1, 2]], steps: 500, optimizer: { name: "sgd", lr: 0.001 } } },
  { label: "5 · 10·Σx² from [8, 8], contour", spec: { name: "lesson 5: parabola contour", objective: PARABOLA, x0: [8, 8], steps: 500, optimizer: { name: "sgd", lr: 0.001 }, record: { every: 1, x: true } } },
];

export async function submitPage(main) {
  const [catalog, optim] = await Promise.all([getJSON("/v1/objectives"), getJSON("/v1/optimizers")]);
  const objectives = catalog.objectives;
  const optimizers = optim.optimizers;
  const field = (label, node, help) => el("label", { class: "field" }, el("span", { text: label }), node,
    help ? el("small", { class: "muted", text: help }) : null);
  const f = {
    kind: el("select", { id: "objective-kind" }, el("option", { value: "", text: "expression" }),
      ...objectives.map((o) => el("option", { value: o.name, text: `${o.name} (catalog)` }))),
    expression: el("input", { id: "expression", size: 50, value: PARABOLA }),
    variable: el("input", { id: "variable", size: 6, value: "x" }),
    params: el("input", { id: "params", size: 40, value: "{}" }),
    x0: el("textarea", { id: "x0", rows: 2, cols: 50 }),
    optimizer: el("select", { id: "optimizer" }, ...optimizers.map((o) => el("option", { value: o.name, text: o.name }))),
    lr: el("input", { id: "lr", size: 10, value: "0.001" }),
    extra: el("input", { id: "optimizer-args", size: 40, value: "{}" }),
    steps: el("input", { id: "steps", size: 8, value: "500" }),
    every: el("input", { id: "record-every", size: 6, value: "1" }),
    recordX: el("input", { id: "record-x", type: "checkbox", checked: true }),
    gradNorm: el("input", { id: "stop-grad-norm", size: 10, placeholder: "e.g. 1e-8" }),
    maxSeconds: el("input", { id: "stop-max-seconds", size: 8 }),
    device: el("select", { id: "device" }, ...["auto", "cpu", "gpu"].map((d) => el("option", { value: d, text: d }))),
    dtype: el("select", { id: "dtype" }, ...["float32", "float64"].map((d) => el("option", { value: d, text: d }))),
    name: el("input", { id: "job-name", size: 30 }),
    tags: el("input", { id: "tags", size: 30, value: "{}" }),
  };
  f.x0.value = "[8, 8]";
  f.optimizer.value = "sgd";
  const describe = el("p", { class: "muted", id: "objective-help" });
  const preview = el("pre", { id: "spec-preview", class: "spec" });
  const error = el("p", { class: "error", id: "submit-error" });
  const submit = el("button", { type: "submit", id: "submit-job", text: "Submit job" });
  const form = el("form", { id: "submit-form", class: "submit", autocomplete: "off" },
    field("objective", f.kind), describe,
    field("expression", f.expression, "the objective language: torch-style, e.g. 10 * (x ** 2).sum()"),
    field("variable", f.variable), field("params (JSON)", f.params),
    field("x0 (JSON)", f.x0, "a nested list, or {\"shape\": [...], \"init\": \"normal\", \"seed\": 0}"),
    field("optimizer", f.optimizer), field("lr", f.lr), field("other arguments (JSON)", f.extra),
    field("steps", f.steps), field("record every", f.every), field("record x", f.recordX),
    field("stop at grad norm", f.gradNorm), field("stop after seconds", f.maxSeconds),
    field("device", f.device), field("dtype", f.dtype), field("name", f.name), field("tags (JSON)", f.tags),
    el("p", {}, submit), error);
  const examples = el("div", { class: "examples", id: "examples" }, el("h2", { text: "The lesson's cases" }),
    ...LESSON.map((c, n) => el("button", { type: "button", id: `example-${n + 1}`, class: "example", text: c.label,
      onclick: () => { fill(f, c.spec, objectives); update(); } })));
  main.replaceChildren(el("h1", { text: "Submit a job" }), el("div", { class: "submit-layout" },
    el("div", {}, examples, form), el("section", { class: "panel" }, el("h2", { text: "Spec" }), preview)));

  const showKind = () => {
    const entry = objectives.find((o) => o.name === f.kind.value);
    form.classList.toggle("catalog", !!entry);
    describe.textContent = entry ? `${entry.description}  f = ${entry.formula}` : "";
  };
  function update() {
    showKind();
    try {
      preview.textContent = JSON.stringify(build(f, objectives), null, 2);
      error.textContent = "";
    } catch (err) {
      preview.textContent = "";
      error.textContent = err.message;
    }
  }
  f.kind.addEventListener("change", () => {
    const entry = objectives.find((o) => o.name === f.kind.value);
    if (entry) {
      f.x0.value = JSON.stringify(entry.default_start);
      f.params.value = JSON.stringify(entry.params);
    }
    update();
  });
  f.optimizer.addEventListener("change", () => {
    const entry = optimizers.find((o) => o.name === f.optimizer.value);
    if (entry && entry.arguments && entry.arguments.lr !== undefined) f.lr.value = String(entry.arguments.lr);
    update();
  });
  form.addEventListener("input", update);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    let spec;
    try { spec = build(f, objectives); } catch (err) { error.textContent = err.message; return; }
    submit.disabled = true;
    try {
      const job = await postJSON("/v1/jobs", spec);
      location.assign(`/jobs/${encodeURIComponent(job.id)}`);
    } catch (err) {
      error.textContent = errorText(err);
      submit.disabled = false;
    }
  });
  const asked = new URLSearchParams(location.search).get("example");
  if (asked && LESSON[Number(asked) - 1]) fill(f, LESSON[Number(asked) - 1].spec, objectives);
  update();
  banner("");
}

function json(text, what) {
  try { return JSON.parse(text); } catch (err) { throw new Error(`${what} is not valid JSON: ${err.message}`); }
}

function number(text, what) {
  const n = Number(text);
  if (text.trim() === "" || !Number.isFinite(n)) throw new Error(`${what} must be a number`);
  return n;
}

/** The spec the form says. */
function build(f, objectives) {
  const spec = {};
  if (f.kind.value) {
    const params = json(f.params.value || "{}", "params");
    const entry = objectives.find((o) => o.name === f.kind.value);
    const changed = Object.fromEntries(Object.entries(params).filter(([k, v]) => !entry || entry.params[k] !== v));
    spec.objective = Object.keys(changed).length ? { name: f.kind.value, params: changed } : { name: f.kind.value };
  } else {
    spec.objective = f.expression.value.trim();
    if (f.variable.value.trim() && f.variable.value.trim() !== "x") spec.variable = f.variable.value.trim();
  }
  spec.x0 = json(f.x0.value, "x0");
  spec.steps = number(f.steps.value, "steps");
  spec.optimizer = { name: f.optimizer.value, lr: number(f.lr.value, "lr"), ...json(f.extra.value || "{}", "other arguments") };
  const every = number(f.every.value || "1", "record every");
  if (every !== 1 || !f.recordX.checked) spec.record = { every, x: f.recordX.checked };
  const stop = {};
  if (f.gradNorm.value.trim()) stop.grad_norm = number(f.gradNorm.value, "grad norm");
  if (f.maxSeconds.value.trim()) stop.max_seconds = number(f.maxSeconds.value, "seconds");
  if (Object.keys(stop).length) spec.stop = stop;
  if (f.device.value !== "auto") spec.device = f.device.value;
  if (f.dtype.value !== "float32") spec.dtype = f.dtype.value;
  if (f.name.value.trim()) spec.name = f.name.value.trim();
  const tags = json(f.tags.value || "{}", "tags");
  if (Object.keys(tags).length) spec.tags = tags;
  return spec;
}

function fill(f, spec, objectives) {
  const objective = spec.objective;
  if (typeof objective === "object") {
    f.kind.value = objective.name;
    const entry = objectives.find((o) => o.name === objective.name);
    f.params.value = JSON.stringify({ ...(entry ? entry.params : {}), ...(objective.params || {}) });
  } else {
    f.kind.value = "";
    f.expression.value = objective;
  }
  f.variable.value = spec.variable || "x";
  f.x0.value = JSON.stringify(spec.x0);
  f.steps.value = String(spec.steps ?? 500);
  const opt = spec.optimizer || { name: "sgd", lr: 0.001 };
  f.optimizer.value = opt.name;
  f.lr.value = String(opt.lr ?? 0.001);
  const { name, lr, ...rest } = opt; // eslint-disable-line no-unused-vars
  f.extra.value = JSON.stringify(rest);
  f.every.value = String((spec.record && spec.record.every) || 1);
  f.recordX.checked = !(spec.record && spec.record.x === false);
  f.gradNorm.value = "";
  f.maxSeconds.value = "";
  f.device.value = spec.device || "auto";
  f.dtype.value = spec.dtype || "float32";
  f.name.value = spec.name || "";
  f.tags.value = JSON.stringify(spec.tags || {});
}
