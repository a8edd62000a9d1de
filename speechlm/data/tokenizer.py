"""Text tokenizers for CTC: characters, or SentencePiece (unigram/BPE) trained on the corpus.

Id 0 is always the CTC blank; every tokenizer saves itself into a model directory as
``tokenizer.json`` (plus ``tokenizer.model`` for SentencePiece) and :func:`load_tokenizer`
reads either back.

>>> tok = CharTokenizer.train(["hello world"])
>>> tok.decode(tok.encode("Hello,  World!"))
'hello world'
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
import unicodedata
from pathlib import Path
from typing import Iterable

import sentencepiece as spm

from speechlm.errors import CheckpointError

BLANK_ID = 0
TOKENIZER_FILE = "tokenizer.json"
SPM_FILE = "tokenizer.model"


@dataclasses.dataclass(frozen=True)
class TokenizerConfig:
    kind: str = "char"  # "char", "unigram" or "bpe" (SentencePiece)
    vocab_size: int = 256  # SentencePiece pieces (ignored for characters)

    def __post_init__(self):
        if self.kind not in ("char", "unigram", "bpe"):
            raise ValueError(f"tokenizer.kind must be 'char', 'unigram' or 'bpe', got {self.kind!r}")


_DROP = re.compile(r"[^\w' ]+")
_SPACES = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Lower-case, NFKC, punctuation removed (apostrophes kept), whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).lower().replace("\u2019", "'").replace("_", " ")
    text = _DROP.sub(" ", text)
    return _SPACES.sub(" ", text).strip()


class CharTokenizer:
    """One id per character seen in training text; unseen characters are dropped with a count."""

    kind = "char"

    def __init__(self, chars: list[str]):
        self.chars = list(chars)
        self._index = {c: i + 1 for i, c in enumerate(self.chars)}

    @classmethod
    def train(cls, texts: Iterable[str]) -> "CharTokenizer":
        chars = sorted({c for t in texts for c in normalize_text(t)})
        return cls(chars)

    @property
    def vocab_size(self) -> int:
        return len(self.chars) + 1

    def encode(self, text: str) -> list[int]:
        return [self._index[c] for c in normalize_text(text) if c in self._index]

    def decode(self, ids: Iterable[int]) -> str:
        return _SPACES.sub(" ", "".join(self.chars[i - 1] for i in ids if 0 < i <= len(self.chars))).strip()

    def save(self, directory: str | Path) -> None:
        Path(directory, TOKENIZER_FILE).write_text(json.dumps({"kind": "char", "chars": self.chars}, indent=1))


class SentencePieceTokenizer:
    """SentencePiece model; CTC ids are the piece ids shifted by one to make room for the blank."""

    def __init__(self, model_proto: bytes, kind: str):
        self.kind = kind
        self.proto = model_proto
        self.sp = spm.SentencePieceProcessor(model_proto=model_proto)

    @classmethod
    def train(cls, texts: Iterable[str], cfg: TokenizerConfig) -> "SentencePieceTokenizer":
        lines = [normalize_text(t) for t in texts]
        lines = [t for t in lines if t]
        if not lines:
            raise ValueError("cannot train a SentencePiece tokenizer on empty text")
        buf = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines),
            model_writer=buf,
            model_type=cfg.kind,
            vocab_size=cfg.vocab_size,
            character_coverage=1.0,
            unk_id=0,
            bos_id=-1,
            eos_id=-1,
            pad_id=-1,
            hard_vocab_limit=False,
            minloglevel=2,
        )
        return cls(buf.getvalue(), cfg.kind)

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size() + 1

    def encode(self, text: str) -> list[int]:
        return [i + 1 for i in self.sp.encode(normalize_text(text))]

    def decode(self, ids: Iterable[int]) -> str:
        return self.sp.decode([i - 1 for i in ids if i > 0])

    def save(self, directory: str | Path) -> None:
        Path(directory, SPM_FILE).write_bytes(self.proto)
        Path(directory, TOKENIZER_FILE).write_text(json.dumps({"kind": self.kind, "model": SPM_FILE}))


Tokenizer = CharTokenizer | SentencePieceTokenizer


def unspellable(tokenizer: Tokenizer, text: str) -> str | None:
    """None if ``tokenizer`` spells ``text`` (normalized) exactly; otherwise the characters it cannot spell
    (possibly "", when each character alone is spelled but the whole is not)."""
    text = normalize_text(text)
    if tokenizer.decode(tokenizer.encode(text)) == text:
        return None
    return "".join(sorted({c for c in text if c != " " and tokenizer.decode(tokenizer.encode(c)) != c}))


def train_tokenizer(cfg: TokenizerConfig, texts: Iterable[str]) -> Tokenizer:
    if cfg.kind == "char":
        return CharTokenizer.train(texts)
    return SentencePieceTokenizer.train(texts, cfg)


def load_tokenizer(directory: str | Path) -> Tokenizer:
    path = Path(directory, TOKENIZER_FILE)
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: cannot read tokenizer ({e})") from None
    if meta.get("kind") == "char":
        return CharTokenizer(meta["chars"])
    return SentencePieceTokenizer(Path(directory, meta["model"]).read_bytes(), meta["kind"])
