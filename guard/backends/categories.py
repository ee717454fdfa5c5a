"""The categories slot of the answer block, scored in one tree forward.

Every policy code and ``none`` is a candidate continuation after
``"categories:"`` (``" S1"``, ``" S10"``, ``" none"``). The candidates' tokens
form a trie, fed as ONE tree chunk over the cached answer prefix (a node sees
the prefix and its ancestors, at position ``prefix + depth``). A candidate's
log-probability is the sum, along its path, of the log-softmax restricted to
the tokens allowed at each node (its children, plus the terminators
``","``/``"\\n"`` where a code may end), plus, where a longer code continues
the same path (``S1`` / ``S10``), the log-probability of ending there. The
candidates' probabilities are the softmax of those sums, so they sum to 1.

``CategoryTable`` turns that into a few gathers over the logits of all rows
at once (no Python loop per row or per token, no host sync).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from guard.contract import CATEGORY_THRESHOLD, NONE, PolicySpec


@dataclass
class CategoryTrie:
    """The candidates of the categories slot (codes and ``none``) as a token trie."""

    tokens: list[int] = field(default_factory=list)
    parents: list[int] = field(default_factory=list)
    children: dict[int, list[int]] = field(default_factory=dict)  # node (-1 = root) -> child nodes
    # (label, end node) for every candidate; label is a code or "none".
    candidates: list[tuple[str, int]] = field(default_factory=list)
    # End node -> the terminator token ids allowed after it.
    terminators: dict[int, list[int]] = field(default_factory=dict)

    def allowed(self, node: int) -> list[int]:
        ids = [self.tokens[child] for child in self.children.get(node, [])]
        return ids + self.terminators.get(node, [])

    @classmethod
    def build(cls, spec: PolicySpec, encode: Callable[[str], list[int]], comma: int, newline: int) -> CategoryTrie:
        trie = cls()
        for label in (*spec.codes, NONE):
            node = -1
            for token in encode(f" {label}"):
                child = next((c for c in trie.children.get(node, []) if trie.tokens[c] == token), None)
                if child is None:
                    child = len(trie.tokens)
                    trie.tokens.append(token)
                    trie.parents.append(node)
                    trie.children.setdefault(node, []).append(child)
                node = child
            trie.candidates.append((label, node))
            # "none" stands alone on its line; a code may be followed by another.
            trie.terminators[node] = [newline] if label == NONE else [comma, newline]
        return trie

    def depths(self) -> list[int]:
        out: list[int] = []
        for parent in self.parents:
            out.append(0 if parent < 0 else out[parent] + 1)
        return out

    def ancestors(self) -> list[list[bool]]:
        """``visible[k][j]``: node ``k`` sees node ``j`` (itself and its ancestors)."""
        width = len(self.tokens)
        visible = [[False] * width for _ in range(width)]
        for k in range(width):
            node = k
            while node >= 0:
                visible[k][node] = True
                node = self.parents[node]
        return visible


class CategoryTable:
    """Device tensors that score a trie's candidates for a whole batch.

    Slots: 0 is the root (the hidden state after ``"categories:"``), ``k + 1``
    is trie node ``k``. ``union`` are the token ids whose logits are needed.
    """

    def __init__(self, trie: CategoryTrie, device: torch.device) -> None:
        self.trie = trie
        self.labels = [label for label, _ in trie.candidates]
        union = sorted({*trie.tokens, *(t for ts in trie.terminators.values() for t in ts)})
        column = {token: j for j, token in enumerate(union)}
        slots = len(trie.tokens) + 1
        allowed = [[False] * len(union) for _ in range(slots)]
        ends = [[False] * len(union) for _ in range(slots)]
        for node in range(-1, len(trie.tokens)):
            for token in trie.allowed(node):
                allowed[node + 1][column[token]] = True
            for token in trie.terminators.get(node, []):
                ends[node + 1][column[token]] = True
        steps: list[list[tuple[int, int]]] = []
        end_slots, grows = [], []
        for _, end in trie.candidates:
            path, node = [], end
            while node >= 0:
                path.append(node)
                node = trie.parents[node]
            path.reverse()
            pairs, parent = [], -1
            for node in path:
                pairs.append((parent + 1, column[trie.tokens[node]]))
                parent = node
            steps.append(pairs)
            end_slots.append(end + 1)
            grows.append(len(trie.allowed(end)) > len(trie.terminators[end]))
        longest = max(len(p) for p in steps)
        self.union = torch.tensor(union, dtype=torch.long, device=device)
        self.allowed = torch.tensor(allowed, dtype=torch.bool, device=device)
        self.ends = torch.tensor(ends, dtype=torch.bool, device=device)
        self.step_slot = torch.tensor([[s for s, _ in p] + [0] * (longest - len(p)) for p in steps], device=device)
        self.step_column = torch.tensor([[c for _, c in p] + [0] * (longest - len(p)) for p in steps], device=device)
        self.step_ok = torch.tensor([[True] * len(p) + [False] * (longest - len(p)) for p in steps], device=device)
        self.end_slot = torch.tensor(end_slots, dtype=torch.long, device=device)
        self.grows = torch.tensor(grows, dtype=torch.bool, device=device)
        self.tokens = torch.tensor(trie.tokens, dtype=torch.long, device=device)
        self.depth = torch.tensor(trie.depths(), dtype=torch.long, device=device)
        self.visible = torch.tensor(trie.ancestors(), dtype=torch.bool, device=device)

    def probabilities(self, slot_logits: torch.Tensor) -> torch.Tensor:
        """(B, candidates) probabilities from the logits of every slot, (B, slots, union)."""
        logits = slot_logits.double()
        minus_inf = torch.tensor(float("-inf"), dtype=logits.dtype, device=logits.device)
        log_z = torch.logsumexp(torch.where(self.allowed, logits, minus_inf), dim=-1)  # (B, slots)
        terms = logits[:, self.step_slot, self.step_column] - log_z[:, self.step_slot]  # (B, C, steps)
        scores = torch.where(self.step_ok, terms, torch.zeros((), dtype=terms.dtype, device=terms.device)).sum(-1)
        ending = torch.logsumexp(torch.where(self.ends, logits, minus_inf), dim=-1) - log_z  # (B, slots)
        scores = scores + torch.where(self.grows, ending[:, self.end_slot], torch.zeros_like(scores))
        return torch.softmax(scores.float(), dim=-1)


def decide_categories(spec: PolicySpec, dist: dict[str, float]) -> list[str]:
    """Multi-label: every code reaching ``CATEGORY_THRESHOLD``, and at least the most probable one."""
    codes = [c for c in spec.codes if c in dist]
    if not codes:
        return []
    chosen = {c for c in codes if dist[c] >= CATEGORY_THRESHOLD}
    chosen.add(max(codes, key=dist.__getitem__))
    return [c for c in spec.codes if c in chosen]  # policy order
