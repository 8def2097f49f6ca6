"""The API's dependencies point one way: it validates specs and reads the store, and never
imports the engine or the workers (``../shared/DESIGN.md``)."""
from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.slow
def test_the_api_imports_neither_the_engine_nor_the_workers():
    code = ("import pkgutil, importlib, sys, service.api\n"
            "for m in pkgutil.iter_modules(service.api.__path__): importlib.import_module('service.api.' + m.name)\n"
            "print(' '.join(sorted(n for n in sys.modules if n.startswith(('service.engine', 'workers')))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == ""
