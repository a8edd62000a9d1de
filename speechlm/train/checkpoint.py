"""Model directories and training checkpoints, written atomically.

A model directory holds ``config.json``, ``model.safetensors`` and the tokenizer; a training
checkpoint adds ``trainer_state.pt``. Each is written into a temporary sibling and renamed
into place, so an interrupted run leaves either the previous checkpoint or the new one,
never half of one.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file, save_file

from speechlm.errors import CheckpointError
from speechlm.files import replaced_atomically, sibling

CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
STATE_FILE = "trainer_state.pt"
LATEST_FILE = "latest"


def write_atomic_dir(target: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_dir)`` then rename ``tmp_dir`` to ``target`` (replacing an old one)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = sibling(target)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        write(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = sibling(target, "old")
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)
    return target


def write_atomic_text(path: str | Path, text: str) -> None:
    with replaced_atomically(path) as tmp:
        tmp.write_text(text)


def tied_aliases(model: torch.nn.Module) -> set[str]:
    """State-dict names that share storage with an earlier name (tied embeddings): saved once."""
    seen, aliases = set(), set()
    for name, t in model.state_dict().items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        if key in seen:
            aliases.add(name)
        seen.add(key)
    return aliases


def save_weights(model: torch.nn.Module, directory: Path) -> None:
    skip = tied_aliases(model)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if k not in skip}
    save_file(state, str(directory / MODEL_FILE))


def load_weights(model: torch.nn.Module, directory: str | Path) -> None:
    path = Path(directory, MODEL_FILE)
    state = read_weights(Path(directory))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k not in tied_aliases(model)]
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not match the model (missing {missing[:5]}, unexpected {unexpected[:5]})")


def save_model_dir(target: str | Path, model: torch.nn.Module, save_extras: Callable[[Path], None], summary: dict) -> Path:
    """Write a model directory atomically: weights, ``save_extras`` (config, tokenizer) and ``training.json``."""

    def write(d: Path) -> None:
        save_weights(model, d)
        save_extras(d)
        (d / "training.json").write_text(json.dumps(summary) + "\n")

    return write_atomic_dir(target, write)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    ptr = Path(run_dir, "checkpoints", LATEST_FILE)
    if not ptr.is_file():
        return None
    path = Path(run_dir, "checkpoints", ptr.read_text().strip())
    return path if path.is_dir() else None


def resolve_model_dir(path: str | Path) -> Path:
    """A model directory, given it or the run directory holding it as ``model/``."""
    d = Path(path)
    if not (d / MODEL_FILE).is_file() and (d / "model" / MODEL_FILE).is_file():
        d = d / "model"
    if not (d / CONFIG_FILE).is_file():
        raise CheckpointError(f"{path}: not a model directory (no {CONFIG_FILE})")
    return d


def read_config_json(model_dir: Path) -> dict:
    path = model_dir / CONFIG_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: cannot read model config ({e})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def read_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    path = model_dir / MODEL_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: missing model weights")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"{path}: cannot read weights ({e})") from None
