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


@bp.get("/")
def jobs_page():  # type: ignore[no-untyped-def]
    """The job list, with filters, refreshed every couple of seconds."""
    return _shell()


@bp.get("/jobs/<job_id>")
def job_page(job_id: str):  # type: ignore[no-untyped-def]
    """One job: its curves, its path on the contour of f, live while it runs."""
    return _shell()


@bp.get("/compare")
def compare_page():  # type: ignore[no-untyped-def]
    """Several jobs (``?jobs=id1,id2``) on one contour and one loss plot."""
    return _shell()


@bp.get("/sweeps/<sweep_id>")
def sweep_page(sweep_id: str):  # type: ignore[no-untyped-def]
    """A sweep's summary table and heat map of final f over two grid keys."""
    return _shell()


@bp.get("/submit")
def submit_page():  # type: ignore[no-untyped-def]
    """The submit form, with the lesson's cases as examples."""
    return _shell()
