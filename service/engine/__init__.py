"""The engine: pure torch, no I/O. ``run`` takes a checked spec and gives a ``Result``;
``run_batch`` runs many compatible ones as one torch program."""
from service.engine.batched import BatchSink, Lane, LaneEnd, NotBatchable, run_batch
from service.engine.checkpoint import Checkpoint
from service.engine.chunking import Chunking
from service.engine.device import EngineError, cuda_available, resolve_device
from service.engine.loop import run
from service.engine.result import Chunk, Result, StopReason

__all__ = ["BatchSink", "Lane", "LaneEnd", "NotBatchable", "run_batch", "Checkpoint", "Chunk", "Chunking", "EngineError", "Result", "StopReason", "cuda_available", "resolve_device", "run"]
