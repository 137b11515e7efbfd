"""Named loop presets: what a round samples, how it pairs, what it trains on, chosen by name ("default", "all",
"quick", "replay", "spin"; "iterative" is the default's earlier name) on the loop page, in `run_loop --preset`, in the API
and in the benchmarks. A run's own settings override its preset's, and the run records the preset's name and the
settings resolved from it, so a run resumed after an upgrade keeps what it started with.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LoopPreset:
    name: str
    summary: str  # one line for a person choosing
    samples: int = 4  # answers per prompt (SamplingConfig.n)
    pairing: str = "judge"  # "judge": its round robin pairs best with worst; "random"; "most_different"; "none"
    data: str = "all"  # "all": every label so far; "new": the starting version's labelling round; "replay": those and as many
    # others; "spin": no labels, reference answers over the round's own samples
    reference: str = "base"  # the frozen reference: the base version, or the version the round starts from
    # DPOConfig settings over its defaults, as (name, value) pairs; a run's own "training" settings override each
    training: tuple[tuple[str, object], ...] = ()

    def params(self) -> dict:
        """The loop settings this preset stands for (the shape `start_loop_run(params=...)` takes)."""
        found = {"sampling": {"n": self.samples}, "pairing": self.pairing, "data": self.data,
                 "reference": self.reference}
        if self.training:
            found["training"] = dict(self.training)
        return found


# The default since measurement 14 of docs/defaults.md: each round is its own DPO step (iterative DPO as the papers
# run it), on the pairs its starting version sampled, with that version as the reference. Side by side with training
# on every label so far ("all", the default before it), over two rule judges and two seeds, the versions current at
# the end won as often against base (74.2% and 89.1% against 82.8%; 83.6% against 84.4%; 74.2% against 75.8%: within
# the ±9 points of 64 votes) with the same KL to base, and every round stayed under 4 minutes on 2 AMX cores where
# "all" grows by a round's pairs each round (its round 3: 4.5-5.5 minutes). The gate's KL budget then bounds each
# round's step from its reference; the length and cut bounds hold answers near the current version's (or base's,
# where those are longer or cut more often), and a bound on the KL to base (on the round's 8 answers the gate reads)
# holds the steps added up; the loop also reports each round's KL to base on its 64 eval answers (kl_to_base). Four samples ranked by the judge, best paired with worst (measurement 6). Since measurement 19, DPO with
# an NLL term on the chosen answers (RPO, weight 1, as Pang et al. 2024 run iterative rounds): over five seeds the
# versions current at the end won as often (84.7% against 81.5%, within the noise), every one of 15 rounds was
# promoted (12 of 15 with the plain loss, whose round 1 sat at the gate's KL budget), at a tenth of the plain loss's
# KL a token to the reference.
DEFAULT = LoopPreset("default", "4 answers a prompt, the judge pairs best with worst; each round trains DPO with an "
                                "NLL term on the chosen answers (RPO) on its starting version's labelling round (the "
                                "pairs it sampled, and those of a round from the same version that was not promoted), "
                                "that version the reference: a round's cost stays flat while rounds are promoted",
                     data="new", reference="start", training=(("rpo_alpha", 1.0),))
# The default before measurement 14: every label so far, base as the reference; a round's training grows each round.
ALL = LoopPreset("all", "4 answers a prompt, the judge pairs best with worst (as default); each round trains plain "
                        "DPO (no NLL term) on every label so far with base as the reference: the most data a round, "
                        "at a cost that grows each round")
# The default's data and reference at the least sampling and judging: its rounds' pairs with base as the reference,
# as it had before, is the one setting measurement 4 of docs/defaults.md saw stop improving after round 1.
QUICK = LoopPreset("quick", "2 answers a prompt, a random pair (one judge call); trains as default does (RPO), on the "
                            "starting version's labelling round, that version the reference",
                   samples=2, pairing="random", data="new", reference="start", training=DEFAULT.training)
# Measured against "all" in docs/defaults.md (measurement 8): round 3 trained 35-41% faster (the round took 26-32%
# less time), the promoted versions won as often within the noise of two seeds.
REPLAY = LoopPreset("replay", "as all (plain DPO, base the reference), but train on this round's pairs and as many "
                              "of other rounds' at random: a round's cost stays flat over many rounds", data="replay")
# Self-play (SPIN, Chen et al. 2024): each round trains the train prompts' reference answers over the answers the
# version it starts from sampled, with that version as the reference, as the paper's iterations do; the judge only
# evaluates. The paper samples one answer a prompt; two give twice the pairs from one sampling pass.
SPIN = LoopPreset("spin", "self-play, no labels: 2 answers a prompt, each trained against the prompt's reference "
                          "answer with the version the round starts from as the reference; the judge only evaluates "
                          "(the prompts need reference answers)", samples=2, pairing="none", data="spin",
                  reference="start")
PRESETS: dict[str, LoopPreset] = {p.name: p for p in (DEFAULT, ALL, QUICK, REPLAY, SPIN)}
# Names a preset had before: runs and scripts that use them get the preset under its name now.
ALIASES = {"iterative": DEFAULT.name}


def preset_named(name: str) -> LoopPreset:
    """The preset of that name; an unknown name is a ValueError listing the known ones."""
    try:
        return PRESETS[ALIASES.get(name, name)]
    except (KeyError, TypeError):
        raise ValueError(f"unknown loop preset {name!r} (known: {', '.join(PRESETS)})") from None


def names() -> list[str]:
    """Every name a preset answers to: the presets' and their earlier names."""
    return [*PRESETS, *ALIASES]


def choices() -> list[tuple[str, str]]:
    return [(p.name, f"{p.name}: {p.summary}") for p in PRESETS.values()]
