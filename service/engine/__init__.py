"""The engine: pure torch, no I/O. ``run`` takes a checked spec and gives a ``Result``."""
from service.engine.checkpoint import Checkpoint
from service.engine.device import EngineError, cuda_available, resolve_device
from service.engine.loop import run
from service.engine.result import Chunk, Result, StopReason

__all__ = ["Checkpoint", "Chunk", "EngineError", "Result", "StopReason", "cuda_available", "resolve_device", "run"]
