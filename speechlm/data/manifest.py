"""JSON Lines manifests with NeMo-compatible keys.

Each line: ``{"audio_filepath": str, "duration": float, "text": str}`` plus optional
``label``, ``speaker``, ``lang``. Relative audio paths are resolved against the manifest's folder.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Iterable

from speechlm.errors import ManifestError
from speechlm.files import replaced_atomically


@dataclasses.dataclass(frozen=True)
class Utterance:
    audio_filepath: str  # absolute path, or relative to the manifest's folder
    duration: float  # seconds
    text: str = ""  # transcript ("" for unlabeled audio)
    label: str | None = None  # utterance class (intent, keyword, digit)
    speaker: str | None = None  # speaker or synthetic voice name
    lang: str | None = None  # language code


_FIELDS = {f.name for f in dataclasses.fields(Utterance)}


def read_manifest(path: str | Path, require_text: bool = False) -> list[Utterance]:
    """Parse a manifest; a malformed line raises :class:`ManifestError` naming file and line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise ManifestError(f"{path}: cannot read manifest ({e.strerror})") from None
    except UnicodeDecodeError:
        raise ManifestError(f"{path}: not UTF-8 text; a manifest is JSON Lines") from None
    root = path.parent
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ManifestError(f"{where}: not valid JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise ManifestError(f"{where}: expected a JSON object per line")
        for key in ("audio_filepath", "duration"):
            if key not in row:
                raise ManifestError(f"{where}: missing required field {key!r}")
        if not isinstance(row["audio_filepath"], str) or not row["audio_filepath"]:
            raise ManifestError(f"{where}: 'audio_filepath' must be a non-empty string")
        dur = row["duration"]
        if isinstance(dur, bool) or not isinstance(dur, (int, float)) or not dur > 0:
            raise ManifestError(f"{where}: 'duration' must be a positive number of seconds, got {dur!r}")
        text = row.get("text", "")
        if not isinstance(text, str):
            raise ManifestError(f"{where}: 'text' must be a string")
        if require_text and not text.strip():
            raise ManifestError(f"{where}: missing or empty transcript ('text')")
        audio = row["audio_filepath"]
        if not os.path.isabs(audio):
            audio = str(root / audio)
        known = {k: row[k] for k in _FIELDS & row.keys()}
        known.update(audio_filepath=audio, duration=float(dur), text=text)
        for k in ("label", "speaker", "lang"):
            if known.get(k) is not None:
                known[k] = str(known[k])
        out.append(Utterance(**known))
    if not out:
        raise ManifestError(f"{path}: manifest has no entries")
    return out


def write_manifest(path: str | Path, utterances: Iterable[Utterance], relative_to: str | Path | None = None) -> None:
    """Write atomically (temp file + rename); paths are made relative to ``relative_to`` if given, else
    absolute (a path relative to the working directory would be read back relative to ``path``'s folder)."""
    with replaced_atomically(path) as tmp, tmp.open("w", encoding="utf-8") as f:
        for u in utterances:
            row = {k: v for k, v in dataclasses.asdict(u).items() if v is not None}
            if relative_to is not None:
                row["audio_filepath"] = os.path.relpath(row["audio_filepath"], relative_to)
            else:
                row["audio_filepath"] = os.path.abspath(row["audio_filepath"])
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def filter_utterances(
    utts: Iterable[Utterance], min_duration: float, max_duration: float, require_text: bool
) -> tuple[list[Utterance], dict[str, int]]:
    """Keep utterances within ``[min_duration, max_duration]`` seconds (and with a transcript if
    ``require_text``); return them with a count of the others by reason."""
    skipped = {"too_short": 0, "too_long": 0, **({"no_transcript": 0} if require_text else {})}
    keep = []
    for u in utts:
        if require_text and not u.text.strip():
            skipped["no_transcript"] += 1
        elif u.duration < min_duration:
            skipped["too_short"] += 1
        elif u.duration > max_duration:
            skipped["too_long"] += 1
        else:
            keep.append(u)
    return keep, skipped
