"""Import existing audio into a manifest, validating every entry.

Sources:
- a folder of audio files, with optional sidecar ``.txt`` transcripts (``clip.wav`` + ``clip.txt``);
- a CSV/TSV table with columns ``path,text[,label]`` (header optional);
- an LJSpeech-style folder (``metadata.csv`` with ``id|text[|normalized]`` and ``wavs/``).
Labels come from the parent folder name (``label_from="folder"``) or a regular expression
on the file name with a ``label`` group (and optionally a ``speaker`` group).

Nothing is dropped silently: each skipped entry is listed with its reason in the report.

Usage:
    speechlm prepare ../shared/data/fsdd/recordings data/fsdd.jsonl --label-from '(?P<label>\\d)_(?P<speaker>[a-z]+)_\\d+'
    speechlm prepare ../shared/data/speech_commands_sample/speech_commands_v0.01 data/sc.jsonl --label-from folder
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from speechlm.data.audio import AUDIO_EXTENSIONS, MAX_SAMPLE_RATE, MIN_SAMPLE_RATE
from speechlm.data.manifest import Utterance, write_manifest
from speechlm.errors import SpeechLMError


@dataclasses.dataclass
class Candidate:
    path: Path
    text: str | None  # None: no transcript found
    label: str | None = None
    speaker: str | None = None
    where: str = ""  # source line or file, for the report


@dataclasses.dataclass
class PrepareReport:
    source: str
    kept: int
    skipped: list[dict]  # {"path", "reason", "where"}

    def counts(self) -> dict[str, int]:
        return dict(collections.Counter(s["reason"].split(":")[0] for s in self.skipped))


def _label_speaker(path: Path, label_from: str | None, speaker_from: str | None) -> tuple[str | None, str | None]:
    label = speaker = None
    if label_from == "folder":
        label = path.parent.name
    elif label_from:
        m = re.search(label_from, path.name)
        if m:
            groups = m.groupdict()
            label = groups.get("label") or (m.group(1) if m.groups() else m.group(0))
            speaker = groups.get("speaker")
    if speaker_from:
        m = re.search(speaker_from, path.name)
        if m:
            speaker = m.groupdict().get("speaker") or (m.group(1) if m.groups() else m.group(0))
    return label, speaker


def scan_folder(root: Path, label_from: str | None, speaker_from: str | None) -> list[Candidate]:
    out = []
    for p in sorted(root.rglob("*")):
        if p.suffix.lower() not in AUDIO_EXTENSIONS or not p.is_file():
            continue
        txt = p.with_suffix(".txt")
        text = txt.read_text(encoding="utf-8", errors="replace").strip() if txt.is_file() else None
        label, speaker = _label_speaker(p, label_from, speaker_from)
        out.append(Candidate(p, text, label, speaker, str(p)))
    return out


def scan_table(table: Path, label_from: str | None, speaker_from: str | None) -> list[Candidate]:
    delim = "\t" if table.suffix.lower() == ".tsv" else ","
    try:
        rows = list(csv.reader(table.read_text(encoding="utf-8").splitlines(), delimiter=delim))
    except UnicodeDecodeError:
        raise SpeechLMError(f"{table}: not UTF-8 text") from None
    has_header = bool(rows) and [c.strip().lower() for c in rows[0][:2]] == ["path", "text"]
    start = 2 if has_header else 1
    rows = rows[1:] if has_header else rows
    out = []
    for n, row in enumerate(rows, start):
        if not row or not "".join(row).strip():
            continue
        if not row[0].strip():
            raise SpeechLMError(f"{table}:{n}: missing audio path")
        p = Path(row[0].strip())
        p = p if p.is_absolute() else table.parent / p
        text = row[1].strip() if len(row) > 1 else None
        label, speaker = _label_speaker(p, label_from, speaker_from)
        if len(row) > 2 and row[2].strip():
            label = row[2].strip()
        out.append(Candidate(p, text, label, speaker, f"{table}:{n}"))
    return out


def scan_ljspeech(root: Path) -> list[Candidate]:
    meta = root / "metadata.csv"
    out = []
    for n, line in enumerate(meta.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("|")
        if len(parts) < 2:
            raise SpeechLMError(f"{meta}:{n}: expected 'id|text[|normalized text]'")
        text = (parts[2] if len(parts) > 2 and parts[2].strip() else parts[1]).strip()
        out.append(Candidate(root / "wavs" / f"{parts[0].strip()}.wav", text, None, None, f"{meta}:{n}"))
    return out


def check_audio(path: Path, min_duration: float, max_duration: float) -> tuple[float | None, str | None]:
    """(duration, None) if usable, else (None, reason)."""
    if not path.is_file():
        return None, "missing: file not found"
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as e:
        return None, f"unreadable: {str(e).strip()[:120]}"
    if not MIN_SAMPLE_RATE <= info.samplerate <= MAX_SAMPLE_RATE:
        return None, f"bad_sample_rate: {info.samplerate} Hz"
    if info.frames == 0:
        return None, "empty: no samples"
    duration = info.frames / info.samplerate
    if duration < min_duration:
        return None, f"too_short: {duration:.3f} s < {min_duration} s"
    if duration > max_duration:
        return None, f"too_long: {duration:.1f} s > {max_duration} s"
    try:
        audio, _ = sf.read(str(path), dtype="float32")
    except (sf.LibsndfileError, RuntimeError) as e:
        return None, f"unreadable: {str(e).strip()[:120]}"
    if audio.size == 0:
        return None, "empty: no samples"
    if not np.isfinite(audio).all():
        return None, "corrupt: NaN or infinite samples"
    if float(np.abs(audio).max()) == 0.0:
        return None, "silent: every sample is zero"
    return duration, None


def prepare(
    source: str | Path,
    manifest: str | Path,
    fmt: str = "auto",
    label_from: str | None = None,
    speaker_from: str | None = None,
    require_text: bool = False,
    min_duration: float = 0.1,
    max_duration: float = 60.0,
    progress: bool = True,
) -> PrepareReport:
    """Scan ``source``, validate every entry, write the manifest and ``<manifest>.report.json``."""
    source = Path(source)
    if not source.exists():
        raise SpeechLMError(f"{source}: no such file or folder")
    if fmt == "auto":
        fmt = "ljspeech" if (source / "metadata.csv").is_file() else "table" if source.is_file() else "folder"
    if label_from and label_from != "folder":
        try:
            re.compile(label_from)
        except re.error as e:
            raise SpeechLMError(f"--label-from {label_from!r}: invalid regular expression ({e})") from None
    if fmt == "folder":
        cands = scan_folder(source, label_from, speaker_from)
    elif fmt == "table":
        cands = scan_table(source, label_from, speaker_from)
    elif fmt == "ljspeech":
        cands = scan_ljspeech(source)
    else:
        raise SpeechLMError(f"--format must be auto, folder, table or ljspeech, got {fmt!r}")
    if not cands:
        raise SpeechLMError(f"{source}: found no audio entries (looked for {', '.join(AUDIO_EXTENSIONS)})")
    kept: list[Utterance] = []
    skipped: list[dict] = []
    seen_paths: set[Path] = set()
    seen_hash: dict[str, str] = {}
    for c in tqdm(cands, desc="validate", unit="file", disable=not progress):
        path = c.path.resolve()
        reason = None
        if path in seen_paths:
            reason = "duplicate: path listed twice"
        elif require_text and (c.text is None or not c.text.strip()):
            reason = "no_transcript: missing or empty transcript"
        duration = None
        if reason is None:
            duration, reason = check_audio(path, min_duration, max_duration)
        if reason is None:
            digest = hashlib.sha1(path.read_bytes()).hexdigest()
            if digest in seen_hash:
                reason = f"duplicate: same audio as {seen_hash[digest]}"
            else:
                seen_hash[digest] = str(path)
        seen_paths.add(path)
        if reason:
            skipped.append({"path": str(c.path), "reason": reason, "where": c.where})
            continue
        kept.append(Utterance(str(path), round(duration, 4), c.text or "", c.label, c.speaker))
    manifest = Path(manifest)
    if kept:
        write_manifest(manifest, kept)
    report = PrepareReport(str(source), len(kept), skipped)
    Path(str(manifest) + ".report.json").write_text(
        json.dumps({"source": report.source, "kept": report.kept, "skipped_counts": report.counts(), "skipped": skipped}, indent=1)
    )
    if not kept:
        raise SpeechLMError(f"{source}: every entry was skipped ({report.counts()}); see {manifest}.report.json")
    return report
