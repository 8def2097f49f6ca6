"""The client rides an API restart: safe requests (GETs, keyed POSTs) are retried for 30 s in all
by default, with jittered exponential pauses and as ``Retry-After`` asks; a submit that still gets
no answer names the Idempotency-Key it was sent with, and a resubmit with it makes no second job.

The schedule is checked on a fake clock (no server); the restarts against real API processes."""
from __future__ import annotations

import itertools
import json
import os
import signal
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests

from service.client import Client, DescentClientError, DescentUnreachable
from service.client import http as http_module
from testkit.processes import Service, service_on
from tests.client.proxy import DroppingProxy

SPEC = {"objective": "10 * (x ** 2).sum()", "x0": [8, 8], "steps": 3, "optimizer": {"name": "sgd", "lr": 0.001}}


# -- the schedule, on a fake clock ------------------------------------------------------------
class FakeClock:
    def __init__(self) -> None:
        self.now, self.pauses = 1000.0, []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.pauses.append(seconds)
        self.now += seconds


def answer(status: int, retry_after: str | None = None, body: dict[str, Any] | None = None) -> requests.Response:
    resp = requests.Response()
    resp.status_code = status
    if retry_after is not None:
        resp.headers["Retry-After"] = retry_after
    resp.headers["Content-Type"] = "application/json"
    resp._content = json.dumps(body or {"error": {"code": f"e{status}", "message": f"status {status}"}}).encode()
    resp._content_consumed = True
    return resp


class FakeSession:
    """Answers each request with the next of ``script`` (an exception is raised; the last one
    repeats), keeping the headers each was sent with."""

    def __init__(self, clock: FakeClock, *script: Any) -> None:
        self.clock, self.script, self.sent = clock, list(script), []

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        self.sent.append((method, dict(kwargs.get("headers") or {}), self.clock.now))
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(step, Exception):
            raise step
        return step


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(http_module, "time", SimpleNamespace(monotonic=fake.monotonic, sleep=fake.sleep))
    return fake


def faked(clock: FakeClock, *script: Any, **kwargs: Any) -> tuple[Client, FakeSession]:
    client = Client("http://descent.invalid", token="", **kwargs)
    session = FakeSession(clock, *script)
    client.session = session  # type: ignore[assignment]
    return client, session


REFUSED = requests.ConnectionError("[Errno 111] Connection refused")


def test_the_default_is_at_least_30_s_and_the_environment_or_the_caller_may_change_it(monkeypatch):
    monkeypatch.delenv("DESCENT_RETRY_SECONDS", raising=False)
    assert Client("http://x", token="").retry_seconds >= 30
    monkeypatch.setenv("DESCENT_RETRY_SECONDS", "7.5")
    assert Client("http://x", token="").retry_seconds == 7.5
    assert Client("http://x", token="", retry_seconds=2).retry_seconds == 2
    monkeypatch.setenv("DESCENT_RETRY_SECONDS", "soon")
    with pytest.raises(DescentClientError, match="DESCENT_RETRY_SECONDS must be a number of seconds"):
        Client("http://x", token="")


def test_a_safe_request_backs_off_with_jitter_for_the_whole_default_budget(clock, monkeypatch):
    monkeypatch.delenv("DESCENT_RETRY_SECONDS", raising=False)
    client, session = faked(clock, REFUSED)
    began = clock.now
    with pytest.raises(DescentUnreachable) as err:
        client.submit(SPEC)
    assert clock.now - began >= 30  # the last try is made at the end of the 30 s, not before
    pauses = clock.pauses
    assert pauses[0] <= http_module.FIRST_PAUSE and max(pauses) <= http_module.MAX_PAUSE
    assert all(b >= a / 2 for a, b in itertools.pairwise(pauses[:-1]))  # growing (within the jitter), to the cap
    assert len(set(pauses)) > len(pauses) // 2  # jittered: not one fixed step
    assert len(pauses) < 30  # backed off, not hammering
    keys = {headers["Idempotency-Key"] for _, headers, _ in session.sent}
    assert keys == {err.value.idempotency_key}  # every try carried the one key, and the error has it
    assert f"tried {len(session.sent)} times" in str(err.value)


def test_a_cancel_or_a_delete_is_never_sent_twice(clock):
    client, session = faked(clock, REFUSED, retry_seconds=60)
    for method in ("POST", "DELETE"):
        with pytest.raises(DescentUnreachable) as err:
            client.request(method, "/v1/jobs/J/cancel" if method == "POST" else "/v1/jobs/J")
        assert err.value.idempotency_key is None and "Idempotency-Key" not in str(err.value)
    assert len(session.sent) == 2 and clock.pauses == []
    client, session = faked(clock, answer(503, "1"), retry_seconds=60)
    with pytest.raises(DescentClientError) as answered:
        client.request("POST", "/v1/jobs/J/cancel")
    assert answered.value.status == 503 and len(session.sent) == 1


def test_retry_after_is_what_the_pause_is(clock):
    client, session = faked(clock, answer(503, "3"), answer(429, "2"), answer(502), answer(202, body={"id": "J"}),
                            retry_seconds=30)
    assert client.submit(SPEC).id == "J" and len(session.sent) == 4
    assert clock.pauses[:2] == [3.0, 2.0] and clock.pauses[2] <= http_module.FIRST_PAUSE


def test_a_retry_after_longer_than_the_time_left_is_an_error_at_once(clock):
    client, session = faked(clock, answer(429, "60"), retry_seconds=30)
    with pytest.raises(DescentClientError) as err:
        client.submit(SPEC, idempotency_key="quota-key")
    assert err.value.status == 429 and len(session.sent) == 1 and clock.pauses == []
    assert err.value.idempotency_key == "quota-key" and "quota-key" not in str(err.value)  # refused: nothing made
    client, session = faked(clock, answer(429), retry_seconds=30)  # no Retry-After: not retried
    with pytest.raises(DescentClientError):
        client.get_json("/v1/jobs")
    assert len(session.sent) == 1


def test_an_unreachable_submit_names_the_key_it_was_sent_with(clock):
    client, _ = faked(clock, REFUSED, retry_seconds=1)
    with pytest.raises(DescentUnreachable) as given:
        client.submit(SPEC, idempotency_key="my-key-1")
    assert given.value.idempotency_key == "my-key-1" and "\n" not in str(given.value)
    assert "Idempotency-Key my-key-1" in str(given.value) and "idempotency_key='my-key-1'" in str(given.value)
    with pytest.raises(DescentUnreachable) as generated:
        client.submit_sweep({"base": SPEC, "grid": {}})
    key = generated.value.idempotency_key
    assert key and len(key) == 32 and f"Idempotency-Key {key}" in str(generated.value)
    client, _ = faked(clock, answer(500), retry_seconds=1)  # an error the submit may have got past
    with pytest.raises(DescentClientError) as failed:
        client.submit(SPEC, idempotency_key="my-key-2")
    assert failed.value.status == 500 and "Idempotency-Key my-key-2" in str(failed.value)


# -- against real API processes ---------------------------------------------------------------
@pytest.fixture
def api_only(tmp_path: Path) -> Iterator[Service]:
    """An embedded service's API, started; no workers."""
    for service in service_on("embedded", tmp_path):
        service.start(workers=0)
        yield service


@pytest.fixture
def stopped(api_only: Service) -> Service:
    """An embedded service whose API has been killed (-9) after it started; no workers."""
    kill_api(api_only)
    return api_only


def kill_api(service: Service) -> None:
    assert service.api is not None
    os.killpg(service.api.pid, signal.SIGKILL)
    service.api.wait(30)


def on_refused(client: Client, refused: Callable[[], None]) -> Client:
    """``client``, calling ``refused()`` each time one of its tries gets no answer."""
    send = client.session.request

    def request(*args: Any, **kwargs: Any) -> requests.Response:
        try:
            return send(*args, **kwargs)
        except requests.ConnectionError:
            refused()
            raise

    client.session.request = request  # type: ignore[method-assign]
    return client


def tagged(service: Service, tag: str) -> list[str]:
    page = service.http.get(f"{service.url}/v1/jobs", params={"tag": f"restart:{tag}", "limit": 100}, timeout=30)
    assert page.status_code == 200, page.text
    return [job["id"] for job in page.json()["jobs"]]


@pytest.mark.integration
def test_submits_ride_out_an_api_restart_and_make_one_job_each(stopped):
    """Five submits sent while the API is down (killed -9) all succeed once it is back, each with
    exactly one job; the API is started only once every submit has had a try refused."""
    tags = [uuid.uuid4().hex[:12] for _ in range(5)]
    failed: set[int] = set()
    all_failed = threading.Event()
    lock = threading.Lock()

    def refused() -> None:
        with lock:
            failed.add(threading.get_ident())
            if len(failed) == len(tags):
                all_failed.set()

    made: dict[str, str] = {}
    errors: list[BaseException] = []

    def submit(tag: str) -> None:
        try:
            client = on_refused(Client(stopped.url, token="", retry_seconds=90), refused)
            made[tag] = client.submit({**SPEC, "tags": {"restart": tag}}).id
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)

    threads = [threading.Thread(target=submit, args=(tag,), daemon=True) for tag in tags]
    for thread in threads:
        thread.start()
    assert all_failed.wait(60), "the submits never tried the API while it was down"
    stopped.start_api()
    for thread in threads:
        thread.join(120)
    assert not errors and len(made) == 5, errors
    for tag in tags:
        assert tagged(stopped, tag) == [made[tag]]


@pytest.mark.integration
def test_a_submit_that_gave_up_is_resubmitted_with_its_key_into_the_job_it_made(api_only):
    """The API makes the job and is killed before its answer gets back; the client gives up (a
    short retry budget) naming its key; a resubmit with that key, once the API is back, answers
    with the job made before the crash, and there is no second one."""
    stopped = api_only
    proxy = DroppingProxy(stopped.port, on_drop=lambda: kill_api(stopped))
    tag = uuid.uuid4().hex[:12]
    spec = {**SPEC, "tags": {"restart": tag}}
    try:
        with pytest.raises(DescentUnreachable) as err:
            # two tries, however loaded the machine (a time budget alone gave one try, or took seconds)
            Client(proxy.url, token="", retry_seconds=60, retries=1).submit(spec)
    finally:
        proxy.close()
    key = err.value.idempotency_key
    assert key and f"Idempotency-Key {key}" in str(err.value) and proxy.seen >= 2
    stopped.start_api()
    made = tagged(stopped, tag)
    assert len(made) == 1  # the lost try did make its job
    again = Client(stopped.url, token="").submit(spec, idempotency_key=key)
    assert again.id == made[0] and tagged(stopped, tag) == made
