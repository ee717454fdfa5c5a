"""Fast vs reason mode of the guard on a fixed sample of the shared benchmark corpus.

Runs the evaluation harness twice (same records, same model) and prints a small
table: items/s, words per explanation (mean, p90), parse failures and the
prompt/response F1. The sample is the harness's deterministic, label-stratified
``--limit`` sample: by default 20 records from each of five files (100 records,
prompt-only and prompt+response, several taxonomies).

    .venv/bin/python bench/eval_modes.py                       # embedded model, 5 x 20 records
    .venv/bin/python bench/eval_modes.py --per-file 5 --model /path/to/model --out-dir docs/reports
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "guardsite.settings")

DEFAULT_FILES = (
    "jbb_behaviors.jsonl",  # prompts, safe and unsafe
    "jbb_artifacts.jsonl",  # prompt + response, response labels
    "toxicchat_train.jsonl",  # real user prompts, mostly safe
    "openai_moderation_train.jsonl",  # categories
    "strongreject.jsonl",  # all unsafe, categories
)


def main() -> int:
    import django

    django.setup()
    from django.conf import settings

    from evaluation.harness import evaluate

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--per-file", type=int, default=20, help="records per file (default 20: 100 records)")
    parser.add_argument("--files", nargs="+", default=list(DEFAULT_FILES), help="file names in SHARED_DATASETS_DIR")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--modes", nargs="+", default=["fast", "reason"])
    parser.add_argument("--out-dir", type=Path, default=None, help="also write report-<mode>.json there")
    args = parser.parse_args()

    data = [Path(settings.SHARED_DATASETS_DIR) / name for name in args.files]
    reports = {}
    for mode in args.modes:
        print(f"running {mode} mode on {args.per_file} records x {len(data)} files ...", file=sys.stderr, flush=True)
        reports[mode] = evaluate(data, args.model, mode=mode, limit=args.per_file, batch_size=args.batch_size)
        if args.out_dir:
            args.out_dir.mkdir(parents=True, exist_ok=True)
            (args.out_dir / f"bench-eval-{mode}.json").write_text(json.dumps(reports[mode], indent=2) + "\n")

    header = f"{'mode':7} {'n':>5} {'items/s':>8} {'s total':>8} {'words mean':>10} {'words p90':>9} {'parse fail':>10} {'prompt F1':>9} {'resp F1':>8}"
    print(header)
    print("-" * len(header))
    for mode, report in reports.items():
        words = report["words_per_explanation"]
        print(
            f"{mode:7} {report['n']:>5} {report['items_per_second']:>8.2f} {report['elapsed_seconds']:>8.1f} "
            f"{words['mean']:>10.1f} {words['p90']:>9.0f} {report['parse_failures']:>10} "
            f"{report['tasks']['prompt']['f1']:>9.2f} {report['tasks']['response']['f1']:>8.2f}"
        )
    print(f"model: {next(iter(reports.values()))['model']} · files: {', '.join(args.files)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
