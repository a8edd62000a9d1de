"""Label-efficiency curves: fine-tune with growing labeled subsets, with and without a pretrained encoder.

Every point trains the same recipe for the same number of steps on the same batch size (equal
fine-tuning compute); only the labeled subset and the initialisation differ. Subsets with one
seed are nested (1 % inside 5 % inside 10 %). Runs go to ``out/runs/<init>-<fraction>-s<seed>``
and are reused when their model already exists, so an interrupted grid continues where it stopped.

Usage (the same as ``speechlm label-efficiency``):
    speechlm label-efficiency runs/le --init runs/ssl --train-manifest data/train/manifest.jsonl \\
        --test-manifest data/test/manifest.jsonl --fractions 0.01,0.05,0.1,1 --seeds 2 --steps 400
"""

from __future__ import annotations

import dataclasses
import json
import math
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from multiprocessing import get_context
from pathlib import Path
from statistics import mean

from speechlm.config import ASRConfig, save_config
from speechlm.data.manifest import filter_utterances, read_manifest
from speechlm.train.checkpoint import MODEL_FILE
from speechlm.train.finetune import config_from_pretrained, labeled_subset


@dataclasses.dataclass(frozen=True)
class Point:
    init: str  # "pretrained" or "scratch"
    fraction: float
    seed: int

    @property
    def name(self) -> str:
        return f"{self.init}-{self.fraction:g}-s{self.seed}"


def grid(fractions: list[float], seeds: int, with_pretrained: bool) -> list[Point]:
    """All points; the full labeled set gets one seed (its subset cannot change)."""
    inits = ["scratch", "pretrained"] if with_pretrained else ["scratch"]
    return [Point(i, f, s) for f in fractions for s in range(seeds if f < 1 else 1) for i in inits]


def point_config(base: ASRConfig, point: Point, init_dir: str | None) -> ASRConfig:
    cfg = base
    if point.init == "pretrained":
        cfg = config_from_pretrained(cfg, init_dir)
    ft = dataclasses.replace(cfg.finetune, labeled_fraction=point.fraction, subset_seed=point.seed)
    return dataclasses.replace(cfg, finetune=ft, train=dataclasses.replace(cfg.train, seed=point.seed))


def run_point(cfg: ASRConfig, run_dir: str, test_manifest: str, threads: int) -> dict:
    """Fine-tune (unless already done) and evaluate one point; returns its row."""
    import torch

    from speechlm.decode.transcribe import Recognizer
    from speechlm.evaluate import evaluate
    from speechlm.train.asr import train_asr

    if threads:
        torch.set_num_threads(threads)
    run = Path(run_dir)
    done = run / "model" / MODEL_FILE
    if not done.is_file():
        result = train_asr(cfg, run, resume=(run / "checkpoints" / "latest").is_file(), progress=False)
        steps, final_loss, seconds = result.steps, result.final_loss, result.train_seconds
    else:
        info = json.loads((run / "model" / "training.json").read_text())
        steps, final_loss, seconds = info["steps"], info["final_loss"], float("nan")
    ev = evaluate(Recognizer.load(run / "model"), read_manifest(test_manifest, require_text=True), progress=False)
    labeled, _ = filter_utterances(read_manifest(cfg.data.train_manifest, require_text=True), cfg.data.min_duration, cfg.data.max_duration, True)
    subset = labeled_subset(labeled, cfg.finetune)  # the utterances train_asr trained on
    return {
        "labeled_utterances": len(subset),
        "labeled_minutes": sum(u.duration for u in subset) / 60,
        "wer": ev.rates.wer,
        "cer": ev.rates.cer,
        "steps": steps,
        "final_loss": final_loss,
        "train_seconds": seconds,
    }


def run_grid(
    out: str | Path, base: ASRConfig, test_manifest: str, init_dir: str | None, fractions: list[float], seeds: int, jobs: int = 1
) -> list[dict]:
    """Run every point (``jobs`` at a time, 1 torch thread each when jobs > 1) and return the rows."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if init_dir is not None:  # scratch runs use the pretrained encoder's architecture and features
        base = dataclasses.replace(config_from_pretrained(base, init_dir), finetune=base.finetune)
    points = grid(fractions, seeds, init_dir is not None)
    runs = [(point_config(base, p, init_dir), str(out / "runs" / p.name), test_manifest, 1 if jobs > 1 else 0) for p in points]
    rows = []
    with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) if jobs > 1 else nullcontext() as pool:
        results = pool.map(run_point, *zip(*runs)) if pool else (run_point(*r) for r in runs)
        for p, res in zip(points, results):
            rows.append({**dataclasses.asdict(p), **res})
            print(f"{p.name}: WER {res['wer']:.2%}", flush=True)
    save_config(base, out / "base_config.json")
    return rows


def summarize(rows: list[dict]) -> dict[str, dict[float, dict]]:
    """init -> fraction -> {wer (mean over seeds), min, max, minutes, seeds}."""
    out: dict[str, dict[float, dict]] = {}
    for init in sorted({r["init"] for r in rows}):
        out[init] = {}
        for f in sorted({r["fraction"] for r in rows if r["init"] == init}):
            sel = [r for r in rows if r["init"] == init and r["fraction"] == f]
            wers = [r["wer"] for r in sel]
            out[init][f] = {
                "wer": mean(wers), "min": min(wers), "max": max(wers),
                "minutes": mean(r["labeled_minutes"] for r in sel), "seeds": len(sel),
            }  # fmt: skip
    return out


def plot(summary: dict, path: str | Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.figure(figsize=(6, 4))
    for init, marker in (("scratch", "o"), ("pretrained", "s")):
        if init not in summary:
            continue
        pts = summary[init]
        x = [pts[f]["minutes"] for f in pts]
        y = [100 * pts[f]["wer"] for f in pts]
        lo = [100 * (pts[f]["wer"] - pts[f]["min"]) for f in pts]
        hi = [100 * (pts[f]["max"] - pts[f]["wer"]) for f in pts]
        plt.errorbar(x, y, yerr=[lo, hi], marker=marker, capsize=3, label=f"{init} (mean, min-max over seeds)")
    plt.xscale("log")
    plt.xlabel("labeled audio (minutes, log scale)")
    plt.ylabel("WER (%)")
    plt.title(title)
    plt.grid(alpha=0.3, which="both")
    plt.legend()
    plt.tight_layout()
    plt.savefig(path, dpi=120)
    plt.close()


def markdown(summary: dict) -> str:
    fractions = sorted({f for pts in summary.values() for f in pts})
    lines = ["| labeled | minutes | " + " | ".join(f"WER {i}" for i in summary) + " |", "|---|---|" + "---|" * len(summary)]
    for f in fractions:
        any_init = next(pts[f] for pts in summary.values() if f in pts)
        cells = []
        for pts in summary.values():
            p = pts.get(f)
            cells.append("-" if p is None else f"{p['wer']:.1%}" + (f" ({p['min']:.1%}-{p['max']:.1%}, {p['seeds']} seeds)" if p["seeds"] > 1 else ""))
        lines.append(f"| {f:.0%} | {any_init['minutes']:.1f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(out: str | Path, rows: list[dict], title: str = "Label efficiency") -> dict:
    """Write ``rows.json``, ``summary.json``, ``table.md`` and ``wer_vs_labels.png`` under ``out``; return the summary."""
    out = Path(out)
    s = summarize(rows)
    (out / "rows.json").write_text(json.dumps(rows, indent=1) + "\n")
    (out / "summary.json").write_text(json.dumps({i: {str(f): v for f, v in pts.items()} for i, pts in s.items()}, indent=1) + "\n")
    (out / "table.md").write_text(markdown(s) + "\n")
    plot(s, out / "wer_vs_labels.png", title)
    return s


def wer_at(summary: dict, init: str, fraction: float) -> float:
    pts = summary.get(init, {})
    return pts[fraction]["wer"] if fraction in pts else math.nan
