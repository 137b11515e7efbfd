"""From an outside probe: a judge named over a folder by path (judges.llm:LLMJudge?model_dir=...) made the workers
load any checkpoint on the server, for staff allowed only to start comparisons or loops or to set a round's routing
judge, and its refusal told them whether a folder held a config.json. Such a judge now needs the permission to
register a folder as a version; each attack is made here as the probe made it."""
from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission

from annotate.models import LabellingRound
from compare.models import CompareJob
from generation.models import ModelVersion, Prompt
from loop.models import LoopRun
from prefloop_client import APIError, Client
from tests.annotate.factories import make_user

pytestmark = pytest.mark.django_db(transaction=True)


def _client(live_server, name: str, *codenames: str) -> tuple[Client, object]:
    from api.tokens import create_token

    person = make_user(name, is_staff=True)
    person.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    return Client(live_server.url, create_token(person, "probe")[1]), person


def _probe(live_server, tiny_model_dir, name: str) -> tuple[Client, object, dict]:
    """A staff member allowed to start comparisons, loops and generation and to change rounds, but not to register
    a folder as a version; and each start that names a judge, as a function of the judge's name."""
    base = ModelVersion.objects.create(name="base", path=str(tiny_model_dir), is_current=True)
    other = ModelVersion.objects.create(name="other", path=str(tiny_model_dir), parent=base, round=1)
    LabellingRound.objects.create(number=1)
    Prompt.objects.create(text="Which is better?", split=Prompt.EVAL)
    api, person = _client(live_server, name, "add_comparejob", "change_labellinground", "add_looprun",
                          "change_modelversion", "add_generationjob")
    starts = {
        "compare": lambda j: api.start_compare(base.pk, other.pk, judge=j),
        "routing judge": lambda j: api.change_round(1, route_judge=j),
        "loop": lambda j: api.start_loop(1, 4, j),
        "loop's eval judge": lambda j: api.start_loop(1, 4, "judges.rules:length_target", params={"eval_judge": j}),
        "generation": lambda j: api.start_generation(1, version=base.pk, pairing="judge", judge=j,
                                                     sampling={"n": 2, "temperature": 0.8}),
    }
    return api, person, starts


def _refused(call) -> str:
    with pytest.raises(APIError) as refused:
        call()
    assert refused.value.status == 400, refused.value.detail
    return refused.value.detail


def test_a_judge_over_a_folder_needs_the_permission_to_register_one(live_server, tiny_model_dir):
    from urllib.parse import quote

    api, person, starts = _probe(live_server, tiny_model_dir, "comparer")

    # a checkpoint or not: the same refusal, so nothing is learnt of the folder; and wrapped in the noise judge
    named = [f"judges.llm:LLMJudge?model_dir={folder}" for folder in (tiny_model_dir, "/etc")]
    for judge in [*named, *(f"judges.noise:Noisy?share=0.1&judge={quote(inner, safe='')}" for inner in named)]:
        for where, start in starts.items():
            said = _refused(lambda s=start, j=judge: s(j))
            assert "generation.add_modelversion" in said and "holds no checkpoint" not in said, (where, judge)
    assert not CompareJob.objects.exists() and not LoopRun.objects.exists()
    assert LabellingRound.objects.get(number=1).route_judge == ""
    # a round whose routing judge someone allowed set over a folder: its other settings still change
    LabellingRound.objects.create(number=2, route_judge=f"judges.llm:LLMJudge?model_dir={tiny_model_dir}")
    assert api.change_round(2, gold_rate=0.2)["gold_rate"] == 0.2
    # a registered version by name needs no such permission, and with the permission a folder is taken
    api.change_round(1, route_judge="judges.llm:for_version?name=base")
    person.user_permissions.add(Permission.objects.get(codename="add_modelversion"))
    api.change_round(1, route_judge=f"judges.llm:LLMJudge?model_dir={tiny_model_dir}")
    assert "model_dir=" in LabellingRound.objects.get(number=1).route_judge
    assert starts["compare"](f"judges.llm:LLMJudge?model_dir={tiny_model_dir}")["id"]


def test_the_admin_asks_the_same_of_a_routing_judge_over_a_folder(client, tiny_model_dir):
    LabellingRound.objects.create(number=3)
    person = make_user("rounds", is_staff=True)
    person.user_permissions.set(Permission.objects.filter(codename__in=["change_labellinground",
                                                                        "view_labellinground"]))
    client.force_login(person)
    form = {"number": 3, "guidelines": "", "labels_per_pair": 1, "gold_rate": 0.1, "queue_order": "uncertain",
            "route_threshold": 0.9, "audit_share": 0.1, "close_width": "",
            "route_judge": f"judges.llm:LLMJudge?model_dir={tiny_model_dir}"}
    round_id = LabellingRound.objects.get(number=3).pk
    response = client.post(f"/admin/annotate/labellinground/{round_id}/change/", form)
    assert response.status_code == 200 and "generation.add_modelversion" in response.content.decode()
    assert LabellingRound.objects.get(number=3).route_judge == ""


def test_a_loop_needs_the_permission_to_make_versions_current(live_server, tiny_model_dir):
    """From an outside probe: its gate makes each passing round's version current, on the votes of judges the
    starter picks; staff allowed only to start loops made versions current that way."""
    ModelVersion.objects.create(name="base", path=str(tiny_model_dir), is_current=True)
    api, _ = _client(live_server, "looper", "add_looprun")
    said = _refused(lambda: api.start_loop(1, 4, "judges.rules:length_target"))
    assert "generation.change_modelversion" in said and not LoopRun.objects.exists()


BUILT: list[str] = []  # what the teams' judges below were built over


def checkpoint_judge(checkpoint: str, style: str = "plain"):
    """A team's own judge (listed in PREFLOOP_JUDGES) over a checkpoint folder given as `checkpoint=`."""
    BUILT.append(checkpoint)
    return lambda prompt, first, second: "a"


class ShelfJudge:
    """A team's own judge that finds its checkpoint by name in a folder of its own: only its declaration
    (judges.FOLDER_ATTRIBUTE) says the argument names a folder."""

    folder_arguments = ("shelf",)

    def __init__(self, shelf: str, tie_words: int = 0):
        BUILT.append(shelf)

    def __call__(self, prompt, first, second):
        return "a"


OWN_JUDGES = ["tests.security.test_judge_folders:checkpoint_judge", "tests.security.test_judge_folders:ShelfJudge"]


def test_a_judge_of_your_own_over_a_folder_by_another_name_needs_the_permission_too(live_server, tiny_model_dir,
                                                                                   settings):
    """From an outside probe: only model_dir and base_dir were read as folders, so a judge the operator listed that
    takes its checkpoint as `checkpoint=` loaded any folder on the server for staff without the permission."""
    from urllib.parse import quote

    settings.PREFLOOP_JUDGES = [*settings.PREFLOOP_JUDGES, *OWN_JUDGES]
    BUILT.clear()
    api, person, starts = _probe(live_server, tiny_model_dir, "teammate")
    own = "tests.security.test_judge_folders:checkpoint_judge"
    # a folder that is there, or one written as a path that is not (the same refusal: nothing is learnt of the disk),
    # from "~", one the factory declares, and each inside the noise judge
    named = [f"{own}?checkpoint={tiny_model_dir}", f"{own}?checkpoint=/nowhere/at/all", f"{own}?checkpoint=~/models",
             f"{own}?checkpoint=var/models", f"{own}?checkpoint=./team-model",
             "tests.security.test_judge_folders:ShelfJudge?shelf=round-2"]
    for judge in [*named, *(f"judges.noise:Noisy?share=0.1&judge={quote(inner, safe='')}" for inner in named)]:
        for where, start in starts.items():
            assert "generation.add_modelversion" in _refused(lambda s=start, j=judge: s(j)), (where, judge)
    assert BUILT == [] and not CompareJob.objects.exists() and not LoopRun.objects.exists()
    assert LabellingRound.objects.get(number=1).route_judge == ""
    # ordinary arguments are not refused: text that names nothing on the server, numbers, a version's name, a plain
    # word that happens to name a folder where the worker runs ("var": its existence is never read)
    for judge in (f"{own}?checkpoint=team-model&style=concise", f"{own}?checkpoint=team-model&style=var", "judges.rules:LengthTarget?target_words=40",
                  "judges.llm:for_version?name=base"):
        api.change_round(1, route_judge=judge)
    # a number that is a path is refused as a number, there or not (not as a folder: that would tell which)
    for value in ("/etc", "/nowhere/at/all"):
        said = _refused(lambda v=value: api.change_round(1, route_judge=f"judges.rules:LengthTarget?target_words={v}"))
        assert "whole number" in said and "generation.add_modelversion" not in said
    # with the permission, the folder is taken
    person.user_permissions.add(Permission.objects.get(codename="add_modelversion"))
    assert starts["compare"](f"{own}?checkpoint={tiny_model_dir}")["id"]
    assert BUILT == [str(tiny_model_dir)]


# odd values: a NUL byte, a name too long for the system, home folders, the folder above
ODD = {"%00": False, "a" * 5000: False, "~%00": True, "~": True, "~nobody-here/x": True, "..": True, "%2Fetc%00x": True}


@pytest.mark.parametrize("value", list(ODD))
def test_an_odd_argument_never_breaks_the_folder_check(settings, value):
    from judges import names_a_folder

    settings.PREFLOOP_JUDGES = [*settings.PREFLOOP_JUDGES, *OWN_JUDGES]
    for path in (f"judges.noise:Noisy?share=0.1&judge=judges.llm:LLMJudge%3Fdtype%3D{value}",
                 f"no.such:judge?x={value}", f"judges.rules:LengthTarget?target_words={value}"):
        names_a_folder(path)  # no exception, whatever it decides
    assert names_a_folder(f"tests.security.test_judge_folders:checkpoint_judge?checkpoint={value}") is ODD[value]
