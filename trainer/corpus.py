"""Reading training sources: JSONL files and directories, ``reviewed`` specs, the MANIFEST licences, the fixed split."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from policies.datasets import iter_jsonl

REVIEWED_PREFIX = "reviewed"


# --------------------------------------------------------------------------- manifest / provenance


def parse_manifest(path: Path) -> dict[str, str]:
    """File name -> licence, from the table of a MANIFEST.md beside the data."""
    if not path.exists():
        return {}
    licences: dict[str, str] = {}
    header: list[str] | None = None
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip().startswith("|"):
            header = None  # a table ended; the next one needs its own header
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if header is None:
            lowered = [cell.lower() for cell in cells]
            if "file" in lowered and "licence" in lowered:
                header = lowered
            continue
        if set("".join(cells)) <= set("-: "):
            continue  # the |---|---| separator
        if len(cells) != len(header):
            continue
        row = dict(zip(header, cells, strict=True))
        name = row["file"].split()[0] if row["file"] else ""
        if name:
            licences[name] = row["licence"]
    return licences


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def licence_for(path: Path) -> str:
    return parse_manifest(path.parent / "MANIFEST.md").get(path.name, "unknown (not listed in MANIFEST.md)")


# --------------------------------------------------------------------------- reading sources


def expand_paths(sources: Iterable[str]) -> tuple[list[Path], list[str]]:
    """Split data sources into JSONL files (directories expanded) and ``reviewed`` specs.

    Raises ``FileNotFoundError`` naming the first missing path.
    """
    files: list[Path] = []
    reviewed: list[str] = []
    for source in sources:
        source = str(source).strip()
        if not source:
            continue
        if source == REVIEWED_PREFIX or source.startswith(REVIEWED_PREFIX + ":"):
            reviewed.append(source)
            continue
        path = Path(source).expanduser()
        if path.is_dir():
            files.extend(sorted(p for p in path.glob("*.jsonl") if p.is_file()))
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"data source {source!r} is neither a JSONL file, a directory nor reviewed:<policy-slug>")
    return files, reviewed


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """The JSON objects of one file; a line that is not JSON raises ``DatasetLineError`` (a ``ValueError``).

    Lines that are JSON but not objects are skipped: training takes what it can use
    (the evaluation harness, which must score every line, refuses them instead).
    """
    for _, record in iter_jsonl(path):
        if isinstance(record, dict):
            yield record


def shared_dataset_files(directory: Path | None = None) -> list[Path]:
    """The JSONL files of the shared benchmark corpus (for the UI's checkboxes)."""
    from django.conf import settings

    root = Path(directory or settings.SHARED_DATASETS_DIR)
    return sorted(p for p in root.glob("*.jsonl") if p.is_file()) if root.is_dir() else []


def is_held_out(record_id: str, percent: int) -> bool:
    """A fixed, seed-independent split: the same records are held out in every run."""
    if percent <= 0:
        return False
    bucket = int(hashlib.sha1(record_id.encode("utf-8")).hexdigest()[:8], 16) % 100
    return bucket < percent
