"""Where the benchmark files offered in the browser come from.

* The evaluation set shipped with the code (``evaluation/data/``: hand-written,
  Apache-2.0, see its MANIFEST.md), so a fresh demo can evaluate, compare and
  promote with no other data. Training never offers it: it stays unseen.
* The shared corpus (``settings.SHARED_DATASETS_DIR``) when it is present.

The browser never names arbitrary server paths; the CLI takes any path.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

SHIPPED_DATA_DIR = Path(__file__).resolve().parent / "data"


def shipped_files() -> list[Path]:
    """The evaluation files shipped in the repository."""
    return sorted(p for p in SHIPPED_DATA_DIR.glob("*.jsonl") if p.is_file())


def shared_files() -> list[Path]:
    root = Path(settings.SHARED_DATASETS_DIR)
    return sorted(p for p in root.glob("*.jsonl") if p.is_file()) if root.is_dir() else []


def benchmark_files() -> list[Path]:
    """Shipped files first, then the shared corpus; a shared file never shadows a shipped one."""
    files = shipped_files()
    names = {p.name for p in files}
    return files + [p for p in shared_files() if p.name not in names]
