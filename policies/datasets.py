"""Reading the shared benchmark corpus format: JSONL files with a ``taxonomies.json`` beside them.

The trainer, the evaluation harness and the data scripts read the same files;
this module is the one place that knows how a line becomes a record and where
a file's taxonomies are.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TAXONOMIES_FILE = "taxonomies.json"


class DatasetLineError(ValueError):
    """A line of a JSONL file that is not valid JSON; the message names the file and line."""


def iter_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """``(line number, parsed value)`` for every non-blank line of ``path``."""
    with path.open(encoding="utf-8") as handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                yield number, json.loads(text)
            except json.JSONDecodeError as error:
                raise DatasetLineError(f"{path.name}:{number}: not valid JSON ({error.msg})") from None


def taxonomies_beside(path: Path) -> Path | None:
    """The ``taxonomies.json`` in the data file's folder, if there is one."""
    beside = path.parent / TAXONOMIES_FILE
    return beside if beside.is_file() else None
