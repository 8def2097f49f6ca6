"""What a person reads on the dashboard, checked in headless Chromium against the real service:
the job page's answer (final x, x0, the spec, the duration; the gradient and the backward graph of
a steps-0 job, as the lesson's cases 1 to 3 read), divergence shown as divergence (red badge on
the list, job, sweep and compare pages, its own colour in the heat map, left out of the contour's
extent), the curves (log y when f spans decades, hover values that keep their digits, distinct tick
labels), the error states (the API down, a job that cannot be read, a queued gpu job's reason to
wait, a failed job's error) and dark mode.

``DESCENT_WRITE_DOCS_SCREENSHOT=1`` also writes docs/sweep_diverged.png (a sweep's heat map with a
diverged row and its colour bar) and docs/sweeps.png (the /sweeps page)."""
from __future__ import annotations

import io
import os
import re
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from selenium.common.exceptions import StaleElementReferenceException

from service.store import jobs as job_store
from testkit.processes import Service
from tests.browser.conftest import Browser
from tests.browser.test_dashboard import LESSON5, no_errors, plotted, status_shown

pytestmark = pytest.mark.integration

LOGLOG = "torch.log(torch.log(w + 7)).prod()"
CASE1 = {"name": "lesson 1", "objective": "10 * (x ** 2).sum()", "x0": [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]],
         "steps": 0}
CASE2 = {"name": "lesson 2", "objective": LOGLOG, "variable": "w", "x0": [[5, 10], [1, 2]], "steps": 0}
CASE3 = {"name": "lesson 3", "objective": LOGLOG, "variable": "w", "x0": [[5, 10], [1, 2]], "steps": 500,
         "optimizer": {"name": "sgd", "lr": 0.001}}
# lr 1 on 10 * sum(x**2): x is multiplied by -19 each step, and f overflows float32 at step 14.
DIVERGING = {"objective": "10 * (x ** 2).sum()", "x0": [8, 8], "steps": 50, "optimizer": {"name": "sgd", "lr": 1.0},
             "name": "too fast"}
DOCS = Path(__file__).resolve().parents[2] / "docs"


def text(browser: Browser, element_id: str) -> str:
    """The text of the element with ``element_id`` as shown now (``css_text``)."""
    return css_text(browser, f"#{element_id}")


def css_text(browser: Browser, selector: str) -> str:
    """The text of the first element matching a CSS selector as shown now; a live page may redraw
    the element between finding and reading it, and then it is found again."""
    for _ in range(50):
        try:
            return browser.driver.find_element("css selector", selector).text
        except StaleElementReferenceException:
            continue
    raise AssertionError(f"{selector} was redrawn 50 times in a row")


def open_job(service: Service, browser: Browser, job_id: str) -> None:
    browser.driver.get(f"{service.url}/jobs/{job_id}")
    browser.wait(lambda d: plotted(browser).get("ready"), "the job page is drawn")


def test_the_lessons_third_case_shows_its_answer(service: Service, browser: Browser) -> None:
    job_id = service.submit(CASE3)["id"]
    job = service.wait(job_id)
    open_job(service, browser, job_id)
    final_x = text(browser, "job-x")
    assert final_x == "[[4.9900, 9.9948], [0.9775, 1.9825]]"  # the lesson's answer, to 4 places
    assert "4.99" in final_x and "9.9948" in final_x
    assert text(browser, "job-x0") == "[[5.0000, 10.0000], [1.0000, 2.0000]]"
    assert text(browser, "job-graph") == "ProdBackward0 → LogBackward0 → LogBackward0 → AddBackward0 → AccumulateGrad"
    duration = text(browser, "job-duration")
    assert re.fullmatch(r"\d+(\.\d+)? (ms|s)|\d+ min \d+ s", duration), duration
    assert re.fullmatch(r"[\d,]+ steps/s \(\d+(\.\d+)? (ms|s) computing\)", text(browser, "job-rate")), text(browser, "job-rate")
    # The spec: collapsed, opened with a click, the whole spec as JSON.
    spec = browser.driver.find_element("id", "job-spec")
    assert spec.get_attribute("open") is None and not browser.driver.find_element("id", "job-spec-text").is_displayed()
    browser.driver.find_element("css selector", "#job-spec summary").click()
    browser.wait(lambda d: d.find_element("id", "job-spec-text").is_displayed(), "the spec opens")
    assert '"objective": "torch.log(torch.log(w + 7)).prod()"' in text(browser, "job-spec-text")
    assert status_shown(browser) == "succeeded" and job["result"]["stop_reason"] == "steps"
    assert not browser.driver.find_element("id", "plots").get_attribute("class").count("hidden")
    no_errors(browser)
    browser.screenshot("job-answer-case3")


@pytest.mark.parametrize("case, gradient", [
    (CASE1, ("[[20.0000, 40.0000, 60.0000, 80.0000],\n [100.0000, 120.0000, 140.0000, 160.0000],\n"
             " [180.0000, 200.0000, 220.0000, 240.0000]]")),
    (CASE2, "[[0.0201, 0.0109], [0.0449, 0.0351]]"),
])
def test_a_steps_0_job_shows_its_gradient_and_graph(service: Service, browser: Browser, case: dict[str, Any],
                                                    gradient: str) -> None:
    job_id = service.submit(case)["id"]
    job = service.wait(job_id)
    open_job(service, browser, job_id)
    assert text(browser, "job-grad") == gradient
    assert text(browser, "job-graph") == " → ".join(job["result"]["graph"])
    if case is CASE1:
        assert text(browser, "job-graph") == "MulBackward0 → SumBackward0 → PowBackward0 → AccumulateGrad"
    # No empty curves: the plots are not shown.
    assert not browser.driver.find_element("id", "plots").is_displayed()
    assert "took no step" in browser.driver.find_element("id", "answer").text
    no_errors(browser)


def test_a_big_x_is_summarised(service: Service, browser: Browser) -> None:
    job_id = service.submit({"objective": "(x ** 2).sum()", "x0": {"shape": [100, 10], "init": "normal", "seed": 0},
                             "steps": 3, "optimizer": {"name": "sgd", "lr": 0.1}})["id"]
    job = service.wait(job_id)
    open_job(service, browser, job_id)
    shown = text(browser, "job-x")
    first = job["result"]["x"][0][:8]
    assert shown == "shape [100, 10] · first values: " + ", ".join(f"{v:.4f}" for v in first) + ", … (1,000 values)"
    assert "shape [100, 10]" in browser.driver.find_element("css selector", "#answer .tensor h3").text
    no_errors(browser)


def test_a_big_x_shows_its_summary_a_link_and_its_histogram_and_image(service: Service, browser: Browser) -> None:
    """20,000 numbers (over DESCENT_INLINE_ELEMENTS): the job document holds a summary of x and a
    reference to x0; the page shows their shape, size and summary numbers, a .npy link, and their
    values drawn (a histogram binning all 20,000, and a 100 x 200 image), never a wall of numbers."""
    start = np.random.default_rng(0).normal(size=(100, 200)).round(6)
    job_id = service.submit({"name": "big x", "objective": "((x - 0.5) ** 2).sum()", "x0": start.tolist(), "steps": 5,
                             "optimizer": {"name": "sgd", "lr": 0.05}, "dtype": "float64",
                             "record": {"every": 1, "x": False}})["id"]
    job = service.wait(job_id)
    summary = job["result"]["x"]
    assert summary["href"] == f"/v1/jobs/{job_id}/x" and summary["size"] == 20_000, summary
    assert set(job["spec"]["x0"]) == {"sha256", "shape"}, job["spec"]["x0"]
    final = np.load(io.BytesIO(service.http.get(f"{service.url}{summary['href']}", timeout=30).content))

    open_job(service, browser, job_id)
    drawn = "return ['job-x', 'job-x0'].map((id) => document.getElementById(id)?.dataset.drawn || null)"
    assert browser.wait(lambda d: d.execute_script(drawn) == ["histogram image"] * 2 and d.execute_script(drawn),
                        "both tensors are drawn") == ["histogram image"] * 2
    facts = text(browser, "job-x-facts")
    for shown in ("[100, 200]", "20,000 values", f"{float(summary['norm']):.6g}"[:6], "sha256"):
        assert shown in facts, (shown, facts)
    link = browser.driver.find_element("id", "job-x-download")
    assert link.get_attribute("href") == f"{service.url}/v1/jobs/{job_id}/x" and "download .npy" in link.text
    assert browser.driver.find_element("id", "job-x0-download").get_attribute("href") == f"{service.url}/v1/jobs/{job_id}/x0"
    # The histogram: every value in a bin, the bins numpy makes of the downloaded x; ink on the canvas.
    seen = browser.js("""
        const hist = document.getElementById('job-x-hist'), image = document.getElementById('job-x-image');
        const inked = (c) => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
          let n = 0; for (let k = 3; k < d.length; k += 4) if (d[k]) n++; return n; };
        const mid = image.getContext('2d').getImageData(image.width >> 1, image.height >> 1, 1, 1).data;
        return {counted: hist.dataset.counted, counts: hist.dataset.counts, pixels: image.dataset.pixels,
                histInk: inked(hist), imageInk: inked(image), mid: Array.from(mid), answer: document.getElementById('answer').innerText};""")
    assert seen["counted"] == "20000" and seen["pixels"] == "100x200", seen
    want, _ = np.histogram(final, bins=40)
    got = np.array([int(c) for c in seen["counts"].split(",")])
    assert np.abs(got - want).sum() <= 2, (got, want)  # a value on a bin's edge may fall either side
    assert seen["histInk"] > 500 and seen["imageInk"] == browser.js(
        "const c = document.getElementById('job-x-image'); return c.width * c.height")
    assert seen["mid"][:3] != [128, 128, 128]  # a value's colour, not the grey of a missing one
    assert len(seen["answer"]) < 3000, seen["answer"][:500]  # a summary, not 20,000 numbers
    no_errors(browser)
    browser.screenshot("job-big-x")


def test_divergence_is_red_on_the_list_job_and_compare_pages(service: Service, browser: Browser) -> None:
    bad = service.submit({**DIVERGING, "tags": {"t": "diverge"}})["id"]
    good = service.submit({**LESSON5, "steps": 100, "name": "fine", "tags": {"t": "diverge"}})["id"]
    job = service.wait(bad)
    service.wait(good)
    assert job["status"] == "succeeded" and job["result"]["stop_reason"] == "diverged"

    browser.driver.get(f"{service.url}/?tag=t:diverge")
    row = f'#jobs-body tr[data-job="{bad}"]'
    # Read in one script: the list redraws live, and an element found may be gone when it is read.
    listed = browser.wait(lambda d: d.execute_script(
        "const bad = document.querySelector(arguments[0]), good = document.querySelector(arguments[1]);"
        "if (!bad || !good) return null;"
        "const badge = bad.querySelector('.status');"
        "return {badge: badge.innerText.trim(), cls: badge.className, row: bad.innerText,"
        "        good: good.querySelector('.status').innerText.trim(),"
        "        colour: getComputedStyle(badge).backgroundColor};",
        row, f'#jobs-body tr[data-job="{good}"]'), "the diverged job is listed")
    assert listed["badge"] == "diverged" and "status-diverged" in listed["cls"], listed
    assert "succeeded" not in listed["row"] and listed["good"] == "succeeded", listed
    assert "179, 38, 30" in listed["colour"], listed  # red, not the green of a success

    open_job(service, browser, bad)
    assert status_shown(browser) == "diverged"
    assert "succeeded" not in css_text(browser, ".job-head h1")
    assert "Diverged" in text(browser, "job-diverged")
    lo, hi, ylo, yhi = plotted(browser)["surfaceRange"]
    assert hi - lo < 1e4 and yhi - ylo < 1e4, plotted(browser)["surfaceRange"]  # not stretched to 1e18
    no_errors(browser)

    browser.driver.get(f"{service.url}/compare?jobs={good},{bad}")
    browser.wait(lambda d: plotted(browser).get("ready"), "the compare view is drawn")
    seen = plotted(browser)
    lo, hi, ylo, yhi = seen["surfaceRange"]
    # The good path's box (from [8, 8] to about [1.06, 1.06]), not the diverged one's 1e18.
    assert -20 < lo < 1 and 8 < hi < 20 and -20 < ylo < 1 and 8 < yhi < 20, seen["surfaceRange"]
    assert seen["diverged"] == ["too fast"]
    assert "Diverged (their paths leave the picture): too fast." in text(browser, "contour-note")
    assert css_text(browser, f'#compare-jobs tr[data-job="{bad}"] .status') == "diverged"
    no_errors(browser)


def test_a_sweeps_diverged_cells_have_their_own_colour(service: Service, browser: Browser) -> None:
    body = {"base": {**LESSON5, "steps": 20}, "grid": {"optimizer.lr": [0.001, 0.01, 1.0], "steps": [20, 40]},
            "name": "lr x steps"}
    resp = service.http.post(f"{service.url}/v1/sweeps", json=body, timeout=30)
    assert resp.status_code == 202, resp.text
    sweep_id = resp.json()["id"]
    service.wait_for(lambda: service.http.get(f"{service.url}/v1/sweeps/{sweep_id}", timeout=10).json()["counts"]
                     .get("succeeded") == 6, "the sweep's six jobs ended")
    browser.driver.get(f"{service.url}/sweeps/{sweep_id}")
    browser.wait(lambda d: len(d.find_elements("css selector", "#sweep-summary tbody tr")) == 6, "the summary is shown")
    rows = browser.driver.find_elements("css selector", "#heat-map tbody tr")
    assert [r.find_element("css selector", "th").text for r in rows] == ["0.001", "0.01", "1"]
    diverged = rows[2].find_elements("css selector", "td")
    assert [c.text for c in diverged] == ["diverged", "diverged"]
    assert all("heat-diverged" in c.get_attribute("class") for c in diverged)
    finite = [c for r in rows[:2] for c in r.find_elements("css selector", "td")]
    assert all(re.fullmatch(r"heat-\d", c.get_attribute("class")) for c in finite)
    best = min(finite, key=lambda c: float(c.get_attribute("data-f")))
    assert best.get_attribute("class") == "heat-0"
    assert best.value_of_css_property("background-image") == "none"
    assert diverged[0].value_of_css_property("background-image").startswith("repeating-linear-gradient")
    assert "diverged" in text(browser, "heat-diverged-key")
    assert len(browser.driver.find_elements("css selector", "#heat-legend .heat-bar > span")) == 10
    badges = browser.driver.find_elements("css selector", "#sweep-summary .status")
    assert sorted(b.text for b in badges) == ["diverged"] * 2 + ["succeeded"] * 4
    assert text(browser, "sweep-counts") == "6 jobs: 4 succeeded · 2 diverged"
    browser.screenshot("sweep-diverged")
    no_errors(browser)
    if os.environ.get("DESCENT_WRITE_DOCS_SCREENSHOT"):
        shot_of(browser, "heat-legend", DOCS / "sweep_diverged.png")
    # The heat map is the API's grid over every job; its stat and keys are kept in the URL.
    assert text(browser, "heat-total") == "6 jobs in the grid"
    browser.driver.find_element("css selector", "#heat-stat option[value=median]").click()
    browser.wait(lambda d: d.find_element("id", "heat-map").get_attribute("data-stat") == "median", "the median is shown")
    assert "stat=median" in browser.driver.current_url and "rows=optimizer.lr" in browser.driver.current_url
    browser.driver.get(browser.driver.current_url)
    browser.wait(lambda d: d.find_element("id", "heat-map").get_attribute("data-stat") == "median", "a reload keeps the median")
    assert browser.driver.find_element("id", "heat-stat").get_attribute("value") == "median"

    # The sweeps list names it, its diverged jobs apart; a job of it links back to it, in the list and on its page.
    browser.driver.get(f"{service.url}/sweeps")
    row = browser.wait(lambda d: d.find_elements("css selector", f'#sweeps-body tr[data-sweep="{sweep_id}"]'), "the sweep is listed")[0]
    assert row.find_element("css selector", "a").text == "lr x steps" and row.get_attribute("data-diverged") == "2"
    assert row.find_element("css selector", ".sweep-outcomes").text == "4 succeeded · 2 diverged"
    assert [s.get_attribute("data-outcome") for s in row.find_elements("css selector", ".outcome-bar > span")] == ["succeeded", "diverged"]
    browser.screenshot("sweeps")
    if os.environ.get("DESCENT_WRITE_DOCS_SCREENSHOT"):
        shot_of(browser, "sweeps", DOCS / "sweeps.png")
    row.find_element("css selector", "a").click()
    browser.wait(lambda d: d.current_url.startswith(f"{service.url}/sweeps/{sweep_id}"), "the row links to the sweep")
    no_errors(browser)
    first = service.http.get(f"{service.url}/v1/sweeps/{sweep_id}/jobs?limit=1", timeout=10).json()["jobs"][0]["id"]
    open_job(service, browser, first)
    assert browser.driver.find_element("id", "job-sweep-link").get_attribute("href") == f"{service.url}/sweeps/{sweep_id}"
    assert text(browser, "job-sweep") == f"job #0 of sweep {sweep_id[:8]}"

    browser.driver.get(f"{service.url}/compare?sweep={sweep_id}")
    browser.wait(lambda d: plotted(browser).get("ready"), "the sweep is compared")
    note = text(browser, "compare-diverged")
    assert note.startswith("2 of them diverged") and "no final f" not in note
    named = {a.text for a in browser.driver.find_elements("css selector", "#compare-jobs tbody a")}
    assert named == {f"lr={lr}, steps={steps}" for lr in ("0.001", "0.01", "1") for steps in (20, 40)}  # grid values
    lo, hi, ylo, yhi = plotted(browser)["surfaceRange"]
    assert hi - lo < 100 and yhi - ylo < 100, plotted(browser)["surfaceRange"]
    assert browser.driver.find_element("id", "chart-f").get_attribute("data-scale") == "log"
    no_errors(browser)


def shot_of(browser: Browser, bottom_id: str, path: Path) -> None:
    """A README picture: the page down to an element's bottom, small (a 256-colour PNG)."""
    from io import BytesIO

    from PIL import Image

    bottom = browser.js(f"return document.getElementById('{bottom_id}').getBoundingClientRect().bottom + 16")
    image = Image.open(BytesIO(browser.driver.get_screenshot_as_png())).convert("RGB")
    image = image.crop((0, 0, image.width, min(image.height, int(bottom))))
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG).save(path, optimize=True)


def test_curves_default_to_log_and_keep_their_digits(service: Service, browser: Browser) -> None:
    job_id = service.submit({**LESSON5, "steps": 150, "optimizer": {"name": "sgd", "lr": 0.01}})["id"]
    job = service.wait(job_id)
    final = float(job["result"]["f"])
    assert 0 < final < 1e-9  # f falls from 1280 past 1e-9
    open_job(service, browser, job_id)
    charts = ("chart-f", "chart-grad", "chart-lr")
    assert [browser.driver.find_element("id", c).get_attribute("data-scale") for c in charts] == ["log"] * 3
    assert browser.driver.find_element("id", "log-scale").is_selected()
    # Hover the last step: the legend reads f with its digits, never "0".
    from selenium.webdriver.common.action_chains import ActionChains

    over = browser.driver.find_element("css selector", "#chart-f .u-over")
    ActionChains(browser.driver).move_to_element_with_offset(over, over.size["width"] // 2 - 1, 0).perform()
    value = browser.wait(lambda d: d.find_element("css selector", "#chart-f .u-legend .u-series:nth-child(2) .u-value").text
                         .strip() not in ("", "—", "--") and d.find_element(
                             "css selector", "#chart-f .u-legend .u-series:nth-child(2) .u-value").text,
                         "the legend shows the hovered f")
    assert re.fullmatch(r"-?\d(\.\d+)?e-\d+", value), value
    assert float(value) > 0
    # The user's choice holds.
    browser.driver.find_element("id", "log-scale").click()
    browser.wait(lambda d: [d.find_element("id", c).get_attribute("data-scale") for c in charts] == ["linear"] * 3,
                 "the curves switch to linear")
    no_errors(browser)

    # One zoom for the three charts (a drag on one), smoothing, and the view kept in the URL.
    over = browser.driver.find_element("css selector", "#chart-grad .u-over")
    width = over.size["width"]
    ActionChains(browser.driver).move_to_element_with_offset(over, -width // 4, 0).click_and_hold() \
        .move_by_offset(width // 4, 0).release().perform()
    ranges = "return ['chart-f', 'chart-grad', 'chart-lr'].map((id) => { const d = document.getElementById(id).dataset;" \
             " return [d.zoomed, Number(d.xMin), Number(d.xMax)]; })"
    zoomed = browser.wait(lambda d: (r := d.execute_script(ranges)) and all(z == "true" and lo > 0 for z, lo, _ in r) and r,
                          "all three charts zoom")
    assert len({(lo, hi) for _, lo, hi in zoomed}) == 1, zoomed
    _, lo, hi = zoomed[0]
    assert 10 < lo < hi < 140 and hi - lo > 10, zoomed  # about the second quarter of 150 steps
    browser.js("const s = document.getElementById('smoothing'); s.value = '0.8'; s.dispatchEvent(new Event('input'));")
    browser.wait(lambda d: d.find_element("id", "chart-f").get_attribute("data-series") == "2", "f is smoothed")
    url = browser.driver.current_url
    assert f"zoom={int(lo)}%2C{int(hi)}" in url and "smooth=0.8" in url and "log=0" in url, url
    browser.driver.get(url)
    browser.wait(lambda d: plotted(browser).get("ready"), "the shared view is drawn again")
    assert browser.js(ranges) == zoomed  # the same zoom on every chart, from the URL
    assert browser.driver.find_element("id", "chart-f").get_attribute("data-series") == "2"
    assert not browser.driver.find_element("id", "log-scale").is_selected()
    assert browser.driver.find_element("id", "chart-f").get_attribute("data-scale") == "linear"
    browser.screenshot("job-curves-zoomed-smoothed")
    ActionChains(browser.driver).double_click(browser.driver.find_element("css selector", "#chart-lr .u-over")).perform()
    browser.wait(lambda d: all(z == "false" for z, _, _ in d.execute_script(ranges)), "a double click shows every step")
    assert "zoom=" not in browser.driver.current_url
    no_errors(browser)

    # A flat f (a constant objective) stays linear, and no two tick labels read the same.
    out = browser.driver.execute_async_script(r"""
        const done = arguments[arguments.length - 1];
        import('/static/charts.js').then((charts) => done({
          flat: charts.tickLabels([10, 10.00002, 10.00004, 10.00006]),
          tiny: charts.tickLabels([1e-12, 2e-12, 3e-12]),
          wide: charts.wantsLog([1280, 3, 1e-6]), narrow: charts.wantsLog([5, 1]), zero: charts.wantsLog([10, 0, 1e-9]),
        })).catch((err) => done({error: String(err)}));""")
    assert "error" not in out, out
    assert len(set(out["flat"])) == 4, out["flat"]
    assert out["tiny"] == ["1e-12", "2e-12", "3e-12"]
    assert (out["wide"], out["narrow"], out["zero"]) == (True, False, False)


def test_a_queued_gpu_job_says_why_it_waits_and_a_failed_job_shows_its_error(service: Service, browser: Browser) -> None:
    waiting = service.submit({**LESSON5, "steps": 5, "device": "gpu", "name": "wants a gpu"})
    assert waiting["waiting"], waiting  # no GPU worker in this service
    browser.driver.get(f"{service.url}/jobs/{waiting['id']}")
    browser.wait(lambda d: status_shown(browser) == "queued", "the job is shown queued")
    browser.wait(lambda d: text(browser, "job-waiting") == f"Waiting: {waiting['waiting']}", "the waiting reason is shown")

    doomed = service.submit({**LESSON5, "steps": 5, "device": "gpu", "name": "fails"})["id"]
    db = service.db()
    assert job_store.claim_job(db, doomed, "test:1", 30, 3) is not None
    error = ("the objective gave NaN at step 3: RuntimeError: a_very_long_identifier_that_should_wrap_as_a_whole_"
             "rather_than_being_cut_mid_word " * 4).strip()
    job_store.finish_job(db, doomed, "test:1", "failed", None, error)
    open_job(service, browser, doomed)
    assert status_shown(browser) == "failed"
    block = browser.driver.find_element("id", "job-error")
    assert block.tag_name == "pre" and block.text.replace("\n", " ") == error
    assert block.value_of_css_property("white-space") == "pre-wrap"
    assert block.size["width"] > 600  # a readable block, not a narrow cell
    service.http.post(f"{service.url}/v1/jobs/{waiting['id']}/cancel", timeout=10)
    no_errors(browser)


def test_a_job_page_that_cannot_read_its_job_says_so(service: Service, browser: Browser) -> None:
    browser.driver.get(f"{service.url}/jobs/no-such-job")
    message = browser.wait(lambda d: d.find_element("id", "page-error").text, "the page says what went wrong")
    assert "404" in message
    no_errors(browser, allow=lambda entry: "404" in entry["message"])

    # No answer at all (the network): the page says it cannot reach the API, and retries until it can.
    done = service.submit({**LESSON5, "steps": 5})["id"]
    service.wait(done)
    script = browser.driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": """
        const realFetch = window.fetch;
        const until = Date.now() + 2500;
        window.fetch = (url, options) => String(url).includes('/v1/') && Date.now() < until
            ? Promise.reject(new TypeError('Failed to fetch')) : realFetch(url, options);"""})
    try:
        browser.driver.get(f"{service.url}/jobs/{done}")
        message = browser.wait(lambda d: d.find_element("id", "page-error").text, "the page says it cannot reach the API")
        assert message.startswith(f"Cannot reach the API at {service.url} — retrying")
        assert "Failed to fetch" not in browser.driver.find_element("tag name", "body").text
        browser.wait(lambda d: status_shown(browser) == "succeeded", "the page shows the job once the API answers")
        assert browser.driver.find_element("id", "banner").get_attribute("class").count("hidden")
    finally:
        browser.driver.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument", {"identifier": script["identifier"]})
    no_errors(browser)


def test_dark_mode_follows_the_system(service: Service, browser: Browser) -> None:
    job_id = service.submit({**LESSON5, "steps": 20})["id"]
    service.wait(job_id)
    background = "return getComputedStyle(document.body).backgroundColor"
    browser.driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
    try:
        open_job(service, browser, job_id)
        assert browser.js(background) == "rgb(20, 23, 29)"
        panel = browser.js("return getComputedStyle(document.querySelector('.panel')).backgroundColor")
        assert panel == "rgb(29, 33, 42)"
        browser.screenshot("job-page-dark")
        no_errors(browser)
    finally:
        browser.driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": "light"}]})
    open_job(service, browser, job_id)
    assert browser.js(background) == "rgb(246, 247, 249)"


def test_with_the_api_down_the_list_says_so_and_greys_its_rows(service: Service, browser: Browser) -> None:
    """Last in the module: it stops the API (and starts it again)."""
    listed = service.submit({**LESSON5, "steps": 5, "name": "before the outage"})["id"]
    service.wait(listed)
    browser.driver.get(f"{service.url}/")
    browser.wait(lambda d: d.find_elements("css selector", f'#jobs-body tr[data-job="{listed}"]'), "the job is listed")
    assert browser.driver.find_element("id", "banner").get_attribute("class").count("hidden")
    os.killpg(service.api.pid, signal.SIGTERM)  # the API process and anything it started
    service.api.wait(timeout=30)
    try:
        banner = browser.wait(lambda d: d.find_element("id", "banner").is_displayed()
                              and d.find_element("id", "banner"), "the page says the API cannot be reached", timeout=30)
        assert banner.text.startswith(f"Cannot reach the API at {service.url} — retrying; last updated ")
        assert "Failed to fetch" not in browser.driver.find_element("tag name", "body").text
        table = browser.driver.find_element("id", "jobs")
        assert table.get_attribute("data-stale") == "true" and "stale" in table.get_attribute("class")
        assert float(table.value_of_css_property("opacity")) < 1
        assert "not current" in text(browser, "jobs-info")
        browser.screenshot("job-list-offline")
    finally:
        service.start_api()
    browser.wait(lambda d: not d.find_element("id", "banner").is_displayed()
                 and d.find_element("id", "jobs").get_attribute("data-stale") is None, "the page recovers", timeout=30)
    assert "not current" not in text(browser, "jobs-info")
    offline = lambda entry: "ERR_CONNECTION_REFUSED" in entry["message"] or "Failed to fetch" in entry["message"]
    no_errors(browser, allow=offline)
