"""The bound on waiting and streaming requests, in-process (the real-server version is
tests/integration/test_waiting.py)."""
from __future__ import annotations

import json
import threading

from service.api import create_app
from service.store import Database
from service.store.migrate import upgrade
from testkit.backends import embedded_settings
from tests.helpers.lesson import LESSON_LOGLOG
from tests.api.conftest import RecordingDispatcher


def test_with_no_slot_free_a_wait_answers_at_once_and_a_stream_is_a_503(tmp_path):
    settings = embedded_settings(tmp_path, max_waiters=1)
    db = Database(settings.database_url)
    upgrade(db)
    app = create_app(settings, {"TESTING": True}, db=db, dispatcher=RecordingDispatcher())
    client = app.test_client()
    job = client.post("/v1/jobs", data=json.dumps(LESSON_LOGLOG), content_type="application/json").get_json()
    slots = app.extensions["descent"].waiters
    with client.get(f"/v1/jobs/{job['id']}/history", buffered=False) as stream:  # holds the one slot
        assert stream.status_code == 200 and slots.in_use == 1
        now = client.get(f"/v1/jobs/{job['id']}?wait=30")
        assert now.status_code == 200 and now.headers["Retry-After"] and now.get_json()["status"] == "queued"
        busy = client.get(f"/v1/jobs/{job['id']}/history")
        assert busy.status_code == 503 and busy.get_json()["error"]["code"] == "service_busy"
        assert client.get("/healthz").get_json() == {"status": "ok", "waiting": 1, "max_waiters": 1}
    assert slots.in_use == 0  # given back when the server closed the stream
    answered = []
    waiter = threading.Thread(target=lambda: answered.append(client.get(f"/v1/jobs/{job['id']}?wait=30")))
    waiter.start()
    client.post(f"/v1/jobs/{job['id']}/cancel")
    waiter.join(30)
    assert answered[0].get_json()["status"] == "cancelled" and "Retry-After" not in answered[0].headers
    assert slots.in_use == 0
    db.engine.dispose()
