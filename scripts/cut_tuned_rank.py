#!/usr/bin/env python
"""Store a model's tuned prompt layers as their change from the served layers cut to a rank (smaller heads).

    .venv/bin/python scripts/cut_tuned_rank.py [--model models/guardsite-guard-270m] [--data var/data/train] [--rank 128]

``fit_heads --tune-epochs N --tuned-rank R`` stores freshly tuned layers this way; this rewrites heads whose layers
were stored whole (float16: 33 MB for layers 12-14 of the embedded model) without tuning again. The prompt head is
thresholded again on its validation prompts scored through the cut weights (``trainer.heads.cut_tuned_rank``);
``bench/tuned_rank.py`` measures each rank first, and ``bench/heads.py`` should measure the result: rank 128 cost
the shipped guard 0.2-0.7 points of held-out AP (docs/guard.md). About 2 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "guardsite.settings")

import django  # noqa: E402

django.setup()

from guard import runtime  # noqa: E402
from trainer.model_heads import cut_tuned_rank  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "guardsite-guard-270m"))
    parser.add_argument("--data", type=Path, default=ROOT / "var" / "data" / "train")
    parser.add_argument("--rank", type=int, default=128)
    args = parser.parse_args()
    if args.rank < 1:
        raise SystemExit("--rank must be 1 or more")
    backend = runtime.get_backend(args.model)
    try:
        cut_tuned_rank(backend, args.data, Path(args.model), args.rank)
    except ValueError as error:
        raise SystemExit(f"{args.model}: {error}") from error


if __name__ == "__main__":
    main()
