"""Does joint speech-text pretraining improve the label-efficiency curve over speech-only pretraining?

Usage:
    .venv/bin/python bench/label_efficiency.py                 # first: the BEST-RQ encoder and its curve (runs/label_efficiency)
    .venv/bin/python bench/joint_pretrain.py --pretrain-steps 1000                     # ~70 min on 2 cores (fp32)
    .venv/bin/python bench/joint_pretrain.py --pretrain-steps 100 --steps 50 --control-steps 0   # a quick look

1. Joint pretraining (``speechlm pretrain joint``) of the same small Conformer, with the same
   batch and learning rate as the label-efficiency benchmark's BEST-RQ encoder (whose step count
   the table shows beside this one's): masked prediction on
   all training audio, CTC on the labeled fraction's utterances (the very subset fine-tuning
   uses: same fraction, same subset seed) and masked LM on unpaired text through the top
   ``joint.shared_layers`` blocks. The text is built-in generator sentences that are neither a
   training transcript nor a test sentence.
2. Fine-tune CTC on that labeled subset with the label-efficiency recipe (same steps, batch, lr).
3. In the same run, evaluate the label-efficiency benchmark's BEST-RQ and scratch models at the
   same point (fine-tuned there with the same recipe; trained here if missing), and two controls
   that isolate the extra passes over the labels joint pretraining makes: CTC from scratch and
   from the BEST-RQ encoder on the same subset, for as much labeled audio as the joint model saw
   in pretraining and fine-tuning (fine-tune steps + pretrain steps x joint.paired_batch_share).
Results: bench/results/joint_pretrain.{md,json,png}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, markdown_table, saved_figure, write_results  # noqa: E402

from speechlm import label_efficiency as le  # noqa: E402
from speechlm.config import ASRConfig, JointPretrainConfig, load_config  # noqa: E402
from speechlm.data import sentences  # noqa: E402
from speechlm.data.manifest import read_manifest  # noqa: E402
from speechlm.data.tokenizer import normalize_text  # noqa: E402
from speechlm.train.checkpoint import MODEL_FILE  # noqa: E402
from speechlm.train.finetune import config_from_pretrained  # noqa: E402
from speechlm.train.joint_pretrain import pretrain_joint  # noqa: E402


def unpaired_text(path: Path, n: int, train_manifest: str, test_manifest: str) -> int:
    """``n`` generator sentences (training split, new seed) that are no transcript of either manifest."""
    seen = {normalize_text(u.text) for m in (train_manifest, test_manifest) for u in read_manifest(m) if u.text}
    train, _ = sentences.split(sentences.generate(4 * n, seed=7))
    lines = [s.text for s in train if normalize_text(s.text) not in seen][:n]
    path.write_text("".join(line + "\n" for line in lines))
    return len(lines)


def plot(log: list[dict], path: Path) -> None:
    with saved_figure(path, ncols=3, figsize=(11, 3.2)) as (fig, axes):
        steps = [r["step"] for r in log]
        for ax, key, title in zip(axes, ("mp_loss", "ctc_loss", "mlm_loss"), ("masked prediction (speech)", "CTC (paired)", "masked LM (text)")):
            ax.plot(steps, [r[key] for r in log])
            ax.set(xlabel="step", ylabel="loss (nats)", title=title)
            ax.grid(alpha=0.3)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-manifest", default="data/demo/train/manifest.jsonl")
    p.add_argument("--test-manifest", default="data/demo/test/manifest.jsonl")
    p.add_argument("--label-efficiency", default="runs/label_efficiency", help="bench/label_efficiency.py's output folder")
    p.add_argument("--out", default="runs/joint_pretrain")
    p.add_argument("--fraction", type=float, default=0.1, help="labeled fraction (paired in pretraining, fine-tuned on)")
    p.add_argument("--seed", type=int, default=0, help="subset and fine-tuning seed")
    p.add_argument("--pretrain-steps", type=int, default=1500)
    p.add_argument("--steps", type=int, default=500, help="fine-tuning steps (the label-efficiency recipe)")
    p.add_argument("--text-sentences", type=int, default=20000)
    p.add_argument("--control-steps", type=int, default=-1, help="scratch CTC control steps (-1: the joint model's labeled audio; 0: skip)")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("overrides", nargs="*", help="joint pretraining config overrides key=value (e.g. joint.shared_layers=6)")
    args = p.parse_args()
    out, le_dir = Path(args.out), Path(args.label_efficiency)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    text = out / "unpaired_text.txt"
    n_text = unpaired_text(text, args.text_sentences, args.train_manifest, args.test_manifest)
    best_rq = le_dir / "pretrain"
    if not (best_rq / "model" / MODEL_FILE).is_file():
        sys.exit(f"{best_rq}/model: run bench/label_efficiency.py first (the BEST-RQ encoder this compares with)")
    bq = json.loads((best_rq / "model" / "config.json").read_text())
    pre_cfg = load_config(JointPretrainConfig, overrides=[
        f"data.train_manifest={args.train_manifest}", f'text.train_files=["{text}"]', "text.valid_fraction=0.0",
        f"joint.paired_fraction={args.fraction}", f"joint.paired_seed={args.seed}", f"train.max_steps={args.pretrain_steps}",
        *(f"{sec}.{k}={json.dumps(v)}" for sec in ("encoder", "features", "ssl") for k, v in bq[sec].items()),
        *(f"train.{k}={json.dumps(bq['train'][k])}" for k in ("lr", "warmup_steps", "batch_seconds", "seed")),
        *args.overrides,
    ])  # fmt: skip
    joint_dir = out / "pretrain"
    if not (joint_dir / "model" / MODEL_FILE).is_file():
        print(f"== joint pretraining {args.pretrain_steps} steps: {args.fraction:.0%} paired, {n_text} sentences of text")
        pretrain_joint(pre_cfg, joint_dir, resume=(joint_dir / "checkpoints" / "latest").is_file())
    log = [json.loads(line) for line in (joint_dir / "train_log.jsonl").read_text().splitlines()]
    last = log[-1]
    plot(log, RESULTS / "joint_pretrain.png")

    base = load_config(ASRConfig, overrides=[f"data.train_manifest={args.train_manifest}", f"train.max_steps={args.steps}", "train.checkpoint_every=100000"])
    base = dataclasses.replace(config_from_pretrained(base, best_rq), finetune=base.finetune)  # the label-efficiency grid's base
    point = lambda init: le.Point(init, args.fraction, args.seed)  # noqa: E731
    share = pre_cfg.joint.paired_batch_share
    control_steps = args.steps + round(args.pretrain_steps * share) if args.control_steps < 0 else args.control_steps
    runs = {
        "joint": (le.point_config(base, point("pretrained"), str(joint_dir)), out / "runs" / f"joint-{args.fraction:g}-s{args.seed}"),
        "best-rq": (le.point_config(base, point("pretrained"), str(best_rq)), le_dir / "runs" / point("pretrained").name),
        "scratch": (le.point_config(base, point("scratch"), None), le_dir / "runs" / point("scratch").name),
    }
    if control_steps > 0:  # as many passes over the labels as the joint model made, from scratch and from BEST-RQ
        for name, init, init_dir in (("scratch-long", "scratch", None), ("best-rq-long", "pretrained", str(best_rq))):
            cfg = le.point_config(base, point(init), init_dir)
            cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_steps=control_steps))
            runs[name] = (cfg, out / "runs" / f"{name}-{args.fraction:g}-s{args.seed}-{control_steps}steps")
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
        futures = {name: pool.submit(le.run_point, cfg, str(d), args.test_manifest, 1) for name, (cfg, d) in runs.items()}
        rows = {name: f.result() for name, f in futures.items()}
    for name, r in rows.items():
        print(f"{name}: WER {r['wer']:.2%} CER {r['cer']:.2%}")

    bq_steps = json.loads((best_rq / "model" / "training.json").read_text())["steps"]
    prefix = {"joint": f"{last['step']} joint + ", "best-rq": f"{bq_steps} BEST-RQ + ", "best-rq-long": f"{bq_steps} BEST-RQ + "}
    steps = {name: prefix.get(name, "") + str(r["steps"]) for name, r in rows.items()}
    labels_seen = {name: "pretraining (CTC) + fine-tuning" if name == "joint" else "fine-tuning" for name in rows}
    table = markdown_table(
        ["init", "training steps", "labels used in", "WER", "CER", "final fine-tune loss"],
        [[name, steps[name], labels_seen[name], f"{r['wer']:.2%}", f"{r['cer']:.2%}", r["final_loss"]] for name, r in rows.items()],
    )
    headline = {f"wer_{name.replace('-', '_')}_{100 * args.fraction:g}pct": r["wer"] for name, r in rows.items()}
    rel = 1 - rows["joint"]["wer"] / rows["best-rq"]["wer"]
    control, rel_c = "", {}
    for name in ("scratch-long", "best-rq-long"):
        if name in rows:
            c = rows[name]
            rel_c[name] = 1 - rows["joint"]["wer"] / c["wer"]
            control += (
                f"Joint vs {name} (as much labeled audio as the joint model saw, {c['steps']} fine-tuning steps): "
                f"{rel_c[name]:+.1%} relative WER ({c['wer']:.2%} -> {rows['joint']['wer']:.2%}), "
                f"CER {c['cer']:.2%} -> {rows['joint']['cer']:.2%}.\n"
            )
    body = "\n".join([
        f"Labeled: {args.fraction:.0%} of {args.train_manifest} (subset seed {args.seed}, {rows['joint']['labeled_minutes']:.1f} min, "
        f"{rows['joint']['labeled_utterances']} utterances). Test: {args.test_manifest} (unseen sentences, unseen voices).",
        f"Joint pretraining: {last['step']} steps; shared blocks {pre_cfg.joint.shared_layers} of {pre_cfg.encoder.n_layers}; "
        f"weights CTC {pre_cfg.joint.ctc_weight:g}, MLM {pre_cfg.joint.mlm_weight:g}; {n_text} sentences of unpaired text. "
        f"Final losses: masked prediction {last['mp_loss']:.3f} (accuracy {last['masked_acc']:.1%}), CTC {last['ctc_loss']:.3f}, "
        f"MLM {last['mlm_loss']:.3f} (accuracy {last['mlm_acc']:.1%}).",
        f"Fine-tuning: the label-efficiency recipe, {args.steps} steps, batch {base.train.batch_seconds:g} s, lr {base.train.lr:g}. "
        f"Wall time of this run: {(time.time() - t0) / 60:.1f} min.",
        "",
        table,
        "",
        f"Joint vs BEST-RQ at {args.fraction:.0%} labels: {rel:+.1%} relative WER change "
        f"({'joint better' if rel > 0 else 'joint not better'}).",
        "",
        control,
        "",
        "![joint pretraining losses](joint_pretrain.png)",
    ])  # fmt: skip
    write_results("joint_pretrain", "Joint speech-text pretraining vs speech-only pretraining", {**headline, "relative_wer_change_vs_best_rq": rel, **{f"relative_wer_change_vs_{k.replace('-', '_')}": v for k, v in rel_c.items()}}, body,
                  {"rows": rows, "pretrain": {"config": dataclasses.asdict(pre_cfg), "final": last}, "finetune_steps": args.steps})  # fmt: skip


if __name__ == "__main__":
    main()
