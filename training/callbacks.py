"""Shared by `spawnjoin-train sft` and `grpo`: wall-clock deadlines, timed checkpoints, and resuming from them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from transformers.trainer_utils import get_last_checkpoint

__all__ = ["TimedSave", "resume_checkpoint", "wall_clock"]


def wall_clock(when: str | None, *, ahead: bool = False, now: float | None = None) -> float | None:
    """Epoch seconds of `when`: `"HH:MM"` (UTC) or epoch seconds as a string; `None` stays `None`.

    `"HH:MM"` is that time today, or with `ahead=True` (deadlines) its next occurrence, tomorrow when today's is
    past, so that `--stop_at 00:30` given at 23:00 means the coming half past midnight rather than a deadline
    already passed (which would stop a run after its first step).

    >>> wall_clock("1700000000")
    1700000000.0
    >>> wall_clock(None) is None
    True
    >>> at_2300 = 1796598000.0  # 2026-12-06 23:00 UTC
    >>> wall_clock("00:30", now=at_2300) - at_2300, wall_clock("00:30", ahead=True, now=at_2300) - at_2300
    (-81000.0, 5400.0)
    """
    if not when:
        return None
    if ":" in when:
        hh, mm = (int(x) for x in when.split(":"))
        now = time.time() if now is None else now
        day = now - now % 86400  # UTC midnight
        at = day + hh * 3600 + mm * 60
        return at + 86400 if ahead and at <= now else at
    return float(when)


def resume_checkpoint(output_dir: str, resume: bool, tag: str) -> str | None:
    """The newest checkpoint in `output_dir` to resume from when `resume` is set (printed with `tag`), else `None`."""
    last = get_last_checkpoint(output_dir) if resume and Path(output_dir).is_dir() else None
    if last:
        print(f"[{tag}] resuming from {last}", flush=True)
    return last


class TimedSave(TrainerCallback):
    """Checkpoint every `save_every_minutes` (0: never); at `deadline` (epoch seconds) save and stop.

    A run that stops at its deadline leaves a normal checkpoint behind, so `--resume` continues it later;
    `stopped` says whether the deadline ended it.
    """

    def __init__(self, *, save_every_minutes: float = 0.0, deadline: float | None = None) -> None:
        self.save_every = 60 * save_every_minutes
        self.deadline = deadline
        self.last = time.time()
        self.stopped = False

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        now = time.time()
        if self.save_every and now - self.last >= self.save_every:
            control.should_save = True
        if self.deadline is not None and now >= self.deadline:
            control.should_save = True
            control.should_training_stop = self.stopped = True
        return control

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.last = time.time()
