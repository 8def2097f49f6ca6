// The API client of the dashboard: fetch() with the token the page asked for (if any), a
// Server-Sent Events reader over fetch (EventSource cannot send Authorization), and small DOM
// helpers. A token lives in sessionStorage only: never in a URL, never in a cookie.

const TOKEN_KEY = "descent.token";
const DOCUMENT_KEY = "descent.document.v1";
let asking = null; // the pending token prompt, shared by every request that met a 401

export class ApiError extends Error {
  constructor(status, body) {
    const err = (body && body.error) || {};
    super(err.message || `HTTP ${status}`);
    this.status = status;
    this.code = err.code || null;
    this.field = err.field || null;
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

function withToken(extra) {
  const headers = new Headers(extra || {});
  const t = token();
  if (t) headers.set("Authorization", "Bearer " + t);
  return headers;
}

/** Show the token form; resolves once a token has been entered (and stored). */
export function askToken(reason) {
  if (asking) return asking;
  const form = document.getElementById("token-form");
  const input = document.getElementById("token-input");
  const error = document.getElementById("token-error");
  error.textContent = reason || "";
  form.classList.remove("hidden");
  input.focus();
  asking = new Promise((resolve) => {
    form.onsubmit = (event) => {
      event.preventDefault();
      const value = input.value.trim();
      if (!value) return;
      sessionStorage.setItem(TOKEN_KEY, value);
      input.value = "";
      form.classList.add("hidden");
      form.onsubmit = null;
      asking = null;
      showAuthState();
      resolve(value);
    };
  });
  return asking;
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
  showAuthState();
}

export function showAuthState() {
  const state = document.getElementById("auth-state");
  state.replaceChildren();
  if (!token()) return;
  const out = el("button", { type: "button", class: "link", id: "forget-token", text: "forget token" });
  out.addEventListener("click", () => { forgetToken(); location.reload(); });
  state.append("token in use · ", out);
}

/** The service's words for a job's status (FINISHED: those a job never leaves; UNFINISHED: the
 * rest) and for why a finished job's run ended, as its OpenAPI document names them (the JobStatus
 * schema with its x-finished, and GET /v1/jobs's status and stop_reason parameters); filled by
 * prepare(). */
export const STATUSES = [];
export const STOP_REASONS = [];
export const FINISHED = new Set();
export const UNFINISHED = [];

function words(kept) {
  const lists = kept && [kept.statuses, kept.finished, kept.stopReasons];
  return lists && lists.every((list) => Array.isArray(list) && list.every((w) => typeof w === "string"))
    && typeof kept.auth === "boolean";
}

function parameterEnum(doc, path, name) {
  const found = (doc.paths[path].get.parameters || []).find((p) => p.name === name);
  return found.schema.enum;
}

/** What the pages need from the service's OpenAPI document (open to all), read once per tab:
 * whether it needs a token, and its status and stop-reason words. */
async function serviceDocument() {
  let kept = null;
  try { kept = JSON.parse(sessionStorage.getItem(DOCUMENT_KEY)); } catch (err) { kept = null; }
  if (words(kept)) return kept;
  const resp = await fetch("/openapi.json", { credentials: "omit", cache: "no-store" });
  if (!resp.ok) throw new ApiError(resp.status, null);
  const doc = await resp.json();
  const read = {
    auth: Array.isArray(doc.security) && doc.security.length > 0,
    statuses: parameterEnum(doc, "/v1/jobs", "status"),
    finished: doc.components.schemas.JobStatus["x-finished"],
    stopReasons: parameterEnum(doc, "/v1/jobs", "stop_reason"),
  };
  if (!words(read)) throw new Error("/openapi.json does not name the job statuses and stop reasons");
  sessionStorage.setItem(DOCUMENT_KEY, JSON.stringify(read));
  return read;
}

/** Before the first request: read the service's words, and ask for a token at once when the
 * service says it needs one, so no request is refused first. A 401 later (a revoked token) asks
 * again. Throws when the document cannot be read (the service is down or is not Descent). */
export async function prepare() {
  showAuthState();
  const doc = await serviceDocument();
  STATUSES.splice(0, STATUSES.length, ...doc.statuses);
  STOP_REASONS.splice(0, STOP_REASONS.length, ...doc.stopReasons);
  doc.finished.forEach((status) => FINISHED.add(status));
  UNFINISHED.splice(0, UNFINISHED.length, ...doc.statuses.filter((status) => !FINISHED.has(status)));
  if (doc.auth && !token()) await askToken("");
}

/** fetch() with the token; a 401 asks for a (new) token and tries again. */
export async function request(path, options = {}) {
  for (;;) {
    const sent = token();
    const resp = await fetch(path, { ...options, headers: withToken(options.headers), credentials: "omit", cache: "no-store" });
    if (resp.status !== 401) return resp;
    let message = "this service needs an API token";
    try { message = (await resp.json()).error.message; } catch (err) { /* keep the default */ }
    if (sent && token() === sent) sessionStorage.removeItem(TOKEN_KEY);
    await askToken(sent ? message : "");
  }
}

async function failure(resp) {
  let body = null;
  try { body = await resp.json(); } catch (err) { /* not JSON */ }
  return new ApiError(resp.status, body);
}

export async function getJSON(path, options = {}) {
  const resp = await request(path, options);
  if (!resp.ok) throw await failure(resp);
  return resp.json();
}

export async function postJSON(path, body, headers = {}) {
  const resp = await request(path, {
    method: "POST", body: JSON.stringify(body),
    headers: { "Content-Type": "application/json", ...headers },
  });
  if (!resp.ok) throw await failure(resp);
  return resp.json();
}

/** DELETE a job or a sweep (``path``) once the user has said yes to ``question``: the answer's
 * JSON ({id, deleted, removed}), or null when the user said no; `beforeDelete` runs once they said yes. */
export async function deleteAfterAsking(path, question, beforeDelete = null) {
  if (!window.confirm(question)) return null;
  if (beforeDelete) await beforeDelete(); // e.g. stop the page's reads of what is about to go
  const resp = await request(path, { method: "DELETE" });
  if (!resp.ok) throw await failure(resp);
  return resp.json();
}

/** An image (or any file) fetched with the token, as an object URL for <img src>. */
export async function blobURL(path, options = {}) {
  const resp = await request(path, options);
  if (!resp.ok) throw await failure(resp);
  return URL.createObjectURL(await resp.blob());
}

/** Fetch `path` (with the token) and hand it to the browser as a download named `name`. */
export async function download(path, name, options = {}) {
  const url = await blobURL(path, options);
  const a = el("a", { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/** Read a text/event-stream response, calling onEvent(name, data) per event (comments as
 * onEvent("comment", text)). Resolves when the server closes the stream; rejects when the
 * request fails or is aborted. */
export async function readEvents(path, onEvent, signal) {
  const resp = await request(path, { headers: { Accept: "text/event-stream" }, signal });
  if (!resp.ok || !resp.body) throw await failure(resp);
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  const parser = new EventParser(onEvent);
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    parser.push(value);
  }
  parser.push("\n\n");
}

/** The SSE wire format (WHATWG HTML, "event stream interpretation"), fed text as it comes. */
export class EventParser {
  constructor(onEvent) {
    this.onEvent = onEvent;
    this.buffer = "";
    this.event = "";
    this.data = [];
  }

  push(text) {
    this.buffer += text;
    for (;;) {
      const at = this.buffer.search(/\r\n|\r|\n/);
      if (at < 0) return;
      if (this.buffer[at] === "\r" && at === this.buffer.length - 1) return; // maybe \r\n, split
      const skip = this.buffer.startsWith("\r\n", at) ? 2 : 1;
      const line = this.buffer.slice(0, at);
      this.buffer = this.buffer.slice(at + skip);
      this.line(line);
    }
  }

  line(line) {
    if (line === "") {
      if (this.data.length) this.onEvent(this.event || "message", this.data.join("\n"));
      this.event = "";
      this.data = [];
      return;
    }
    if (line.startsWith(":")) {
      this.onEvent("comment", line.slice(1).trim());
      return;
    }
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.event = value;
    else if (field === "data") this.data.push(value);
  }
}

// -- DOM and formatting helpers -------------------------------------------------------------

/** An element: attrs holds attributes, plus class, text, and on<event> handlers. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  node.append(...children.filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

/** A JSON number as the API writes it ("NaN", "Infinity" as strings) as a JS number, or null. */
export function num(value) {
  if (value === null || value === undefined) return null;
  if (typeof value === "number") return value;
  if (value === "NaN") return NaN;
  if (value === "Infinity") return Infinity;
  if (value === "-Infinity") return -Infinity;
  const n = Number(value);
  return Number.isNaN(n) ? null : n;
}

export function fmt(value, digits = 6) {
  if (value === null || value === undefined) return "—";
  if (typeof value === "string") return value;
  if (typeof value !== "number") return JSON.stringify(value);
  if (!Number.isFinite(value)) return String(value);
  if (Number.isInteger(value) && Math.abs(value) < 1e9) return String(value);
  const abs = Math.abs(value);
  if (abs !== 0 && (abs < 1e-3 || abs >= 1e6)) return value.toExponential(digits - 2);
  return String(Number(value.toPrecision(digits)));
}

/** A value read off a chart: `digits` significant digits, never rounded to 0 (1.23e-12, 0.0456, 12.3). */
export function sig(value, digits = 3) {
  if (value === null || value === undefined) return "—";
  if (!Number.isFinite(value)) return String(value);
  if (value === 0) return "0";
  const abs = Math.abs(value);
  if (abs < 1e-3 || abs >= 1e6) return value.toExponential(digits - 1).replace(/\.?0+e/, "e");
  return String(Number(value.toPrecision(digits)));
}

/** One number of a tensor: fixed `decimals` places, or exponential when that would hide it. */
export function tensorNumber(value, decimals = 4) {
  const v = num(value);
  if (v === null) return "null";
  if (!Number.isFinite(v)) return String(v);
  const abs = Math.abs(v);
  // Fixed places would hide a small value's digits (0.00026 as 0.0003): those are exponential.
  if (abs !== 0 && (abs < 10 ** (1 - decimals) || abs >= 1e7)) return v.toExponential(decimals - 1);
  return v.toFixed(decimals);
}

/** The shape of a nested list ([] for a number). */
export function shapeOf(value) {
  const shape = [];
  let at = value;
  while (Array.isArray(at)) { shape.push(at.length); at = at[0]; }
  return shape;
}

/** A tensor (nested lists) as text, each number to `decimals` places: whole when it has at most
 * `limit` numbers, else "shape [a, b] · first values: v0, v1, … (n values)". */
export function tensorText(value, { decimals = 4, limit = 64, first = 8 } = {}) {
  if (!Array.isArray(value)) return tensorNumber(value, decimals);
  const flat = value.flat(Infinity);
  if (flat.length > limit) {
    const head = flat.slice(0, first).map((v) => tensorNumber(v, decimals)).join(", ");
    return `shape [${shapeOf(value).join(", ")}] · first values: ${head}, … (${flat.length.toLocaleString()} values)`;
  }
  const write = (v) => (Array.isArray(v) ? `[${v.map(write).join(", ")}]` : tensorNumber(v, decimals));
  const rows = shapeOf(value).length > 1 ? value.map(write) : null;
  return rows && rows.join(", ").length > 80 ? `[${rows.join(",\n ")}]` : write(value);
}

export function when(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
}

export function banner(message) {
  const node = document.getElementById("banner");
  node.textContent = message || "";
  node.classList.toggle("hidden", !message);
  if (!message) delete node.dataset.offline;
}

/** True for a request that got no answer at all (the API is down, or the network): fetch()'s TypeError. */
export function unreachable(err) {
  return !(err instanceof ApiError) && err instanceof TypeError;
}

export function unreachableText(since) {
  const last = since ? `; last updated ${since.toLocaleTimeString()}` : "";
  return `Cannot reach the API at ${location.origin} — retrying${last}`;
}

export function errorText(err) {
  if (err instanceof ApiError) return `${err.message}${err.field ? ` (field: ${err.field})` : ""} [${err.status}]`;
  if (unreachable(err)) return unreachableText(null);
  return String((err && err.message) || err);
}

/** The banner for a failed refresh: "cannot reach the API … retrying" (marked data-offline) when
 * no answer came, else the error. */
export function failureBanner(err, lastUpdated) {
  const node = document.getElementById("banner");
  banner(unreachable(err) ? unreachableText(lastUpdated) : errorText(err));
  node.dataset.offline = unreachable(err) ? "true" : "false";
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A short text for a job's objective: the expression, or the catalog name with its params. */
export function objectiveText(spec) {
  const objective = spec && spec.objective;
  if (!objective) return "—";
  if (typeof objective === "string") return objective;
  const params = objective.params && Object.keys(objective.params).length ? " " + JSON.stringify(objective.params) : "";
  return `${objective.name}${params}`;
}

export function optimizerText(spec) {
  const opt = spec && spec.optimizer;
  if (!opt) return "—";
  return opt.lr !== undefined ? `${opt.name} lr=${fmt(opt.lr)}` : opt.name;
}

/** What a person should read as a job's outcome: its status, except that a job that "succeeded"
 * by stopping on divergence (result.stop_reason "diverged") is "diverged". */
export function outcome(status, stopReason) {
  return status === "succeeded" && stopReason === "diverged" ? "diverged" : status;
}

export function jobOutcome(job) {
  return outcome(job.status, (job.result || {}).stop_reason);
}

export function statusBadge(status, id, stopReason = null) {
  const shown = outcome(status, stopReason);
  return el("span", { class: `status status-${shown}`, id, text: shown, "data-status": status,
    title: shown === status ? null : `status ${status}, stopped because f diverged` });
}
