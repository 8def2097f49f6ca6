"""``/v1/objectives`` and ``/v1/optimizers``: what a spec may name, with formulas and defaults."""
from __future__ import annotations

from flask import Blueprint

from service.api.schemas import ObjectiveCatalog, OptimizerCatalog, build
from service.jsonsafe import json_safe
from service.spec.catalog import CATALOG
from service.spec.optimizers import describe

bp = Blueprint("catalog", __name__, url_prefix="/v1")


@bp.get("/objectives")
def objectives():  # type: ignore[no-untyped-def]
    return build(ObjectiveCatalog, {"objectives": [json_safe(o.describe()) for o in CATALOG.values()]})


@bp.get("/optimizers")
def optimizers():  # type: ignore[no-untyped-def]
    return build(OptimizerCatalog, json_safe(describe()))
