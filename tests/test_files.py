import os

import pytest

from speechlm.data.manifest import Utterance, read_manifest, write_manifest
from speechlm.files import replaced_atomically, sibling


def test_replaced_atomically_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "sub" / "list.jsonl"
    with replaced_atomically(path) as tmp:
        assert tmp.parent == path.parent and tmp.name == f".list.jsonl.tmp-{os.getpid()}"
        tmp.write_text("first\n")
    assert path.read_text() == "first\n"
    with pytest.raises(RuntimeError, match="disk full"):
        with replaced_atomically(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert path.read_text() == "first\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["list.jsonl"]  # no temporary file left behind


def test_a_manifest_whose_rows_fail_midway_leaves_the_old_list(tmp_path):
    path = tmp_path / "train.jsonl"
    write_manifest(path, [Utterance(str(tmp_path / "a.wav"), 1.0, "a")])

    def rows():
        yield Utterance(str(tmp_path / "b.wav"), 1.0, "b")
        raise ValueError("bad row")

    with pytest.raises(ValueError, match="bad row"):
        write_manifest(path, rows())
    assert [u.text for u in read_manifest(path)] == ["a"]
    assert not sibling(path).exists()
