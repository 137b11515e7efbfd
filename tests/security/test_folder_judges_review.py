"""From a review of the folder-judge checks (judges.names_a_folder, jobs.folder_judges): what they still let through
or refused wrongly."""
from __future__ import annotations

from urllib.parse import quote

import pytest
from django.contrib.auth.models import Permission

from compare import services as compare_services
from generation.models import ModelVersion, Prompt
from judges import JudgeError, check_folder_access, names_a_folder
from tests.annotate.factories import make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def comparer(db):
    """Staff who may start comparisons, and not register a folder as a version."""
    person = make_user("comparer", is_staff=True)
    person.user_permissions.set(Permission.objects.filter(codename__in=["add_comparejob", "view_modelversion"]))
    return person


def test_a_registered_version_whose_name_has_a_slash_is_no_folder(comparer, tiny_model_dir):
    """A version named as its hub repository is ("Qwen/Qwen2.5-0.5B-Instruct") is a registered version, which
    judges.llm:for_version looks up in the database: no folder is named. Its "/" made the path rule take it for one,
    so the very alternative the folder refusal offers ("name a registered version instead") was refused too, alone
    and inside the noise judge."""
    base = ModelVersion.objects.create(name="base", path=str(tiny_model_dir), is_current=True)
    hub = ModelVersion.objects.create(name="Qwen/Qwen2.5-0.5B-Instruct", path=str(tiny_model_dir), parent=base,
                                      round=1)
    Prompt.objects.create(text="Which is better?", split=Prompt.EVAL)
    by_name = f"judges.llm:for_version?name={hub.name}"
    for judge in (by_name, f"judges.noise:Noisy?share=0.1&judge={quote(by_name, safe='')}"):
        assert not names_a_folder(judge), judge
        check_folder_access(judge, comparer)  # no JudgeError
        assert compare_services.start_compare_job(hub, base, limit=1, judge=judge, user=comparer, enqueue=False)
    # the built-in judge over a folder is still one, there or not, and inside the noise judge
    for folder in (tiny_model_dir, "/etc"):
        inner = f"judges.llm:LLMJudge?model_dir={folder}"
        for judge in (inner, f"judges.noise:Noisy?share=0.1&judge={quote(inner, safe='')}"):
            assert names_a_folder(judge)
            with pytest.raises(JudgeError, match="generation.add_modelversion"):
                check_folder_access(judge, comparer)


def wrapper_judge(inner: str):
    """A team's own judge that wraps another by name (as judges.noise:Noisy does), and may wrap itself."""
    from judges import load_judge

    return load_judge(inner)


WRAPPER = "tests.security.test_folder_judges_review:wrapper_judge"


def test_a_folder_nested_past_the_depth_read_is_taken_for_one(settings, comparer):
    """Judges named inside judges are read MAX_NESTED_JUDGES deep; one nested deeper was not read at all, so a
    wrapper of your own wrapping itself nine times over judges.llm:LLMJudge?model_dir=models (a bare name, with no
    "/" for the path rule to see) had the workers load that folder for staff without the permission. Past the depth
    read, a judge named inside a judge now counts as naming a folder."""
    from judges import MAX_NESTED_JUDGES

    settings.PREFLOOP_JUDGES = [*settings.PREFLOOP_JUDGES, WRAPPER]

    def nested(depth: int) -> str:
        judge = "judges.llm:LLMJudge?model_dir=models"
        for _ in range(depth):
            judge = f"{WRAPPER}?inner={quote(judge, safe='')}"
        return judge

    for depth in (1, MAX_NESTED_JUDGES, MAX_NESTED_JUDGES + 1, MAX_NESTED_JUDGES + 3):
        assert names_a_folder(nested(depth)), depth
        with pytest.raises(JudgeError, match="generation.add_modelversion"):
            check_folder_access(nested(depth), comparer)
    # a wrapper over a judge that names no folder is not one, within the depth read
    assert not names_a_folder(f"{WRAPPER}?inner={quote('judges.rules:LengthTarget?target_words=40', safe='')}")


def test_the_refusal_says_what_is_known_of_a_job_s_starter(tiny_model_dir, comparer):
    """A job with no starter and no command's mark is a person's whose account was deleted, or one a command
    queued before commands' jobs were marked (the upgrade that brought this check): the refusal said "the account
    that started this job was deleted" of the latter too, and "no longer has it" of a person who never had the
    permission (a judge read as a folder only since then). It now says what is known, and how to run it again."""
    from compare.models import CompareJob
    from jobs import folder_judges

    judge = f"judges.llm:LLMJudge?model_dir={tiny_model_dir}"
    base = ModelVersion.objects.create(name="base", path=str(tiny_model_dir), is_current=True)
    other = ModelVersion.objects.create(name="other", path=str(tiny_model_dir), parent=base, round=1)
    queued = CompareJob.objects.create(version_a=other, version_b=base, prompt_ids=[], total=0,
                                       params={"seed": 0, "sampling": {}, "judge": judge})  # before the mark
    with pytest.raises(folder_judges.FolderJudgeRefused) as refused:
        folder_judges.check_creator(queued, judge)
    said = str(refused.value)
    assert "was deleted" in said and "command" in said and "queue" in said, said
    queued.created_by = comparer  # never had the permission
    with pytest.raises(folder_judges.FolderJudgeRefused) as refused:
        folder_judges.check_creator(queued, judge)
    said = str(refused.value)
    assert "does not have it" in said and "no longer" not in said, said
