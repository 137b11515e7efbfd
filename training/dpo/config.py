"""The one configuration object of a DPO training job, shared by the CLI, the Celery task and the admin form."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

LOSS_TYPES = ("sigmoid", "ipo", "hinge", "robust", "kto", "rrhf")
LR_SCHEDULES = ("cosine", "linear", "constant")
DTYPES = ("auto", "float32", "bfloat16")


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

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first field whose value cannot work."""
        checks = [
            ("beta", self.beta > 0, "must be > 0"),
            ("loss_type", self.loss_type in LOSS_TYPES, f"must be one of {', '.join(LOSS_TYPES)}"),
            ("label_smoothing", 0 <= self.label_smoothing < 0.5, "must be in [0, 0.5)"),
            ("rpo_alpha", self.rpo_alpha >= 0, "must be >= 0"),
            ("learning_rate", self.learning_rate > 0, "must be > 0"),
            ("epochs", self.epochs >= 1, "must be >= 1"),
            ("batch_size", self.batch_size >= 1, "must be >= 1"),
            ("grad_accum", self.grad_accum >= 1, "must be >= 1"),
            ("max_length", self.max_length >= 2, "must be >= 2"),
            ("max_prompt_length", 1 <= self.max_prompt_length < self.max_length, "must be in [1, max_length)"),
            ("warmup_ratio", 0 <= self.warmup_ratio < 1, "must be in [0, 1)"),
            ("lr_schedule", self.lr_schedule in LR_SCHEDULES, f"must be one of {', '.join(LR_SCHEDULES)}"),
            ("max_grad_norm", self.max_grad_norm >= 0, "must be >= 0 (0 = no clipping)"),
            ("lora_r", self.lora_r >= 1, "must be >= 1"),
            ("lora_alpha", self.lora_alpha >= 1, "must be >= 1"),
            ("dtype", self.dtype in DTYPES, f"must be one of {', '.join(DTYPES)}"),
            ("sft_warmup_epochs", self.sft_warmup_epochs >= 0, "must be >= 0"),
            ("weight_decay", self.weight_decay >= 0, "must be >= 0"),
            ("kto_desirable_weight", self.kto_desirable_weight > 0, "must be > 0"),
            ("kto_undesirable_weight", self.kto_undesirable_weight > 0, "must be > 0"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"DPOConfig.{name}={getattr(self, name)!r}: {expected}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> DPOConfig:
        """Build from a plain dict (JSON, a form); an unknown key or a value of the wrong type is a ValueError."""
        if not isinstance(d, dict):
            raise ValueError(f"DPOConfig: expected a dict, got {type(d).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kwargs = {}
        for key, value in d.items():
            if key not in fields:
                raise ValueError(f"DPOConfig: unknown field {key!r} (known: {', '.join(fields)})")
            kwargs[key] = _coerce(key, fields[key].default, value)
        return cls(**kwargs)


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
            return float(value)
    elif kind is str:
        if isinstance(value, str):
            return value
    raise ValueError(f"DPOConfig.{name}={value!r}: expected {kind.__name__}")
