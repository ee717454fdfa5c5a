"""Counting host syncs: the calls that read a tensor's values into Python.

On a GPU each one waits for the device to finish everything queued, so the host
cannot run ahead; counting them on a CPU shows where a GPU would stall.
"""

from __future__ import annotations

import contextlib
import traceback
from collections import Counter
from collections.abc import Callable, Iterator


def _caller() -> str:
    for frame in reversed(traceback.extract_stack()[:-2]):
        if "/torch/" not in frame.filename and not frame.filename.endswith("host_syncs.py"):
            return f"{frame.filename.split('site-packages/')[-1]}:{frame.lineno} {frame.name}"
    return "?"


class SyncCounter:
    """Counts host reads of tensor values while active (wraps torch.Tensor methods)."""

    METHODS = ("tolist", "item", "cpu", "numpy", "__int__", "__float__", "__bool__", "__index__")

    def __init__(self, record_callers: bool = False) -> None:
        self.count = 0
        self.record_callers = record_callers
        # "file:line function" of the first frame outside torch -> syncs made there
        self.callers: Counter[str] = Counter()
        self._saved: dict[str, Callable] = {}

    def start(self) -> None:
        import torch

        if self._saved:
            return
        self._saved = {name: getattr(torch.Tensor, name) for name in self.METHODS}

        def wrap(original: Callable) -> Callable:
            def counted(tensor, *args, **kwargs):
                self.count += 1
                if self.record_callers:
                    self.callers[_caller()] += 1
                return original(tensor, *args, **kwargs)

            return counted

        for name, original in self._saved.items():
            setattr(torch.Tensor, name, wrap(original))

    def stop(self) -> None:
        import torch

        for name, original in self._saved.items():
            setattr(torch.Tensor, name, original)
        self._saved = {}

    @contextlib.contextmanager
    def active(self) -> Iterator[SyncCounter]:
        self.start()
        try:
            yield self
        finally:
            self.stop()
