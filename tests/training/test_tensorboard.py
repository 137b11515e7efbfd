"""TensorBoard event files: the records are well formed (checked by an independent reader here), and a training
round with PREFLOOP_TENSORBOARD=1 writes every step's loss, margin, accuracy and KL under its run folder, which the
run page names."""
from __future__ import annotations

import struct

import pytest

from training import services as train
from training.models import TrainingStep
from training.tensorboard import EventWriter, crc32c

from .test_heldout import FAST_TRAINING, _labelled_round, tiny_base  # noqa: F401  (tiny_base is a fixture)


def test_crc32c_matches_the_standard_check_value():
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C catalogue's check value
    assert crc32c(b"") == 0


def _unmask(masked: int) -> int:
    rot = (masked - 0xA282EAD8) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


def _varint(data: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        byte = data[i]
        value |= (byte & 0x7F) << shift
        i += 1
        if not byte & 0x80:
            return value, i
        shift += 7


def _fields(data: bytes) -> list[tuple[int, object]]:
    """Protobuf fields of a message: (number, value), values as int, float (fixed64/32) or bytes."""
    out, i = [], 0
    while i < len(data):
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(data, i)
        elif wire == 1:
            value, i = struct.unpack("<d", data[i:i + 8])[0], i + 8
        elif wire == 5:
            value, i = struct.unpack("<f", data[i:i + 4])[0], i + 4
        else:
            length, i = _varint(data, i)
            value, i = data[i:i + length], i + length
        out.append((number, value))
    return out


def read_events(path) -> list[dict]:
    """Each record checked against its CRCs and decoded: {"step", "file_version"} or {"step", "scalars"}."""
    data, i, events = path.read_bytes(), 0, []
    while i < len(data):
        (length,) = struct.unpack("<Q", data[i:i + 8])
        assert _unmask(struct.unpack("<I", data[i + 8:i + 12])[0]) == crc32c(data[i:i + 8])
        payload = data[i + 12:i + 12 + length]
        assert _unmask(struct.unpack("<I", data[i + 12 + length:i + 16 + length])[0]) == crc32c(payload)
        i += 16 + length
        fields = dict(_fields(payload))
        event = {"step": fields.get(2, 0), "wall_time": fields[1]}
        if 3 in fields:
            event["file_version"] = fields[3].decode()
        if 5 in fields:
            event["scalars"] = {}
            for number, value in _fields(fields[5]):
                assert number == 1
                value_fields = dict(_fields(value))
                event["scalars"][value_fields[1].decode()] = value_fields[2]
        events.append(event)
    return events


def test_the_writer_writes_records_tensorboard_reads(tmp_path):
    writer = EventWriter(tmp_path / "run-1")
    writer.scalars(1, {"loss": 0.69, "rewards/margin": -0.25, "note": "text", "nan": float("nan"), "flag": True})
    writer.scalars(2**40, {"loss": 0.5})
    writer.close()
    (path,) = (tmp_path / "run-1").glob("events.out.tfevents.*")
    events = read_events(path)
    assert events[0]["file_version"] == "brain.Event:2"
    assert events[1]["step"] == 1 and events[1]["scalars"] == {"loss": pytest.approx(0.69),
                                                               "rewards/margin": pytest.approx(-0.25)}
    assert events[2]["step"] == 2**40


@pytest.mark.slow
def test_a_round_writes_its_steps_under_its_run_folder_and_the_run_page_names_it(tiny_base, staff, client,  # noqa: F811
                                                                                  settings, tmp_path):
    settings.MODELS_DIR = tmp_path / "models"
    settings.PREFLOOP_TENSORBOARD = True
    settings.TENSORBOARD_DIR = tmp_path / "tensorboard"
    settings.PREFLOOP_ROUND_EVAL_PROMPTS = 2
    _labelled_round(tiny_base, staff, 12, split_eval=2)
    run = train.run_training(train.start_training_run(params=FAST_TRAINING, enqueue=False).pk)
    assert run.status == "succeeded", run.error
    files = sorted((tmp_path / "tensorboard" / f"run-{run.pk}").glob("events.out.tfevents.*"))
    assert files
    events = [e for path in files for e in read_events(path) if "scalars" in e]
    stored = dict(TrainingStep.objects.filter(run=run).values_list("step", "data"))
    steps = {e["step"]: e["scalars"] for e in events if "loss" in e["scalars"]}
    assert sorted(steps) == sorted(stored) and len(steps) == run.total_steps
    for step, data in stored.items():
        for key in ("loss", "rewards/margin", "rewards/accuracy", "logratio/mean", "step_pairs"):
            assert steps[step][key] == pytest.approx(data[key], rel=1e-6, abs=1e-6), (step, key)
    assert any("sampled/mean_tokens" in e["scalars"] for e in events)  # the round's own figures
    client.force_login(staff)
    page = client.get(f"/training/runs/{run.pk}/").content.decode()
    assert f"tensorboard --logdir {tmp_path / 'tensorboard' / f'run-{run.pk}'}" in page


def test_no_event_files_unless_asked(settings, tmp_path, tiny_base):  # noqa: F811
    settings.PREFLOOP_TENSORBOARD = False
    settings.TENSORBOARD_DIR = tmp_path / "tensorboard"
    run = train.start_training_run(params=FAST_TRAINING, enqueue=False)
    assert train.tensorboard_writer(run) is None and not (tmp_path / "tensorboard").exists()


def test_a_disk_that_refuses_the_round_figures_does_not_undo_the_verdict(settings, tmp_path, tiny_base, caplog):  # noqa: F811
    from generation.models import ModelVersion
    from training.models import TrainingRun

    settings.PREFLOOP_TENSORBOARD = True
    settings.TENSORBOARD_DIR = tmp_path / "not-a-folder"
    settings.TENSORBOARD_DIR.write_text("a file where the folder should be")
    child = ModelVersion.objects.create(name="round-1", path=tiny_base.path, parent=tiny_base, round=1)
    run = TrainingRun.objects.create(input_version=tiny_base, reference_version=tiny_base, output_version=child,
                                     status=TrainingRun.SUCCEEDED)
    train.record_round_figures(run, {"gate/win_rate_vs_current": 0.7})  # logged, not raised
    assert "TensorBoard figures not written" in caplog.text


def test_a_run_started_again_after_a_lost_worker_starts_its_curves_afresh(db, settings, tmp_path):
    """The page dropped the lost attempt's steps, its TensorBoard folder kept them: the new attempt wrote beside
    them, and `tensorboard --logdir` (the page's advice) showed two losses at each step."""
    from generation.models import ModelVersion
    from training.models import TrainingRun

    settings.TENSORBOARD_DIR, settings.MODELS_DIR = tmp_path / "tb", tmp_path / "models"
    settings.PREFLOOP_TENSORBOARD = True
    base = ModelVersion.objects.create(name="base", path="/nowhere/base", is_current=True)
    run = TrainingRun.objects.create(input_version=base, reference_version=base, status="running", attempts=1)
    lost = EventWriter(train.tensorboard_dir(run))
    for step, loss in ((1, 0.9), (2, 0.8), (3, 0.7)):
        lost.scalars(step, {"loss": loss})
    lost.close()
    again = train.tensorboard_writer(train._claim(run.pk))  # the worker was lost: a new attempt from step 0
    for step, loss in ((1, 0.69), (2, 0.5)):
        again.scalars(step, {"loss": loss})
    again.close()
    losses = {}
    for path in sorted(train.tensorboard_dir(run).glob("events.out.tfevents.*")):
        for event in read_events(path):
            if "scalars" in event:
                losses.setdefault(event["step"], []).append(round(event["scalars"]["loss"], 3))
    assert losses == {1: [0.69], 2: [0.5]}
