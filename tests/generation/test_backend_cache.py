"""A loaded sampler is kept for the next job, but never outlives the checkpoint it was loaded from."""
from __future__ import annotations

import shutil

import torch

from generation import services as gen
from generation.backends.base import SamplingConfig
from generation.models import ModelVersion
from tests.tiny import build_tiny_model


def _first_weight(backend) -> torch.Tensor:
    return next(backend.model.parameters()).detach().clone()


def test_a_checkpoint_written_again_under_the_same_version_is_loaded_afresh(db, tmp_path, settings):
    """A database restored from a backup (or a run trained again into the same folder) gives a version the same id
    and path as before, with other weights: the sampler must answer with the weights now on disk."""
    settings.PREFLOOP_BACKEND = "hf"  # our sampler, whose weights the test reads (vLLM's would be the GPU default)
    path = tmp_path / "version"
    build_tiny_model(tmp_path / "one", seed=1)
    build_tiny_model(tmp_path / "two", seed=2)
    shutil.copytree(tmp_path / "one", path)
    version = ModelVersion.objects.create(name="v", path=str(path))
    first = gen.backend_for(version, dtype="float32")
    assert gen.backend_for(version, dtype="float32") is first, "unchanged: the loaded sampler is kept"
    before = _first_weight(first)
    config = SamplingConfig(n=1, max_new_tokens=6, temperature=0.0)

    shutil.rmtree(path)
    shutil.copytree(tmp_path / "two", path)
    again = gen.backend_for(ModelVersion.objects.get(pk=version.pk), dtype="float32")
    assert again is not first
    assert not torch.equal(_first_weight(again), before)
    expected = build_and_answer(tmp_path / "two", config)
    try:
        assert again.generate(["Name a fruit."], config, seeds=[0])[0][0].text == expected
    finally:
        gen.release_backends()


def build_and_answer(model_dir, config) -> str:
    from generation.backends import load_backend

    backend = load_backend(str(model_dir), kind="hf", dtype="float32")
    try:
        return backend.generate(["Name a fruit."], config, seeds=[0])[0][0].text
    finally:
        backend.close()
