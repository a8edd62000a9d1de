"""Shared by the benchmark scripts: where results go and how they are written."""

from __future__ import annotations

import json
import platform
import shlex
import sys
from contextlib import contextmanager
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def machine() -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": platform.processor()}


def command() -> str:
    return " ".join([".venv/bin/python", *map(shlex.quote, [Path(sys.argv[0]).as_posix(), *sys.argv[1:]])])


def markdown_table(header: list[str], rows: list[list]) -> str:
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(name: str, title: str, headline: dict, body_md: str, data: dict) -> None:
    """bench/results/NAME.json (headline + data) and NAME.md (title, command, tables)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"headline": headline, "command": command(), "machine": machine(), **data}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=1) + "\n")
    md = f"# {title}\n\nReproduce: `{command()}`\n\nMachine: {machine()}\n\n{body_md}\n"
    (RESULTS / f"{name}.md").write_text(md)
    print(md)


@contextmanager
def saved_figure(path: Path, **subplots):
    """``(fig, axes)`` from ``plt.subplots(**subplots)``, written to ``path`` (120 dpi) and closed on exit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(**subplots)
    try:
        yield fig, axes
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)
