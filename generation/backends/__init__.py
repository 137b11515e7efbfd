"""Sampling backends (no Django here): `load_backend` returns vLLM on a GPU with vllm installed, else `hf`."""
from .base import Backend, GenerationCancelled, Sample, SamplingConfig, load_backend

__all__ = ["Backend", "GenerationCancelled", "Sample", "SamplingConfig", "load_backend"]
