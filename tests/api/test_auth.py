"""Tokens, owners and quotas through the API, on SQLite and PostgreSQL: who may see, cancel and
submit what, and the 401/404/429 answers when they may not."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest

from service.api.auth import auth_mode
from service.config import ConfigError, Quotas
from service.store import tokens
from service.status import JobStatus
from testkit.backends import embedded_settings
from tests.helpers.lesson import LESSON_LOGLOG
from tests.helpers.users import User


def test_no_token_is_a_401_with_a_bearer_challenge(auth_api):
    app, user = auth_api()
    anonymous = user("alice")
    anonymous.token = None
    for resp in (anonymous.get("/v1/jobs"), anonymous.submit(), anonymous.get("/v1/objectives"),
                 anonymous.post("/v1/jobs/x/cancel")):
        assert resp.status_code == 401, resp.get_data(as_text=True)
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert resp.get_json()["error"]["code"] == "unauthorized"


def test_a_bad_or_revoked_token_is_a_401(auth_api, db):
    app, user = auth_api()
    alice = user("alice")
    assert alice.get("/v1/jobs").status_code == 200
    wrong = User(alice.client, alice.token + "x")
    assert wrong.get("/v1/jobs").status_code == 401
    assert 'error="invalid_token"' in wrong.get("/v1/jobs").headers["WWW-Authenticate"]
    basic = User(alice.client, None)
    assert basic.client.get("/v1/jobs", headers={"Authorization": "Basic abc"}).status_code == 401
    (record,) = [t for t in tokens.list_tokens(db) if t.owner == "alice"]
    tokens.revoke_token(db, record.id)
    fresh_app, _ = auth_api()  # a new process: nothing remembered of the token
    assert User(fresh_app.test_client(), alice.token).get("/v1/jobs").status_code == 401


def test_health_and_openapi_need_no_token(auth_api):
    app, _ = auth_api()
    client = app.test_client()
    assert client.get("/healthz").status_code == 200
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/readyz").status_code in (200, 503)


def test_owners_see_only_their_own_jobs_and_another_owners_job_is_a_404(auth_api):
    app, user = auth_api()
    alice, bob, admin = user("alice"), user("bob"), user("root", admin=True)
    job = alice.submit().get_json()
    assert job["owner"] == "alice"
    bobs = bob.submit().get_json()
    assert [j["id"] for j in alice.get("/v1/jobs").get_json()["jobs"]] == [job["id"]]
    assert [j["id"] for j in bob.get("/v1/jobs").get_json()["jobs"]] == [bobs["id"]]
    for path in (f"/v1/jobs/{job['id']}", f"/v1/jobs/{job['id']}?wait=0.1", f"/v1/jobs/{job['id']}/history"):
        resp = bob.get(path)
        assert resp.status_code == 404 and resp.get_json()["error"]["code"] == "not_found", path
    assert bob.post(f"/v1/jobs/{job['id']}/cancel").status_code == 404
    assert alice.get(f"/v1/jobs/{job['id']}").get_json()["status"] == JobStatus.QUEUED
    everyone = {j["id"] for j in admin.get("/v1/jobs").get_json()["jobs"]}
    assert everyone == {job["id"], bobs["id"]}
    assert admin.get(f"/v1/jobs/{job['id']}").status_code == 200
    assert admin.post(f"/v1/jobs/{bobs['id']}/cancel").get_json()["status"] == JobStatus.CANCELLED
    assert alice.post(f"/v1/jobs/{job['id']}/cancel").get_json()["status"] == JobStatus.CANCELLED


def test_the_fleet_and_metrics_are_for_admins(auth_api):
    app, user = auth_api()
    alice, root = user("alice"), user("root", admin=True)
    for path in ("/v1/workers", "/metrics"):
        refused = alice.get(path)
        assert refused.status_code == 403, (path, refused.data[:200])
        assert refused.get_json()["error"]["code"] == "forbidden" and "admin" in refused.get_json()["error"]["message"]
        assert root.get(path).status_code == 200, path
    assert root.get("/v1/workers").get_json() == {"workers": []}


def test_an_unknown_id_and_another_owners_id_answer_alike(auth_api):
    app, user = auth_api()
    alice, bob = user("alice"), user("bob")
    job = alice.submit().get_json()
    theirs, missing = bob.get(f"/v1/jobs/{job['id']}"), bob.get("/v1/jobs/00000000-0000-0000-0000-000000000000")
    assert theirs.status_code == missing.status_code == 404
    assert theirs.get_json()["error"]["message"].replace(job["id"], "ID") == \
        missing.get_json()["error"]["message"].replace("00000000-0000-0000-0000-000000000000", "ID")


def test_idempotency_keys_are_per_owner(auth_api):
    app, user = auth_api()
    alice, bob = user("alice"), user("bob")
    headers = {"Idempotency-Key": "same"}
    a = alice.client.post("/v1/jobs", data=json.dumps(LESSON_LOGLOG), content_type="application/json",
                          headers={**alice._headers(), **headers})
    b = bob.client.post("/v1/jobs", data=json.dumps(LESSON_LOGLOG), content_type="application/json",
                        headers={**bob._headers(), **headers})
    assert a.status_code == b.status_code == 202
    assert a.get_json()["id"] != b.get_json()["id"] and "Idempotent-Replayed" not in b.headers


def test_submissions_per_minute_quota_is_a_429_with_retry_after(auth_api):
    app, user = auth_api(Quotas(submissions_per_minute=3))
    alice, bob, admin = user("alice"), user("bob"), user("root", admin=True)
    assert [alice.submit().status_code for _ in range(3)] == [202] * 3
    refused = alice.submit()
    assert refused.status_code == 429
    assert refused.get_json()["error"]["code"] == "quota_exceeded"
    assert "DESCENT_QUOTA_SUBMISSIONS_PER_MINUTE" in refused.get_json()["error"]["message"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert bob.submit().status_code == 202  # a quota is per owner
    assert all(admin.submit().status_code == 202 for _ in range(5))  # admins are exempt
    assert len(alice.get("/v1/jobs").get_json()["jobs"]) == 3  # the refused submission left nothing


def test_active_jobs_quota_frees_up_as_jobs_finish(auth_api):
    app, user = auth_api(Quotas(active_jobs=2))
    alice = user("alice")
    first, _ = alice.submit().get_json(), alice.submit().get_json()
    refused = alice.submit()
    assert refused.status_code == 429 and "DESCENT_QUOTA_ACTIVE_JOBS" in refused.get_json()["error"]["message"]
    assert int(refused.headers["Retry-After"]) >= 1
    alice.post(f"/v1/jobs/{first['id']}/cancel")
    assert alice.submit().status_code == 202


def test_recorded_values_quota_counts_what_each_job_may_record(auth_api):
    per_job = (LESSON_LOGLOG["steps"] + 2) * (3 + 4)  # rows x (step, f, grad_norm, lr... and x's 4 values)
    app, user = auth_api(Quotas(recorded_values=per_job * 2))
    alice = user("alice")
    assert alice.submit().status_code == 202 and alice.submit().status_code == 202
    refused = alice.submit()
    assert refused.status_code == 429 and "DESCENT_QUOTA_RECORDED_VALUES" in refused.get_json()["error"]["message"]
    smaller = {**LESSON_LOGLOG, "record": {"x": False}, "steps": 10}
    assert alice.submit(smaller).status_code == 429  # still over: the first two keep their reservation


def test_auth_defaults_to_off_on_loopback_and_required_elsewhere(tmp_path):
    base = embedded_settings(tmp_path)
    assert auth_mode(replace(base, host="127.0.0.1")) == "off"
    assert auth_mode(replace(base, host="::1")) == "off"
    assert auth_mode(replace(base, host="0.0.0.0")) == "required"
    assert auth_mode(replace(base, host="10.1.2.3", auth="required")) == "required"
    with pytest.raises(ConfigError, match="DESCENT_AUTH_OFF_ON_NETWORK"):
        auth_mode(replace(base, host="0.0.0.0", auth="off"))
    assert auth_mode(replace(base, host="0.0.0.0", auth="off", auth_off_on_network="yes")) == "off"
    with pytest.raises(ConfigError, match="DESCENT_AUTH must be required or off"):
        auth_mode(replace(base, auth="maybe"))


def test_auth_off_acts_as_the_local_admin(client):
    job = client.post("/v1/jobs", data=json.dumps(LESSON_LOGLOG), content_type="application/json").get_json()
    assert job["owner"] == "local"


def test_text_not_shaped_like_a_token_is_refused_without_a_lookup(auth_api, monkeypatch):
    app, user = auth_api()
    alice = user("alice")
    looked_up = []
    import service.api.auth as auth_module

    real = auth_module.verify_token
    monkeypatch.setattr(auth_module, "verify_token", lambda db, secret: looked_up.append(secret) or real(db, secret))
    for bogus in ("x" * 200_000, "dsc_short", alice.token + "A", "dsc_" + "!" * 43):
        assert User(alice.client, bogus).get("/v1/jobs").status_code == 401
    assert looked_up == []
    assert User(alice.client, alice.token).get("/v1/jobs").status_code == 200
    assert len(looked_up) == 1


def test_a_reserved_idempotency_key_prefix_is_refused(client):
    resp = client.post("/v1/jobs", data=json.dumps(LESSON_LOGLOG), content_type="application/json",
                       headers={"Idempotency-Key": "owner-sha256:" + "0" * 64})
    assert resp.status_code == 400 and resp.get_json()["error"]["field"] == "Idempotency-Key"
