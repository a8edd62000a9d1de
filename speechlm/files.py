"""Writing files so that a crash or a second writer never leaves a half-written one behind."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator


def sibling(path: str | Path, kind: str = "tmp") -> Path:
    """A hidden name beside ``path`` that is this process's own (``.NAME.KIND-PID``): two processes writing
    the same file or folder at once each work on their own and never clash."""
    path = Path(path)
    return path.with_name(f".{path.name}.{kind}-{os.getpid()}")


@contextlib.contextmanager
def replaced_atomically(path: str | Path) -> Iterator[Path]:
    """Yield a temporary file name beside ``path`` to write; when the block ends, that file replaces ``path`` in
    one rename. If the block raises, the temporary file is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = sibling(path)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
