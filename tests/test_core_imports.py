"""The cores load without Django or Celery: the training command line, the samplers and the shared core package
import nothing of the web app, so they start fast and run where the app is not installed."""
from __future__ import annotations

import subprocess
import sys

import pytest

WEB = ("django", "celery", "kombu", "prefloop", "annotate", "compare", "loop", "judges")


@pytest.mark.parametrize("module", [
    "training.dpo.train", "training.dpo.trainer", "training.dpo.data", "generation.backends",
    "generation.backends.hf", "generation.backends.vllm", "generation.backends.decoder", "prefcore.rows",
    "prefcore.chat", "prefcore.hardware", "prefcore.outcomes", "prefcore.charts",
])
def test_core_module_imports_no_web_app(module):
    code = (f"import sys, {module}\n"
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({WEB!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"{module} loads {out.strip()}"
