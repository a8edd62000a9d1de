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
        (lambda p: ["synth", str(p / "o"), "--builtin", "2", "--max-hz", "9000"], "--max-hz must be between 0 and 8000"),
        (lambda p: ["synth", str(p / "o")], "give either --text FILE... or --builtin N"),
        (lambda p: ["synth", str(p / "o"), "--builtin", "-3"], "(N >= 1), got --builtin -3"),
        (lambda p: ["synth", str(p / "o"), "--builtin", "2", "--text", str(p / "bad.jsonl")], "not both"),
        (lambda p: ["synth", str(p / "o"), "--builtin", "2", "--voices", "train+random:x"], "expected random:N"),
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


TINY_ENCODER = ["encoder.d_model=48", "encoder.n_layers=2", "encoder.n_heads=2", "encoder.conv_kernel=7", "train.precision=fp32",
                "train.batch_seconds=8", "train.warmup_steps=2", "train.log_every=2"]  # fmt: skip


def test_pretrain_finetune_and_label_efficiency_from_the_command_line(tmp_path, tone_corpus, capsys):
    ssl = tmp_path / "ssl"
    assert main(["pretrain", "speech", str(ssl), "--train-manifest", str(tone_corpus), *TINY_ENCODER, "train.max_steps=4", "ssl.codebook_size=16"]) == 0
    assert "masked-prediction accuracy" in capsys.readouterr().out
    ft = tmp_path / "ft"
    args = ["finetune", str(ft), "--init", str(ssl), "--train-manifest", str(tone_corpus), "--labeled-fraction", "0.5",
            "--freeze-encoder-steps", "2", "--layer-decay", "0.9", "train.max_steps=4", "train.batch_seconds=8"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "init from" in out and "newly initialised: head.1.weight" in out and "labeled subset: 12 of 24" in out
    saved = json.loads((ft / "model" / "config.json").read_text())
    assert saved["finetune"]["init"] == str(ssl) and saved["encoder"]["d_model"] == 48  # encoder taken from --init
    le = tmp_path / "le"
    assert main(["label-efficiency", str(le), "--init", str(ssl), "--train-manifest", str(tone_corpus), "--test-manifest", str(tone_corpus),
                 "--fractions", "0.25,1", "--seeds", "2", "train.max_steps=2", "train.batch_seconds=8"]) == 0  # fmt: skip
    rows = json.loads((le / "rows.json").read_text())
    assert len(rows) == 2 * 2 * 1 + 2 and {r["init"] for r in rows} == {"pretrained", "scratch"}
    assert (le / "wer_vs_labels.png").stat().st_size > 1000 and "WER pretrained" in (le / "table.md").read_text()
    minutes = {r["fraction"]: r["labeled_minutes"] for r in rows}
    assert minutes[0.25] < minutes[1.0]


def test_joint_pretraining_from_the_command_line(tmp_path, tone_corpus, capsys):
    text = tmp_path / "text.txt"
    text.write_text("ab cd\nca bd\ndd ab ca\n")
    joint = tmp_path / "joint"
    assert main(["pretrain", "joint", str(joint), "--train-manifest", str(tone_corpus), "--text", str(text), "--paired-fraction", "0.5",
                 *TINY_ENCODER, "train.max_steps=4", "ssl.codebook_size=16", "joint.shared_layers=1", "train.num_workers=0"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "12 paired" in out and "masked LM" in out and "CTC" in out
    saved = json.loads((joint / "model" / "config.json").read_text())
    assert saved["text"]["train_files"] == [str(text)] and saved["joint"]["paired_fraction"] == 0.5
    assert main(["finetune", str(tmp_path / "ft"), "--init", str(joint), "--train-manifest", str(tone_corpus), "train.max_steps=2", "train.batch_seconds=8"]) == 0
    assert "init from" in capsys.readouterr().out


def test_finetune_keep_head_adapts_a_recognizer(tiny_asr_dir, tone_corpus, tmp_path, capsys):
    assert main(["finetune", str(tmp_path / "ft"), "--init", str(tiny_asr_dir), "--keep-head", "--train-manifest", str(tone_corpus),
                 "train.max_steps=1", "train.batch_seconds=8"]) == 0
    assert "newly initialised: none" in capsys.readouterr().out
    assert json.loads((tmp_path / "ft" / "model" / "config.json").read_text())["finetune"]["init_head"] is True
    for bad in (["--task", "classify"], []):  # only a recognizer given as --init is adapted whole
        init = ["--init", str(tiny_asr_dir)] if bad else []
        assert main(["finetune", str(tmp_path / "x"), *init, "--keep-head", "--train-manifest", str(tone_corpus), *bad]) == 2
        assert "--keep-head adapts the speech recognizer given as --init" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_text_lm_commands(tmp_path, capsys):
    text = tmp_path / "corpus.txt"
    text.write_text("\n".join(f"the {w} sat on the mat number {i}" for i, w in enumerate(["cat", "dog", "bird", "fox"] * 30)))
    lm = tmp_path / "lm"
    assert main(["pretrain", "text", str(lm), "--text", str(text), "lm.d_model=32", "lm.n_layers=1", "lm.n_heads=2", "lm.context=16",
                 "tokenizer.vocab_size=60", "train.max_steps=30", "train.log_every=10", "train.precision=fp32"]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["generate", str(lm), "--prompt", "the cat", "--num", "2", "--temperature", "0.7", "--top-k", "5"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("the cat") for line in lines)
    assert main(["perplexity", str(lm), str(text)]) == 0
    assert "perplexity (sliding window, context 16)" in capsys.readouterr().out
    binary = tmp_path / "b.txt"
    binary.write_bytes(b"\x00\x01\x02")
    assert main(["perplexity", str(lm), str(binary)]) == 2
    assert "b.txt: looks like a binary file" in capsys.readouterr().err
    assert main(["generate", str(tmp_path), "--prompt", "x"]) == 2


def test_intent_train_predict_and_bad_rows(tmp_path):
    data = tmp_path / "intents.jsonl"
    rows = [{"text": t, "label": lab} for t, lab in [("set an alarm for six", "alarm"), ("wake me at seven", "alarm"),
            ("what's the weather in paris", "weather"), ("will it rain tomorrow", "weather")] * 3]  # fmt: skip
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    r = run_cli("intent", "train", str(tmp_path / "intent"), "--data", str(data), "--valid", str(data))
    assert r.returncode == 0, r.stderr
    assert "2 intents from 12 examples" in r.stdout and "held-out accuracy 100.00%" in r.stdout
    r = run_cli("intent", "predict", str(tmp_path / "intent"), "set the alarm", "is it raining")
    assert [json.loads(line)["intent"] for line in r.stdout.splitlines()] == ["alarm", "weather"]
    r = run_cli("intent", "predict", str(tmp_path / "intent"), "set the alarm", "--reject-below", "0.99")
    assert json.loads(r.stdout)["intent"] == "oos" and json.loads(r.stdout)["confidence"] < 0.99
    r = run_cli("intent", "train", str(tmp_path / "y"), "--data", str(data), "--reject-below", "1.5")
    assert r.returncode == 2 and "--reject-below must be in [0, 1)" in r.stderr and "Traceback" not in r.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "hello", "label": "greet"}\n{"text": "bye"}\n')
    r = run_cli("intent", "train", str(tmp_path / "x"), "--data", str(bad))
    assert r.returncode == 2 and r.stderr.strip() == f"error: {bad}:2: missing 'label' (or 'intent')"
    r = run_cli("intent", "predict", str(tmp_path))
    assert r.returncode == 2


def test_serve_answers_over_http_and_refuses_bad_setup(tone_corpus, tmp_path):
    import socket
    import time
    import urllib.request

    from speechlm.data.audio import encode_wav
    from speechlm.train.asr import train_asr

    train_asr(tiny_asr_config(tone_corpus, max_steps=1), tmp_path / "run", progress=False)
    replies = tmp_path / "replies.json"
    replies.write_text('{"set_alarm": "{password}"}')
    r = run_cli("serve", str(tmp_path / "run"), "--replies", str(replies))
    assert r.returncode == 2 and "unknown placeholder(s) ['password']" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("serve", str(tmp_path / "missing"))
    assert r.returncode == 2 and "not a model directory" in r.stderr
    r = run_cli("serve", str(tmp_path / "run"), "--classifier-tta-speeds", "0.9", "1.1")
    assert r.returncode == 2 and "give it with --classifier DIR" in r.stderr
    r = run_cli("serve", str(tmp_path / "run"), "--classifier", str(tmp_path / "run"), "--classifier-tta-speeds", "9")
    assert r.returncode == 2 and "--classifier-tta-speeds: test-time speeds must be between 0.5 and 2.0, got [9.0]" in r.stderr
    (tmp_path / "phrases.txt").write_text("yes\nno\n")
    r = run_cli("serve", str(tmp_path / "run"), "--classifier", str(tmp_path / "run"), "--classifier-choices", str(tmp_path / "phrases.txt"))
    assert r.returncode == 2 and "--classifier-choices with a classifier names the phrase of each label for a speech recognizer in --classifier-ensemble" in r.stderr
    r = run_cli("serve", str(tmp_path / "run"), "--classifier", str(tmp_path / "run"), "--classifier-ensemble", str(tmp_path / "run"))
    assert r.returncode == 2 and "in --classifier-ensemble is a speech recognizer: it joins the classifier only with the phrase of each label (--classifier-choices FILE" in r.stderr

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "speechlm.cli", "serve", str(tmp_path / "run"), "--port", str(port), "--api-key", "k"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        ready, deadline = None, time.monotonic() + 180  # the start imports torch and loads the model: slow on a busy machine
        while ready is None and proc.poll() is None and time.monotonic() < deadline:
            try:
                ready = json.loads(urllib.request.urlopen(url + "/ready", timeout=5).read())
            except OSError:  # not listening yet, or 503 while its workers start
                time.sleep(0.2)
        assert ready is not None and ready["status"] == "ready", f"the server did not get ready (exit status {proc.poll()})"
        req = urllib.request.Request(
            url + "/v1/transcribe", data=encode_wav(np.zeros(8000, np.float32)), headers={"Content-Type": "audio/wav", "X-API-Key": "k"}
        )
        assert set(json.loads(urllib.request.urlopen(req, timeout=30).read())) >= {"text", "duration_s"}
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    assert f"serving {tmp_path / 'run'} on http://127.0.0.1:{port}/" in out and "API key required" in out


def test_classify_finetune_predict_evaluate_and_merge(pitch_corpus, tmp_path):
    manifest, utts = pitch_corpus
    tiny = ["encoder.d_model=48", "encoder.n_layers=2", "encoder.n_heads=2", "encoder.conv_kernel=7", "head.hidden=32",
            "train.precision=fp32", "train.batch_seconds=8", "train.warmup_steps=4", "train.lr=3e-3", "train.max_steps=30"]  # fmt: skip
    run = tmp_path / "kws"
    r = run_cli("finetune", str(run), "--task", "classify", "--train-manifest", str(manifest), "--valid-manifest", str(manifest),
                "--pooling", "mean", "--layer-weights", *tiny)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "3 classes, 36 utterances" in r.stdout and "accuracy" in r.stdout and "macro P/R/F1" in r.stdout
    assert (run / "valid" / "confusion.png").stat().st_size > 5000
    report = json.loads((run / "valid" / "report.json").read_text())
    assert report["labels"] == ["high", "low", "mid"] and len(report["utterances"]) == 36

    r = run_cli("predict", str(run), utts[0].audio_filepath, "--json")
    assert json.loads(r.stdout)["label"] in ("high", "low", "mid")
    r = run_cli("evaluate", str(run), str(manifest))
    assert r.returncode == 0 and "accuracy" in r.stdout

    lora = tmp_path / "lora"
    r = run_cli("finetune", str(lora), "--task", "classify", "--init", str(run), "--train-manifest", str(manifest),
                "--peft", "lora", "--lora-rank", "2", *tiny[4:])  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "lora:" in r.stdout and "parameters train" in r.stdout
    r = run_cli("merge-adapter", str(lora), str(tmp_path / "merged"))
    assert r.returncode == 0 and "standalone" in r.stdout
    same = [json.loads(run_cli("predict", str(d), utts[1].audio_filepath, "--json").stdout) for d in (lora, tmp_path / "merged")]
    assert same[0]["label"] == same[1]["label"] and abs(same[0]["confidence"] - same[1]["confidence"]) < 1e-3
    r = run_cli("evaluate", str(run), str(manifest), "--ensemble", str(lora), str(tmp_path / "merged"))
    assert r.returncode == 0 and "accuracy" in r.stdout and "(36 utterances)" in r.stdout, r.stderr
    r = run_cli("predict", str(run), utts[1].audio_filepath, "--json", "--ensemble", str(lora))
    assert r.returncode == 0 and 0 < json.loads(r.stdout)["confidence"] <= 1, r.stderr
    r = run_cli("predict", str(run), utts[1].audio_filepath, "--ensemble", str(tmp_path / "nothing"))
    assert r.returncode != 0 and "nothing" in r.stderr and "Traceback" not in r.stderr

    out = tmp_path / "pseudo.jsonl"
    r = run_cli("pseudo-label", str(run), str(manifest), str(out), "--min-confidence", "0.5", "--per-label", "5")
    assert r.returncode == 0 and "agree with the manifest's own labels" in r.stdout, r.stderr
    kept = [json.loads(line) for line in out.read_text().splitlines()]
    assert 0 < len(kept) <= 15 and all(row["label"] in ("high", "low", "mid") for row in kept)
    assert f"kept {len(kept)} of 36 clips" in r.stdout
    r = run_cli("pseudo-label", str(run), str(manifest), str(manifest))
    assert r.returncode == 2 and "overwrite the input manifest" in r.stderr and "Traceback" not in r.stderr
    assert len(manifest.read_text().splitlines()) == 36  # the input is untouched
    r = run_cli("pseudo-label", str(run), str(manifest), str(out), "--min-confidence", "2")
    assert r.returncode == 2 and "--min-confidence" in r.stderr
    r = run_cli("pseudo-label", str(run), str(manifest), str(tmp_path / "none.jsonl"), "--min-confidence", "1")  # 30 steps: never that sure
    assert r.returncode == 2 and "nothing written" in r.stderr and not (tmp_path / "none.jsonl").exists()
    r = run_cli("pseudo-label", str(run), str(manifest), str(out), "--min-confidence", "0", "--balance")
    assert r.returncode == 0 and "balanced probability >= 0.0" in r.stdout, r.stderr
    assert len(out.read_text().splitlines()) == 36
    r = run_cli("evaluate", str(run), str(manifest), "--balance")
    assert r.returncode == 0 and "(36 utterances)" in r.stdout, r.stderr
    two = tmp_path / "two.jsonl"
    two.write_text("".join(line + "\n" for line in manifest.read_text().splitlines()[:2]))
    r = run_cli("evaluate", str(run), str(two), "--balance")  # 2 clips cannot hold 3 labels equally often
    assert r.returncode == 2 and "at least as many clips as the model has labels" in r.stderr and "Traceback" not in r.stderr

    r = run_cli("evaluate", str(run), str(manifest), "--tta-speeds", "0.9", "1.0", "1.1", "--out", str(tmp_path / "tta.json"))
    assert r.returncode == 0 and "(36 utterances)" in r.stdout, r.stderr
    assert len(json.loads((tmp_path / "tta" / "report.json").read_text())["utterances"]) == 36
    r = run_cli("predict", str(run), utts[0].audio_filepath, "--tta-speeds", "0.9", "1.1", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["label"] in ("high", "low", "mid"), r.stderr
    r = run_cli("pseudo-label", str(run), str(manifest), str(tmp_path / "slow.jsonl"), "--tta-speeds", "3")
    assert r.returncode == 2 and "--tta-speeds: test-time speeds must be between 0.5 and 2.0, got [3.0]" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "slow.jsonl").exists()

    unlabeled = tmp_path / "plain.jsonl"
    unlabeled.write_text(json.dumps({"audio_filepath": utts[0].audio_filepath, "duration": utts[0].duration, "text": "x"}) + "\n")
    r = run_cli("finetune", str(tmp_path / "bad"), "--task", "classify", "--train-manifest", str(unlabeled))
    assert r.returncode == 2 and "have no 'label'" in r.stderr and "Traceback" not in r.stderr


def test_text_classify_finetune_predict_evaluate(tmp_path):
    from speechlm.data import sentences

    train, test = sentences.split(sentences.generate(800, seed=5))
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({"text": s.text, "label": s.intent}) + "\n" for s in train[:400]))
    (tmp_path / "test.csv").write_text("text,label\n" + "".join(f"{s.text},{s.intent}\n" for s in test[:50]))
    run = tmp_path / "txt"
    r = run_cli("finetune", str(run), "--task", "text-classify", "--train-file", str(tmp_path / "train.jsonl"), "--valid-file",
                str(tmp_path / "test.csv"), "lm.d_model=32", "lm.n_layers=1", "lm.n_heads=2", "lm.context=40", "tokenizer.vocab_size=200",
                "train.max_steps=30", "train.lr=3e-3", "train.warmup_steps=3", "train.precision=fp32")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "10 classes, 400 texts" in r.stdout and "accuracy" in r.stdout and (run / "valid" / "confusion.png").is_file()
    r = run_cli("predict", str(run), "set an alarm for seven", "--json")
    assert json.loads(r.stdout)["label"] in {s.intent for s in train}
    r = run_cli("evaluate", str(run), str(tmp_path / "test.csv"), "--balance")
    assert r.returncode == 2 and "--balance applies to speech classifiers" in r.stderr
    r = run_cli("predict", str(run), "set an alarm for seven", "--tta-speeds", "0.9", "1.1")
    assert r.returncode == 2 and "--tta-speeds applies to speech classifiers; the model directory holds a text classifier" in r.stderr
    for extra in (["--beam", "8"], ["--pipeline", str(run), str(run)]):  # the spoken-intent pipeline's flags are for speech classifiers
        for cmd in (["predict", str(run), "set an alarm for seven"], ["evaluate", str(run), str(tmp_path / "test.csv")]):
            r = run_cli(*cmd, *extra)
            assert r.returncode == 2 and "--pipeline (and its --beam, --lm) joins" in r.stderr and "holds a text classifier" in r.stderr
    r = run_cli("finetune", str(tmp_path / "bad"), "--task", "text-classify")
    assert r.returncode == 2 and "--train-file" in r.stderr


def test_ngram_fusion_from_the_command_line(tone_corpus, tiny_asr_dir, tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(json.loads(line)["text"] for line in tone_corpus.read_text().splitlines()) + "\n")
    r = run_cli("ngram", str(tmp_path / "ng"), "--text", str(texts), "--order", "4", "--valid", str(texts))
    assert r.returncode == 0, r.stderr
    assert "histories (order 4)" in r.stdout and "held-out character perplexity" in r.stdout
    r = run_cli("evaluate", str(tiny_asr_dir), str(tone_corpus), "--lm", str(tmp_path / "ng"), "--lm-weight", "0.8", "--lm-bonus", "1")
    assert r.returncode == 0, r.stderr
    assert "WER" in r.stdout
    (tmp_path / "other.txt").write_text("xyz\n")
    run_cli("ngram", str(tmp_path / "ng2"), "--text", str(tmp_path / "other.txt"))
    wav = json.loads(tone_corpus.read_text().splitlines()[0])["audio_filepath"]
    r = run_cli("transcribe", str(tiny_asr_dir), wav, "--lm", str(tmp_path / "ng2"))
    assert r.returncode == 2 and "never saw the recognizer's characters" in r.stderr and "Traceback" not in r.stderr


def test_speech_lm_finetune_transcribe_predict(tone_corpus, tiny_asr_dir, tmp_path):
    rows = [json.loads(line) for line in tone_corpus.read_text().splitlines()]
    manifest = tmp_path / "labelled.jsonl"
    manifest.write_text("".join(json.dumps(r | {"label": "low" if r["text"][0] in "abcd" else "high"}) + "\n" for r in rows))
    (tmp_path / "text.txt").write_text("\n".join([r["text"] for r in rows] + ["transcribe intent low high"]) + "\n")
    r = run_cli("pretrain", "text", str(tmp_path / "lm"), "--text", str(tmp_path / "text.txt"), "tokenizer.kind=char", "lm.d_model=32",
                "lm.n_layers=1", "lm.n_heads=2", "lm.context=96", "train.max_steps=2", "train.precision=fp32")  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = run_cli("finetune", str(tmp_path / "slm"), "--task", "speech-lm", "--init", str(tiny_asr_dir), "--lm", str(tmp_path / "lm"),
                "--train-manifest", str(manifest), "--lm-mode", "lora", "--lora-rank", "2", "projector.stack=2", "train.max_steps=3",
                "train.precision=fp32", "train.batch_seconds=12")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "trainable (LM lora)" in r.stdout and "answers per task {'transcribe': 24, 'intent': 24}" in r.stdout
    r = run_cli("transcribe", str(tmp_path / "slm"), rows[0]["audio_filepath"], "--json", "--beam", "2")
    assert r.returncode == 0, r.stderr
    assert set(json.loads(r.stdout)) == {"audio_filepath", "text"}
    r = run_cli("predict", str(tmp_path / "slm"), rows[0]["audio_filepath"], "--json")
    assert r.returncode == 0 and "label" in json.loads(r.stdout)
    r = run_cli("evaluate", str(tmp_path / "slm"), str(tone_corpus))
    assert r.returncode == 0 and "WER" in r.stdout
    r = run_cli("generate", str(tmp_path / "slm"), "--prompt", "ab", "--max-new-tokens", "5")
    assert r.returncode == 0 and r.stdout.startswith("ab"), r.stderr
    r = run_cli("transcribe", str(tmp_path / "slm"), rows[0]["audio_filepath"], "--lm", str(tmp_path / "lm"))
    assert r.returncode != 0 and "own LM" in r.stderr
