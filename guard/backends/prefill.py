"""Batch shaping and prefill of the transformers backend (steps 0-1 of its module
docstring): rows grouped by policy head and cut into length buckets, the policy
head's KV computed once per policy (a small LRU) and shared by every row, and
short chunks fed per row from a table on the device (the text between two answer
fields, a generated token)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from guard.backends.batching import MIN_SHARED_PREFIX, partition
from guard.backends.gemma_runner import GemmaRunner, Prefix, RowCache
from guard.backends.inputs import PreparedItem

# Policy heads whose KV is kept (a deployment serves a few policies at a time).
PREFIX_CACHE_ENTRIES = 8


@dataclass
class ChunkTable:
    """Token chunks indexed by a variant number, right-padded, on the device."""

    ids: torch.Tensor  # (variants, width)
    lengths: torch.Tensor  # (variants,)

    @property
    def width(self) -> int:
        return int(self.ids.shape[1])


class PrefillMixin:
    """Batches and prefill of ``TransformersBackend`` (uses its runner, padding id and batch limits)."""

    runner: GemmaRunner
    device: torch.device
    pad_id: int
    max_batch_size: int
    max_batch_tokens: int
    batch_overhead_tokens: int
    bucket_overhead_tokens: int
    # KV of recently used policy heads (instructions + policy block), most recent last.
    _prefix_kv: OrderedDict[tuple[int, ...], Prefix]

    def _chunk_table(self, chunks: list[list[int]]) -> ChunkTable:
        width = max(len(c) for c in chunks)
        rows = [c + [self.pad_id] * (width - len(c)) for c in chunks]
        return ChunkTable(
            torch.tensor(rows, dtype=torch.long, device=self.device),
            torch.tensor([len(c) for c in chunks], dtype=torch.long, device=self.device),
        )

    def _batches(self, items: list[PreparedItem], *, by_policy: bool = True) -> list[list[PreparedItem]]:
        """Rows grouped by policy head and bucketed by length: each group, sorted, is
        cut where a new batch saves more padding than ``batch_overhead_tokens``, with
        at most ``max_batch_size`` rows and ``max_batch_tokens`` padded tokens a batch
        (the shared head is not counted: it is computed once). ``by_policy=False``: one
        group whatever the policy (the latent heads read the conversation without it, and
        a conversation judged under several policies in one batch is computed once)."""
        groups: dict[tuple, list[PreparedItem]] = {}
        for item in items:
            if not by_policy:
                groups.setdefault((), []).append(item)
                continue
            head = tuple(item.input_ids[: item.head_len]) if item.head_len >= MIN_SHARED_PREFIX else ()
            groups.setdefault((head, item.spec.codes), []).append(item)
        batches: list[list[PreparedItem]] = []
        for group in groups.values():
            group.sort(key=self._fed)
            cuts = partition(
                [self._fed(item) for item in group],
                self.batch_overhead_tokens,
                max_rows=self.max_batch_size,
                max_tokens=self.max_batch_tokens,
            )
            batches.extend(group[first:end] for first, end in cuts)
        return batches

    @staticmethod
    def _fed(item: PreparedItem) -> int:
        return len(item.input_ids) - (item.head_len if item.head_len >= MIN_SHARED_PREFIX else 0)

    def _remember_oom(self, size: int) -> None:
        # A device that ran out of memory once will again: later batches start smaller.
        self.max_batch_size = min(self.max_batch_size, size)

    def _prefix(self, head: tuple[int, ...]) -> Prefix:
        """The policy head's KV, computed once (LRU of ``PREFIX_CACHE_ENTRIES``)."""
        cached = self._prefix_kv.get(head)
        if cached is not None:
            self._prefix_kv.move_to_end(head)
            return cached
        prefix = self.runner.prefix(list(head))
        self._prefix_kv[head] = prefix
        while len(self._prefix_kv) > PREFIX_CACHE_ENTRIES:
            self._prefix_kv.popitem(last=False)
        return prefix

    def _start(self, rows: list[list[int]], heads: Sequence[int], reserve: int) -> tuple[RowCache, torch.Tensor]:
        """A batch cache after feeding ``rows`` (right-padded) over their shared head;
        returns it and the hidden state of each row's last token, (B, hidden)."""
        head_len = heads[0] if heads else 0
        prefix = None
        if head_len >= MIN_SHARED_PREFIX and all(n == head_len for n in heads):
            head = tuple(rows[0][:head_len])
            if all(tuple(row[:head_len]) == head for row in rows):
                prefix = self._prefix(head)
                rows = [row[head_len:] for row in rows]
        sizes = [len(row) for row in rows]
        width = max(sizes)
        cache = RowCache(self.runner, len(rows), width + reserve, prefix)
        last = torch.empty((len(rows), self.runner.hidden_size), dtype=self.runner.dtype, device=self.device)
        for first, end in self._buckets(sizes):
            part = rows[first:end]
            bucket_width = max(sizes[first:end])
            padded = [row + [self.pad_id] * (bucket_width - len(row)) for row in part]
            ids = torch.tensor(padded, dtype=torch.long).to(self.device, non_blocking=True)
            lengths = torch.tensor(sizes[first:end], dtype=torch.long).to(self.device, non_blocking=True)
            view = cache.rows(first, end)
            hidden = self.runner.forward(view, ids, lengths)
            last[first:end] = self._last(hidden, lengths)
            cache.next_pos[first:end] = view.next_pos
        cache.length = width  # a shorter bucket's slots past its width stay invalid
        return cache, last

    def _buckets(self, sizes: list[int]) -> list[tuple[int, int]]:
        """Consecutive prefill buckets of a batch's rows (shortest first); unsorted rows form one."""
        if any(a > b for a, b in zip(sizes, sizes[1:], strict=False)):
            return [(0, len(sizes))]
        return partition(sizes, self.bucket_overhead_tokens)

    @staticmethod
    def _last(hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return hidden[rows, (lengths - 1).clamp(min=0)]

    def _feed(self, cache: RowCache, table: ChunkTable, variant: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Feed each row its chunk ``table[variant[row]]`` (rows where ``keep`` is False
        feed nothing); returns the hidden state at each row's last fed token."""
        lengths = table.lengths[variant]
        if keep is not None:
            lengths = torch.where(keep, lengths, torch.zeros_like(lengths))
        hidden = self.runner.forward(cache, table.ids[variant], lengths)
        return self._last(hidden, lengths)
