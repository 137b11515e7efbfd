"""Migration 0008 drops the reference log-probs cached in bf16 or fp16 by the fp32-head scoring and keeps fp32's;
0011 drops every cached value (which ones came from a pair cut to max_length is not recorded), and from then on
only pairs scored whole are cached; 0015 drops the half-precision values of transformers' attention on padded
batches ("/h2") when the CPU's trainer packs its batches under its own attention, and keeps fp32's."""
from __future__ import annotations

import pytest

from tests.migrating import migrate_to, models_as_of

BEFORE = [("training", "0007_promotion_gate")]


def _version_and_response(old):
    """A version and its response to a prompt, made with the historical models of `old` (models_as_of's apps)."""
    prompt = old.get_model("generation", "Prompt").objects.create(text="Name a fruit.")
    version = old.get_model("generation", "ModelVersion").objects.create(name="base", path="/x")
    response = old.get_model("generation", "Response").objects.create(prompt=prompt, version=version, text="apple")
    return version, response


@pytest.mark.slow
def test_half_precision_reference_logps_are_dropped_and_fp32_kept(transactional_db):
    with models_as_of(BEFORE) as old:
        version, response = _version_and_response(old)
        cached = old.get_model("training", "ReferenceLogp")
        for dtype, logp in (("float32", -1.5), ("bfloat16", -1.75), ("float16", -2.0), ("", -3.0)):
            cached.objects.create(response=response, reference=version, max_length=512, dtype=dtype, logp=logp)
        migrate_to([("training", "0008_drop_half_precision_reference_logps")])
        assert sorted(cached.objects.values_list("dtype", "logp")) == [("", -3.0), ("float32", -1.5)]


@pytest.mark.slow
def test_values_cached_before_only_whole_pairs_were_cached_are_dropped(transactional_db):
    with models_as_of([("training", "0010_data_choice_spin")]) as old:
        version, response = _version_and_response(old)
        old.get_model("training", "ReferenceLogp").objects.create(response=response, reference=version,
                                                                  max_length=512, dtype="float32", logp=-1.5)
    from training.models import ReferenceLogp

    assert not ReferenceLogp.objects.exists()


@pytest.mark.slow
def test_values_of_the_padded_attention_computation_are_dropped_and_fp32_kept(transactional_db):
    with models_as_of([("training", "0014_data_choice_says_labelling_round")]) as old:
        version, response = _version_and_response(old)
        cached = old.get_model("training", "ReferenceLogp")
        for dtype, logp in (("float32", -1.5), ("bfloat16/h2", -1.75), ("float16/h2", -2.0)):
            cached.objects.create(response=response, reference=version, max_length=512, dtype=dtype, logp=logp)
        migrate_to([("training", "0015_drop_h2_reference_logps")])
        assert sorted(cached.objects.values_list("dtype", "logp")) == [("float32", -1.5)]


def test_half_precision_values_are_read_only_under_the_current_computations_key(db):
    """A value under the bare "bfloat16" key (the fp32-head computation) or "bfloat16/h2" (padded batches under
    transformers' attention), written by a worker on the old code even after the migration ran, is never read; what
    the current code stores is."""
    from annotate.selection import _cached
    from generation.models import ModelVersion, Prompt, Response
    from training.dataset import cache_key, store_reference_logps
    from training.dpo.config import DPOConfig
    from training.models import ReferenceLogp

    prompt = Prompt.objects.create(text="Name a fruit.")
    version = ModelVersion.objects.create(name="base", path="/x")
    a, b = (Response.objects.create(prompt=prompt, version=version, text=t) for t in ("apple", "pear"))
    config = DPOConfig(max_length=512, dtype="bfloat16")
    ReferenceLogp.objects.create(response=a, reference=version, max_length=512, dtype="bfloat16", logp=-9.0)
    ReferenceLogp.objects.create(response=b, reference=version, max_length=512, dtype="bfloat16/h2", logp=-8.0)
    assert _cached(version, [a.pk, b.pk], config) == {}
    store_reference_logps(version, 512, "bfloat16", [(a, b)], [(-1.5, -2.5)], [False])
    assert _cached(version, [a.pk, b.pk], config) == {a.pk: -1.5, b.pk: -2.5}
    assert cache_key("bfloat16") != "bfloat16" and cache_key("float32") == "float32"
    assert set(ReferenceLogp.objects.values_list("dtype", flat=True)) == {"bfloat16", "bfloat16/h2",
                                                                          cache_key("bfloat16")}


def test_a_pair_the_trainer_could_not_score_caches_nothing(db):
    """The trainer reports NaN for a pair it could not score (a response truncated to nothing). PostgreSQL kept the
    NaN in the cache, and a later run read it back as a reference log-prob; nothing is cached for it now."""
    from generation.models import ModelVersion, Prompt, Response
    from training.dataset import store_reference_logps
    from training.models import ReferenceLogp

    prompt = Prompt.objects.create(text="Name a fruit.")
    version = ModelVersion.objects.create(name="base", path="/x")
    a, b, c, d = (Response.objects.create(prompt=prompt, version=version, text=t) for t in ("apple", "pear", "fig", "kiwi"))
    store_reference_logps(version, 512, "float32", [(a, b), (c, d)], [(float("nan"), float("nan")), (-1.5, -2.5)],
                          [False, False])
    assert dict(ReferenceLogp.objects.values_list("response_id", "logp")) == {c.pk: -1.5, d.pk: -2.5}
