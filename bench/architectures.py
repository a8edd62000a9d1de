"""Conformer vs Transformer vs BiLSTM vs CNN encoders: equal parameters, equal training time, same data.

Usage:
    .venv/bin/python bench/architectures.py --train data/demo/train/manifest.jsonl \
        --test data/demo/test/manifest.jsonl --minutes 5

Each encoder (about 5 M parameters) is trained with the same CTC recipe for the same wall-clock
budget, then evaluated (greedy decoding) on held-out sentences spoken by held-out voices.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import markdown_table, write_results  # noqa: E402

from speechlm.config import ASRConfig, DataConfig  # noqa: E402
from speechlm.data.manifest import read_manifest  # noqa: E402
from speechlm.decode.transcribe import Recognizer  # noqa: E402
from speechlm.evaluate import evaluate  # noqa: E402
from speechlm.models.asr import count_parameters  # noqa: E402
from speechlm.models.encoders import EncoderConfig, small  # noqa: E402
from speechlm.train.asr import train_asr  # noqa: E402
from speechlm.train.loop import TrainConfig  # noqa: E402

ENCODERS = {
    "conformer": small("conformer"),  # 4.9 M
    "transformer": EncoderConfig(arch="transformer", d_model=200, n_layers=10, n_heads=4),  # 5.0 M
    "lstm": EncoderConfig(arch="lstm", d_model=384, n_layers=5),  # 5.0 M
    "cnn": EncoderConfig(arch="cnn", d_model=256, n_layers=9, conv_kernel=15),  # 5.0 M
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", default="data/demo/train/manifest.jsonl")
    p.add_argument("--test", default="data/demo/test/manifest.jsonl")
    p.add_argument("--minutes", type=float, default=5.0, help="training budget per encoder")
    p.add_argument("--runs", default="runs/bench-architectures")
    p.add_argument("--archs", default=",".join(ENCODERS))
    args = p.parse_args()
    test = read_manifest(args.test, require_text=True)
    rows, data = [], {}
    for arch in args.archs.split(","):
        cfg = ASRConfig(
            data=DataConfig(train_manifest=args.train),
            encoder=ENCODERS[arch],
            train=TrainConfig(max_steps=100_000, max_minutes=args.minutes, checkpoint_every=100_000),
        )
        run = Path(args.runs) / arch
        result = train_asr(cfg, run)
        rec = Recognizer.load(run / "model")
        ev = evaluate(rec, test)
        params = count_parameters(rec.model)
        data[arch] = {
            "params": params, "steps": result.steps, "train_minutes": result.train_seconds / 60,
            "audio_s_per_s": result.throughput, "final_loss": result.final_loss,
            **ev.summary(), "encoder": dataclasses.asdict(cfg.encoder),
        }  # fmt: skip
        rows.append([arch, f"{params / 1e6:.2f} M", result.steps, data[arch]["audio_s_per_s"], result.final_loss, ev.rates.wer, ev.rates.cer, ev.rtf])
    best = min(data, key=lambda a: data[a]["wer"])
    headline = {f"{a}_wer": d["wer"] for a, d in data.items()} | {f"{a}_rtf": d["rtf"] for a, d in data.items()}
    body = markdown_table(["encoder", "params", "steps", "train audio-s/s", "final loss", "WER", "CER", "RTF"], rows)
    body += f"\n\nSame data, same recipe, {args.minutes} min of training each on this machine; best WER: **{best}**.\n"
    write_results("architectures", "Encoder architectures at equal size and training time", headline, body, {"encoders": data})


if __name__ == "__main__":
    main()
