"""Listing jobs: newest first, and filters by name, stop reason and creation time."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from tests.api.test_jobs import submit
from tests.helpers.lesson import LESSON_PARABOLA


def ids(client, query: str) -> list[str]:
    resp = client.get(f"/v1/jobs?{query}")
    assert resp.status_code == 200, resp.get_json()
    return [j["id"] for j in resp.get_json()["jobs"]]


def test_newest_first_pages_through_every_job_once(client):
    made = [submit(client, {**LESSON_PARABOLA, "name": f"j{i}"}).get_json()["id"] for i in range(5)]
    assert ids(client, "") == made and ids(client, "order=asc") == made
    seen, cursor = [], None
    while True:
        resp = client.get("/v1/jobs?order=desc&limit=2" + (f"&cursor={cursor}" if cursor else "")).get_json()
        seen += [j["id"] for j in resp["jobs"]]
        cursor = resp["next_cursor"]
        if cursor is None:
            break
    assert seen == made[::-1]


def test_a_diverged_run_is_found_by_its_stop_reason(client, run_job):
    fine = submit(client, {**LESSON_PARABOLA, "name": "fine"}).get_json()["id"]
    wild = submit(client, {**LESSON_PARABOLA, "name": "wild", "steps": 500, "optimizer": {"name": "sgd", "lr": 1e6}}).get_json()["id"]
    run_job(fine)
    run_job(wild)
    job = client.get(f"/v1/jobs/{wild}").get_json()
    assert job["status"] == "succeeded" and job["result"]["stop_reason"] == "diverged"
    assert ids(client, "stop_reason=diverged") == [wild]
    assert ids(client, "stop_reason=steps") == [fine]
    assert ids(client, "name=fine") == [fine] and ids(client, "name=nobody") == []
    assert ids(client, "status=succeeded&stop_reason=diverged&name=wild") == [wild]


def test_created_after_and_before_bound_the_list(client):
    first = submit(client, LESSON_PARABOLA).get_json()
    created = datetime.fromisoformat(first["created_at"].replace("Z", "+00:00"))
    later = (created + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    earlier = (created - timedelta(seconds=1)).astimezone(timezone(timedelta(hours=2))).isoformat()
    assert ids(client, f"created_after={later}") == []
    assert ids(client, f"created_before={later}") == [first["id"]]
    assert ids(client, "created_after=" + earlier.replace("+", "%2B")) == [first["id"]]
    assert ids(client, f"created_before={created.date().isoformat()}") == []


def test_bad_listing_parameters_are_400s_naming_them(client):
    for query, field in (("order=sideways", "order"), ("stop_reason=bored", "stop_reason"),
                         ("created_after=yesterday", "created_after"), ("created_before=2026-13-01", "created_before"),
                         ("name=" + "n" * 201, "name"), ("colour=red", "colour")):
        resp = client.get(f"/v1/jobs?{query}")
        assert resp.status_code == 400 and resp.get_json()["error"]["field"] == field, query
