"""A job with a big x (1,000,000 elements, 50 SGD steps) through the whole service, against the
bare ``torch.optim`` loop of the same steps, in one run.

    python benchmarks/big_x.py [--numel 1000000] [--steps 50] [--repeat 3] [--backend embedded|postgres|both]

For each backend, starts the API and one worker, then ``--repeat`` times, alternating with the bare
loop: POST the job, then ``GET /v1/jobs/ID?wait=60`` until it is finished (POST-to-finished as
``?wait`` sees it); ``GET /v1/jobs/ID`` of the finished job (time and bytes);
``GET /v1/jobs/ID/x?format=npy`` (time, and that it is bit-for-bit the bare loop's final x); and
the same job with x0 uploaded as ``.npy`` (its result must be the same). Prints medians and the
target: POST-to-finished at most 3x the bare loop + 0.5 s, the job document under 50 ms and 20 KB,
the .npy under 0.5 s.
"""
from __future__ import annotations

import argparse
import http.client
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from testkit.processes import service_on  # noqa: E402


def spec(numel: int, steps: int) -> dict[str, Any]:
    return {"objective": "10 * (x ** 2).sum()", "x0": {"shape": [numel], "init": "ones"}, "steps": steps,
            "optimizer": {"name": "sgd", "lr": 1e-3}, "record": {"every": 1, "x": False}}


def bare_loop(numel: int, steps: int) -> tuple[float, np.ndarray]:
    """The plain loop a user would write, in the job's dtype (float32, the default): seconds and
    the final x (as float64: its values exactly)."""
    torch.set_num_threads(1)
    began = time.perf_counter()
    x = torch.ones(numel, dtype=torch.float32, requires_grad=True)
    opt = torch.optim.SGD([x], lr=1e-3)
    for _ in range(steps):
        opt.zero_grad()
        f = 10 * (x ** 2).sum()
        f.backward()
        opt.step()
    return time.perf_counter() - began, x.detach().double().numpy()


def request(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    return response.status, response.read()


def one_job(port: int, numel: int, steps: int) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    body = json.dumps(spec(numel, steps)).encode()
    began = time.perf_counter()
    status, answer = request(conn, "POST", "/v1/jobs", body, {"Content-Type": "application/json"})
    assert status == 202, answer[:500]
    job_id = json.loads(answer)["id"]
    while True:
        status, answer = request(conn, "GET", f"/v1/jobs/{job_id}?wait=30")
        assert status == 200, answer[:500]
        if json.loads(answer)["status"] in ("succeeded", "failed", "cancelled"):
            break
    finished = time.perf_counter() - began
    assert json.loads(answer)["status"] == "succeeded", answer[:500]
    began = time.perf_counter()
    status, document = request(conn, "GET", f"/v1/jobs/{job_id}")
    doc_s = time.perf_counter() - began
    began = time.perf_counter()
    status, npy = request(conn, "GET", f"/v1/jobs/{job_id}/x?format=npy")
    npy_s = time.perf_counter() - began
    x = np.load(io.BytesIO(npy)) if status == 200 else None
    conn.close()
    return {"id": job_id, "finished_s": finished, "doc_s": doc_s, "doc_bytes": len(document), "npy_s": npy_s, "x": x}


def uploaded(port: int, numel: int, steps: int) -> np.ndarray | None:
    """The job again, with x0 uploaded as .npy (multipart): its final x."""
    import requests

    x0 = io.BytesIO()
    np.save(x0, np.ones(numel))
    s = spec(numel, steps)
    del s["x0"]
    response = requests.post(f"http://127.0.0.1:{port}/v1/jobs",
                             files={"spec": ("spec.json", json.dumps(s), "application/json"),
                                    "x0": ("x0.npy", x0.getvalue(), "application/x-npy")}, timeout=300)
    if response.status_code != 202:
        print(f"  upload: {response.status_code} {response.text[:300]}")
        return None
    job_id = response.json()["id"]
    while requests.get(f"http://127.0.0.1:{port}/v1/jobs/{job_id}?wait=30", timeout=300).json()["status"] \
            not in ("succeeded", "failed", "cancelled"):
        pass
    got = requests.get(f"http://127.0.0.1:{port}/v1/jobs/{job_id}/x?format=npy", timeout=300)
    return np.load(io.BytesIO(got.content)) if got.ok else None


def measure(backend: str, numel: int, steps: int, repeat: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        for service in service_on(backend, Path(tmp)):
            service.start(workers=1)
            bare, runs, exact = [], [], []
            for _ in range(repeat):
                seconds, want = bare_loop(numel, steps)
                bare.append(seconds)
                run = one_job(service.port, numel, steps)
                runs.append(run)
                exact.append(run["x"] is not None and run["x"].tobytes() == want.tobytes())
            got = uploaded(service.port, numel, steps)
            same_upload = got is not None and got.tobytes() == want.tobytes()
    med = {k: statistics.median(r[k] for r in runs) for k in ("finished_s", "doc_s", "doc_bytes", "npy_s")}
    return {"bare_s": statistics.median(bare), **med, "exact": all(exact), "upload_same": same_upload}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--numel", type=int, default=1_000_000)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--backend", choices=("embedded", "postgres", "both"), default="both")
    parser.add_argument("--json", action="store_true", help="also print one JSON line of the results")
    args = parser.parse_args()
    results = {}
    for backend in ("embedded", "postgres") if args.backend == "both" else (args.backend,):
        m = results[backend] = measure(backend, args.numel, args.steps, args.repeat)
        budget = 3 * m["bare_s"] + 0.5
        print(f"{backend}: bare loop {m['bare_s']:.3f} s; POST to finished {m['finished_s']:.3f} s "
              f"({m['finished_s'] / m['bare_s']:.1f}x bare; target <= {budget:.2f} s: "
              f"{'met' if m['finished_s'] <= budget else 'not met'}); GET job {m['doc_s'] * 1000:.1f} ms, "
              f"{m['doc_bytes'] / 1000:.1f} KB; .npy x {m['npy_s'] * 1000:.0f} ms, bit-exact {m['exact']}; "
              f"uploaded x0 same result {m['upload_same']}", flush=True)
    if args.json:
        print(json.dumps({"numel": args.numel, "steps": args.steps, "repeat": args.repeat, **results}))


if __name__ == "__main__":
    main()
