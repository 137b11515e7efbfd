"""Judges used by the loop tests, importable by name like any user's judge."""
CALLS = {"n": 0}


def prefers_good(prompt: str, first: str, second: str) -> str:
    """Knows the truth: the answer marked GOOD wins, BAD ones are both bad, TIE-marked ones tie."""
    if "BAD" in first and "BAD" in second:
        return "both_bad"
    if "TIE" in first and "TIE" in second:
        return "tie"
    return "a" if "GOOD" in first else "b"


def fails_on_third(prompt: str, first: str, second: str) -> str:
    CALLS["n"] += 1
    if CALLS["n"] == 3:
        raise ConnectionError("judge service unreachable")
    return "a"


def says_maybe(prompt: str, first: str, second: str) -> str:
    return "maybe"


EVAL_CALLS = {"n": 0}


def counting_eval(prompt: str, first: str, second: str) -> str:
    """An evaluation judge that counts its calls (and calls everything a tie)."""
    EVAL_CALLS["n"] += 1
    return "tie"


STAGES: list[str] = []


def notes_the_stage(prompt: str, first: str, second: str) -> str:
    """Notes what the generation job that calls it says it is doing."""
    from generation.models import GenerationJob

    STAGES.append(GenerationJob.objects.order_by("pk").last().stage)
    return "a"
