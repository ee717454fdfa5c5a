"""Property-based fuzz of the moderation API from its OpenAPI document (schemathesis).

Starts a throwaway stack (its own PostgreSQL cluster and Redis server, the API
under gunicorn with the tiny guard model, see tests/ops/stack.py), then runs
``schemathesis run`` against ``/api/v1/openapi.json`` with a valid API key and
prints what it tried and what it found. The check that must hold: no response
is a 5xx (``not_a_server_error``); the other checks are reported for information.

    .venv/bin/python bench/fuzz_api.py                    # 200 examples per operation
    .venv/bin/python bench/fuzz_api.py --max-examples 1000 --checks all
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.ops.stack import Stack  # noqa: E402

SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))


def run_schemathesis(url: str, secret: str, max_examples: int, checks: str, workers: int, report: Path, seed: int | None) -> subprocess.CompletedProcess:
    command = [
        SCHEMATHESIS, "run", f"{url}/api/v1/openapi.json",
        "--header", f"Authorization: Bearer {secret}",
        "--checks", checks,
        "--max-examples", str(max_examples),
        "--workers", str(workers),
        "--request-timeout", "60",
        "--continue-on-failure",
        "--generation-database", "none",
        "--report", "ndjson", "--report-ndjson-path", str(report),
        "--no-color",
    ]
    if seed is not None:
        command += ["--seed", str(seed)]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True)


def summarise(report: Path) -> dict:
    """Counts from the NDJSON event stream: test cases per operation, status codes, failures."""
    statuses: Counter[int] = Counter()
    operations: set[str] = set()
    failures: list[str] = []
    cases = 0
    for line in report.read_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        for name, payload in event.items():
            if name != "ScenarioFinished" or not isinstance(payload, dict):
                continue
            recorder = payload.get("recorder") or {}
            label = recorder.get("label") or ""
            if label:
                operations.add(label)
            for interactions in (recorder.get("interactions") or {}).values():
                response = (interactions or {}).get("response") or {}
                if "status_code" in response:
                    statuses[int(response["status_code"])] += 1
                    cases += 1
            for check_list in (recorder.get("checks") or {}).values():
                for check in check_list or []:
                    if check.get("status") == "FAILURE":
                        failures.append(f"{label}: {check.get('name')} {(check.get('failure_info') or {}).get('failure', {}).get('title', '')}")
    return {"operations": sorted(operations), "cases": cases, "statuses": dict(sorted(statuses.items())), "failures": failures}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-examples", type=int, default=200)
    parser.add_argument("--checks", default="not_a_server_error", help="schemathesis checks (default: no 5xx only)")
    parser.add_argument("--workers", type=int, default=2, help="concurrent schemathesis workers")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the summary here")
    args = parser.parse_args()

    started = time.monotonic()
    stack = Stack(database="guardsite_fuzz").start()
    try:
        api = stack.start_api(workers=2, threads=4)
        report = stack.logs / "schemathesis.ndjson"
        fuzz_started = time.monotonic()
        result = run_schemathesis(api.url, stack.secret, args.max_examples, args.checks, args.workers, report, args.seed)
        elapsed = time.monotonic() - fuzz_started
        summary = summarise(report) if report.exists() else {"operations": [], "cases": 0, "statuses": {}, "failures": []}
        server_errors = sum(n for code, n in summary["statuses"].items() if code >= 500)
        gunicorn_log = api.process.output()
    finally:
        stack.stop()

    print(result.stdout[-4000:])
    print(f"schemathesis {args.checks}, max {args.max_examples} examples per operation, {args.workers} workers; "
          f"fuzzing took {elapsed:.0f} s (whole run {time.monotonic() - started:.0f} s)")
    print(f"{'operations':<12} {'requests':>9} {'5xx':>5}  status codes")
    print(f"{len(summary['operations']):<12} {summary['cases']:>9} {server_errors:>5}  {summary['statuses']}")
    for operation in summary["operations"]:
        print(f"  {operation}")
    if summary["failures"]:
        print("failed checks:")
        for failure in sorted(set(summary["failures"]))[:40]:
            print(f"  {failure}")
    if "Traceback" in gunicorn_log:
        print("server tracebacks (gunicorn log):")
        print(gunicorn_log[-4000:])
    if args.json:
        args.json.write_text(json.dumps({**summary, "server_errors": server_errors, "exit_code": result.returncode, "seconds": elapsed}, indent=2))
    return 0 if result.returncode == 0 and server_errors == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
