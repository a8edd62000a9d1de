import json
from pathlib import Path

import pytest

from speechlm.data.manifest import Utterance, read_manifest, write_manifest
from speechlm.errors import ManifestError


def test_roundtrip_relative_paths(tmp_path):
    utts = [Utterance(str(tmp_path / "a.wav"), 1.5, "hello", label="greet", speaker="s1"), Utterance(str(tmp_path / "b.wav"), 2.0)]
    write_manifest(tmp_path / "m.jsonl", utts, relative_to=tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert rows[0] == {"audio_filepath": "a.wav", "duration": 1.5, "text": "hello", "label": "greet", "speaker": "s1"}
    assert read_manifest(tmp_path / "m.jsonl") == utts


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", ":2: not valid JSON"),
        ('["a.wav", 1.0]', ":2: expected a JSON object"),
        ('{"duration": 1.0, "text": "x"}', ":2: missing required field 'audio_filepath'"),
        ('{"audio_filepath": "a.wav", "text": "x"}', ":2: missing required field 'duration'"),
        ('{"audio_filepath": "a.wav", "duration": -1}', ":2: 'duration' must be a positive number"),
        ('{"audio_filepath": "a.wav", "duration": "long"}', ":2: 'duration' must be a positive number"),
        ('{"audio_filepath": "a.wav", "duration": 1, "text": 5}', ":2: 'text' must be a string"),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "m.jsonl"
    path.write_text('{"audio_filepath": "ok.wav", "duration": 1.0, "text": "fine"}\n' + line + "\n")
    with pytest.raises(ManifestError, match=message):
        read_manifest(path)


def test_missing_transcript_when_required(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"audio_filepath": "a.wav", "duration": 1.0, "text": "  "}\n')
    assert read_manifest(path)[0].text == "  "
    with pytest.raises(ManifestError, match=":1: missing or empty transcript"):
        read_manifest(path, require_text=True)


def test_empty_and_missing_manifest(tmp_path):
    (tmp_path / "e.jsonl").write_text("\n\n")
    with pytest.raises(ManifestError, match="no entries"):
        read_manifest(tmp_path / "e.jsonl")
    with pytest.raises(ManifestError, match="cannot read"):
        read_manifest(tmp_path / "nope.jsonl")


def test_a_manifest_read_by_relative_path_can_be_written_elsewhere(tmp_path, monkeypatch):
    (tmp_path / "corpus" / "wav").mkdir(parents=True)
    (tmp_path / "corpus" / "wav" / "a.wav").write_bytes(b"")
    corpus = [Utterance(str(tmp_path / "corpus" / "wav" / "a.wav"), 1.0)]
    write_manifest(tmp_path / "corpus" / "m.jsonl", corpus, relative_to=tmp_path / "corpus")  # written as wav/a.wav
    monkeypatch.chdir(tmp_path)
    utts = read_manifest("corpus/m.jsonl")  # paths relative to the working directory
    write_manifest(tmp_path / "runs" / "x" / "train.jsonl", utts)
    again = read_manifest(tmp_path / "runs" / "x" / "train.jsonl")
    assert [Path(u.audio_filepath).resolve() for u in again] == [(tmp_path / "corpus" / "wav" / "a.wav").resolve()]
