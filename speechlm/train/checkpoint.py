"""Model directories and training checkpoints, written atomically.

A model directory holds ``config.json``, ``model.safetensors`` and the tokenizer; a training
checkpoint adds ``trainer_state.pt``. Each is written into a temporary sibling and renamed
into place, so an interrupted run leaves either the previous checkpoint or the new one,
never half of one.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file, save_file

from speechlm.errors import CheckpointError

MODEL_FILE = "model.safetensors"
STATE_FILE = "trainer_state.pt"
LATEST_FILE = "latest"


def write_atomic_dir(target: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_dir)`` then rename ``tmp_dir`` to ``target`` (replacing an old one)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        write(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)
    return target


def write_atomic_text(path: str | Path, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_weights(model: torch.nn.Module, directory: Path) -> None:
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(directory / MODEL_FILE))


def load_weights(model: torch.nn.Module, directory: str | Path) -> None:
    path = Path(directory, MODEL_FILE)
    if not path.is_file():
        raise CheckpointError(f"{path}: missing model weights")
    try:
        state = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"{path}: cannot read weights ({e})") from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not match the model (missing {missing[:5]}, unexpected {unexpected[:5]})")


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    ptr = Path(run_dir, "checkpoints", LATEST_FILE)
    if not ptr.is_file():
        return None
    path = Path(run_dir, "checkpoints", ptr.read_text().strip())
    return path if path.is_dir() else None
