"""Shared fixtures: a deterministic tone corpus (numpy only) and a small synthesized speech corpus."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest

from speechlm.config import ASRConfig, SpeechLMConfig, TextPretrainConfig, load_config
from speechlm.data.audio import write_audio
from speechlm.data.manifest import Utterance, read_manifest, write_manifest
from speechlm.features import SAMPLE_RATE

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TONES = {c: 300.0 + 170.0 * i for i, c in enumerate("abcdefgh")}


def tone_utterance(text: str, rng: np.random.Generator) -> np.ndarray:
    """Each letter is a 0.12 s tone, words are separated by 0.08 s of silence."""
    parts = []
    for word in text.split():
        for c in word:
            t = np.arange(int(0.12 * SAMPLE_RATE)) / SAMPLE_RATE
            parts.append(0.3 * np.sin(2 * np.pi * TONES[c] * t) * np.hanning(t.size))
        parts.append(np.zeros(int(0.08 * SAMPLE_RATE)))
    audio = np.concatenate(parts)
    return (audio + 0.003 * rng.standard_normal(audio.size)).astype(np.float32)


@pytest.fixture(scope="session")
def tone_corpus(tmp_path_factory) -> Path:
    """24 utterances of 2-3 'words' of tone letters; returns the manifest path."""
    root = tmp_path_factory.mktemp("tones")
    rng = np.random.default_rng(0)
    utts = []
    for i in range(24):
        words = ["".join(rng.choice(list(TONES), size=rng.integers(1, 4))) for _ in range(rng.integers(2, 4))]
        text = " ".join(words)
        audio = tone_utterance(text, rng)
        path = root / f"utt{i:02d}.wav"
        write_audio(path, audio)
        utts.append(Utterance(str(path), audio.size / SAMPLE_RATE, text, speaker="tone"))
    write_manifest(root / "manifest.jsonl", utts)
    return root / "manifest.jsonl"


needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


@pytest.fixture(scope="session")
def speech_corpus(tmp_path_factory) -> Path:
    """~20 espeak-ng utterances of built-in sentences; returns the manifest path."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    from speechlm.data import sentences
    from speechlm.data.synth import plan_jobs, select_voices, synthesize_corpus

    root = tmp_path_factory.mktemp("speech")
    items = [(s.text, s.intent) for s in sentences.generate(20, seed=3)]
    jobs = plan_jobs(items, select_voices("espeak-ng")[:4], root, seed=0)
    synthesize_corpus(jobs, root, num_workers=2)
    return root / "manifest.jsonl"


def tiny_asr_config(manifest, **train) -> ASRConfig:
    """A 0.2 M-parameter conformer in fp32 with small batches: recipe tests in seconds."""
    return load_config(
        ASRConfig,
        overrides=[
            f"data.train_manifest={manifest}",
            "encoder.d_model=48", "encoder.n_layers=2", "encoder.n_heads=2", "encoder.conv_kernel=7",
            "train.precision=fp32", "train.batch_seconds=8", "train.warmup_steps=4", "train.lr=3e-3", "train.log_every=4",
            *[f"train.{k}={v}" for k, v in train.items()],
        ],
    )  # fmt: skip


@pytest.fixture(scope="session")
def tiny_asr_dir(tone_corpus, tmp_path_factory) -> Path:
    """A recognizer trained for 2 steps on the tone corpus: its transcripts are arbitrary but deterministic."""
    from speechlm.train.asr import train_asr

    run = tmp_path_factory.mktemp("asr")
    train_asr(tiny_asr_config(tone_corpus, max_steps=2), run, progress=False)
    return run / "model"


@pytest.fixture(scope="session")
def intent_dir(tmp_path_factory) -> Path:
    """An intent classifier trained on 600 built-in sentences."""
    from speechlm.data import sentences
    from speechlm.intent import IntentClassifier

    pool = sentences.generate(600, seed=1)
    clf = IntentClassifier.train([s.text for s in pool], [s.intent for s in pool])
    return clf.save(tmp_path_factory.mktemp("intent") / "model")


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory) -> Path:
    """A causal LM trained for 5 steps on 200 built-in sentences."""
    from speechlm.train.text import pretrain_text

    cfg = load_config(TextPretrainConfig, overrides=[
        "data.builtin_sentences=200", "lm.d_model=32", "lm.n_layers=1", "lm.n_heads=2", "lm.context=32",
        "tokenizer.vocab_size=120", "train.max_steps=5", "train.warmup_steps=1", "train.precision=fp32",
    ])  # fmt: skip
    run = tmp_path_factory.mktemp("lm")
    pretrain_text(cfg, run, progress=False)
    return run / "model"


PITCH = {"low": 300.0, "mid": 700.0, "high": 1400.0}


@pytest.fixture(scope="session")
def pitch_corpus(tmp_path_factory):
    """36 noisy tones of 0.3-0.8 s, labelled by pitch: learnable in a few dozen steps."""
    root = tmp_path_factory.mktemp("pitch")
    rng = np.random.default_rng(0)
    utts = []
    for i in range(36):
        label = list(PITCH)[i % 3]
        n = int(rng.uniform(0.3, 0.8) * 16000)
        t = np.arange(n) / 16000
        audio = (0.3 * np.sin(2 * np.pi * PITCH[label] * t) + 0.01 * rng.standard_normal(n)).astype(np.float32)
        write_audio(root / f"c{i}.wav", audio)
        utts.append(Utterance(str(root / f"c{i}.wav"), n / 16000, "", label=label, speaker=f"s{i % 4}"))
    write_manifest(root / "manifest.jsonl", utts)
    return root / "manifest.jsonl", utts


@pytest.fixture(scope="session")
def tiny_classifier_dir(pitch_corpus, tmp_path_factory) -> Path:
    """A speech classifier trained for a few steps on the pitch corpus (labels high/low/mid)."""
    from speechlm.config import ClassifyConfig, load_config
    from speechlm.train.classify import train_classifier

    manifest, _ = pitch_corpus
    cfg = load_config(ClassifyConfig, overrides=[
        f"data.train_manifest={manifest}", "encoder.d_model=32", "encoder.n_layers=1", "encoder.n_heads=2", "encoder.conv_kernel=3",
        "head.hidden=0", "train.precision=fp32", "train.max_steps=5", "train.batch_seconds=8",
    ])  # fmt: skip
    out = tmp_path_factory.mktemp("clf") / "clf"
    train_classifier(cfg, out, progress=False)
    return out


@pytest.fixture(scope="session")
def labelled_tones(tone_corpus, tmp_path_factory):
    """The tone corpus with an intent label: 'low_pitch' when the first letter is a-d, else 'high_pitch'."""
    utts = [dataclasses.replace(u, label="low_pitch" if u.text[0] in "abcd" else "high_pitch") for u in read_manifest(tone_corpus)]
    path = tmp_path_factory.mktemp("slm") / "manifest.jsonl"
    write_manifest(path, utts)
    return path, utts


@pytest.fixture(scope="session")
def char_lm_dir(labelled_tones, tmp_path_factory):
    _, utts = labelled_tones
    from speechlm.train.text import pretrain_text

    root = tmp_path_factory.mktemp("charlm")
    (root / "text.txt").write_text("\n".join([u.text for u in utts] + ["transcribe intent low high pitch"] * 3) + "\n")
    cfg = load_config(TextPretrainConfig, overrides=[
        f"data.train_files=['{root / 'text.txt'}']", "tokenizer.kind=char", "lm.d_model=32", "lm.n_layers=1", "lm.n_heads=2",
        "lm.context=96", "train.max_steps=3", "train.warmup_steps=1", "train.precision=fp32",
    ])  # fmt: skip
    pretrain_text(cfg, root / "run", progress=False)
    return root / "run" / "model"


def slm_config(manifest, lm_dir, *extra):
    return load_config(SpeechLMConfig, overrides=[
        f"data.train_manifest={manifest}", f"lm_init={lm_dir}", "encoder.d_model=32", "encoder.n_layers=1", "encoder.n_heads=2",
        "encoder.conv_kernel=3", "projector.stack=2", "train.precision=fp32", "train.batch_seconds=12", "train.warmup_steps=5",
        "train.lr=3e-3", "train.log_every=10", *extra,
    ])  # fmt: skip


@pytest.fixture(scope="session")
def tiny_speech_lm_dir(labelled_tones, char_lm_dir, tiny_asr_dir, tmp_path_factory) -> Path:
    """A joint speech-LM (tiny_asr_dir's encoder, char_lm_dir's LM) trained 3 steps to transcribe and name the pitch intent."""
    from speechlm.train.speech_lm import train_speech_lm

    cfg = slm_config(labelled_tones[0], char_lm_dir, "train.max_steps=3")
    cfg = dataclasses.replace(cfg, finetune=dataclasses.replace(cfg.finetune, init=str(tiny_asr_dir)))
    run = tmp_path_factory.mktemp("slm_run")
    train_speech_lm(cfg, run, progress=False)
    return run / "model"
