"""The client's status words are the service's, and a run stopped on divergence reads "diverged"."""
from __future__ import annotations

from service.client import status


def test_finished_and_unfinished_split_the_statuses():
    assert status.FINISHED == {"succeeded", "failed", "cancelled"}
    assert set(status.UNFINISHED) == {"queued", "running"}
    assert "queued" in status.UNFINISHED and all(isinstance(s, str) for s in status.FINISHED)


def test_a_run_stopped_on_divergence_reads_diverged_and_others_read_their_status():
    assert status.outcome({"status": "succeeded", "result": {"stop_reason": "diverged"}}) == "diverged"
    assert status.outcome({"status": "succeeded", "result": {"stop_reason": "steps"}}) == "succeeded"
    assert status.outcome({"status": "failed", "result": None}) == "failed"
    assert status.outcome({"status": "cancelled", "result": {"stop_reason": "diverged"}}) == "cancelled"
