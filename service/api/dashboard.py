"""The web dashboard: pages and their static files, served by the API itself (no CDN)."""
from __future__ import annotations

from flask import Blueprint

bp = Blueprint("dashboard", __name__)
