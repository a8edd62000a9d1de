import numpy as np
import pytest

from speechlm.data.text import TextDataset, TextError, read_text_lines, split_lines, token_stream
from speechlm.train.loop import TrainConfig


def test_reads_lines_and_names_bad_files(tmp_path):
    good = tmp_path / "a.txt"
    good.write_text("Hello there.\n\n  \nSecond line!\n")
    assert read_text_lines([good]) == ["Hello there.", "Second line!"]
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine\nbroken \xff here\n")
    with pytest.raises(TextError, match=r"bad.txt: invalid UTF-8 at byte 12 \(line 2\)"):
        read_text_lines([good, bad])
    binary = tmp_path / "x.bin"
    binary.write_bytes(b"\x7fELF\x00\x00\x01")
    with pytest.raises(TextError, match="binary"):
        read_text_lines([binary])
    empty = tmp_path / "e.txt"
    empty.write_text("...\n\n")
    with pytest.raises(TextError, match="no text"):
        read_text_lines([empty])
    with pytest.raises(TextError, match="cannot read"):
        read_text_lines([tmp_path / "missing.txt"])


def test_stream_packing_and_batches_cover_every_sequence_once():
    stream = token_stream(["a b", "c"], lambda s: [ord(ch) - 96 for ch in s.replace(" ", "")], bos=40, eos=41)
    assert stream.tolist() == [40, 1, 2, 41, 40, 3, 41]
    ds = TextDataset(np.arange(1, 102), seq_len=10, seed=3)
    batches = ds.make_batches(TrainConfig(max_batch_size=4), epoch=0)
    assert sorted(i for b in batches for i in b) == list(range(11))
    assert batches != ds.make_batches(TrainConfig(max_batch_size=4), epoch=1)
    b = ds.collate([10, 0])
    assert b.lens.tolist() == [1, 10] and b.tokens[0, 0] == 101 and b.amount == 11


def test_split_is_deterministic():
    lines = [str(i) for i in range(1000)]
    tr, va = split_lines(lines, 0.1)
    assert (tr, va) == split_lines(lines, 0.1) and 50 < len(va) < 150 and not set(tr) & set(va)
