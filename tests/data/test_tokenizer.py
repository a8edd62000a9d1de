import pytest

from speechlm.data.tokenizer import (
    BLANK_ID,
    CharTokenizer,
    SentencePieceTokenizer,
    TokenizerConfig,
    load_tokenizer,
    normalize_text,
    train_tokenizer,
    unspellable,
)

TEXTS = [f"set an alarm for {h} o'clock in the {p}" for h in ("one", "two", "seven", "eleven") for p in ("morning", "evening")] * 20


def test_normalize_text():
    assert normalize_text("  Hello,   World!  It’s 5 o'clock. ") == "hello world it's 5 o'clock"


def test_char_roundtrip_and_blank(tmp_path):
    tok = train_tokenizer(TokenizerConfig(kind="char"), TEXTS)
    ids = tok.encode("Set an ALARM for seven!")
    assert BLANK_ID not in ids
    assert tok.decode(ids) == "set an alarm for seven"
    tok.save(tmp_path)
    again = load_tokenizer(tmp_path)
    assert isinstance(again, CharTokenizer) and again.encode("seven") == tok.encode("seven")


def test_char_drops_unseen_characters():
    tok = CharTokenizer.train(["abc"])
    assert tok.decode(tok.encode("abxc")) == "abc"


@pytest.mark.parametrize("kind", ["char", "unigram"])
def test_unspellable_names_the_characters_a_tokenizer_never_saw(kind):
    tok = train_tokenizer(TokenizerConfig(kind=kind, vocab_size=40), TEXTS)
    assert unspellable(tok, "Set an ALARM, for seven!") is None  # normalized first
    assert unspellable(tok, "Zoom at seven, quick") == "quz"  # letters in none of the texts


@pytest.mark.parametrize("kind", ["unigram", "bpe"])
def test_sentencepiece_roundtrip(tmp_path, kind):
    tok = train_tokenizer(TokenizerConfig(kind=kind, vocab_size=40), TEXTS)
    assert isinstance(tok, SentencePieceTokenizer)
    text = "set an alarm for eleven o'clock in the evening"
    ids = tok.encode(text)
    assert min(ids) > BLANK_ID and tok.decode(ids) == text
    tok.save(tmp_path)
    assert load_tokenizer(tmp_path).encode(text) == ids
