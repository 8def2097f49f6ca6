"""The web dashboard: pages and their static files, served by the API itself (no CDN).

Every page is the same HTML shell (``static/dashboard.html``); its scripts read the path and draw
the page from the API (``/v1/...``) with ``fetch()``, sending the token the page asked for, if any.
The pages hold no data, so they are open without a token (``service.api.auth``); the HTML is
``Cache-Control: no-store`` so a new version of the scripts is picked up at once. The scripts and
styles are served by Flask's own static route, ``/static/<file>``, also open.

Plots use uPlot 1.6.32 (MIT, ``static/vendor/``: ``npm pack uplot@1.6.32``, ``dist/uPlot.iife.min.js``
and ``dist/uPlot.min.css`` with its LICENSE); contours are drawn by ``static/contour.js``. The
Content-Security-Policy (``service.api.security``) allows no inline script or style, so the pages
use external files only.
"""
from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response

bp = Blueprint("dashboard", __name__)

STATIC = Path(__file__).parent / "static"
SHELL = STATIC / "dashboard.html"


def _shell() -> Response:
    """The page shell; read per request (a few KB) so an edit shows without a restart."""
    response = Response(SHELL.read_bytes(), mimetype="text/html")
    response.headers["Cache-Control"] = "no-store"
    return response


# The pages: one shell each (its scripts read the URL and draw the page).
PAGES = {
    "/": ("jobs_page", ("the job list, newest first, with filters, a page at a time (older / newer, by the "
                       "API's cursor; ?limit= jobs a page), the page shown refreshed every couple of seconds")),
    "/jobs/<job_id>": ("job_page", ("one job: its answer (final x, x0, the spec, the duration; for a steps-0 job the "
                                   "gradient and backward graph instead of curves), its curves, its path on the "
                                   "contour of f, live while it runs")),
    "/compare": ("compare_page", ("several jobs (?jobs=id1,id2) on one contour and one loss plot, or a whole "
                                 "sweep (?sweep=ID): its best jobs by final f, at most 50 (?best=N), saying so "
                                 "when it has more")),
    "/sweeps": ("sweeps_page", "the sweeps, newest first, a page at a time, each with its jobs by outcome and its grid"),
    "/sweeps/<sweep_id>": ("sweep_page", ("a sweep: its jobs by outcome, a heat map of final f over two grid keys "
                                          "(?rows=&cols=&stat=min|median|mean, every job counted) with a colour bar, "
                                          "and its summary a page at a time (?sort=created|f&limit=)")),
    "/submit": ("submit_page", "the submit form, with the lesson's cases as examples"),
}


def _page(**_: str) -> Response:
    return _shell()


for _rule, (_name, _) in PAGES.items():
    bp.add_url_rule(_rule, endpoint=_name, view_func=_page, methods=["GET"])
