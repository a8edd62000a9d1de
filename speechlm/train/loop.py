"""The training loop: AdamW, warmup + cosine decay, clipping, bf16 autocast, checkpoints, resume, DDP.

The loop knows nothing about the task: it takes a model, a dataset with ``make_batches``,
``collate`` and ``unit``, and a ``loss_fn(model, batch) -> LossOutput``. It is device-agnostic
and keeps no global state.

Under ``torchrun`` (``WORLD_SIZE`` > 1) the same code trains with PyTorch's
DistributedDataParallel: every global batch is split across ranks, each rank's loss is
weighted by its share of the batch's units (tokens, masked frames), so the gradient equals
the single-process gradient of the same global batch; rank 0 writes logs and checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from speechlm.train.checkpoint import (
    LATEST_FILE,
    STATE_FILE,
    latest_checkpoint,
    load_weights,
    save_weights,
    write_atomic_dir,
    write_atomic_text,
)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    max_steps: int = 3000  # optimizer steps; the learning-rate schedule ends here
    max_minutes: float = 0.0  # also stop (and end the schedule) after this much training time; 0 = no limit
    batch_seconds: float = 40.0  # audio seconds per batch, padding included (speech)
    max_batch_size: int = 64  # utterances per batch at most (speech); sequences per batch (text)
    lr: float = 2e-3  # peak learning rate
    warmup_steps: int = 200  # linear warmup from 0 to lr
    min_lr_ratio: float = 0.05  # the cosine decay ends at lr * min_lr_ratio
    weight_decay: float = 0.01  # AdamW decoupled weight decay (not on biases and norms)
    grad_clip: float = 5.0  # max global gradient norm
    precision: str = "auto"  # "bf16", "fp32", or "auto": bf16 where the hardware has bf16 matrix units
    seed: int = 0  # model init, batch order, augmentation
    log_every: int = 25  # steps between log lines / TensorBoard points
    checkpoint_every: int = 500  # steps between checkpoints (one is always written at the end)
    keep_checkpoints: int = 2  # older checkpoints are deleted
    num_workers: int = 1  # processes that read, augment and collate batches ahead of the model; 0 = inline

    def __post_init__(self):
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"train.precision must be 'auto', 'bf16' or 'fp32', got {self.precision!r}")
        if self.max_steps < 1:
            raise ValueError(f"train.max_steps must be >= 1, got {self.max_steps}")


@dataclasses.dataclass
class TrainResult:
    steps: int
    final_loss: float  # mean loss over the last log interval
    processed: float  # data processed, all epochs and ranks, in ``unit``
    unit: str  # "audio_seconds" or "tokens"
    train_seconds: float  # wall time spent in training steps
    history: list[dict]  # one record per log interval

    @property
    def throughput(self) -> float:
        """``unit`` per second of training."""
        return self.processed / max(self.train_seconds, 1e-9)


@dataclasses.dataclass(frozen=True)
class ParamGroup:
    """Parameters that share a learning-rate scale and an optional freeze (fine-tuning)."""

    params: list  # torch.nn.Parameter
    lr_scale: float = 1.0  # multiplies the scheduled learning rate
    freeze_steps: int = 0  # learning rate 0 for the first freeze_steps steps


@dataclasses.dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def is_main_process() -> bool:
    """False on every torchrun rank but 0 (which alone writes model directories and reports)."""
    return int(os.environ.get("RANK", "0")) == 0


def init_distributed(device: torch.device) -> Distributed:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1); a no-op otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size())


def use_bf16(precision: str, device: torch.device) -> bool:
    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
            fn = getattr(torch.cpu, probe, None)
            if fn is not None and fn():
                return True
    return False


def lr_factor(step: int, progress: float, cfg: TrainConfig) -> float:
    """Linear warmup over ``warmup_steps``, then cosine decay over training progress in [0, 1]."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    cos = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cos


def make_optimizer(
    model: torch.nn.Module, cfg: TrainConfig, param_groups: list[ParamGroup] | None = None
) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only; one (decay, no-decay) pair per :class:`ParamGroup`."""
    if param_groups is None:
        param_groups = [ParamGroup(list(model.parameters()))]
    groups = []
    for pg in param_groups:
        trainable = [p for p in pg.params if p.requires_grad]
        for wd, params in ((cfg.weight_decay, [p for p in trainable if p.ndim >= 2]), (0.0, [p for p in trainable if p.ndim < 2])):
            if params:
                groups.append({"params": params, "weight_decay": wd, "lr_scale": pg.lr_scale, "freeze_steps": pg.freeze_steps})
    if not groups:
        raise ValueError("no trainable parameters: everything is frozen")
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98), eps=1e-8)


# a worker is forked per epoch; on tiny datasets (a few batches per epoch) the fork costs more than it saves
MIN_BATCHES_FOR_WORKERS = 16


class _Batches(torch.utils.data.Dataset):
    """The batches of one epoch, collated by ``dataset.collate`` (in a worker when num_workers > 0)."""

    def __init__(self, dataset, batches: list[list[int]]):
        self.dataset, self.batches = dataset, batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int):
        return self.dataset.collate(self.batches[i])


def _prefetch(dataset, batches: list[list[int]], num_workers: int):
    """Collated batches in order; workers fork with the dataset (audio shared copy-on-write).

    Augmentation draws depend only on (seed, epoch, index), so the batches are the same
    whether they are made here or in a worker.
    """
    if num_workers <= 0 or len(batches) < MIN_BATCHES_FOR_WORKERS:
        return (dataset.collate(b) for b in batches)
    return torch.utils.data.DataLoader(
        _Batches(dataset, batches), batch_size=None, shuffle=False, num_workers=num_workers, prefetch_factor=4,
        multiprocessing_context="fork", worker_init_fn=_single_thread,
        generator=torch.Generator(),  # its own seed draw: the global RNG (dropout, SpecAugment) stays untouched
    )  # fmt: skip


def _single_thread(_: int) -> None:
    torch.set_num_threads(1)


def default_device() -> torch.device:
    """The GPU of this rank when there is one (``LOCAL_RANK`` under torchrun), else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def train(
    model: torch.nn.Module,
    dataset,
    cfg: TrainConfig,
    run_dir: str | Path,
    loss_fn: Callable,
    save_extras: Callable[[Path], None],
    resume: bool = False,
    device: torch.device | str | None = None,
    progress: bool = True,
    param_groups: list[ParamGroup] | None = None,
) -> TrainResult:
    """Train ``model`` on ``dataset`` and write checkpoints under ``run_dir/checkpoints``.

    save_extras(dir) writes what a model directory needs besides weights (config, tokenizer).
    With ``resume``, training continues from the latest checkpoint exactly where it stopped.
    param_groups (default: all parameters alike) set per-group learning-rate scales and freezes.
    """
    run_dir = Path(run_dir)
    device = torch.device(device) if device is not None else default_device()
    ddp = init_distributed(device)
    model.to(device)
    opt = make_optimizer(model, cfg, param_groups)
    bf16 = use_bf16(cfg.precision, device)
    torch.manual_seed(cfg.seed + ddp.rank)  # dropout and masking differ per rank; rank 0 matches a single process
    state = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "elapsed": 0.0, "processed": 0.0, "history": []}
    if resume:
        ckpt = latest_checkpoint(run_dir)
        if ckpt is None:
            raise FileNotFoundError(f"{run_dir}: --resume given but no checkpoint found under {run_dir / 'checkpoints'}")
        load_weights(model, ckpt)
        saved = torch.load(ckpt / STATE_FILE, weights_only=False)
        opt.load_state_dict(saved["optimizer"])
        torch.set_rng_state(saved["torch_rng"])
        state = saved["loop"]
        print(f"resumed from {ckpt} at step {state['step']}")
    writer = SummaryWriter(str(run_dir / "tensorboard")) if ddp.is_main else None
    if ddp.is_main:
        print(f"TensorBoard logs: {run_dir / 'tensorboard'}  (view: tensorboard --logdir {run_dir})")
    if ddp.world_size > 1:
        print(f"rank {ddp.rank} of {ddp.world_size}: DistributedDataParallel on {device}")
    wrapped = DistributedDataParallel(model) if ddp.world_size > 1 else model
    max_seconds = cfg.max_minutes * 60 if cfg.max_minutes > 0 else math.inf
    # a time-limited run stops by the clock, so its bar counts steps without a misleading total
    total = cfg.max_steps if cfg.max_minutes <= 0 else None
    bar = tqdm(total=total, initial=state["step"], desc="train", unit="step", disable=not (progress and ddp.is_main))
    window: list[float] = []
    metric_window: dict[str, list[float]] = {}
    model.train()

    def checkpoint() -> None:
        if not ddp.is_main:
            return
        name = f"step-{state['step']:07d}"

        def write(d: Path) -> None:
            save_weights(model, d)
            save_extras(d)
            torch.save({"optimizer": opt.state_dict(), "torch_rng": torch.get_rng_state(), "loop": state}, d / STATE_FILE)

        write_atomic_dir(run_dir / "checkpoints" / name, write)
        write_atomic_text(run_dir / "checkpoints" / LATEST_FILE, name)
        old = sorted(p for p in (run_dir / "checkpoints").glob("step-*") if p.is_dir())[: -cfg.keep_checkpoints]
        for p in old:
            shutil.rmtree(p, ignore_errors=True)

    done = state["step"] >= cfg.max_steps or state["elapsed"] >= max_seconds
    while not done:
        dataset.epoch = state["epoch"]
        batches = dataset.make_batches(cfg, state["epoch"])
        if ddp.world_size > 1:  # every rank needs a share of every global batch
            batches = [b[ddp.rank :: ddp.world_size] for b in batches if len(b) >= ddp.world_size]
        t0 = time.perf_counter()
        for batch in _prefetch(dataset, batches[state["batch_in_epoch"] :], cfg.num_workers):
            batch = batch.to(device)
            progress_frac = max(state["step"] / cfg.max_steps, state["elapsed"] / max_seconds)
            lr = cfg.lr * lr_factor(state["step"], progress_frac, cfg)
            for g in opt.param_groups:
                g["lr"] = 0.0 if state["step"] < g["freeze_steps"] else lr * g["lr_scale"]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                out = loss_fn(wrapped, batch)
            amount = torch.tensor([float(out.num_tokens), batch.amount], dtype=torch.float64)
            loss = out.loss
            if ddp.world_size > 1:
                dist.all_reduce(amount)
                # DDP averages gradients over ranks: weight this rank's mean by its share of the units
                loss = loss * (ddp.world_size * out.num_tokens / max(float(amount[0]), 1.0))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            state["step"] += 1
            state["batch_in_epoch"] += 1
            now = time.perf_counter()
            state["elapsed"] += now - t0
            t0 = now
            if ddp.world_size > 1 and max_seconds < math.inf:  # stop together: the slowest rank's clock decides
                elapsed = torch.tensor([state["elapsed"]], dtype=torch.float64)
                dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
                state["elapsed"] = float(elapsed)
            state["processed"] += float(amount[1])
            window.append(float(loss.detach()) / ddp.world_size if ddp.world_size > 1 else out.loss.item())
            for k, v in out.metrics.items():
                metric_window.setdefault(k, []).append(v)
            bar.update(1)
            if state["step"] % cfg.log_every == 0 or state["step"] == cfg.max_steps:
                rec = {
                    "step": state["step"],
                    "loss": _global_mean(window, ddp),
                    "lr": lr,
                    "grad_norm": float(grad_norm),
                    dataset.unit: state["processed"],
                    "elapsed": state["elapsed"],
                    **{k: _global_mean(v, ddp) / ddp.world_size for k, v in metric_window.items()},
                }
                state["history"].append(rec)
                window, metric_window = [], {}
                if writer is not None:
                    for k, v in rec.items():
                        if k not in ("step", "elapsed", dataset.unit):
                            writer.add_scalar(f"train/{k}", v, state["step"])
                    writer.add_scalar(f"train/{dataset.unit}_per_second", rec[dataset.unit] / max(rec["elapsed"], 1e-9), state["step"])
                bar.set_postfix(loss=f"{rec['loss']:.3f}", lr=f"{lr:.2e}")
            done = state["step"] >= cfg.max_steps or state["elapsed"] >= max_seconds
            if done or state["step"] % cfg.checkpoint_every == 0:
                checkpoint()
            if done:
                break
        else:
            state["epoch"] += 1
            state["batch_in_epoch"] = 0
    bar.close()
    if writer is not None:
        writer.close()
    if ddp.is_main:
        if latest_checkpoint(run_dir) is None or not (run_dir / "checkpoints" / f"step-{state['step']:07d}").is_dir():
            checkpoint()
        (run_dir / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in state["history"]))
    if ddp.world_size > 1:
        dist.barrier()  # no rank reads a checkpoint before rank 0 has written it
    last = state["history"][-1]["loss"] if state["history"] else float("nan")
    return TrainResult(state["step"], last, state["processed"], dataset.unit, state["elapsed"], state["history"])


def _global_mean(values: list[float], ddp: Distributed) -> float:
    """Mean over the window, summed over ranks (callers divide per-rank metrics by world size)."""
    mean = sum(values) / max(len(values), 1)
    if ddp.world_size == 1:
        return mean
    t = torch.tensor([mean], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t)
