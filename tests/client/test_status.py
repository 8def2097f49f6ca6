"""The client's status and stop-reason words are the service's (the client imports nothing of the
service, so it keeps a copy), and a run stopped on divergence reads "diverged"."""
from __future__ import annotations

from service import status as service_status
from service.client import status as client_status


def test_the_clients_statuses_and_stop_reasons_are_the_services():
    assert [(s.name, s.value) for s in client_status.Status] == [(s.name, s.value) for s in service_status.JobStatus]
    assert [(r.name, r.value) for r in client_status.StopReason] == [(r.name, r.value) for r in service_status.StopReason]
    assert client_status.FINISHED == {s.value for s in service_status.FINISHED}
    assert set(client_status.UNFINISHED) == {s.value for s in service_status.JobStatus} - client_status.FINISHED


def test_a_run_stopped_on_divergence_reads_diverged_and_others_read_their_status():
    assert client_status.outcome({"status": "succeeded", "result": {"stop_reason": "diverged"}}) == "diverged"
    assert client_status.outcome({"status": "succeeded", "result": {"stop_reason": "steps"}}) == "succeeded"
    assert client_status.outcome({"status": "failed", "result": None}) == "failed"
    assert client_status.outcome({"status": "cancelled", "result": {"stop_reason": "diverged"}}) == "cancelled"
