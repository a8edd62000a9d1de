"""Causal Transformer LM vs LSTM LM at equal parameters and equal training tokens: held-out perplexity.

Usage:
    .venv/bin/python bench/lm_perplexity.py                 # ~11 min on 2 cores
    .venv/bin/python bench/lm_perplexity.py --steps 50      # a quick look

Corpus: ../shared/data/books (public-domain Shakespeare, modern spelling); three plays are held
out for perplexity (hamlet, macbeth, tempest). One SentencePiece unigram tokenizer is trained per
run on the same training text (deterministic, so identical for both). Both models see the same
batches of the same token stream for the same number of steps; perplexity is sliding-window
(context 128, stride 64) over the held-out plays.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import SHARED_DATA, markdown_table, write_results  # noqa: E402

from speechlm.config import TextPretrainConfig, load_config  # noqa: E402
from speechlm.models.asr import count_parameters  # noqa: E402
from speechlm.train.text import load_lm_dir, pretrain_text  # noqa: E402

HELD_OUT = ("hamlet_gut.txt", "macbeth_gut.txt", "tempest_gut.txt")
# sized to ~2.0 M parameters each with a 1,000-piece vocabulary (tied embeddings)
MODELS = {
    "causal Transformer (RoPE, pre-norm, tied)": ["lm.arch=causal", "lm.d_model=192", "lm.n_layers=4", "lm.n_heads=4"],
    "LSTM (tied)": ["lm.arch=lstm", "lm.d_model=320", "lm.n_layers=2"],
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--books", default=str(SHARED_DATA / "books" / "shakespeare_modern"))
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--out", default="runs/lm_perplexity")
    args = p.parse_args()
    books = sorted(Path(args.books).glob("*.txt"))
    if not books:
        raise SystemExit(f"no books under {args.books} (needs ../shared/data)")
    train = [str(b) for b in books if b.name not in HELD_OUT]
    valid = [str(b) for b in books if b.name in HELD_OUT]
    rows, data = [], {}
    for name, overrides in MODELS.items():
        cfg = load_config(TextPretrainConfig, overrides=[
            f"data.train_files={train}", f"data.valid_files={valid}", "tokenizer.vocab_size=1000", "lm.context=128",
            f"train.max_steps={args.steps}", "train.max_batch_size=32", "train.lr=2e-3", "train.warmup_steps=100",
            "train.log_every=50", "train.precision=fp32", *overrides,
        ])  # fmt: skip
        run = Path(args.out) / cfg.lm.arch
        t0 = time.time()
        result = pretrain_text(cfg, run)
        _, model, _, _ = load_lm_dir(run)
        import json

        info = json.loads((run / "model" / "training.json").read_text())
        d = {"params_m": count_parameters(model) / 1e6, "steps": result.steps, "train_tokens": result.processed,
             "tokens_per_s": result.throughput, "train_minutes": result.train_seconds / 60, "final_train_loss": result.final_loss,
             "valid_perplexity": info["valid_perplexity"], "valid_tokens": info["valid_tokens"], "wall_minutes": (time.time() - t0) / 60}  # fmt: skip
        data[cfg.lm.arch] = d
        rows.append([name, round(d["params_m"], 2), d["steps"], int(d["train_tokens"]), round(d["tokens_per_s"]), d["train_minutes"], d["valid_perplexity"]])
    headline = {"perplexity_causal": data["causal"]["valid_perplexity"], "perplexity_lstm": data["lstm"]["valid_perplexity"]}
    body = markdown_table(["model", "params (M)", "steps", "training tokens", "tokens/s", "train min", "held-out perplexity"], rows)
    body += (
        f"\n\nTraining text: {len(train)} Shakespeare works; held out: {', '.join(HELD_OUT)} "
        f"({data['causal']['valid_tokens']} tokens scored). Same tokenizer, batches, steps, learning-rate schedule.\n"
    )
    write_results("lm_perplexity", "Language models: causal Transformer vs LSTM at equal size and tokens", headline, body, {"runs": data})


if __name__ == "__main__":
    main()
