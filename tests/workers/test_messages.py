"""Task messages for new jobs (``service.queue.messages_for``): jobs of one batch key and queue
share messages of at most a batch's size; every other job has its own."""
from __future__ import annotations

from service.queue import Message, messages_for


def test_jobs_of_one_key_and_queue_share_messages_of_at_most_a_batch():
    jobs = [(f"a{i}", "cpu", "k1") for i in range(5)] + [("b0", "cpu", None), ("g0", "gpu", "k1"), ("c0", "cpu", "k2")]
    assert messages_for(jobs, 2) == [
        Message(["b0"], "cpu"),
        Message(["a0", "a1"], "cpu"), Message(["a2", "a3"], "cpu"), Message(["a4"], "cpu"),
        Message(["g0"], "gpu"), Message(["c0"], "cpu")]


def test_batching_off_sends_one_message_per_job():
    jobs = [(f"a{i}", "cpu", "k1") for i in range(3)]
    assert messages_for(jobs, 1) == [Message([f"a{i}"], "cpu") for i in range(3)]
