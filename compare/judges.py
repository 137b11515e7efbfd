"""Rule judges for offline evaluation: callables judge(prompt, first, second) -> "a", "b", "tie", "both_bad" or a
probability that the first answer is better. Name one in settings (PREFLOOP_COMPARE_JUDGE) or on the command line."""


def prefer_shorter(prompt: str, first: str, second: str) -> str:
    """The shorter non-empty answer wins (a check on length drift); both empty: both bad."""
    first, second = first.strip(), second.strip()
    if not first and not second:
        return "both_bad"
    if not first or not second:
        return "a" if first else "b"
    if len(first) == len(second):
        return "tie"
    return "a" if len(first) < len(second) else "b"


def prefer_longer(prompt: str, first: str, second: str) -> str:
    """The longer answer wins: the bias DPO is known to learn, as a baseline judge."""
    first, second = first.strip(), second.strip()
    if not first and not second:
        return "both_bad"
    if len(first) == len(second):
        return "tie"
    return "a" if len(first) > len(second) else "b"
