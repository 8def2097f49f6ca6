"""A Flask test client that sends one API token: a user of an auth-required API."""
from __future__ import annotations

import json
from typing import Any

from tests.helpers.lesson import LESSON_LOGLOG


class User:
    """Sends ``token`` as a bearer token (none when it is None)."""

    def __init__(self, client: Any, token: str | None) -> None:
        self.client, self.token = client, token

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.client.get(path, headers=self._headers(), **kwargs)

    def delete(self, path: str) -> Any:
        return self.client.delete(path, headers=self._headers())

    def post(self, path: str, body: Any = None) -> Any:
        if body is None:
            return self.client.post(path, headers=self._headers())
        return self.client.post(path, data=json.dumps(body), content_type="application/json", headers=self._headers())

    def submit(self, spec: dict[str, Any] | None = None) -> Any:
        """POST a job (the lesson's by default); the response."""
        return self.post("/v1/jobs", spec or LESSON_LOGLOG)

    def submitted(self, spec: dict[str, Any] | None = None) -> str:
        """POST a job that must be accepted; its id."""
        resp = self.submit(spec)
        assert resp.status_code == 202, resp.get_json()
        return str(resp.get_json()["id"])
