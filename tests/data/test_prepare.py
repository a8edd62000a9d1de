import json

import numpy as np
import pytest
import soundfile as sf

from conftest import SHARED_DATA
from speechlm.data.manifest import read_manifest
from speechlm.data.prepare import prepare
from speechlm.errors import SpeechLMError


def tone(seconds=0.5, sr=16000, f=300.0):
    t = np.arange(int(seconds * sr)) / sr
    return 0.3 * np.sin(2 * np.pi * f * t)


def test_folder_with_sidecars_and_every_skip_reason(tmp_path):
    src = tmp_path / "src"
    (src / "yes").mkdir(parents=True)
    sf.write(src / "yes" / "a.wav", tone(), 16000)
    (src / "yes" / "a.txt").write_text("hello there\n")
    sf.write(src / "yes" / "b.wav", tone(f=500), 8000)  # 8 kHz: kept, resampled on read
    (src / "yes" / "b.txt").write_text("general kenobi")
    sf.write(src / "yes" / "dup.wav", tone(), 16000)  # same bytes as a.wav
    (src / "yes" / "dup.txt").write_text("again")
    sf.write(src / "yes" / "short.wav", tone(0.01), 16000)
    (src / "yes" / "short.txt").write_text("x")
    (src / "yes" / "broken.wav").write_bytes(b"RIFF0000WAVEjunk")
    (src / "yes" / "broken.txt").write_text("broken")
    sf.write(src / "yes" / "silent.wav", np.zeros(16000), 16000)
    (src / "yes" / "silent.txt").write_text("quiet")
    sf.write(src / "yes" / "notext.wav", tone(f=700), 16000)
    report = prepare(src, tmp_path / "m.jsonl", label_from="folder", require_text=True, progress=False)
    utts = read_manifest(tmp_path / "m.jsonl")
    assert [u.text for u in utts] == ["hello there", "general kenobi"]
    assert {u.label for u in utts} == {"yes"}
    assert report.counts() == {"duplicate": 1, "too_short": 1, "unreadable": 1, "silent": 1, "no_transcript": 1}
    saved = json.loads((tmp_path / "m.jsonl.report.json").read_text())
    assert saved["kept"] == 2 and len(saved["skipped"]) == 5


def test_csv_table_with_labels(tmp_path):
    sf.write(tmp_path / "x.wav", tone(), 16000)
    sf.write(tmp_path / "y.flac", tone(f=400), 22050)
    (tmp_path / "t.csv").write_text("path,text,label\nx.wav,turn it on,on\ny.flac,turn it off,off\nmissing.wav,gone,off\n")
    report = prepare(tmp_path / "t.csv", tmp_path / "m.jsonl", progress=False)
    utts = read_manifest(tmp_path / "m.jsonl")
    assert [(u.text, u.label) for u in utts] == [("turn it on", "on"), ("turn it off", "off")]
    assert report.skipped[0]["where"].endswith("t.csv:4") and report.counts() == {"missing": 1}


def test_ljspeech_layout(tmp_path):
    (tmp_path / "wavs").mkdir()
    sf.write(tmp_path / "wavs" / "LJ001-0001.wav", tone(), 22050)
    (tmp_path / "metadata.csv").write_text("LJ001-0001|Printing, in 1840.|Printing, in eighteen forty.\n")
    prepare(tmp_path, tmp_path / "m.jsonl", progress=False)
    assert read_manifest(tmp_path / "m.jsonl")[0].text == "Printing, in eighteen forty."


def test_label_and_speaker_from_filename_pattern(tmp_path):
    for name in ("3_jackson_7.wav", "9_nicolas_12.wav"):
        sf.write(tmp_path / name, tone(f=200 + len(name) * 10 + int(name[0]) * 50), 8000)
    prepare(tmp_path, tmp_path / "m.jsonl", label_from=r"(?P<label>\d)_(?P<speaker>[a-z]+)_\d+", progress=False)
    assert sorted((u.label, u.speaker) for u in read_manifest(tmp_path / "m.jsonl")) == [("3", "jackson"), ("9", "nicolas")]


def test_nothing_usable_is_an_error(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"")
    with pytest.raises(SpeechLMError, match="every entry was skipped"):
        prepare(tmp_path, tmp_path / "m.jsonl", progress=False)
    with pytest.raises(SpeechLMError, match="no such file"):
        prepare(tmp_path / "nope", tmp_path / "m.jsonl", progress=False)
    with pytest.raises(SpeechLMError, match="invalid regular expression"):
        prepare(tmp_path, tmp_path / "m.jsonl", label_from="(unclosed", progress=False)


@pytest.mark.skipif(not (SHARED_DATA / "fsdd").is_dir(), reason="shared FSDD data not present")
def test_fsdd_imports_with_one_command(tmp_path):
    report = prepare(
        SHARED_DATA / "fsdd" / "recordings", tmp_path / "fsdd.jsonl",
        label_from=r"(?P<label>\d)_(?P<speaker>[a-z]+)_\d+", progress=False,
    )  # fmt: skip
    utts = read_manifest(tmp_path / "fsdd.jsonl")
    assert report.kept + len(report.skipped) == 3000 and report.kept >= 2990
    assert {u.label for u in utts} == set("0123456789") and len({u.speaker for u in utts}) == 6


@pytest.mark.skipif(not (SHARED_DATA / "speech_commands_sample").is_dir(), reason="shared Speech Commands data not present")
def test_speech_commands_imports_with_one_command(tmp_path):
    prepare(SHARED_DATA / "speech_commands_sample" / "speech_commands_v0.01", tmp_path / "sc.jsonl", label_from="folder", progress=False)
    utts = read_manifest(tmp_path / "sc.jsonl")
    assert len({u.label for u in utts}) == 30 and len(utts) >= 290
