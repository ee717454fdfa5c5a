"""The training mix: how many examples of each task, label and source a run trains on.

Every example belongs to one **task**, the field it teaches first:

* ``refusal``: it has an AI response and a refusal label from its source;
* ``response``: it has an AI response (no source refusal label);
* ``prompt``: prompt only.

Its **task label** is that task's gold label (``safe``/``unsafe``; ``refusal``/
``compliance`` for the refusal task); the positive label is ``unsafe`` (``refusal``).

``MixSpec`` holds the mixture weights:

* ``task_shares``: the budget's share per task (default prompt 0.5, response 0.25, refusal 0.25);
* ``positive_share``: the positive label's share within each task (default 0.5),
  kept inside ``positive_range`` (0.4-0.6) when a label runs short: the task then shrinks
  and its unused budget goes to the other tasks;
* ``source_weights``: a relative weight per source (default 1; 0 leaves a source out);
  within a task and label the budget is water-filled across sources by weight;
* ``source_cap``: no source above this share of the budget (default 0.25); it relaxes only
  as far as the other sources are too few or too small to fill the budget (a run on one
  file is not cut to a quarter of its budget);
* ``policy_following`` / ``policy_flip``: the budget's share of generated policy-following
  examples (custom categories) and of corpus records re-shown under a policy without their
  violated categories (gold safe); see ``trainer.policy_following``.

As text (``manage.py train --mix``): comma-separated ``key=value`` items, e.g.
``task.prompt=0.4,task.response=0.3,task.refusal=0.3,positive.prompt=0.45,source.davidson_hate_offensive=0.5,cap=0.2,policy_following=0.1``.

``allocate`` is deterministic for a given seed; ``table`` and ``format_table`` give the
realised task x label x source counts that the builder prints and the run records.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

TASKS = ("prompt", "response", "refusal")
POSITIVE = {"prompt": "unsafe", "response": "unsafe", "refusal": "refusal"}
NEGATIVE = {"prompt": "safe", "response": "safe", "refusal": "compliance"}

T = TypeVar("T")


@dataclass
class MixSpec:
    task_shares: dict[str, float] = field(default_factory=lambda: {"prompt": 0.5, "response": 0.25, "refusal": 0.25})
    positive_share: dict[str, float] = field(default_factory=lambda: {"prompt": 0.5, "response": 0.5, "refusal": 0.5})
    positive_range: tuple[float, float] = (0.4, 0.6)
    source_weights: dict[str, float] = field(default_factory=dict)
    source_cap: float = 0.25
    policy_following: float = 0.08
    policy_flip: float = 0.04

    def weight(self, source: str) -> float:
        if source in self.source_weights:
            return self.source_weights[source]
        return self.source_weights.get(source.split("/", 1)[0], 1.0)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["positive_range"] = list(self.positive_range)
        return data

    @classmethod
    def parse(cls, text: str | None) -> MixSpec:
        """A spec from ``key=value`` items over the defaults; raises ``ValueError`` naming a bad item."""
        spec = cls()
        for item in (text or "").split(","):
            item = item.strip()
            if not item:
                continue
            key, sep, raw = item.partition("=")
            key = key.strip()
            try:
                value = float(raw)
            except ValueError:
                raise ValueError(f"mix item {item!r}: the value must be a number") from None
            if not sep or value < 0:
                raise ValueError(f"mix item {item!r}: expected key=number (>= 0)")
            kind, _, name = key.partition(".")
            if kind == "task" and name in TASKS:
                spec.task_shares[name] = value
            elif kind == "positive" and name in TASKS:
                if not 0 < value < 1:
                    raise ValueError(f"mix item {item!r}: a positive share lies between 0 and 1")
                spec.positive_share[name] = value
            elif kind == "source" and name:
                spec.source_weights[name] = value
            elif key == "cap":
                if not 0 < value <= 1:
                    raise ValueError(f"mix item {item!r}: cap lies in (0, 1]")
                spec.source_cap = value
            elif key in ("policy_following", "policy_flip"):
                setattr(spec, key, value)
            elif key in ("positive_min", "positive_max"):
                low, high = spec.positive_range
                spec.positive_range = (value, high) if key == "positive_min" else (low, value)
            else:
                raise ValueError(f"mix item {item!r}: unknown key (task.<t>, positive.<t>, source.<name>, cap, "
                                 "positive_min, positive_max, policy_following, policy_flip)")
        if sum(spec.task_shares.values()) <= 0:
            raise ValueError("mix: the task shares must not all be 0")
        return spec


def _largest_remainder(total: int, weights: dict[str, float]) -> dict[str, int]:
    mass = sum(weights.values())
    if total <= 0 or mass <= 0:
        return {key: 0 for key in weights}
    exact = {key: total * w / mass for key, w in weights.items()}
    out = {key: int(v) for key, v in exact.items()}
    for key in sorted(exact, key=lambda k: exact[k] - out[k], reverse=True)[: total - sum(out.values())]:
        out[key] += 1
    return out


def water_fill(capacity: dict[str, int], weights: dict[str, float], budget: int) -> dict[str, int]:
    """Split ``budget`` across keys in proportion to ``weights``, none above its capacity;
    what a full key cannot take goes to the others."""
    taken = {key: 0 for key in capacity}
    left = min(budget, sum(capacity.values()))
    while left > 0:
        open_keys = {k: weights.get(k, 1.0) for k in capacity if taken[k] < capacity[k] and weights.get(k, 1.0) > 0}
        if not open_keys:
            break
        shares = _largest_remainder(left, open_keys)
        if not any(shares.values()):
            shares[max(open_keys, key=lambda k: open_keys[k])] = 1
        for key, share in shares.items():
            extra = min(share, capacity[key] - taken[key])
            taken[key] += extra
            left -= extra
    return taken


def _task_size_limit(positive: int, negative: int, low: float, high: float) -> int:
    """The most examples a task can have with its positive share inside [low, high]."""
    limit = positive + negative
    if low > 0:
        limit = min(limit, int(positive / low))
    if high < 1:
        limit = min(limit, int(negative / (1 - high)))
    return max(limit, 0)


def _smallest_cap(supplies: list[int], budget: int) -> int:
    """The smallest per-source cap c with sum(min(supply, c)) >= budget (or the largest supply)."""
    low, high = 0, max(supplies, default=0)
    while low < high:
        middle = (low + high) // 2
        if sum(min(n, middle) for n in supplies) >= budget:
            high = middle
        else:
            low = middle + 1
    return low


def allocate(items: Sequence[T], budget: int | None, spec: MixSpec, rng: random.Random,
             key: Callable[[T], tuple[str, str, str]]) -> list[T]:
    """Choose the examples of a run: ``key(item)`` is (task, task label, source).

    ``budget`` None takes every item whose source weight is above 0 (no balancing).
    """
    cells: dict[str, dict[str, dict[str, list[T]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for item in items:
        task, label, source = key(item)
        if spec.weight(source) <= 0:
            continue
        cells[task][label][source].append(item)
    pool = [item for task in cells.values() for label in task.values() for group in label.values() for item in group]
    if budget is None or budget >= len(pool) and spec.source_cap >= 1:
        rng.shuffle(pool)
        return pool
    for task in cells.values():
        for label in task.values():
            for group in label.values():
                rng.shuffle(group)
    # The cap relaxes only as far as needed to fill the budget when the other sources are too
    # few or too small (a run on one file, or on reviewed items only, is not cut to a quarter).
    supply: dict[str, int] = defaultdict(int)
    for task in cells.values():
        for label in task.values():
            for source, group in label.items():
                supply[source] += len(group)
    cap = max(int(spec.source_cap * budget), _smallest_cap(list(supply.values()), budget)) if spec.source_cap < 1 else budget
    low, high = spec.positive_range

    def label_supply(task: str, label: str) -> int:
        return sum(min(len(group), cap) for group in cells[task][label].values())

    limits = {task: _task_size_limit(label_supply(task, POSITIVE[task]), label_supply(task, NEGATIVE[task]), low, high)
              for task in TASKS}
    quotas = water_fill(limits, {t: spec.task_shares.get(t, 0.0) for t in TASKS}, budget)
    used: dict[str, int] = defaultdict(int)
    chosen: list[T] = []
    # The scarcest task first, so shared sources' caps go where they are needed most.
    for task in sorted(TASKS, key=lambda t: limits[t]):
        size = quotas[task]
        if size <= 0:
            continue
        pos_label, neg_label = POSITIVE[task], NEGATIVE[task]

        def available(label: str, task: str = task) -> int:
            return sum(min(len(g), max(cap - used[s], 0)) for s, g in cells[task][label].items())

        def fill(label: str, count: int, task: str = task) -> int:
            groups = cells[task][label]
            capacity = {s: min(len(g), max(cap - used[s], 0)) for s, g in groups.items()}
            taken = water_fill(capacity, {s: spec.weight(s) for s in groups}, count)
            for source, n in sorted(taken.items()):
                chosen.extend(groups[source][:n])
                used[source] += n
            return sum(taken.values())

        want_pos = int(size * spec.positive_share.get(task, 0.5) + 0.5)
        want = {pos_label: want_pos, neg_label: size - want_pos}
        # The scarcer label first (shared sources' caps), then the other within the share range.
        first, second = sorted((pos_label, neg_label), key=lambda lab: available(lab) / max(want[lab], 1))
        got = fill(first, min(want[first], available(first)))
        share_first = (1 - low) if first == pos_label else high
        bound = int(got * share_first / (1 - share_first)) if share_first < 1 else size
        if size < 10:
            bound = size  # a share range means nothing for a handful of examples
        fill(second, min(size - got, bound, available(second)))
    rng.shuffle(chosen)
    return chosen


def table(items: Sequence[T], key: Callable[[T], tuple[str, str, str]]) -> dict[str, dict[str, dict[str, int]]]:
    """``{task: {label: {source: count}}}`` (sorted)."""
    counts: dict[str, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(int)))
    for item in items:
        task, label, source = key(item)
        counts[task][label][source] += 1
    return {t: {lab: dict(sorted(s.items())) for lab, s in sorted(labels.items())} for t, labels in sorted(counts.items())}


def summary(counts: dict[str, dict[str, dict[str, int]]]) -> dict[str, Any]:
    """Per task: examples, share of all, positive share; per source: examples and share."""
    total = sum(n for labels in counts.values() for sources in labels.values() for n in sources.values())
    tasks = {}
    by_source: dict[str, int] = defaultdict(int)
    for task, labels in counts.items():
        size = sum(sum(sources.values()) for sources in labels.values())
        positive = sum(labels.get(POSITIVE[task], {}).values())
        tasks[task] = {"n": size, "share": round(size / total, 4) if total else 0.0,
                       "positive_share": round(positive / size, 4) if size else 0.0}
        for sources in labels.values():
            for source, n in sources.items():
                by_source[source] += n
    sources = {s: {"n": n, "share": round(n / total, 4) if total else 0.0} for s, n in sorted(by_source.items())}
    return {"total": total, "tasks": tasks, "sources": sources}


@dataclass(frozen=True)
class MixRows:
    """The realised mix laid out for a table: one row per source, one column per (task, label)."""

    columns: list[tuple[str, str]]
    rows: list[tuple[str, list[int], int]]  # (source, count per column, source total)
    totals: list[int]
    grand: int


def mix_rows(counts: dict[str, dict[str, dict[str, int]]]) -> MixRows:
    columns = [(task, label) for task in TASKS for label in (NEGATIVE[task], POSITIVE[task]) if task in counts]
    sources = sorted({s for labels in counts.values() for group in labels.values() for s in group})
    rows = []
    for source in sources:
        cells = [counts.get(t, {}).get(lab, {}).get(source, 0) for t, lab in columns]
        rows.append((source, cells, sum(cells)))
    totals = [sum(counts.get(t, {}).get(lab, {}).values()) for t, lab in columns]
    return MixRows(columns=columns, rows=rows, totals=totals, grand=sum(totals))


def format_table(counts: dict[str, dict[str, dict[str, int]]]) -> str:
    """The realised mix as a plain-text table: one row per source, one column per task and label."""
    layout = mix_rows(counts)
    width = max([len(source) for source, _, _ in layout.rows] + [6])
    head = f"{'source':{width}} " + " ".join(f"{t[:4]}:{lab[:6]:>6}" for t, lab in layout.columns) + f" {'total':>7} {'share':>6}"
    lines = [head, "-" * len(head)]
    for source, cells, total in layout.rows:
        lines.append(f"{source:{width}} " + " ".join(f"{n:11d}" for n in cells) + f" {total:7d} {100 * total / layout.grand:5.1f}%")
    lines.append("-" * len(head))
    lines.append(f"{'total':{width}} " + " ".join(f"{n:11d}" for n in layout.totals)
                 + f" {layout.grand:7d} {100.0 if layout.grand else 0:5.1f}%")
    info = summary(counts)
    lines.append("tasks: " + ", ".join(f"{t} {v['n']} ({100 * v['share']:.1f}%, {POSITIVE[t]} {100 * v['positive_share']:.1f}%)"
                                      for t, v in info["tasks"].items()))
    return "\n".join(lines)


def markdown_table(counts: dict[str, dict[str, dict[str, int]]]) -> list[str]:
    """The same table as Markdown lines (the model card)."""
    layout = mix_rows(counts)
    lines = ["| source | " + " | ".join(f"{t} {lab}" for t, lab in layout.columns) + " | total |",
             "|---|" + "---|" * (len(layout.columns) + 1)]
    for source, cells, total in layout.rows:
        lines.append(f"| {source} | " + " | ".join(str(n) for n in cells) + f" | {total} |")
    lines.append("| **total** | " + " | ".join(str(n) for n in layout.totals) + f" | {layout.grand} |")
    return lines


__all__ = ["NEGATIVE", "POSITIVE", "TASKS", "MixRows", "MixSpec", "allocate", "format_table", "markdown_table", "mix_rows",
           "summary", "table", "water_fill"]
