// The dashboard's entry: read the service's words and ask for a token if it needs one, then draw
// the page the path names. window.descent holds what the pages plotted, for tests and for the curious.

import { banner, el, errorText, prepare, sleep, unreachable } from "./api.js";
import { comparePage } from "./page-compare.js";
import { jobPage } from "./page-job.js";
import { listPage } from "./page-list.js";
import { submitPage } from "./page-submit.js";
import { sweepPage } from "./page-sweep.js";
import { sweepsPage } from "./page-sweeps.js";

window.descent = { plotted: {}, page: null, loaded: false };

const ROUTES = [
  [/^\/$/, "jobs", (main) => listPage(main)],
  [/^\/jobs\/([^/]+)$/, "job", (main, id) => jobPage(main, id)],
  [/^\/compare$/, "compare", (main) => comparePage(main)],
  [/^\/sweeps$/, "sweeps", (main) => sweepsPage(main)],
  [/^\/sweeps\/([^/]+)$/, "sweep", (main, id) => sweepPage(main, id)],
  [/^\/submit$/, "submit", (main) => submitPage(main)],
];

async function start() {
  const main = document.getElementById("main");
  for (let wait = 1000; ; wait = Math.min(2 * wait, 10_000)) {
    try {
      await prepare();
      break;
    } catch (err) {
      banner(`The service's description (/openapi.json) could not be read: ${errorText(err)}`);
      if (!unreachable(err)) {
        main.replaceChildren(el("p", { class: "error", id: "page-error", text: errorText(err) }));
        window.descent.loaded = true;
        return;
      }
      await sleep(wait); // the API is restarting or down: try again
    }
  }
  banner(null);
  for (const [pattern, name, page] of ROUTES) {
    const match = location.pathname.match(pattern);
    if (!match) continue;
    window.descent.page = name;
    document.body.dataset.page = name;
    try {
      await page(main, ...match.slice(1).map(decodeURIComponent));
    } catch (err) {
      banner(errorText(err));
      main.replaceChildren(el("p", { class: "error", id: "page-error", text: errorText(err) }));
    }
    window.descent.loaded = true;
    return;
  }
  main.replaceChildren(el("p", { class: "error", text: "No such page." }));
}

start();
