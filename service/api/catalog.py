"""``/v1/objectives`` and ``/v1/optimizers``: what a spec may name, with formulas and defaults."""
from __future__ import annotations

from flask import Blueprint

from service.api.openapi_parts import json_response, ref
from service.api.operations import Operation
from service.api.schemas import ObjectiveCatalog, OptimizerCatalog, build
from service.jsonsafe import json_safe
from service.spec.catalog import CATALOG
from service.spec.optimizers import describe

bp = Blueprint("catalog", __name__, url_prefix="/v1")


OBJECTIVES = Operation("get", "/v1/objectives", "listObjectives", "The objective catalog", {"200": json_response(
    ref("ObjectiveCatalog"), "Objectives with formulas, parameters, default starts and minima")}, (400, 401, 403, 503))
OPTIMIZERS = Operation("get", "/v1/optimizers", "listOptimizers", "Allowed optimisers and schedulers", {"200": json_response(
    ref("OptimizerCatalog"), "Optimisers and schedulers with their arguments and defaults")}, (400, 401, 403, 503))


@bp.get("/objectives")
def objectives():  # type: ignore[no-untyped-def]
    return build(ObjectiveCatalog, {"objectives": [json_safe(o.describe()) for o in CATALOG.values()]})


@bp.get("/optimizers")
def optimizers():  # type: ignore[no-untyped-def]
    return build(OptimizerCatalog, json_safe(describe()))
