"""End-to-end through the command line, as a user runs it, plus bad-input behaviour."""

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from conftest import needs_espeak, tiny_asr_config
from speechlm.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "speechlm.cli", *args], capture_output=True, text=True, timeout=600)


@needs_espeak
def test_synth_train_transcribe_evaluate(tmp_path):
    data = tmp_path / "data"
    r = run_cli("synth", str(data), "--builtin", "20", "--voices", "espeak-ng", "--jobs", "2", "--seed", "1")
    assert r.returncode == 0, r.stderr
    manifest = data / "manifest.jsonl"
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert len(rows) == 20 and all(row["label"] and row["speaker"].startswith("espeak") for row in rows)

    run = tmp_path / "run"
    r = run_cli(
        "train", str(run), "--train-manifest", str(manifest), "--preset", "tiny",
        "train.max_steps=6", "train.batch_seconds=30", "train.log_every=2", "train.warmup_steps=2",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "M parameters" in r.stdout and "encoder:" in r.stdout  # config and size printed at start
    assert (run / "model" / "model.safetensors").is_file() and (run / "model" / "tokenizer.json").is_file()

    wav = str(data / rows[0]["audio_filepath"])
    r = run_cli("transcribe", str(run), wav, "--json", "--beam", "4")
    assert r.returncode == 0, r.stderr
    assert set(json.loads(r.stdout.splitlines()[0])) == {"audio_filepath", "text"}

    out = tmp_path / "eval.json"
    r = run_cli("evaluate", str(run), str(manifest), "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "WER" in r.stdout and "RTF" in r.stdout
    report = json.loads(out.read_text())
    assert len(report["utterances"]) == 20 and 0.0 <= report["summary"]["cer"]


def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "(default:" in capsys.readouterr().out


@pytest.mark.parametrize(
    "make_args, message",
    [
        (lambda p: ["transcribe", str(p / "nomodel"), str(p / "x.wav")], "not a model directory"),
        (lambda p: ["evaluate", str(p / "nomodel"), str(p / "m.jsonl")], "not a model directory"),
        (lambda p: ["train", str(p / "run"), "--train-manifest", str(p / "bad.jsonl")], "bad.jsonl:1: not valid JSON"),
        (lambda p: ["train", str(p / "run"), "--train-manifest", str(p / "good.jsonl"), "encoder.widht=3"], "unknown field"),
        (lambda p: ["train", str(p / "run"), "--config", str(p / "bad.yaml")], "bad.yaml"),
        (lambda p: ["train", str(p / "run")], "data.train_manifest is not set"),
        (lambda p: ["prepare", str(p / "nothing"), str(p / "o.jsonl")], "no such file"),
        (lambda p: ["synth", str(p / "o"), "--text", str(p / "missing.txt")], "cannot read text file"),
    ],
)
def test_bad_input_gives_one_line_error(tmp_path, capsys, make_args, message):
    (tmp_path / "bad.jsonl").write_text("{oops\n")
    sf.write(tmp_path / "x.wav", np.zeros(1600), 16000)
    (tmp_path / "good.jsonl").write_text(json.dumps({"audio_filepath": "x.wav", "duration": 0.1, "text": "a"}) + "\n")
    (tmp_path / "bad.yaml").write_text("train: [1, 2\n")
    assert main(make_args(tmp_path)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "Traceback" not in err
    assert len(err.splitlines()) == 1


def test_transcribe_corrupt_audio_is_a_clear_error(tmp_path, capsys, tone_corpus):
    from speechlm.train.asr import train_asr

    train_asr(tiny_asr_config(tone_corpus, max_steps=1), tmp_path / "run", progress=False)
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage")
    assert main(["transcribe", str(tmp_path / "run"), str(tmp_path / "corrupt.wav")]) == 2
    err = capsys.readouterr().err
    assert "corrupt.wav: not a readable audio file" in err and "Traceback" not in err


def test_resume_from_the_command_line_uses_the_saved_config(tmp_path, tone_corpus):
    from speechlm.train.asr import train_asr
    from speechlm.train.checkpoint import latest_checkpoint

    train_asr(tiny_asr_config(tone_corpus, max_steps=2), tmp_path / "run", progress=False)
    assert main(["train", str(tmp_path / "run"), "--resume", "train.max_steps=4"]) == 0
    assert latest_checkpoint(tmp_path / "run").name == "step-0000004"
