"""Migration 0008 drops the reference log-probs cached in bf16 or fp16 by the fp32-head scoring and keeps fp32's."""
from __future__ import annotations

import pytest

from tests.migrating import models_as_of

BEFORE = [("training", "0007_promotion_gate")]


@pytest.mark.slow
def test_half_precision_reference_logps_are_dropped_and_fp32_kept(transactional_db):
    with models_as_of(BEFORE) as old:
        prompt = old.get_model("generation", "Prompt").objects.create(text="Name a fruit.")
        version = old.get_model("generation", "ModelVersion").objects.create(name="base", path="/x")
        response = old.get_model("generation", "Response").objects.create(prompt=prompt, version=version, text="apple")
        cached = old.get_model("training", "ReferenceLogp")
        for dtype, logp in (("float32", -1.5), ("bfloat16", -1.75), ("float16", -2.0), ("", -3.0)):
            cached.objects.create(response=response, reference=version, max_length=512, dtype=dtype, logp=logp)
    from training.models import ReferenceLogp

    assert sorted(ReferenceLogp.objects.values_list("dtype", "logp")) == [("", -3.0), ("float32", -1.5)]
