"""A loop refuses training settings its second round could not run, before its first round samples anything."""
import json

import pytest
from django.core.management import CommandError, call_command

from generation.models import ModelVersion
from loop.models import LoopRun


def test_a_loop_refuses_lora_before_its_first_round(db):
    # round 2 would train from round 1's promoted version, a LoRA adapter, which cannot be trained from
    ModelVersion.objects.create(name="base", path="/nonexistent", is_current=True)
    with pytest.raises(CommandError, match="training settings: lora: .*a LoRA adapter cannot be trained from"):
        call_command("run_loop", rounds=2, pairs=1, judge="judges.rules:length_target",
                     params=json.dumps({"training": {"lora": True}}))
    assert not LoopRun.objects.exists()
