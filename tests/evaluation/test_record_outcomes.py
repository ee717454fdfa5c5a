"""Each record's outcome per task (``report["outcomes"]``): what pairs two models' evaluations record by record."""

from __future__ import annotations

from pathlib import Path

from evaluation.records import EvalRecord, LoadedFile
from evaluation.report import build_report, record_outcomes
from guard.contract import Verdict
from trainer import paired


def _record(index: int, prompt_label: str, response_label: str | None = None, categories: tuple[str, ...] = ()) -> EvalRecord:
    return EvalRecord(file="a.jsonl", line=index, id=f"r{index}", prompt=f"text {index}",
                      response="an answer" if response_label else None, prompt_label=prompt_label,
                      response_label=response_label, refusal_label=None, categories=categories, taxonomy="t")


RECORDS = [_record(0, "unsafe", categories=("S1",)), _record(1, "unsafe", "unsafe", ("S2",)), _record(2, "safe", "safe"),
           _record(3, "safe"), _record(4, "unsafe", categories=("S1",))]
VERDICTS = [Verdict("unsafe", categories=["S1"]), Verdict("safe", response_label="unsafe"),
            Verdict("unsafe", response_label="safe", categories=["S2"]), Verdict("safe"),
            Verdict("safe", parse_error="no label line")]
GOLDS = [("t", list(r.categories)) for r in RECORDS]


def test_outcomes_name_each_record_and_its_outcome_per_task_with_parse_failures_wrong():
    outcomes = record_outcomes(RECORDS, VERDICTS, GOLDS)
    assert outcomes["keys"] == [f"a.jsonl#r{i}" for i in range(5)]
    assert outcomes["tasks"]["prompt"] == "PNFTN"  # the parse failure of an unsafe prompt is a false negative
    assert outcomes["tasks"]["response"] == "-PT--"
    assert outcomes["categories"] == [[1, 0, 0], [0, 0, 1], None, None, [0, 0, 1]]


def test_outcomes_recount_the_reports_f1_and_the_same_records_give_the_same_fingerprint():
    report = build_report(RECORDS, VERDICTS, GOLDS, [LoadedFile("a.jsonl", Path("a.jsonl"), RECORDS, 5)], "m", "fast", 1.0)
    report["outcomes"] = record_outcomes(RECORDS, VERDICTS, GOLDS)
    again = {**report, "outcomes": record_outcomes(list(reversed(RECORDS)), list(reversed(VERDICTS)), list(reversed(GOLDS)))}
    assert paired.same_records(report, again)
    recounted = {(d.suite, d.task): d for d in paired.compare(report, again)}
    for task in ("prompt", "response"):
        assert recounted[("all", task)].candidate == report["tasks"][task]["f1"]
        assert recounted[("all", task)].delta == 0.0
    assert recounted[("categories", "micro_f1")].candidate == report["categories"]["micro_f1"]
