"""Big tensors through the Python client and the ``descent`` command, against a running service:
x0 and data uploaded as .npy (no JSON), ``job.x()``/``x0()``/``grad()`` as numpy arrays (or torch
tensors), and ``descent x`` writing the .npy bit for bit."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from service.client import Client
from service.engine import run
from service.spec import check_spec
from testkit.processes import Service, running
from tests.client.test_cli import descent

pytestmark = pytest.mark.integration

N = 12_000  # over DESCENT_INLINE_ELEMENTS: the job document carries a summary
SPEC = {"objective": "((x - 0.5) ** 2).sum() + (A * x[:3]).sum()", "steps": 5, "dtype": "float64",
        "optimizer": {"name": "adam", "lr": 0.1}, "record": {"every": 5, "x": False}}
X0 = np.random.default_rng(7).normal(size=(120, 100))
A = np.array([1, 2, 3], dtype=np.int64)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    yield from running("embedded", tmp_path_factory.mktemp("tensors"))


def test_uploaded_arrays_run_and_come_back_bit_for_bit(service, tmp_path):
    client = Client(service.url, token="")
    job = client.submit({**SPEC, "objective": "((x - 0.5) ** 2).sum() + (A * x[0, :3]).sum()"},
                        x0=torch.from_numpy(X0), data={"A": A})
    assert job.json["spec"]["x0"]["shape"] == [120, 100]  # a reference, not 12,000 numbers of JSON
    assert job.wait(timeout=120)["status"] == "succeeded"
    summary = job.result["x"]
    assert summary["size"] == N and summary["href"] == f"/v1/jobs/{job.id}/x"
    want = run(check_spec({**SPEC, "objective": "((x - 0.5) ** 2).sum() + (A * x[0, :3]).sum()",
                           "x0": X0.tolist(), "data": {"A": A.tolist()}})).x
    x = job.x()
    assert isinstance(x, np.ndarray) and x.shape == (120, 100) and x.tobytes() == want.tobytes()
    assert job.x(as_torch=True).numpy().tobytes() == want.tobytes()
    assert job.x0().tobytes() == X0.tobytes()

    out = descent(service.url, "x", job.id, "-o", str(tmp_path / "x.npy"))
    assert out.returncode == 0, out.stderr
    assert np.load(tmp_path / "x.npy").tobytes() == want.tobytes()
    out = descent(service.url, "x", job.id, "--tensor", "grad")
    assert out.returncode == 1 and "record.grad" in out.stderr and len(out.stderr.strip().splitlines()) == 1
