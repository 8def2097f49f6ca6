"""Helpers for tests only (benchmarks share ``testkit`` instead)."""
