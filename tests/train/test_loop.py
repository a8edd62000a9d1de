"""Recipe tests on the deterministic tone corpus: golden losses, exact resume, atomic checkpoints."""

import json

import pytest
import torch
from safetensors.torch import load_file

import speechlm.train.asr as asr
from conftest import tiny_asr_config
from speechlm.train.checkpoint import latest_checkpoint
from speechlm.train.loop import TrainConfig, lr_factor

# fp32, seed 0, tiny conformer on the tone corpus: the mean loss of steps 1-4, 5-8, 9-12.
# A change here means the recipe (init, batching, features, loss or optimizer) changed.
GOLDEN = [3.2118, 2.3798, 2.2997]


def test_golden_losses(tone_corpus, tmp_path):
    torch.set_num_threads(2)
    result = asr.train_asr(tiny_asr_config(tone_corpus, max_steps=12), tmp_path / "run", progress=False)
    losses = [h["loss"] for h in result.history]
    assert losses == pytest.approx(GOLDEN, rel=2e-3), losses
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()
    saved = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert saved["encoder"]["d_model"] == 48  # the config travels with the model


def test_resume_continues_exactly(tone_corpus, tmp_path, monkeypatch):
    cfg = tiny_asr_config(tone_corpus, max_steps=10, checkpoint_every=4)
    asr.train_asr(cfg, tmp_path / "straight", progress=False)

    calls = {"n": 0}
    real_loss = asr.ctc_loss

    def interrupting_loss(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 7:  # in the middle of the second checkpoint interval
            raise KeyboardInterrupt
        return real_loss(*a, **kw)

    monkeypatch.setattr(asr, "ctc_loss", interrupting_loss)
    with pytest.raises(KeyboardInterrupt):
        asr.train_asr(cfg, tmp_path / "resumed", progress=False)
    ckpt = latest_checkpoint(tmp_path / "resumed")
    assert ckpt.name == "step-0000004"  # the interrupted step left no partial checkpoint behind
    assert not [p for p in (tmp_path / "resumed" / "checkpoints").iterdir() if ".tmp" in p.name]
    monkeypatch.setattr(asr, "ctc_loss", real_loss)
    asr.train_asr(cfg, tmp_path / "resumed", resume=True, progress=False)

    a = load_file(str(tmp_path / "straight" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_resume_without_checkpoint_is_an_error(tone_corpus, tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        asr.train_asr(tiny_asr_config(tone_corpus, max_steps=2), tmp_path / "empty", resume=True, progress=False)


def test_learning_rate_schedule():
    cfg = TrainConfig(lr=1.0, warmup_steps=10, min_lr_ratio=0.1, max_steps=100)
    assert lr_factor(0, 0.0, cfg) == pytest.approx(0.1)
    assert lr_factor(9, 0.09, cfg) == pytest.approx(1.0)
    assert lr_factor(55, 0.5, cfg) == pytest.approx(0.55)
    assert lr_factor(100, 1.0, cfg) == pytest.approx(0.1)


def test_bf16_training_step_runs(tone_corpus, tmp_path):
    result = asr.train_asr(tiny_asr_config(tone_corpus, max_steps=2, precision="bf16"), tmp_path / "bf16", progress=False)
    assert result.steps == 2 and torch.isfinite(torch.tensor(result.final_loss))


def test_worker_batches_equal_inline_batches(tone_corpus, monkeypatch):
    from speechlm.config import ASRConfig
    from speechlm.data.batching import SpeechDataset, bucket_batches
    from speechlm.data.manifest import read_manifest
    from speechlm.data.tokenizer import CharTokenizer
    import speechlm.train.loop as loop
    from speechlm.train.loop import _prefetch

    monkeypatch.setattr(loop, "MIN_BATCHES_FOR_WORKERS", 0)  # use the worker even for this small corpus

    utts = read_manifest(tone_corpus)
    ds = SpeechDataset(utts, CharTokenizer.train([u.text for u in utts]), ASRConfig().augment, seed=1, progress=False)
    ds.epoch = 3
    batches = bucket_batches(ds.durations, 6.0, 64, seed=1, epoch=3)
    rng_before = torch.get_rng_state()
    inline = list(_prefetch(ds, batches, num_workers=0))
    worker = list(_prefetch(ds, batches, num_workers=1))
    assert torch.equal(torch.get_rng_state(), rng_before)  # the loader does not draw from the global RNG
    assert len(inline) == len(worker) == len(batches)
    for a, b in zip(inline, worker):
        assert a.indices == b.indices and torch.equal(a.audio, b.audio) and torch.equal(a.tokens, b.tokens)
