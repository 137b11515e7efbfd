"""A run that would train nothing, or train its labels as other labels, is refused before any model is loaded."""
import pytest

from tests.training.test_trainer import synthetic_pairs
from training.dpo import trainer
from training.dpo.config import DPOConfig
from training.dpo.data import PreferencePair


class TwoRanks:
    """What _Dist is on rank 0 of `accelerate launch --num_processes 2` (these paths need no collective)."""

    accelerator = None
    rank, world, is_main = 0, 2, True
    device = "cpu"

    def gather(self, obj):
        return obj

    def mean(self, values):
        return values


def _no_model(*args, **kwargs):
    raise AssertionError("a model was loaded for a run that is refused")


def test_fewer_usable_pairs_than_processes_is_refused_and_nothing_saved(tiny_model_dir, tmp_path, monkeypatch):
    # the share of each process was 0 pairs: no step ran and the unchanged model was saved as the round's version
    monkeypatch.setattr(trainer, "_Dist", TwoRanks)
    monkeypatch.setattr(trainer, "load_model", _no_model)
    one = synthetic_pairs(1)
    with pytest.raises(ValueError, match=r"1 usable pair\(s\) for 2 training processes: .* no step would run"):
        trainer.train_dpo(DPOConfig(dtype="float32", batch_size=4, epochs=2), tiny_model_dir, one, tmp_path / "out")
    same = [PreferencePair(prompt="x", chosen="same", rejected="same")]
    with pytest.raises(ValueError, match=r"1 usable pair\(s\) \(1 of 2 dropped\) for 2 training processes"):
        trainer.train_dpo(DPOConfig(dtype="float32"), tiny_model_dir, one + same, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("loss_type", ["ipo", "hinge", "kto", "rrhf"])
def test_soft_labels_are_refused_for_a_loss_that_cannot_use_them(tiny_model_dir, tmp_path, monkeypatch, loss_type):
    # a coin-flip label (0.5) or a slight one (0.75) trained exactly as a sure one under these losses
    monkeypatch.setattr(trainer, "load_model", _no_model)
    pairs = synthetic_pairs(4)
    pairs[1].preference_prob, pairs[2].preference_prob, pairs[3].preference_prob = 0.5, 0.75, 1.0
    with pytest.raises(ValueError, match=rf"2 of the 4 pairs carry a label probability below 1 .*the '{loss_type}' "
                                         r"loss cannot use .*only the sigmoid and robust losses use it"):
        trainer.train_dpo(DPOConfig(dtype="float32", loss_type=loss_type), tiny_model_dir, pairs, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_sure_labels_train_under_every_loss_and_soft_ones_under_sigmoid(tiny_model_dir, tmp_path):
    sure = synthetic_pairs(4)
    for p in sure:
        p.preference_prob = 1.0  # a plain label from the database carries 1.0
    result = trainer.train_dpo(DPOConfig(dtype="float32", batch_size=4, epochs=1, loss_type="ipo"), tiny_model_dir,
                               sure, tmp_path / "ipo")
    assert result.steps == 1
    soft = synthetic_pairs(4)
    soft[0].preference_prob = 0.75
    result = trainer.train_dpo(DPOConfig(dtype="float32", batch_size=4, epochs=1), tiny_model_dir, soft,
                               tmp_path / "sigmoid")
    assert result.steps == 1
