"""Automatic labellers: a judge is a callable `judge(prompt, response_a, response_b)` named "package.module:attr".

It returns "a", "b", "tie" or "both_bad", or a float, the probability that response_a is better. This package loads
judges by name and turns their answers into one of the four outcomes.

A name is only ever imported when it is on the allow-list: the built-in judges below, plus the judges listed in the
PREFLOOP_JUDGES setting (and PREFLOOP_COMPARE_JUDGE). A name stored in a job's parameters, typed on the command line
or posted in a form is checked before anything is imported, so no stored text can make a worker import or call
anything else (`subprocess:Popen`, `os:system`). A judge whose arguments name a folder on the server (names_a_folder:
model_dir, base_dir, those its factory declares in `folder_arguments`, or a path as text) is one a person names only
with the permission to register a folder as a version (check_folder_access). The only Django this package touches is
that setting, and that permission.
"""
from __future__ import annotations

import importlib
import inspect
import math
import numbers
import os
from collections.abc import Callable, Collection
from urllib.parse import parse_qsl, urlencode

from django.conf import settings

from prefcore.outcomes import BOTH_BAD, OUTCOMES, TIE, A, B  # noqa: F401  (judges import them from here)

TIE_BAND = 0.05  # a probability within this of 0.5 is a tie
# Characters a judge path's arguments keep as they are in its one spelling (canonical_path): a judge named inside
# another ("?judge=judges.rules:length_target") stays readable; "&", "=", "+", "%" and spaces are encoded.
QUERY_SAFE = ":/,"
# Float error allowed at the tie band's edge: abs(0.55 - 0.5) is 0.050000000000000044 but abs(0.45 - 0.5) is
# 0.04999999999999999, so without it p=0.45 was a tie and p=0.55 (the same judgement, answers swapped) was "a".
TIE_BAND_TOLERANCE = 1e-9

Judge = Callable[[str, str, str], object]


# The judges that ship with PrefLoop (factories included: their arguments come after "?").
BUILT_IN_JUDGES = (
    "judges.rules:length_target", "judges.rules:prefer_shorter", "judges.rules:prefer_list",
    "judges.rules:not_degenerate", "judges.rules:longer_text", "judges.rules:shorter_text",
    "judges.rules:LengthTarget", "judges.rules:PreferShorter", "judges.rules:PreferList",
    "judges.llm:LLMJudge", "judges.llm:for_version", "judges.noise:Noisy",
)

# The built-in factories that are functions, with an example of the arguments each needs: named without "?" one was
# taken for the judge itself, and failed only when first called on a pair, after all the sampling ("no model version
# named 'question 0?'"). A class named without "?" is built with its defaults, so only functions are listed here.
BUILT_IN_FACTORIES = {"judges.llm:for_version": "name=round-2"}


class JudgeError(Exception):
    """A judge that cannot be loaded, raised, or returned something that is not a verdict; names the judge."""


def judge_name(path: str) -> str:
    """The callable a judge path names, as "package.module:attr" (its "?arguments" left off)."""
    if not isinstance(path, str) or not path.strip():
        raise JudgeError("judge: expected a name such as 'judges.rules:length_target'")
    path = path.strip()
    name = path.partition("?")[0]
    if ":" in name:
        module_name, _, attr = name.partition(":")
    else:
        module_name, _, attr = name.rpartition(".")
    if not module_name or not attr or not all(part.isidentifier() for part in module_name.split(".") + attr.split(".")):
        raise JudgeError(f"judge {path!r}: expected 'package.module:attr', e.g. 'judges.rules:length_target'")
    return f"{module_name}:{attr}"


def canonical_path(path: str) -> str:
    """One spelling of a judge path: stripped, its callable in the colon form judge_name gives, its "?arguments" as
    they are read (parse_qsl, as load_judge reads them) and written again URL-encoded, in their order.
    "judges.rules.length_target" and " judges.rules:length_target " name the same judge, as do "?name=sft v2" and
    "?name=sft+v2"; its account, agreement and routing are keyed by this, so they are one judge's too."""
    name = judge_name(path)
    query = path.strip().partition("?")[2]
    query = urlencode(parse_qsl(query, keep_blank_values=True), safe=QUERY_SAFE) if query else ""
    return f"{name}?{query}" if query else name


def allowed_judges() -> list[str]:
    """The callables a judge may name: the built-in judges and those listed in settings, in that order."""
    listed = list(getattr(settings, "PREFLOOP_JUDGES", [])) if settings.configured else []
    compare = getattr(settings, "PREFLOOP_COMPARE_JUDGE", "") if settings.configured else ""
    names = list(BUILT_IN_JUDGES)
    for entry in [*listed, *([compare] if compare else [])]:
        try:
            name = judge_name(entry)
        except JudgeError as exc:
            raise JudgeError(f"PREFLOOP_JUDGES: {exc}") from None
        if name not in names:
            names.append(name)
    return names


def check_allowed(path: str, allowed: Collection[str] | None = None) -> str:
    """The judge's callable name when it is on the allow-list; a JudgeError listing the allowed ones otherwise."""
    name = judge_name(path)
    allowed = allowed_judges() if allowed is None else [judge_name(a) for a in allowed]
    if name not in allowed:
        raise JudgeError(
            f"judge {path.strip()!r} is not allowed: the judges are {', '.join(allowed)}. "
            "To add your own, list it in the PREFLOOP_JUDGES setting (comma-separated 'package.module:attr')."
        )
    return name


def load_judge(path: str, *, allowed: Collection[str] | None = None, dtype: str | None = None) -> Judge:
    """The judge named by `path`: "package.module:attr" (or "package.module.attr"), if it is allowed.

    With a query, "package.module:factory?key=value&key=value", the attribute is called with those keyword
    arguments (numbers parsed) and its result is the judge, e.g. "judges.rules:LengthTarget?target_words=40". A class
    named without a query is built with its defaults ("judges.rules:PreferShorter" is PreferShorter()).
    `allowed` defaults to allowed_judges(); nothing is imported before the name is found on it.
    `dtype` ("auto", "float32", "bfloat16") goes to a factory that takes a `dtype` argument (a judge that runs a
    model, e.g. judges.llm:LLMJudge) unless the name sets one: the product passes its own, so judges compute in the
    dtype that sampling and training use.
    """
    path = path.strip()
    target, kwargs = _target_and_arguments(path, allowed)
    if kwargs is not None:
        if dtype is not None and "dtype" not in kwargs and _takes(target, "dtype"):
            kwargs["dtype"] = dtype
        try:
            target = target(**kwargs)
        except Exception as exc:
            raise JudgeError(f"judge {path!r}: building it failed: {type(exc).__name__}: {exc}") from None
    if not callable(target):
        raise JudgeError(f"judge {path!r} is not callable (it is a {type(target).__name__})")
    return target


def _target_and_arguments(path: str, allowed: Collection[str] | None) -> tuple[object, dict | None]:
    """The allowed attribute a judge's name points at, and the keyword arguments to build it with (None: it is the
    judge itself, not a factory), each read as the factory declares it."""
    name = check_allowed(path, allowed)
    path = path.strip()
    query = path.partition("?")[2]
    if not query and name in BUILT_IN_FACTORIES:
        raise JudgeError(f"judge {path!r} needs arguments, e.g. {name}?{BUILT_IN_FACTORIES[name]}")
    target = _attribute(path, name)
    if not (query or inspect.isclass(target)):
        return target, None
    if not callable(target):
        raise JudgeError(f"judge {path!r}: {name.partition(':')[2]!r} is not callable, so it takes no arguments")
    kinds = _argument_kinds(target)
    return target, {key: _argument(path, key, value, kinds.get(key))
                    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=False)}


def _attribute(path: str, name: str) -> object:
    """The attribute an allowed judge's callable name ("package.module:attr") points at, its module imported."""
    module_name, _, attr = name.partition(":")
    try:
        target = importlib.import_module(module_name)
    except ImportError as exc:
        raise JudgeError(f"judge {path!r}: cannot import module {module_name!r}: {exc}") from None
    try:
        for part in attr.split("."):
            target = getattr(target, part)
    except AttributeError:
        raise JudgeError(f"judge {path!r}: module {module_name!r} has no attribute {attr!r}") from None
    return target


def check_judge(path: str, allowed: Collection[str] | None = None) -> str:
    """What a form can check of a judge's name without building the judge (which may load a model): allowed, its
    module and attribute there, each argument one the factory takes and of the kind it declares. Returns the name."""
    target, kwargs = _target_and_arguments(path, allowed)
    if kwargs is not None:
        try:
            inspect.signature(target).bind_partial(**kwargs)
        except TypeError as exc:
            raise JudgeError(f"judge {path.strip()!r}: {exc}") from None
        except ValueError:
            pass  # no signature to read: building it will tell
    return judge_name(path)


# Arguments that name a folder on the server a judge loads a model from (judges.llm:LLMJudge's): such a judge makes the
# workers load whatever checkpoint a folder holds, as registering that folder as a version would.
FOLDER_ARGUMENTS = frozenset({"model_dir", "base_dir"})
FOLDER_PERMISSION = "generation.add_modelversion"
# The attribute on a judge's factory (a class or function listed in PREFLOOP_JUDGES) naming its own arguments that
# take a folder, under other names: `folder_arguments = ("checkpoint",)`.
FOLDER_ATTRIBUTE = "folder_arguments"
MAX_NESTED_JUDGES = 8  # judges named inside judges (judges.noise:Noisy?judge=...) read for folders, this deep;
# one nested deeper (a judge of your own wrapping itself) counts as naming a folder (names_a_folder)


def check_folder_access(path: str, user) -> None:
    """JudgeError when a person (`user`; None: the command line, whose user reads the server's folders anyway) names
    a judge over a folder (`names_a_folder`) without the permission to register a folder as a version. Staff allowed
    only to start comparisons or set a round's routing judge had the workers load any checkpoint on the server, and
    learnt from the answer whether a folder held one. A registered version is named with judges.llm:for_version."""
    if user is None or not path:
        return
    if names_a_folder(path):
        from prefloop.access import may

        if not may(user, FOLDER_PERMISSION):
            raise JudgeError(f"judge {path.strip()!r} loads a model from a folder on the server, which needs the "
                             f"permission {FOLDER_PERMISSION!r} (as registering a folder as a version does): name "
                             "a registered version instead, e.g. judges.llm:for_version?name=base")


def names_a_folder(path: str, depth: int = 0) -> bool:
    """Whether a judge's name has the workers read a folder on the server. An argument of it, or of a judge named in
    its arguments (judges.noise:Noisy?judge=...), names a folder when:

    - its name is one of FOLDER_ARGUMENTS (model_dir, base_dir), whatever the judge;
    - the judge's factory lists it in its `folder_arguments` attribute (FOLDER_ATTRIBUTE), as a judge of your own
      that takes its checkpoint as `checkpoint=` should;
    - it takes text (an argument the factory annotates as int, float or bool never names a folder) and its value is
      written as a path on the server (absolute, from "~" or ".", or with a "/" in it), whether or not it is there.
      Not for a built-in judge (BUILT_IN_JUDGES), whose arguments are known: its folders are model_dir and base_dir,
      judges.llm:for_version's `name` is a registered version's (looked up in the database, "Qwen/Qwen2.5-0.5B"
      too) and judges.noise:Noisy's `judge` a judge's name, read as one above;
    - it names a judge (has a "?") nested deeper than MAX_NESTED_JUDGES, where it is no longer read.

    A path counts whether it is there or not, so a refusal tells no one what the server holds. The last two
    are read only for an allowed judge (its module imported, nothing built): any other is refused when loaded. An
    odd value (a NUL byte, a name too long for the system) raises nothing here."""
    path = path.strip() if isinstance(path, str) else ""
    name, factory = _factory(path)
    declared = _declared_folders(factory)
    guessed = factory is not None and name not in BUILT_IN_JUDGES  # the path rule: judges of your own only
    kinds = _argument_kinds(factory) if guessed else {}
    for key, value in parse_qsl(path.partition("?")[2], keep_blank_values=True):
        if key in FOLDER_ARGUMENTS or key in declared:
            return True
        # a judge named in it, read in turn; one nested deeper than that is not read, and counts as a folder
        if "?" in value and (depth >= MAX_NESTED_JUDGES or names_a_folder(value, depth + 1)):
            return True
        if guessed and kinds.get(key, str) is str and _is_server_path(value):
            return True
    return False


def _factory(path: str) -> tuple[str, object | None]:
    """An allowed judge's callable name and the attribute it points at (nothing built); ("", None) for a name not
    allowed or not there."""
    try:
        name = check_allowed(path)
        return name, _attribute(path, name)
    except JudgeError:
        return "", None


def _declared_folders(factory: object | None) -> frozenset[str]:
    """The argument names a factory declares as folders (FOLDER_ATTRIBUTE): one name, or a collection of names."""
    declared = getattr(factory, FOLDER_ATTRIBUTE, ()) if factory is not None else ()
    if isinstance(declared, str):
        return frozenset({declared})
    try:
        return frozenset(name for name in declared if isinstance(name, str))
    except TypeError:
        return frozenset()


def _is_server_path(value: str) -> bool:
    """Whether an argument's text is written as a path on the server: absolute, from "~" or ".", or with a folder
    separator in it. Whether it is there is never read, so a refusal tells no one what the server holds, and a plain
    word (a version's name, a style) that happens to name something in the worker's folder is not refused for it: a
    judge that finds its folder from a bare name declares the argument (FOLDER_ATTRIBUTE)."""
    separators = {"/", os.sep, os.altsep} - {None}
    return value.startswith(("~", ".")) or os.path.isabs(value) or any(s in value for s in separators)


def _takes(factory, name: str) -> bool:
    try:
        return name in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False


def _argument_kinds(factory) -> dict[str, type]:
    """What each argument of a judge's factory is annotated as, where that is one of int, float, str, bool (or one of
    them or None)."""
    try:
        parameters = inspect.signature(factory, eval_str=True).parameters
    except (TypeError, ValueError, NameError):
        return {}
    kinds = {}
    for name, parameter in parameters.items():
        options = [o for o in getattr(parameter.annotation, "__args__", (parameter.annotation,)) if o is not type(None)]
        if len(options) == 1 and options[0] in (int, float, str, bool):
            kinds[name] = options[0]
    return kinds


def _argument(path: str, key: str, value: str, kind: type | None):
    """One argument of a judge's name, read as its factory declares it: a whole number, a finite number, text or
    yes/no. An argument the factory does not annotate is a number when it reads as one (finite), else text. A value
    that is not what the argument takes is refused here, by name: "tie_words=abc" built the judge and then failed on
    the first pair, after sampling, and "target_words=nan" gave "b" for every pair without a word."""
    if kind is str:
        return value
    if kind is bool:
        if value.lower() in ("1", "true", "yes"):
            return True
        if value.lower() in ("0", "false", "no"):
            return False
        raise JudgeError(f"judge {path!r}: {key} must be true or false (got {value!r})")
    try:
        return int(value)
    except ValueError:
        if kind is int:
            raise JudgeError(f"judge {path!r}: {key} must be a whole number (got {value!r})") from None
    try:
        number = float(value)
    except ValueError:
        if kind is float:
            raise JudgeError(f"judge {path!r}: {key} must be a number (got {value!r})") from None
        return value
    if not math.isfinite(number):
        raise JudgeError(f"judge {path!r}: {key} must be a finite number (got {value!r})")
    return number


def normalise_verdict(result: object, *, tie_band: float = TIE_BAND) -> str | None:
    """A judge's answer as "a", "b", "tie" or "both_bad" (in its own argument order); None when it is no verdict.

    Strings must be exactly one of the four outcomes. A number is the probability that the first response is
    better (any real number: a model-based judge's numpy float32 too): within `tie_band` of 0.5 it is a tie, the same
    for p and 1 - p. Booleans (numpy's too), NaN and numbers outside [0, 1] are not verdicts.
    """
    if isinstance(result, str):
        return result if result in OUTCOMES else None
    if isinstance(result, bool) or not isinstance(result, numbers.Real):  # numpy.bool_ is no numbers.Real
        return None
    p = float(result)
    if not (math.isfinite(p) and 0.0 <= p <= 1.0):
        return None
    if abs(p - 0.5) <= tie_band + TIE_BAND_TOLERANCE:
        return TIE
    return A if p > 0.5 else B


def verdict(judge: Judge, name: str, prompt: str, response_a: str, response_b: str, *, where: str = "") -> str:
    """Ask the judge about one pair; a judge that raises or answers anything but a verdict is a JudgeError.

    `where` names the pair in the message (e.g. "pair 12"), so a person can find what the judge choked on.
    """
    place = f"judge {name!r}" + (f" on {where}" if where else "")
    try:
        result = judge(prompt, response_a, response_b)
    except Exception as exc:
        raise JudgeError(f"{place} raised {type(exc).__name__}: {exc}") from exc
    outcome = normalise_verdict(result)
    if outcome is None:
        raise JudgeError(
            f"{place} returned {result!r}; expected 'a', 'b', 'tie', 'both_bad' or a probability in [0, 1]"
        )
    return outcome


def swapped(outcome: str) -> str:
    """The same verdict with the two responses' order swapped."""
    return {A: B, B: A}.get(outcome, outcome)
