"""TrainerCallbacks of a training run: the logged curve, progress and cancellation, a time budget."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any


def trainer_callback_base() -> type:
    from transformers import TrainerCallback

    return TrainerCallback


def metrics_entry(step: int, logs: dict[str, Any]) -> dict[str, Any] | None:
    """A compact {step, loss, reward, rewards: {component: mean}, ...} from a Trainer log, or None."""
    entry: dict[str, Any] = {"step": int(step)}
    components: dict[str, float] = {}
    for key, value in logs.items():
        if not isinstance(value, int | float) or isinstance(value, bool) or (isinstance(value, float) and math.isnan(value)):
            continue
        if key.startswith("rewards/") and key.endswith("/mean"):
            components[key[len("rewards/"):-len("/mean")]] = round(float(value), 5)
        elif key in ("loss", "reward", "reward_std", "learning_rate", "grad_norm", "mean_token_accuracy", "entropy",
                     "rewards/accuracies", "rewards/margins", "completions/mean_length"):
            entry[key.replace("/", "_")] = round(float(value), 6) if key != "learning_rate" else float(value)
    if components:
        entry["rewards"] = components
    if "loss" not in entry and "reward" not in entry and not components:
        return None
    return entry


def format_entry(entry: dict[str, Any]) -> str:
    """One log line per training step: loss, total reward and each reward component."""
    parts = [f"step {entry['step']}"]
    for key in ("loss", "reward"):
        if entry.get(key) is not None:
            parts.append(f"{key} {entry[key]:.4f}")
    for name, value in (entry.get("rewards") or {}).items():
        parts.append(f"{name.removesuffix('_reward')} {value:.2f}")
    return " · ".join(parts)


def make_progress_callback(on_entry: Callable[[dict[str, Any]], None], should_stop: Callable[[], bool] | None = None,
                           on_step: Callable[[int, int], None] | None = None) -> Any:
    """A TrainerCallback: every log -> ``on_entry``; every step -> ``on_step(step, max_steps)``;
    when ``should_stop()`` turns true: save a checkpoint at this step and stop.

    ``callback.train_seconds`` is the wall time of the training loop alone
    (not data building or DPO sampling).
    """
    base = trainer_callback_base()

    class ProgressCallback(base):  # type: ignore[misc, valid-type]
        stopped = False
        train_seconds: float | None = None
        _started: float | None = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self._started = time.monotonic()

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self._started is not None:
                self.train_seconds = time.monotonic() - self._started

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
            entry = metrics_entry(state.global_step, logs or {})
            if entry is not None:
                on_entry(entry)

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if on_step is not None:
                on_step(state.global_step, state.max_steps)
            if should_stop is not None and state.global_step < state.max_steps and should_stop():
                control.should_save = True
                control.should_training_stop = True
                self.stopped = True

    return ProgressCallback()


def make_time_budget_callback(minutes: float) -> Any:
    """A TrainerCallback that ends training once the training loop has run ``minutes``
    (``callback.reached`` says whether it did). The step in progress finishes first."""
    base = trainer_callback_base()

    class TimeBudgetCallback(base):  # type: ignore[misc, valid-type]
        reached = False
        _started: float | None = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self._started = time.monotonic()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if (self._started is not None and state.global_step < state.max_steps
                    and time.monotonic() - self._started >= minutes * 60):
                control.should_training_stop = True
                self.reached = True

    return TimeBudgetCallback()
