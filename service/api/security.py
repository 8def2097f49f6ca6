"""Browser-safe HTTP: which requests the API refuses before a handler runs, and the headers
every response carries. (Filled in by the browser-safety work of issue 9.)"""
from __future__ import annotations

from flask import Flask

from service.config import Settings


def register(app: Flask, settings: Settings) -> None:
    """Install the request checks and response headers on ``app``."""
