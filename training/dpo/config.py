"""The one configuration object of a DPO training job, shared by the CLI, the Celery task and the admin form."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from prefcore.errors import SettingError

LOSS_TYPES = ("sigmoid", "ipo", "hinge", "robust", "kto", "rrhf")
# The losses that take a label probability: label smoothing, label agreement and soft labels (preference_prob < 1).
SMOOTHED_LOSSES = ("sigmoid", "robust")
# The losses with a margin β·h that a term (R-DPO's length term, a margin cap) can shift.
MARGIN_LOSSES = ("sigmoid", "robust", "hinge")
LR_SCHEDULES = ("cosine", "linear", "constant")
DTYPES = ("auto", "float32", "bfloat16")


@dataclass(frozen=True)
class Bound:
    """The range a numeric setting must lie in (both ends sane, not just possible), and why its top is where it is."""

    low: float
    high: float
    low_open: bool = False  # low itself is excluded
    high_open: bool = False
    why: str = ""

    def holds(self, value: float) -> bool:
        if not _finite(value):
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def __str__(self) -> str:
        low, high = _number(self.low), _number(self.high)
        if not self.low_open and not self.high_open:
            return f"from {low} to {high}"
        low = f"more than {low}" if self.low_open else f"at least {low}"
        high = f"less than {high}" if self.high_open else f"at most {high}"
        return f"{low} and {high}"


def _finite(value: float) -> bool:
    """A finite number, and for an int one a float can hold (math.isfinite raises OverflowError past 1e308)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _number(value: float) -> str:
    """4294967295 as itself, 1e-2 as 0.01: whole numbers in full, others as %g."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


# Every numeric field's range, stated once: validate() checks it, the training form shows it as help text.
BOUNDS = {
    "beta": Bound(0, 100, low_open=True, why="the KL weight; past 100 the policy cannot move from the reference"),
    "label_smoothing": Bound(0, 0.5, high_open=True, why="at 0.5 the labels say nothing"),
    "label_agreement": Bound(0.5, 1, low_open=True,
                             why="how often two annotators agree; 1 takes labels as they are, people reach 0.65-0.75"),
    "rpo_alpha": Bound(0, 100, why="the NLL weight on chosen answers; 0 is off"),
    "learning_rate": Bound(0, 1e-2, low_open=True,
                           why="DPO fine-tunes at 1e-7 to 1e-4, LoRA up to about 1e-3; past 1e-2 the weights diverge"),
    "epochs": Bound(1, 100, why="preference data overfits within a few epochs"),
    "batch_size": Bound(1, 4096),
    "grad_accum": Bound(1, 1024),
    "max_length": Bound(2, 32768, why="prompt and answer tokens; past the context of the models PrefLoop trains"),
    "max_prompt_length": Bound(1, 32768, why="and below max length"),
    "warmup_ratio": Bound(0, 1, high_open=True),
    "max_grad_norm": Bound(0, 1e4, why="0 is no clipping"),
    "lora_r": Bound(1, 1024),
    "lora_alpha": Bound(1, 4096),
    "seed": Bound(0, 2**32 - 1, why="the range NumPy seeds take"),
    "sft_warmup_epochs": Bound(0, 100),
    "weight_decay": Bound(0, 1, why="AdamW's decoupled decay; 0.0 to 0.1 is usual"),
    "kto_desirable_weight": Bound(0, 100, low_open=True),
    "kto_undesirable_weight": Bound(0, 100, low_open=True),
    "length_alpha": Bound(0, 1, why="R-DPO's weight per token of length difference in the margin; 0 is off"),
    "rule_penalty": Bound(0, 100, why="the weight of the hinge on the rewards of cut-off answers; 0 is off"),
}

# The settings that take one of a few values: forms offer them as choices, validate() checks them.
# The robust loss weighs a pair by 1 / (1 − 2ε): past this flip rate by more than 10, so a label that near a coin
# (one of probability under 0.55) would outweigh ten sure ones with what is mostly noise (training/dpo/losses.py).
ROBUST_MAX_FLIP = 0.45

CHOICES = {"loss_type": LOSS_TYPES, "lr_schedule": LR_SCHEDULES, "dtype": DTYPES}
# What each setting does, in a sentence, for the training form (beside its BOUNDS).
HELP = {
    "beta": "How far the policy may move from the reference: larger keeps it closer.",
    "loss_type": "sigmoid is DPO; ipo squares the margin; hinge is SLiC; robust assumes some labels are flipped; "
                 "kto and rrhf where the data fits (kto estimates its KL reference point on the batch's own answers, not "
                 "on mismatched prompt-answer pairs as the KTO paper and TRL do).",
    "label_smoothing": "The share of labels assumed wrong (cDPO / robust); 0 trusts every label.",
    "rpo_alpha": "Weight of an NLL term on the chosen answers (RPO); 0 is off.",
    "learning_rate": "AdamW step size.",
    "epochs": "Passes over the round's pairs.",
    "batch_size": "Pairs per optimiser step (times grad accum).",
    "grad_accum": "Batches per optimiser step: its loss is the mean over all their pairs, as one batch of their size "
                  "(kto's KL reference point and a loss term's batch mean are each batch's own).",
    "max_length": "Prompt plus answer tokens per pair (each answer with the prompt); a longer pair is cut, its prompt "
                  "first (to max prompt length), then the answers' ends.",
    "max_prompt_length": "Prompt tokens kept when a pair is over max length (the prompt's end); a pair within it keeps "
                         "its whole prompt.",
    "warmup_ratio": "Share of the steps the learning rate ramps up over.",
    "lr_schedule": "How the learning rate falls after warm-up.",
    "max_grad_norm": "Gradient clipping norm.",
    "lora": "Train a LoRA adapter instead of the full weights.",
    "lora_r": "LoRA rank.",
    "lora_alpha": "LoRA scale (alpha / r multiplies the update).",
    "dtype": "Compute dtype; auto takes the machine's (PREFLOOP_DTYPE).",
    "seed": "Seed of the shuffling and initialisation.",
    "sft_warmup_epochs": "Epochs of SFT on the chosen answers before DPO.",
    "weight_decay": "AdamW's decoupled weight decay.",
    "kto_desirable_weight": "KTO only: weight of desirable answers.",
    "kto_undesirable_weight": "KTO only: weight of undesirable answers.",
    "loss_terms": "Extra loss terms, comma-separated: training.dpo.terms:MarginCap?cap=C (beta*h counts up to C; "
                  "without ?cap=, C is ln((1-e)/e) for the run's label smoothing e) or ones listed in "
                  "PREFLOOP_LOSS_TERMS.",
}


def smoothing_for_agreement(agreement: float) -> float:
    """The label-flip rate ε that makes two independent annotators agree at `agreement`, for cDPO's smoothing.

    If each label is right with probability 1 - ε, two annotators agree when both are right or both are wrong:
    q = (1 - ε)² + ε², so ε = (1 - √(2q - 1)) / 2. At q = 1, ε = 0; at q = 0.7 (people on HH-style pairs), ε ≈ 0.18."""
    if not 0.5 < agreement <= 1:
        raise ValueError(f"label agreement must be more than 0.5 and at most 1 (got {agreement})")
    return (1 - math.sqrt(2 * agreement - 1)) / 2


def agreement_for_smoothing(flip_rate: float) -> float:
    """The inverse of smoothing_for_agreement: how often two independent annotators who each flip a label with
    probability `flip_rate` agree, q = (1 - ε)² + ε²."""
    if not 0 <= flip_rate < 0.5:
        raise ValueError(f"label flip rate must be at least 0 and under 0.5 (got {flip_rate})")
    return (1 - flip_rate) ** 2 + flip_rate**2


# The enumerated settings and their options: validate() checks them, the form and the command line offer them.
CHOICES = {"loss_type": LOSS_TYPES, "lr_schedule": LR_SCHEDULES, "dtype": DTYPES}


def field_help(name: str) -> str:
    """One line on what a setting takes, for the command line's --help and the training form."""
    if name in BOUNDS:
        bound = BOUNDS[name]
        return f"{bound}" + (f" ({bound.why})" if bound.why else "")
    if name in CHOICES:
        return "one of " + ", ".join(CHOICES[name])
    return ""


@dataclass
class DPOConfig:
    beta: float = 0.1
    loss_type: str = "sigmoid"  # sigmoid, ipo, hinge, robust (and kto / rrhf where the data fits)
    label_smoothing: float = 0.0
    rpo_alpha: float = 0.0  # NLL weight on chosen (RPO / SLiC-HF); 0 = off
    learning_rate: float = 3e-5  # measured for ~50-label rounds: docs/defaults.md
    epochs: int = 2
    batch_size: int = 4
    grad_accum: int = 1
    max_length: int = 512
    max_prompt_length: int = 256
    warmup_ratio: float = 0.1
    lr_schedule: str = "cosine"
    max_grad_norm: float = 1.0
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    dtype: str = "auto"  # float32, bfloat16, or auto: the machine's fastest (a product run takes PREFLOOP_DTYPE's)
    seed: int = 0
    sft_warmup_epochs: int = 0  # warm start by SFT on the chosen responses
    weight_decay: float = 0.0
    kto_desirable_weight: float = 1.0
    kto_undesirable_weight: float = 1.0
    # Expected agreement of two annotators on a pair; below 1 it sets the label smoothing (cDPO) from the flip rate
    # it implies (smoothing_for_agreement), for the losses that take smoothing (sigmoid, robust).
    label_agreement: float = 1.0
    # Constraint terms (training/dpo/terms.py): R-DPO's length margin, the hinge on flagged ("cut") responses, and
    # further allow-listed terms by name, comma-separated ("package.module:attr?key=value").
    length_alpha: float = 0.0
    rule_penalty: float = 0.0
    loss_terms: str = ""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first field whose value cannot work: each number within its BOUNDS (finite,
        never NaN or infinity), each choice one of its options."""
        for name, bound in BOUNDS.items():
            value = getattr(self, name)
            if not bound.holds(value):
                why = f" ({bound.why})" if bound.why else ""
                finite = "" if _finite(value) else "a finite number "
                raise SettingError(name, f"DPOConfig.{name}={_shown(value)}: must be {finite}{bound}{why}")
        checks = [
            *((name, getattr(self, name) in options, f"must be one of {', '.join(options)}")
              for name, options in CHOICES.items()),
            ("max_prompt_length", self.max_prompt_length < self.max_length, "must be less than max_length"),
            ("label_agreement", self.label_agreement == 1 or self.label_smoothing == 0,
             "sets the label smoothing itself: give label_agreement or label_smoothing, not both"),
            ("label_agreement", self.label_agreement == 1 or self.loss_type in SMOOTHED_LOSSES,
             "applies to the sigmoid (cDPO) and robust losses, the ones with label smoothing"),
            # the other losses never read it: accepted, it would change nothing while the run says it was used
            ("label_smoothing", self.label_smoothing == 0 or self.loss_type in SMOOTHED_LOSSES,
             f"applies to the sigmoid (cDPO) and robust losses only, and the {self.loss_type!r} loss does not use "
             "it: leave it at 0 or choose one of those losses"),
            ("kto_desirable_weight", self.kto_desirable_weight == 1 or self.loss_type == "kto",
             f"weighs the kto loss only, and the {self.loss_type!r} loss does not use it: leave it at 1"),
            ("kto_undesirable_weight", self.kto_undesirable_weight == 1 or self.loss_type == "kto",
             f"weighs the kto loss only, and the {self.loss_type!r} loss does not use it: leave it at 1"),
            ("label_smoothing" if self.label_agreement == 1 else "label_agreement",
             self.loss_type != "robust" or self.smoothing <= ROBUST_MAX_FLIP + 1e-9,  # a measured 0.45, round-tripped
             f"the robust loss takes a flip rate up to {ROBUST_MAX_FLIP} (past it a label weighs over 10 times "
             "as much, and says almost nothing)"),
            ("length_alpha", self.length_alpha == 0 or self.loss_type in MARGIN_LOSSES,
             "shifts the margin of the sigmoid, robust and hinge losses only"),
            ("loss_terms", len(self.loss_terms) <= 1000 and self.loss_terms.isprintable(),
             "expected comma-separated 'package.module:attr' names"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise SettingError(name, f"DPOConfig.{name}={getattr(self, name)!r}: {expected}")

    @property
    def smoothing(self) -> float:
        """The label smoothing the loss uses: label_smoothing, or the flip rate label_agreement implies."""
        return self.label_smoothing if self.label_agreement == 1 else smoothing_for_agreement(self.label_agreement)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> DPOConfig:
        """Build from a plain dict (JSON, a form); an unknown key or a value of the wrong type is a ValueError."""
        if not isinstance(d, dict):
            raise ValueError(f"DPOConfig: expected an object of settings (a dict), got {type(d).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kwargs = {}
        for key, value in d.items():
            if key not in fields:
                raise SettingError(key, f"DPOConfig: unknown field {key!r} (known: {', '.join(fields)})")
            kwargs[key] = _coerce(key, fields[key].default, value)
        return cls(**kwargs)


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}...({len(text)} characters)"


def _coerce(name: str, default, value):
    """The value in the type of the field's default; ints are accepted for floats, never bools for numbers."""
    kind = type(default)
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:  # an int past 1e308
                raise SettingError(name, f"DPOConfig.{name}={_shown(value)}: must be {BOUNDS[name]}") from None
    elif kind is str:
        if isinstance(value, str):
            return value
    raise SettingError(name, f"DPOConfig.{name}={_shown(value)}: expected {kind.__name__}")
