"""The web dashboard in a real browser (headless Chromium) against the real service: the lesson's
contour case submitted from the form and watched to the end; running and queued jobs followed live
(by the event stream, or by polling when the stream cannot be opened); a catalog objective's
minima; the compare view, of picked jobs or of a whole sweep (its best jobs, capped and saying so,
up to a 10,000-job sweep); the job list's filters, refresh and paging; a sweep's heat map; the page's
SSE parser and contour levels; and the token prompt with auth required. Every page must run without a
console error (a CSP violation, a failed script or request).

``DESCENT_WRITE_DOCS_SCREENSHOT=1`` also writes the README's pictures: docs/dashboard.png (the
lesson's job page) and docs/line_fit.png (the line fits of SGD and LBFGS compared)."""
from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from testkit.processes import Service, service_on
from tests.browser.conftest import Browser, require_browser
from tests.helpers.line_fit import line_fit

pytestmark = pytest.mark.integration

# The lesson's fifth case (DESIGN.md): 10 * sum(x**2) from [8, 8], SGD lr 0.001, 500 steps, x recorded.
LESSON5 = {"objective": "10 * (x ** 2).sum()", "x0": [8, 8], "steps": 500, "optimizer": {"name": "sgd", "lr": 0.001}}
# A job that runs for a few seconds: the stop it meets is max_seconds.
SLOW = {"objective": "10 * (x ** 2).sum()", "x0": [8, 8], "steps": 1_000_000, "optimizer": {"name": "sgd", "lr": 1e-7},
        "stop": {"max_seconds": 4}, "record": {"every": 2000}, "name": "slow"}
CSP = ("default-src 'self'; script-src 'self'; img-src 'self' blob:; object-src 'none'; frame-ancestors 'none'; "
       "base-uri 'none'")
PAGES = ["/", "/jobs/some-id", "/compare", "/compare?jobs=a,b", "/sweeps", "/sweeps/some-id", "/submit", "/?unknown=1&status=x"]
DOCS = Path(__file__).resolve().parents[2] / "docs"


def no_errors(browser: Browser, allow: Any = lambda entry: False) -> None:
    severe = browser.severe(allow)
    assert not severe, f"browser console errors: {severe}"


def plotted(browser: Browser) -> dict[str, Any]:
    return browser.js("return window.descent && window.descent.plotted") or {}


def status_shown(browser: Browser) -> str:
    return browser.driver.find_element("id", "job-status").text


def xy_path(rows: list[dict[str, Any]]) -> list[list[float]]:
    return [[r["x"][0], r["x"][1]] for r in rows]


def history_rows(svc: Service, job_id: str, points: int = 2000) -> list[dict[str, Any]]:
    resp = svc.http.get(f"{svc.url}/v1/jobs/{job_id}/history", params={"points": points, "fields": "step,x"}, timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()["rows"]


def test_pages_are_open_html_with_strict_headers(service: Service) -> None:
    for page in PAGES:
        resp = requests.get(service.url + page, timeout=10)
        assert resp.status_code == 200, (page, resp.text[:300])
        assert resp.headers["Content-Type"].startswith("text/html")
        assert resp.headers["Cache-Control"] == "no-store"
        assert resp.headers["Content-Security-Policy"] == CSP
        html = resp.text
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "an inline script"
        assert "style=" not in html and "<style" not in html, "an inline style"
        assert "http://" not in html and "https://" not in html, "the page loads nothing from elsewhere"
    for name in re.findall(r'(?:src|href)="(/static/[^"]+)"', requests.get(service.url + "/", timeout=10).text):
        resp = requests.get(service.url + name, timeout=10)
        assert resp.status_code == 200 and resp.content, name
    assert requests.get(service.url + "/static/app.js", timeout=10).headers["Content-Type"].split(";")[0] in (
        "text/javascript", "application/javascript")
    assert requests.get(service.url + "/static/no-such-file.js", timeout=10).status_code == 404


def test_the_lessons_contour_case_from_the_form(service: Service, browser: Browser) -> None:
    browser.driver.get(service.url + "/submit")
    browser.wait(lambda d: d.find_element("id", "example-5"), "the examples are shown")
    browser.driver.find_element("id", "example-5").click()
    browser.screenshot("submit")
    preview = browser.driver.find_element("id", "spec-preview").text
    assert '"x0": [\n    8,\n    8\n  ]' in preview or '"x0": [8, 8]' in preview.replace("\n", "").replace("  ", " ")
    browser.driver.find_element("id", "submit-job").click()
    job_url = browser.wait(lambda d: re.fullmatch(rf"{re.escape(service.url)}/jobs/([0-9a-f-]+)", d.current_url),
                           "the form goes to the job page")
    job_id = job_url.group(1)
    job = service.job(job_id)
    assert {k: job["spec"][k] for k in ("objective", "x0", "steps", "optimizer")} == LESSON5
    browser.wait(lambda d: status_shown(browser) == "succeeded", "the page shows the job succeeded")
    browser.wait(lambda d: plotted(browser).get("ready"), "the final picture is drawn")
    rows = service.history(job_id)
    assert len(rows) == 501
    seen = plotted(browser)
    assert seen["path"] == xy_path(rows)  # every recorded x, in order, as the API has it
    assert seen["path"][0] == [8, 8] and seen["steps"] == list(range(501))
    assert len(seen["contourLevels"]) >= 5 and seen["logLevels"] is True  # f spans decades: log-spaced levels
    assert seen["contourLevels"] == sorted(seen["contourLevels"])
    lo, hi, ylo, yhi = seen["surfaceRange"]
    assert lo < 0 < 8 < hi and ylo < 0 < 8 < yhi  # the picture holds the whole path and the minimum
    assert browser.driver.find_element("id", "contour").get_attribute("data-path-points") == "501"
    assert browser.driver.find_element("id", "job-stop-reason").text == "steps"
    no_errors(browser)
    browser.screenshot("job-page-lesson5")
    if os.environ.get("DESCENT_WRITE_DOCS_SCREENSHOT"):
        write_docs_screenshot(browser, DOCS / "dashboard.png")


def write_docs_screenshot(browser: Browser, path: Path) -> None:
    """A README picture: the page down to its plots, small (a 256-colour PNG)."""
    from io import BytesIO

    from PIL import Image

    browser.driver.set_window_size(1100, 1100)
    browser.js("window.dispatchEvent(new Event('resize'))")
    browser.wait(lambda d: browser.js("return document.getElementById('contour').clientWidth < 600"), "the page relaid")
    bottom = browser.js("return document.querySelector('.plots').getBoundingClientRect().top + 600")
    image = Image.open(BytesIO(browser.driver.get_screenshot_as_png())).convert("RGB")
    image = image.crop((0, 0, image.width, min(image.height, int(bottom))))
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG).save(
        path, optimize=True)
    browser.driver.set_window_size(1280, 1000)


def test_a_running_job_is_followed_live(service: Service, browser: Browser) -> None:
    job_id = service.submit(SLOW)["id"]
    service.wait_status(job_id, "running")
    browser.driver.get(f"{service.url}/jobs/{job_id}")
    browser.wait(lambda d: status_shown(browser) == "running", "the page shows the job running")
    browser.js("window.sameDocument = 'yes'")
    first = browser.wait(lambda d: d.find_element("id", "job-progress").text.startswith("step "), "progress is shown")
    assert first
    steps_seen = set()

    def finished(d: Any) -> bool:
        steps_seen.add(d.find_element("id", "job-progress").text)
        return status_shown(browser) == "succeeded"

    browser.wait(finished, "the page shows the job succeeded, live", timeout=60)
    assert browser.js("return window.sameDocument") == "yes"  # no reload: the stream told the page
    assert len(steps_seen) >= 2, steps_seen  # progress moved while we watched
    assert browser.js("return window.descent.live") == "stream"
    browser.wait(lambda d: plotted(browser).get("ready"), "the final picture is drawn")
    job = service.job(job_id)
    assert job["result"]["stop_reason"] in ("time_limit", "steps")  # steps only on a very fast machine
    assert browser.driver.find_element("id", "job-stop-reason").text == job["result"]["stop_reason"]
    assert browser.driver.find_element("id", "job-f").text != "—"
    assert plotted(browser)["path"] == xy_path(history_rows(service, job_id))
    no_errors(browser)


def test_without_the_stream_the_page_polls(service: Service, browser: Browser) -> None:
    """A page whose event stream cannot be opened (a proxy that buffers or refuses it) polls the job instead."""
    script = browser.driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": """
        const realFetch = window.fetch;
        window.fetch = (url, options) => String(url).includes('/events')
            ? Promise.reject(new TypeError('stream refused (test)')) : realFetch(url, options);"""})
    try:
        job_id = service.submit({**SLOW, "stop": {"max_seconds": 3}})["id"]
        service.wait_status(job_id, "running")
        browser.driver.get(f"{service.url}/jobs/{job_id}")
        browser.wait(lambda d: status_shown(browser) == "running", "the page shows the job running")
        browser.wait(lambda d: status_shown(browser) == "succeeded", "the page shows the job succeeded, polling")
        assert browser.js("return window.descent.live") == "polling"
        browser.wait(lambda d: plotted(browser).get("ready"), "the final picture is drawn")
        assert plotted(browser)["path"] == xy_path(history_rows(service, job_id))
        no_errors(browser)
    finally:
        browser.driver.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument", {"identifier": script["identifier"]})


def test_the_event_parser_and_contour_levels(service: Service, browser: Browser) -> None:
    """The page's SSE parser, fed a stream cut at awkward places, and its contour levels."""
    browser.driver.get(service.url + "/submit")
    browser.wait(lambda d: d.find_element("id", "example-1"), "the page is up")
    out = browser.driver.execute_async_script(r"""
        const done = arguments[arguments.length - 1];
        Promise.all([import('/static/api.js'), import('/static/contour.js')]).then(([api, contour]) => {
          const seen = [];
          const parser = new api.EventParser((name, data) => seen.push([name, data]));
          for (const piece of ['event: status\r', '\ndata: {"a":', '1}\r\n\r\n: heart', 'beat\n\n',
                               'event: progress\ndata: line1\ndata:line2\n', '\n', 'data: plain\n\n',
                               'event: end\ndata: {}\n']) parser.push(piece);
          parser.push('\n');
          const bowl = contour.contourLevels([0, 1e-4, 1e-2, 1, 100, 1e4]);
          const flat = contour.contourLevels([1, 2, 3, 4]);
          const grid = [[0, 0, 0], [0, 1, 0], [0, 0, 0]];
          const ring = contour.marchingSquares([0, 1, 2], [0, 1, 2], grid, 0.5);
          done({seen, bowl, flat, ring});
        }).catch((err) => done({error: String(err)}));""")
    assert "error" not in out, out
    assert out["seen"] == [["status", '{"a":1}'], ["comment", "heartbeat"], ["progress", "line1\nline2"],
                           ["message", "plain"], ["end", "{}"]]
    assert out["bowl"]["log"] is True and out["flat"]["log"] is False
    levels = [level + out["bowl"]["offset"] for level in out["bowl"]["levels"]]  # f + offset > 0 (f's lowest is 0)
    ratios = [b / a for a, b in zip(levels, levels[1:])]
    assert max(ratios) / min(ratios) < 1.0001 and min(ratios) > 2  # evenly spaced in log, over decades
    assert out["flat"]["levels"][0] > 1 and out["flat"]["levels"][-1] < 4
    assert len(out["ring"]) == 4  # a diamond around the peak at the centre
    ends = {(round(x, 6), round(y, 6)) for x1, y1, x2, y2 in out["ring"] for x, y in ((x1, y1), (x2, y2))}
    assert ends == {(0.5, 1), (1, 0.5), (1.5, 1), (1, 1.5)}
    no_errors(browser)


def test_a_queued_job_is_followed_from_the_queue_to_the_end(service: Service, browser: Browser) -> None:
    blocker = service.submit({**SLOW, "stop": {"max_seconds": 2}})["id"]  # the one worker is busy with it
    service.wait_status(blocker, "running")
    queued = service.submit({**LESSON5, "name": "queued behind"})["id"]
    browser.driver.get(f"{service.url}/jobs/{queued}")
    browser.wait(lambda d: status_shown(browser) == "queued", "the page shows the job queued")
    assert service.job(queued)["status"] == "queued"
    browser.js("window.sameDocument = 'yes'")
    browser.wait(lambda d: status_shown(browser) == "succeeded", "the page shows the job succeeded, live", timeout=60)
    assert browser.js("return window.sameDocument") == "yes"
    browser.wait(lambda d: plotted(browser).get("ready"), "the final picture is drawn")
    assert plotted(browser)["path"] == xy_path(service.history(queued))
    no_errors(browser)


def test_a_catalog_objective_marks_its_known_minima(service: Service, browser: Browser) -> None:
    spec = {"objective": {"name": "himmelblau"}, "x0": [0.5, -0.5], "steps": 300, "optimizer": {"name": "adam", "lr": 0.05}}
    job_id = service.submit(spec)["id"]
    service.wait(job_id)
    objectives = service.http.get(f"{service.url}/v1/objectives", timeout=10).json()["objectives"]
    minima = next(o["minima"] for o in objectives if o["name"] == "himmelblau")
    browser.driver.get(f"{service.url}/jobs/{job_id}")
    browser.wait(lambda d: plotted(browser).get("ready"), "the picture is drawn")
    seen = plotted(browser)
    assert seen["minima"] == [m["x"] for m in minima] and len(seen["minima"]) == 4
    lo, hi, ylo, yhi = seen["surfaceRange"]
    assert all(lo < x < hi and ylo < y < yhi for x, y in seen["minima"])  # all four are in the picture
    assert seen["path"] == xy_path(history_rows(service, job_id))
    charts = ("chart-f", "chart-grad", "chart-lr")
    # Log by default when f, all positive, spans more than three decades (it does here: f falls to ~0).
    fs = [float(r["f"]) for r in service.history(job_id)]
    wanted = "log" if min(fs) > 0 and max(fs) / min(fs) > 1e3 else "linear"
    assert [browser.driver.find_element("id", c).get_attribute("data-scale") for c in charts] == [wanted] * 3
    other = "linear" if wanted == "log" else "log"
    browser.driver.find_element("id", "log-scale").click()
    browser.wait(lambda d: [d.find_element("id", c).get_attribute("data-scale") for c in charts] == [other] * 3,
                 "the curves switch scale")
    browser.screenshot("himmelblau")
    no_errors(browser)


def test_compare_overlays_two_jobs(service: Service, browser: Browser) -> None:
    a = service.submit({**LESSON5, "steps": 60, "name": "slow lr"})["id"]
    b = service.submit({**LESSON5, "steps": 60, "optimizer": {"name": "sgd", "lr": 0.04}, "name": "fast lr"})["id"]
    service.wait(a), service.wait(b)
    browser.driver.get(f"{service.url}/compare?jobs={a},{b}&whatever=1")
    browser.wait(lambda d: plotted(browser).get("ready"), "the compare view is drawn")
    seen = plotted(browser)
    assert seen["jobs"] == [a, b]
    assert seen["paths"][a] == xy_path(service.history(a)) and seen["paths"][b] == xy_path(service.history(b))
    assert seen["paths"][a] != seen["paths"][b] and len(seen["contourLevels"]) >= 5
    rows = browser.driver.find_elements("css selector", "#compare-jobs tbody tr")
    assert [r.get_attribute("data-job") for r in rows] == [a, b]
    legend = browser.driver.find_elements("css selector", "#chart-f .u-legend .u-series .u-label")
    assert [e.text for e in legend] == ["step", "slow lr", "fast lr"]
    browser.screenshot("compare")
    no_errors(browser)


def test_compare_draws_the_line_fits_of_sgd_and_lbfgs(service: Service, browser: Browser) -> None:
    """The README's extended lesson: both fits' loss curves on one plot, their paths over (slope, intercept)."""
    sgd = service.submit(line_fit({"name": "sgd", "lr": 0.01}, 300, name="line sgd"))["id"]
    lbfgs = service.submit(line_fit({"name": "lbfgs", "lr": 1}, 20, name="line lbfgs"))["id"]
    service.wait(sgd), service.wait(lbfgs)
    browser.driver.get(f"{service.url}/compare?jobs={sgd},{lbfgs}")
    browser.wait(lambda d: plotted(browser).get("ready"), "the compare view is drawn")
    seen = plotted(browser)
    assert seen["jobs"] == [sgd, lbfgs]
    assert seen["paths"][sgd] == xy_path(service.history(sgd)) and len(seen["paths"][sgd]) == 301
    assert seen["paths"][lbfgs] == xy_path(service.history(lbfgs)) and len(seen["paths"][lbfgs]) == 21
    assert len(seen["contourLevels"]) >= 5  # the surface of the data objective, over slope and intercept
    legend = browser.driver.find_elements("css selector", "#chart-f .u-legend .u-series .u-label")
    assert [e.text for e in legend] == ["step", "line sgd", "line lbfgs"]
    assert "No surface" not in browser.driver.find_element("id", "contour-note").text
    browser.driver.find_element("id", "log-scale").click()  # SGD's slow tail is visible on a log axis
    no_errors(browser)
    browser.screenshot("compare-line-fit")
    if os.environ.get("DESCENT_WRITE_DOCS_SCREENSHOT"):
        write_docs_screenshot(browser, DOCS / "line_fit.png")


def test_the_job_list_filters_and_updates(service: Service, browser: Browser) -> None:
    done = service.submit({**LESSON5, "steps": 5, "name": "listed"})["id"]
    service.wait(done)
    browser.driver.get(f"{service.url}/?status=succeeded&extra=ignored")
    browser.wait(lambda d: d.find_elements("css selector", f'#jobs-body tr[data-job="{done}"]'), "the job is listed")
    statuses = {r.get_attribute("data-status") for r in browser.driver.find_elements("css selector", "#jobs-body tr")}
    assert statuses == {"succeeded"}
    fresh = service.submit({**LESSON5, "steps": 5, "name": "fresh"})["id"]
    service.wait(fresh)
    browser.wait(lambda d: d.find_elements("css selector", "#jobs-body tr")[0].get_attribute("data-job") == fresh,
                 "the new job appears first, without a reload")
    name = browser.driver.find_element("id", "filter-name")
    name.clear()
    name.send_keys("listed")
    browser.driver.find_element("css selector", "#filters button[type=submit]").click()
    browser.wait(lambda d: [r.get_attribute("data-job") for r in d.find_elements("css selector", "#jobs-body tr")] == [done],
                 "only the named job is listed")
    assert "name=listed" in browser.driver.current_url
    browser.screenshot("job-list")
    browser.driver.find_element("css selector", f'#jobs-body tr[data-job="{done}"] a').click()
    browser.wait(lambda d: d.current_url.endswith(f"/jobs/{done}"), "the row links to the job page")
    browser.wait(lambda d: status_shown(browser) == "succeeded", "the job page shows the job")
    no_errors(browser)


def test_a_sweeps_heat_map_and_summary(service: Service, browser: Browser) -> None:
    body = {"base": {**LESSON5, "steps": 20}, "grid": {"optimizer.lr": [0.001, 0.01], "steps": [5, 20]}}
    resp = service.http.post(f"{service.url}/v1/sweeps", json=body, timeout=30)
    assert resp.status_code == 202, resp.text
    sweep_id = resp.json()["id"]
    service.wait_for(lambda: service.http.get(f"{service.url}/v1/sweeps/{sweep_id}", timeout=10).json()["counts"]
                     .get("succeeded") == 4, "the sweep's four jobs succeeded")
    summary = service.http.get(f"{service.url}/v1/sweeps/{sweep_id}", timeout=10).json()["summary"]
    browser.driver.get(f"{service.url}/sweeps/{sweep_id}")
    browser.wait(lambda d: len(d.find_elements("css selector", "#sweep-summary tbody tr")) == 4, "the summary is shown")
    cells = browser.driver.find_elements("css selector", "#heat-map td")
    assert len(cells) == 4
    shown = sorted(float(c.get_attribute("data-f")) for c in cells)
    assert shown == sorted(float(item["f"]) for item in summary)
    link = browser.driver.find_element("id", "compare-sweep")
    assert link.get_attribute("href") == f"{service.url}/compare?sweep={sweep_id}" and "its 4 jobs" in link.text
    browser.screenshot("sweep")
    no_errors(browser)


def click(browser: Browser, element_id: str) -> None:
    """Click an element of a page that redraws it while it refreshes (found and clicked at once)."""
    browser.wait(lambda d: d.find_element("id", element_id).click() or True, f"{element_id} is clicked")


def alert(browser: Browser) -> Any:
    """The page's confirm() dialog, once it is open."""
    return browser.wait(lambda d: d.switch_to.alert, "the page asks first")


def test_delete_asks_first_then_removes_a_running_job_and_a_sweep(service: Service, browser: Browser) -> None:
    job_id = service.submit({**SLOW, "stop": {"max_seconds": 60}, "name": "to delete"})["id"]
    service.wait_status(job_id, "running")
    browser.driver.get(f"{service.url}/jobs/{job_id}")
    click(browser, "delete-job")
    asked = alert(browser)
    assert "to delete" in asked.text and "cancelled first" in asked.text
    asked.dismiss()  # no: nothing happens
    assert service.http.get(f"{service.url}/v1/jobs/{job_id}", timeout=10).status_code == 200
    click(browser, "delete-job")
    alert(browser).accept()
    browser.wait(lambda d: d.current_url == f"{service.url}/", "the page goes to the job list")
    assert service.http.get(f"{service.url}/v1/jobs/{job_id}", timeout=10).status_code == 404

    sweep_id = submit_sweep(service, {"base": {**LESSON5, "steps": 5}, "grid": {"optimizer.lr": [0.001, 0.01]}})
    jobs = service.http.get(f"{service.url}/v1/sweeps/{sweep_id}/jobs", timeout=10).json()["jobs"]
    browser.driver.get(f"{service.url}/sweeps/{sweep_id}")
    click(browser, "delete-sweep")
    asked = alert(browser)
    assert "its 2 jobs" in asked.text
    asked.accept()
    browser.wait(lambda d: d.current_url == f"{service.url}/sweeps", "the page goes to the sweeps list")
    assert service.http.get(f"{service.url}/v1/sweeps/{sweep_id}", timeout=10).status_code == 404
    assert all(service.http.get(f"{service.url}/v1/jobs/{j['id']}", timeout=10).status_code == 404 for j in jobs)
    no_errors(browser)


def submit_sweep(service: Service, body: dict[str, Any]) -> str:
    resp = service.http.post(f"{service.url}/v1/sweeps", json=body, timeout=120)
    assert resp.status_code == 202, resp.text
    return resp.json()["id"]


def best_first(service: Service, sweep_id: str) -> list[str]:
    """The sweep's job ids by final f, as the API sorts them."""
    summary = service.http.get(f"{service.url}/v1/sweeps/{sweep_id}?sort=f&limit=1000", timeout=30).json()["summary"]
    return [item["id"] for item in summary]


def test_compare_shows_a_whole_sweep_best_first(service: Service, browser: Browser) -> None:
    body = {"base": {**LESSON5, "steps": 20}, "grid": {"optimizer.lr": [0.001, 0.005, 0.01, 0.02]},
            "starts": [[8, 8], [-4, 6], [2, -7]], "name": "twelve"}
    sweep_id = submit_sweep(service, body)
    service.wait_for(lambda: service.http.get(f"{service.url}/v1/sweeps/{sweep_id}", timeout=10).json()["counts"]
                     .get("succeeded") == 12, "the sweep's twelve jobs succeeded")
    ranked = best_first(service, sweep_id)

    browser.driver.get(f"{service.url}/sweeps/{sweep_id}")
    browser.wait(lambda d: d.find_elements("id", "compare-sweep"), "the sweep page links to its comparison")
    browser.driver.find_element("id", "compare-sweep").click()
    browser.wait(lambda d: plotted(browser).get("ready"), "the whole sweep is drawn")
    assert browser.driver.current_url == f"{service.url}/compare?sweep={sweep_id}"
    seen = plotted(browser)
    assert seen["jobs"] == ranked and seen["sweep"] == {"id": sweep_id, "total": 12, "drawn": 12, "capped": False}
    for job_id in (ranked[0], ranked[-1]):
        assert seen["paths"][job_id] == xy_path(service.history(job_id))
    assert len(seen["contourLevels"]) >= 5
    note = browser.driver.find_element("id", "compare-note")
    assert note.get_attribute("data-capped") == "false" and "all 12 jobs" in note.text
    rows = browser.driver.find_elements("css selector", "#compare-jobs tbody tr")
    assert [r.get_attribute("data-job") for r in rows] == ranked
    browser.screenshot("compare-sweep")
    no_errors(browser)

    # Capped: the best five are drawn, and the page says so.
    browser.driver.get(f"{service.url}/compare?sweep={sweep_id}&best=5")
    browser.wait(lambda d: plotted(browser).get("ready"), "the sweep's best five are drawn")
    seen = plotted(browser)
    assert seen["jobs"] == ranked[:5] and seen["sweep"]["capped"] is True and len(seen["paths"]) == 5
    note = browser.driver.find_element("id", "compare-note")
    assert note.get_attribute("data-capped") == "true" and "the 5 best of the sweep's 12 jobs" in note.text
    no_errors(browser)


def test_a_ten_thousand_job_sweep_compares_without_freezing_the_page(service: Service, browser: Browser) -> None:
    """The page reads one page of the summary and the histories of the jobs it draws, whatever the
    sweep's size (the jobs are cancelled at once: the one worker must not spend the module's time)."""
    body = {"base": {**LESSON5, "steps": 2, "record": {"every": 1, "x": True}},
            "starts": {"count": 10_000, "low": -9, "high": 9, "seed": 3}, "name": "ten thousand"}
    sweep_id = submit_sweep(service, body)
    assert service.http.post(f"{service.url}/v1/sweeps/{sweep_id}/cancel", timeout=120).status_code == 202
    service.wait_for(lambda: service.http.get(f"{service.url}/v1/sweeps/{sweep_id}?limit=1", timeout=30).json()
                     ["counts"]["running"] == 0, "nothing of the sweep runs")
    ranked = best_first(service, sweep_id)[:50]
    browser.driver.get(f"{service.url}/compare?sweep={sweep_id}")
    browser.wait(lambda d: plotted(browser).get("ready"), "the sweep's best 50 are drawn", timeout=30)
    seen = plotted(browser)
    assert seen["jobs"] == ranked and seen["sweep"] == {"id": sweep_id, "total": 10_000, "drawn": 50, "capped": True}
    note = browser.driver.find_element("id", "compare-note")
    assert "the 50 best of the sweep's 10,000 jobs" in note.text
    assert browser.js("return 1 + 1") == 2  # the page answers
    browser.screenshot("compare-sweep-10000")
    no_errors(browser)

    # Its page: the grid counts every job (none past the first 1,000 left out), the summary pages on.
    browser.driver.get(f"{service.url}/sweeps/{sweep_id}")
    browser.wait(lambda d: d.find_element("id", "heat-total").text == "10,000 jobs in the grid", "the grid holds every job")
    assert browser.driver.find_element("id", "summary-where").text == "jobs 1–100 of 10,000"
    click(browser, "summary-next")
    browser.wait(lambda d: d.find_element("id", "summary-where").text == "jobs 101–200 of 10,000", "the next page is shown")
    indices = [r.find_element("css selector", "a").text for r in browser.driver.find_elements("css selector", "#sweep-summary tbody tr")]
    assert indices[0] == "100" and len(indices) == 100
    no_errors(browser)


def page_ids(browser: Browser) -> list[str]:
    return [r.get_attribute("data-job") for r in browser.driver.find_elements("css selector", "#jobs-body tr")]


def test_the_job_list_pages_older_and_newer(service: Service, browser: Browser) -> None:
    paged = {**LESSON5, "steps": 1, "tags": {"list": "paged"}}  # the tag keeps the module's other jobs out
    ids = [service.submit({**paged, "name": f"paged {n}"})["id"] for n in range(8)][::-1]  # newest first
    browser.driver.get(f"{service.url}/?tag=list:paged&limit=3")
    browser.wait(lambda d: page_ids(browser) == ids[:3], "the newest page")
    where = browser.driver.find_element("id", "page-where")
    assert where.text == "jobs 1–3, newest first"
    assert browser.driver.find_element("id", "page-newer").get_attribute("disabled") is not None
    seen = list(page_ids(browser))
    while browser.driver.find_element("id", "page-older").get_attribute("disabled") is None:
        before = page_ids(browser)
        browser.driver.find_element("id", "page-older").click()
        browser.wait(lambda d: page_ids(browser) != before and page_ids(browser), "the next older page")
        seen += page_ids(browser)
    assert seen == ids and where.text == "jobs 7–8, newest first"  # every job once, newest first
    browser.driver.find_element("id", "page-newer").click()
    browser.wait(lambda d: page_ids(browser) == ids[3:6] and where.text == "jobs 4–6, newest first", "one page newer")

    # A job submitted meanwhile lands on the newest page; the page shown stays anchored at its cursor.
    fresh = service.submit({**paged, "name": "paged late"})["id"]
    stamp = browser.driver.find_element("id", "jobs-info").text
    browser.wait(lambda d: d.find_element("id", "jobs-info").text != stamp, "a refresh of the page shown")
    assert page_ids(browser) == ids[3:6]
    browser.driver.refresh()  # a reload stays on the page: the tab's history entry keeps the cursors
    browser.wait(lambda d: page_ids(browser) == ids[3:6], "the same page after a reload")
    browser.driver.find_element("id", "page-newest").click()
    browser.wait(lambda d: page_ids(browser) == [fresh, *ids[:2]], "the newest page, with the new job")

    # The selection holds across pages: compare one job picked on each of two pages.
    browser.driver.find_element("css selector", f'#jobs-body tr[data-job="{fresh}"] input.pick').click()
    browser.driver.find_element("id", "page-older").click()
    browser.wait(lambda d: page_ids(browser) == ids[2:5], "the second page again")
    browser.driver.find_element("css selector", f'#jobs-body tr[data-job="{ids[3]}"] input.pick').click()
    assert browser.driver.find_element("id", "compare-selected").text == "Compare selected (2)"
    browser.driver.find_element("id", "compare-selected").click()
    browser.wait(lambda d: "/compare?jobs=" in d.current_url, "the compare view")
    assert browser.driver.current_url.split("jobs=")[1].split(",") == [fresh, ids[3]]
    browser.wait(lambda d: plotted(browser).get("ready"), "the picked jobs are compared")

    # Per page: the select changes the page size and starts from the newest page again.
    browser.driver.get(f"{service.url}/?tag=list:paged&limit=3")
    browser.wait(lambda d: page_ids(browser) == [fresh, *ids[:2]], "the newest page")
    from selenium.webdriver.support.ui import Select

    Select(browser.driver.find_element("id", "filter-limit")).select_by_value("25")
    browser.wait(lambda d: page_ids(browser) == [fresh, *ids], "all nine jobs on one page")
    assert "limit=25" in browser.driver.current_url
    assert browser.driver.find_element("id", "page-where").text == "jobs 1–9, newest first"
    assert browser.driver.find_element("id", "page-older").get_attribute("disabled") is not None
    browser.screenshot("job-list-paged")
    no_errors(browser)


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A second service, with DESCENT_AUTH=required."""
    require_browser()
    for svc in service_on("embedded", tmp_path_factory.mktemp("guarded"), auth="required"):
        svc.start(workers=1)
        yield svc


def test_with_auth_required_the_page_asks_for_a_token(guarded: Service) -> None:
    token = guarded.token("alice")
    guarded.http.headers["Authorization"] = f"Bearer {token}"
    done = guarded.submit({**LESSON5, "name": "alice's"})["id"]
    guarded.wait(done)
    assert requests.get(f"{guarded.url}/v1/jobs", timeout=10).status_code == 401
    browser = Browser()
    try:
        browser.driver.get(guarded.url + "/")
        form = browser.wait(lambda d: d.find_element("id", "token-form"), "the token form")
        browser.wait(lambda d: form.is_displayed(), "the page asks for a token")
        assert not browser.driver.find_elements("css selector", "#jobs-body tr")
        browser.driver.find_element("id", "token-input").send_keys(token)
        browser.driver.find_element("id", "token-submit").click()
        browser.wait(lambda d: d.find_elements("css selector", f'#jobs-body tr[data-job="{done}"]'), "the list, with the token")
        assert not form.is_displayed()
        assert browser.js("return sessionStorage.getItem('descent.token')") == token
        assert browser.js("return document.cookie") == ""
        no_errors(browser)  # the page asked before any request was refused

        # The job page, in the same tab: the token is sent on every read, the stream's included.
        running = guarded.submit({**SLOW, "stop": {"max_seconds": 3}})["id"]
        guarded.wait_status(running, "running")
        browser.driver.get(f"{guarded.url}/jobs/{running}")
        browser.wait(lambda d: status_shown(browser) == "succeeded", "the running job's page follows it to the end")
        assert browser.js("return window.descent.live") == "stream"
        browser.wait(lambda d: plotted(browser).get("ready"), "the picture is drawn")
        assert plotted(browser)["path"] == xy_path(history_rows(guarded, running))
        assert token not in browser.driver.current_url
        browser.driver.find_element("id", "show-png").click()  # an image read with the token, shown as a blob
        browser.wait(lambda d: browser.js("const i = document.getElementById('plot-png'); "
                                          "return i && i.complete && i.naturalWidth > 0 && i.src.startsWith('blob:')"),
                     "the service's PNG is shown")
        no_errors(browser)

        # A token the service does not know: refused, and the page asks again.
        browser.js("sessionStorage.setItem('descent.token', 'dsc_' + 'x'.repeat(40))")
        browser.driver.get(f"{guarded.url}/jobs/{done}")
        browser.wait(lambda d: d.find_element("id", "token-form").is_displayed(), "the page asks again")
        assert "unknown or revoked" in browser.driver.find_element("id", "token-error").text
        browser.driver.find_element("id", "token-input").send_keys(token)
        browser.driver.find_element("id", "token-submit").click()
        browser.wait(lambda d: status_shown(browser) == "succeeded", "the job page, with the good token")
        browser.screenshot("auth-job-page")
        no_errors(browser, allow=lambda entry: "401" in entry["message"])
    finally:
        browser.quit()
