"""`Task`: turns a user's problem into a model prompt and reads the answer back out of a transcript."""

from __future__ import annotations

import abc

from spawnjoin._exceptions import ConfigError

__all__ = ["Task", "get_task", "TASKS"]


class Task(abc.ABC):
    """A problem family the model was trained on (the prompt format and how answers are checked)."""

    name: str = "task"

    @abc.abstractmethod
    def format_prompt(self, problem: str) -> str:
        """The root prompt for a problem written by a person (raises `ConfigError` if unreadable)."""

    @abc.abstractmethod
    def extract_answer(self, problem: str, transcript: str, dialect_answer: str | None) -> str | None:
        """The answer a person reads, from the root's transcript; None when there is no valid answer."""


def _countdown() -> Task:
    from spawnjoin.tasks.countdown.task import CountdownTask

    return CountdownTask()


TASKS = {"countdown": _countdown}


def get_task(task: str | Task) -> Task:
    """A task by name (`countdown`) or the given instance."""
    if isinstance(task, Task):
        return task
    try:
        return TASKS[task]()
    except KeyError:
        raise ConfigError(f"unknown task {task!r}; choose one of {sorted(TASKS)}") from None
