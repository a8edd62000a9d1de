"""The joint speech-LM: training on mixed tasks, cached decoding, saving, and the errors users hit."""

import dataclasses
import json
import math
import types

import numpy as np
import pytest
import torch

from conftest import slm_config
from speechlm.config import TextPretrainConfig, load_config
from speechlm.data.audio import load_audio
from speechlm.data.manifest import write_manifest
from speechlm.errors import SpeechLMError
from speechlm.models.lm import LMConfig, special_tokens
from speechlm.models.speech_lm import ProjectorConfig, SpeechLM
from speechlm.train.speech_lm import SpeechLMRunner, is_speech_lm_dir, train_speech_lm
from speechlm.train.text import load_lm_dir, pretrain_text


def tiny_model(arch="causal"):
    from speechlm.features import FeatureConfig
    from speechlm.models.encoders import EncoderConfig

    torch.manual_seed(0)
    sp = special_tokens(10)
    lm = LMConfig(arch=arch, d_model=16, n_layers=2, n_heads=2, context=64, dropout=0.0)
    enc = EncoderConfig(d_model=16, n_layers=1, n_heads=2, conv_kernel=3, dropout=0.0)
    return SpeechLM(FeatureConfig(), enc, ProjectorConfig(stack=3), lm, sp, [[2, 3], [4]]).eval()


@pytest.mark.parametrize("arch", ["causal", "lstm"])
def test_cached_greedy_decoding_matches_recomputing_the_whole_sequence(arch):
    model = tiny_model(arch)
    speech, lens = model.encode_speech(torch.randn(1, 8000) * 0.1, torch.tensor([8000]))
    speech = speech[0, : int(lens[0])]
    got = model.generate(speech, 1, max_new_tokens=6)
    ids = []
    for _ in range(6):  # no cache: the whole prefix + answer so far, every step
        x = torch.cat([model.prefix(speech, 1), model.lm.embed(torch.tensor(ids, dtype=torch.long))])[None]
        logits = model.lm(torch.zeros(1, x.shape[1], dtype=torch.long), embeds=x).logits[0, -1].clone()
        logits[[0, model.special.bos, model.special.mask]] = float("-inf")
        nxt = int(logits.argmax())
        if nxt == model.special.eos:
            break
        ids.append(nxt)
    assert got == ids
    beam = model.generate(speech, 1, max_new_tokens=6, beam_size=4)
    assert all(0 < t < model.special.bos for t in beam)


def test_a_wide_beam_finds_the_best_scoring_answer_of_all():
    """With a beam wider than every answer of up to 2 tokens, beam search must return the answer with the
    best length-normalized log-probability, scored here by brute force without the cache."""
    model = tiny_model()
    speech, lens = model.encode_speech(torch.randn(1, 8000) * 0.1, torch.tensor([8000]))
    speech = speech[0, : int(lens[0])]
    allowed = [t for t in range(model.special.vocab_size) if t not in (0, model.special.bos, model.special.mask, model.special.eos)]

    @torch.no_grad()
    def score(ids):
        x = torch.cat([model.prefix(speech, 0), model.lm.embed(torch.tensor(ids, dtype=torch.long))])[None]
        logits = model.lm(torch.zeros(1, x.shape[1], dtype=torch.long), embeds=x).logits[0].clone()
        logits[:, [0, model.special.bos, model.special.mask]] = float("-inf")
        lp = logits.log_softmax(-1)[-len(ids) - 1 :]
        return float(sum(lp[i, t] for i, t in enumerate([*ids, model.special.eos]))) / (len(ids) + 1) ** 0.5

    answers = [[]] + [[a] for a in allowed] + [[a, b] for a in allowed for b in allowed]
    best = max(answers, key=score)
    assert model.generate(speech, 0, max_new_tokens=3, beam_size=len(answers) + 1) == best


class ScriptedLM(torch.nn.Module):
    """Next-token probabilities looked up by the answer so far (the cache); the rest share what is left."""

    def __init__(self, lm, script):
        super().__init__()
        self.cfg, self.embed, self.script = lm.cfg, lm.embed, script

    def forward(self, tokens, lens=None, cache=None, embeds=None):
        hist = tokens.new_zeros(tokens.shape[0], 0) if cache is None else torch.cat([cache[0][0], tokens], 1)
        logits = torch.full((hist.shape[0], 1, self.embed.num_embeddings), -20.0)
        for b, h in enumerate(hist.tolist()):
            for tok, p in self.script.get(tuple(h), {}).items():
                logits[b, 0, tok] = math.log(p)
        return types.SimpleNamespace(logits=logits, cache=[(hist,)])


def test_beam_search_keeps_the_likely_long_answer_when_unlikely_ones_end_early():
    model = tiny_model()
    a, b, c, eos = 3, 4, 5, model.special.eos
    model.lm = ScriptedLM(model.lm, {
        (): {a: 0.9, b: 0.1},
        (a,): {a: 0.999}, (b,): {eos: 0.6, c: 0.4},
        (a, a): {a: 0.99, eos: 5e-5},  # an unlikely ending beside the likely continuation
        (a, a, a): {eos: 0.99},
    })  # fmt: skip
    speech = torch.zeros(2, 16)
    assert model.generate(speech, 0, max_new_tokens=8, beam_size=1) == [a, a, a]
    assert model.generate(speech, 0, max_new_tokens=8, beam_size=2) == [a, a, a]  # not [b], -2.8 in all


def test_projector_stacks_frames_and_rounds_lengths_up():
    model = tiny_model()
    x = torch.randn(2, 7, 16)
    y, lens = model.projector(x, torch.tensor([7, 4]))
    assert y.shape == (2, 3, 16) and lens.tolist() == [3, 2]


def test_training_mixes_tasks_learns_and_saves_a_standalone_model(labelled_tones, char_lm_dir, tiny_asr_dir, tmp_path):
    manifest, utts = labelled_tones
    cfg = slm_config(manifest, char_lm_dir, "train.max_steps=40", "lm_mode=full")
    cfg = dataclasses.replace(cfg, finetune=dataclasses.replace(cfg.finetune, init=str(tiny_asr_dir)))
    res = train_speech_lm(cfg, tmp_path / "slm", progress=False)
    log = [json.loads(line) for line in (tmp_path / "slm" / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["loss"] < 0.9 * log[0]["loss"], [r["loss"] for r in log]
    summary = json.loads((tmp_path / "slm" / "model" / "training.json").read_text())
    assert summary["tasks"] == {"transcribe": 24, "intent": 24}
    assert is_speech_lm_dir(tmp_path / "slm") and not is_speech_lm_dir(char_lm_dir)
    runner = SpeechLMRunner.load(tmp_path / "slm")
    audio = [load_audio(u.audio_filepath) for u in utts[:3]]
    texts, intents = runner.transcribe(audio), runner.answer(audio, "intent", beam_size=2)
    assert len(texts) == len(intents) == 3 and all(isinstance(t, str) for t in texts + intents)
    assert runner.transcribe(audio) == texts  # deterministic
    with pytest.raises(SpeechLMError, match="unknown task 'weather'"):
        runner.answer(audio, "weather")
    with pytest.raises(SpeechLMError, match="empty audio"):
        runner.answer([np.zeros(0, np.float32)], "transcribe")
    with pytest.raises(SpeechLMError, match="context"):
        runner.answer([np.zeros(16000 * 30, np.float32)], "transcribe")
    assert res.steps == 40
    # the LM writes normalized text; a training label comes back spelled as in the manifest
    low_pitch = runner.tokenizer.encode("low pitch")
    runner.model.generate = lambda *a, **k: low_pitch
    assert runner.answer(audio[:1], "intent") == ["low_pitch"] and runner.answer(audio[:1], "transcribe") == ["low pitch"]


def test_lora_trains_few_parameters_and_is_merged_on_save(labelled_tones, char_lm_dir, tmp_path):
    manifest, _ = labelled_tones
    train_speech_lm(slm_config(manifest, char_lm_dir, "train.max_steps=2", "lm_mode=lora", "peft.rank=2",
                               "finetune.freeze_encoder_steps=-1"), tmp_path / "l", progress=False)  # fmt: skip
    summary = json.loads((tmp_path / "l" / "model" / "training.json").read_text())
    runner = SpeechLMRunner.load(tmp_path / "l")
    assert not any("lora" in n for n, _ in runner.model.named_parameters())
    projector = sum(p.numel() for p in runner.model.projector.parameters())
    assert projector < summary["trainable_params"] < projector + 5000 < summary["params"]


def test_frozen_lm_stays_unchanged(labelled_tones, char_lm_dir, tmp_path):
    manifest, _ = labelled_tones
    train_speech_lm(slm_config(manifest, char_lm_dir, "train.max_steps=3", "lm_mode=frozen", "tasks=['intent']"), tmp_path / "f", progress=False)
    _, base, _, _ = load_lm_dir(char_lm_dir)
    trained = SpeechLMRunner.load(tmp_path / "f").model.lm
    for (n, a), (_, b) in zip(base.state_dict().items(), trained.state_dict().items()):
        torch.testing.assert_close(a, b, msg=n)


def test_bad_configurations_are_named(labelled_tones, char_lm_dir, tiny_lm_dir, tmp_path):
    manifest, utts = labelled_tones
    with pytest.raises(ValueError, match="tasks must be"):
        slm_config(manifest, char_lm_dir, "tasks=['translate']")
    with pytest.raises(SpeechLMError, match="lm_init is not set"):
        train_speech_lm(slm_config(manifest, ""), tmp_path / "a", progress=False)
    unlabeled = tmp_path / "unlabeled.jsonl"
    write_manifest(unlabeled, [dataclasses.replace(u, label=None) for u in utts])
    with pytest.raises(SpeechLMError, match="no utterance has a label"):
        train_speech_lm(slm_config(unlabeled, char_lm_dir, "tasks=['intent']"), tmp_path / "b", progress=False)
    from speechlm.data.audio import write_audio
    from speechlm.data.manifest import Utterance

    write_audio(tmp_path / "long.wav", (0.1 * np.random.default_rng(0).standard_normal(16000 * 4)).astype(np.float32))
    write_manifest(tmp_path / "long.jsonl", [Utterance(str(tmp_path / "long.wav"), 4.0, "ab", label="low_pitch")])
    with pytest.raises(SpeechLMError, match="no utterance fits the LM's context of 96"):  # 4 s = 100 positions at stack 1
        train_speech_lm(slm_config(tmp_path / "long.jsonl", char_lm_dir, "projector.stack=1"), tmp_path / "d", progress=False)
    mlm = tmp_path / "mlm"
    cfg = load_config(TextPretrainConfig, overrides=["data.builtin_sentences=50", "lm.arch=mlm", "lm.d_model=16", "lm.n_layers=1",
                                                    "lm.n_heads=2", "lm.context=16", "tokenizer.kind=char", "train.max_steps=1", "train.precision=fp32"])  # fmt: skip
    pretrain_text(cfg, mlm, progress=False)
    with pytest.raises(SpeechLMError, match="masked LM"):
        train_speech_lm(slm_config(manifest, mlm / "model"), tmp_path / "c", progress=False)
