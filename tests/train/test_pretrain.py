"""Speech pretraining and fine-tuning recipes on the tone corpus: learning, transfer, resume after SIGKILL, bad input."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_asr_config
from speechlm.config import SpeechPretrainConfig, load_config
from speechlm.data.audio import write_audio
from speechlm.data.manifest import Utterance, read_manifest, write_manifest
from speechlm.errors import CheckpointError, SpeechLMError
from speechlm.train.asr import train_asr
from speechlm.train.finetune import config_from_pretrained, labeled_subset
from speechlm.train.pretrain import pretrain_speech

TINY = ["encoder.d_model=48", "encoder.n_layers=2", "encoder.n_heads=2", "encoder.conv_kernel=7",
        "train.precision=fp32", "train.batch_seconds=8", "train.warmup_steps=4", "train.lr=3e-3", "train.log_every=5",
        "ssl.codebook_size=32", "ssl.kmeans_frames=2000"]  # fmt: skip


def tiny_pretrain_config(manifest, *extra):
    return load_config(SpeechPretrainConfig, overrides=[f"data.train_manifest={manifest}", *TINY, *extra])


@pytest.fixture(scope="module")
def pretrained(tone_corpus, tmp_path_factory):
    run = tmp_path_factory.mktemp("ssl") / "run"
    result = pretrain_speech(tiny_pretrain_config(tone_corpus, "train.max_steps=60"), run, progress=False)
    return run, result


def test_pretraining_learns_to_predict_masked_targets(pretrained):
    run, result = pretrained
    first, last = result.history[0], result.history[-1]
    # measured: loss 3.53 -> 3.39 and accuracy 4.3 % -> 9 % over 60 steps (chance: 1/32)
    assert last["loss"] < first["loss"] - 0.05
    assert last["masked_acc"] > 1.5 * first["masked_acc"]
    assert (run / "model" / "model.safetensors").is_file() and "ssl" in json.loads((run / "model" / "config.json").read_text())


def test_kmeans_targets_train(tone_corpus, tmp_path):
    result = pretrain_speech(tiny_pretrain_config(tone_corpus, "ssl.target=kmeans", "train.max_steps=10"), tmp_path / "km", progress=False)
    assert result.history[-1]["loss"] < np.log(32)
    weights = load_file(str(tmp_path / "km" / "model" / "model.safetensors"))
    assert weights["quantizer.fitted"].item() and weights["quantizer.centroids"].abs().sum() > 0


def test_finetune_loads_the_pretrained_encoder_and_reports_it(pretrained, tone_corpus, tmp_path, capsys):
    run, _ = pretrained
    cfg = tiny_asr_config(tone_corpus, max_steps=1)
    cfg = config_from_pretrained(dataclasses.replace(cfg, encoder=dataclasses.replace(cfg.encoder, dropout=0.0)), run)
    assert cfg.encoder.dropout == 0.0 and cfg.encoder.d_model == 48
    cfg = dataclasses.replace(cfg, finetune=dataclasses.replace(cfg.finetune, freeze_encoder_steps=-1))
    train_asr(cfg, tmp_path / "ft", progress=False)
    out = capsys.readouterr().out
    assert "loaded" in out and "newly initialised: head.1.weight, head.1.bias" in out and "quantizer.projection" in out
    pre = load_file(str(run / "model" / "model.safetensors"))
    ft = load_file(str(tmp_path / "ft" / "model" / "model.safetensors"))
    enc = [k for k in ft if k.startswith("encoder.")]
    assert enc and all(torch.equal(pre[k], ft[k]) for k in enc)  # frozen encoder = pretrained weights


def test_freeze_for_some_steps_then_train(pretrained, tone_corpus, tmp_path):
    run, _ = pretrained
    cfg = config_from_pretrained(tiny_asr_config(tone_corpus, max_steps=3), run)
    frozen = dataclasses.replace(cfg, finetune=dataclasses.replace(cfg.finetune, freeze_encoder_steps=3))
    train_asr(frozen, tmp_path / "a", progress=False)
    thawed = dataclasses.replace(cfg, finetune=dataclasses.replace(cfg.finetune, freeze_encoder_steps=2, layer_decay=0.5))
    train_asr(thawed, tmp_path / "b", progress=False)
    pre = load_file(str(run / "model" / "model.safetensors"))
    a = load_file(str(tmp_path / "a" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "model" / "model.safetensors"))
    k = "encoder.blocks.0.ff1.1.weight"
    assert torch.equal(pre[k], a[k]) and not torch.equal(pre[k], b[k])
    # layer decay: the lower block moved less than the top block in the single unfrozen step
    top = "encoder.blocks.1.ff1.1.weight"
    assert (b[k] - pre[k]).abs().mean() < (b[top] - pre[top]).abs().mean()


def test_init_with_another_architecture_is_a_clear_error(pretrained, tone_corpus, tmp_path):
    run, _ = pretrained
    cfg = tiny_asr_config(tone_corpus, max_steps=1)
    cfg = dataclasses.replace(cfg, finetune=dataclasses.replace(cfg.finetune, init=str(run)), encoder=dataclasses.replace(cfg.encoder, arch="transformer"))
    with pytest.raises(CheckpointError, match="arch=conformer.*arch=transformer"):
        train_asr(cfg, tmp_path / "x", progress=False)
    (tmp_path / "lm").mkdir()
    (tmp_path / "lm" / "config.json").write_text(json.dumps({"lm": {}}))
    (tmp_path / "lm" / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="not a speech model"):
        config_from_pretrained(cfg, tmp_path / "lm")


def test_labeled_subsets_are_deterministic_and_nested():
    utts = [Utterance(f"{i}.wav", 1.0 + (i % 3), "a") for i in range(200)]
    from speechlm.config import FinetuneConfig

    small = labeled_subset(utts, FinetuneConfig(labeled_fraction=0.05))
    large = labeled_subset(utts, FinetuneConfig(labeled_fraction=0.25))
    assert len(small) == 10 and len(large) == 50
    assert {u.audio_filepath for u in small} <= {u.audio_filepath for u in large}
    assert small == labeled_subset(utts, FinetuneConfig(labeled_fraction=0.05))
    assert small != labeled_subset(utts, FinetuneConfig(labeled_fraction=0.05, subset_seed=1))
    minutes = labeled_subset(utts, FinetuneConfig(labeled_minutes=1.0))
    assert 60 <= sum(u.duration for u in minutes) < 63


def test_silent_audio_is_skipped_and_all_silent_is_an_error(tone_corpus, tmp_path, capsys):
    utts = read_manifest(tone_corpus)
    silent = tmp_path / "silent.wav"
    write_audio(silent, np.zeros(16000, dtype=np.float32))
    write_manifest(tmp_path / "m.jsonl", [*utts[:6], Utterance(str(silent), 1.0)])
    pretrain_speech(tiny_pretrain_config(tmp_path / "m.jsonl", "train.max_steps=1"), tmp_path / "r", progress=False)
    assert "skipping silent audio" in capsys.readouterr().out
    write_manifest(tmp_path / "s.jsonl", [Utterance(str(silent), 1.0)])
    with pytest.raises(SpeechLMError, match="no usable audio"):
        pretrain_speech(tiny_pretrain_config(tmp_path / "s.jsonl"), tmp_path / "s", progress=False)


def test_sigkill_then_resume(tone_corpus, tmp_path):
    run = tmp_path / "run"
    args = [sys.executable, "-m", "speechlm.cli", "pretrain", "speech", str(run), "--train-manifest", str(tone_corpus),
            *TINY, "train.max_steps=30", "train.checkpoint_every=3", "--threads", "1"]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "checkpoints" / "step-0000006").is_dir():
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (run / "checkpoints" / "latest").is_file(), "no checkpoint was written before the kill"
    r = subprocess.run([*args, "--resume"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "resumed from" in r.stdout
    assert json.loads((run / "model" / "training.json").read_text())["steps"] == 30


def test_keep_head_adapts_the_recognizer_whole(tiny_asr_dir, tone_corpus, tmp_path, capsys):
    # adapting on transcripts that never use "h": the recognizer keeps its whole alphabet and its output layer
    subset = [u for u in read_manifest(tone_corpus) if "h" not in u.text]
    write_manifest(tmp_path / "subset.jsonl", subset)
    cfg = config_from_pretrained(tiny_asr_config(tmp_path / "subset.jsonl", max_steps=1), tiny_asr_dir)
    kept = dataclasses.replace(cfg, finetune=dataclasses.replace(cfg.finetune, init_head=True))
    train_asr(kept, tmp_path / "kept", progress=False)
    assert "newly initialised: none" in capsys.readouterr().out
    train_asr(cfg, tmp_path / "new", progress=False)
    assert "newly initialised: head.1.weight, head.1.bias" in capsys.readouterr().out
    pre = load_file(str(tiny_asr_dir / "model.safetensors"))["head.1.weight"]
    kept_head, new_head = (load_file(str(tmp_path / r / "model" / "model.safetensors"))["head.1.weight"] for r in ("kept", "new"))
    assert kept_head.shape == pre.shape and (kept_head - pre).abs().max() < 0.01  # one warm-up step from the recognizer's own
    assert new_head.shape[0] == pre.shape[0] - 1  # a new alphabet without "h"
    assert (tmp_path / "kept" / "model" / "tokenizer.json").read_text() == (tiny_asr_dir / "tokenizer.json").read_text()
    saved = json.loads((tmp_path / "kept" / "model" / "config.json").read_text())
    assert saved["finetune"]["init_head"] is True and saved["tokenizer"] == json.loads((tiny_asr_dir / "config.json").read_text())["tokenizer"]


def test_keep_head_bad_input_is_a_clear_error(tiny_asr_dir, pretrained, tone_corpus, tmp_path):
    utts = read_manifest(tone_corpus)
    write_manifest(tmp_path / "new_word.jsonl", [*utts[:3], dataclasses.replace(utts[3], text="abc xyz")])
    cfg = tiny_asr_config(tmp_path / "new_word.jsonl", max_steps=1)
    keep = dataclasses.replace(cfg.finetune, init_head=True)
    with pytest.raises(SpeechLMError, match=rf"{utts[3].audio_filepath}.*'abc xyz'.*never saw 'xyz'"):
        train_asr(dataclasses.replace(config_from_pretrained(cfg, tiny_asr_dir), finetune=dataclasses.replace(keep, init=str(tiny_asr_dir))), tmp_path / "a", progress=False)
    with pytest.raises(CheckpointError, match="needs a speech recognizer.*no tokenizer"):
        train_asr(dataclasses.replace(config_from_pretrained(cfg, pretrained[0]), finetune=dataclasses.replace(keep, init=str(pretrained[0]))), tmp_path / "b", progress=False)
    with pytest.raises(ValueError, match="needs finetune.init"):
        train_asr(dataclasses.replace(cfg, finetune=keep), tmp_path / "c", progress=False)
    assert not any((tmp_path / r / "model").exists() for r in "abc")
