"""Data tensors in a spec: named, checked like x0, counted against the limits, traced with x."""
from __future__ import annotations

import pytest

from service.config import Limits
from service.spec import SpecError, check_spec
from service.spec.start import data_tensors

BASE = {"objective": "((A @ x - b) ** 2).sum()", "x0": [0.0, 0.0]}


def refused(spec: dict, limits: Limits | None = None) -> SpecError:
    with pytest.raises(SpecError) as err:
        check_spec(spec, limits)
    return err.value


@pytest.mark.parametrize("data,field,status,words", [
    ({"A": [[1, 2], [3]], "b": [1, 2]}, "data.A", 400, "not rectangular"),
    ({"A": [[1, 2], [3, 4]], "b": [1, "2"]}, "data.b", 400, "only numbers"),
    ({"A": [[1, 2], [3, 4]], "b": [1, 1e300]}, "data.b", 400, "finite numbers"),
    ({"A": [[1, 2], [3, 4]], "b": [1, 2], "x": [1]}, "data.x", 400, "the objective's variable"),
    ({"A": [[1, 2], [3, 4]], "b": [1, 2], "sum": [1]}, "data.sum", 400, "a function"),
    ({"A": [[1, 2], [3, 4]], "b": [1, 2], "pi": [1]}, "data.pi", 400, "a constant"),
    ({"A": [[1, 2], [3, 4]], "b": [1, 2], "c": [1]}, "data.c", 400, "not read by the objective"),
    ({"A": [[1, 2], [3, 4]], "b": [1, 2, 3]}, "objective", 400, "cannot be evaluated"),
    ({"A": {"shape": [2, 2], "init": "normal", "std": 0}, "b": [1, 2]}, "data.A.std", 400, "positive"),
    ({"A": [[1, 2], [3, 4]]}, "objective", 400, "unknown name 'b'"),
])
def test_bad_data_is_refused_naming_the_field(data: dict, field: str, status: int, words: str) -> None:
    err = refused({**BASE, "data": data})
    assert (err.field, err.status) == (field, status) and words in err.message, err.message


def test_a_data_name_must_be_a_name() -> None:
    assert refused({**BASE, "data": {"1A": [1]}}).field.startswith("data")


def test_data_counts_against_max_elements_with_x0() -> None:
    limits = Limits(max_elements=10)
    spec = {**BASE, "data": {"A": {"shape": [4, 2]}, "b": [1.0, 2.0, 3.0, 4.0]}}
    err = refused(spec, limits)
    assert (err.field, err.status) == ("data", 413) and "14 elements" in err.message
    assert refused({**BASE, "data": {"A": {"shape": [11, 2]}, "b": [1.0]}}, limits).field == "data.A.shape"


def test_the_trace_counts_the_data_in_the_peak() -> None:
    limits = Limits(max_objective_bytes=2_000_000)
    spec = {"objective": "(A * x).sum()", "x0": {"shape": [1000]}, "data": {"A": {"shape": [500, 1000]}}}
    err = refused(spec, limits)
    assert err.status == 413 and "x and the data" in err.message


def test_generated_data_defaults_to_seed_zero_whatever_the_jobs_seed() -> None:
    spec = {**BASE, "data": {"A": {"shape": [2, 2]}, "b": {"shape": [2], "init": "uniform"}}}
    one, two = check_spec({**spec, "seed": 1}), check_spec({**spec, "seed": 2})
    for name in ("A", "b"):
        assert data_tensors(one)[name].tolist() == data_tensors(two)[name].tolist()
    seeded = check_spec({**spec, "data": {**spec["data"], "A": {"shape": [2, 2], "seed": 5}}})
    assert data_tensors(seeded)["A"].tolist() != data_tensors(one)["A"].tolist()


def test_a_spec_without_data_is_stored_as_before() -> None:
    assert "data" not in check_spec(BASE | {"objective": "(x ** 2).sum()"}).as_json()
    stored = check_spec({**BASE, "data": {"A": [[1, 0], [0, 1]], "b": [1, 2]}}).as_json()
    assert stored["data"] == {"A": [[1, 0], [0, 1]], "b": [1, 2]}
