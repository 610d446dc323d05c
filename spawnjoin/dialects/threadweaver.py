"""The `threadweaver` dialect (Lian et al. 2025): children share the parent's prefix.

The main thread writes outlines and stops at `</Outlines>`::

    <Parallel>
    <Outlines>
    <Outline>1: ...</Outline>
    <Outline>2: ...</Outline>
    </Outlines>

Child `i` continues the *whole* context so far plus `\\n<Thread>\\n{i}:` and stops at `</Thread>`; it sees the
shared prefix but not its siblings. The join appends every thread verbatim, closes the block with
`\\n</Parallel>\\n`, and the main thread continues (e.g. with `<Conclusion>`).
"""

from __future__ import annotations

import re

from spawnjoin.dialects.base import ChildOutcome, ChildSpec, Dialect, Done, Spawn

__all__ = ["ThreadWeaverDialect"]

PARALLEL_OPEN = "<Parallel>"
PARALLEL_CLOSE = "</Parallel>"
OUTLINES_OPEN = "<Outlines>"
OUTLINES_CLOSE = "</Outlines>"
THREAD_OPEN = "<Thread>"
THREAD_CLOSE = "</Thread>"

_OUTLINE = re.compile(r"<Outline>\s*(\d+)\s*:(.*?)</Outline>", re.DOTALL)


class ThreadWeaverDialect(Dialect):
    """ThreadWeaver's outline/thread blocks.

    Args:
        max_outline_chars: Outlines longer than this are treated as malformed (a runaway model).
    """

    name = "threadweaver"
    shares_prefix = True

    def __init__(self, *, max_outline_chars: int = 4000) -> None:
        self.max_outline_chars = max_outline_chars

    def stop_strings(self, context: str) -> tuple[str, ...]:
        """Children stop at `</Thread>`; the main thread at `</Outlines>`."""
        if _in_open_thread(context):
            return (THREAD_CLOSE,)
        return (OUTLINES_CLOSE,)

    def after_call(self, context: str, text: str, finish_reason: str) -> Spawn | Done:
        """`</Outlines>` in a main thread spawns one child per numbered outline."""
        if _in_open_thread(context) or not text.endswith(OUTLINES_CLOSE):
            return Done(reason=None if finish_reason in ("eos", "stop") else f"stopped: {finish_reason}")
        full = context + text
        opened = full.rfind(OUTLINES_OPEN)
        if opened < 0 or full.rfind(PARALLEL_OPEN, 0, opened) < 0:
            return Done(reason=f"malformed spawn: {OUTLINES_CLOSE} without {PARALLEL_OPEN}{OUTLINES_OPEN}",
                        malformed=True)
        body = full[opened + len(OUTLINES_OPEN) : -len(OUTLINES_CLOSE)]
        outlines = _OUTLINE.findall(body)
        if not outlines:
            return Done(reason="malformed spawn: the outline block lists no <Outline>", malformed=True)
        numbers = [int(n) for n, _ in outlines]
        if numbers != list(range(1, len(numbers) + 1)):
            return Done(reason="malformed spawn: outlines must be numbered 1, 2, 3, ... in order", malformed=True)
        if any(len(o) > self.max_outline_chars for _, o in outlines):
            return Done(reason="malformed spawn: an outline is longer than max_outline_chars", malformed=True)
        leftover = _OUTLINE.sub("", body).strip()
        if leftover:
            return Done(reason=f"malformed spawn: stray text in the outline block: {leftover[:60]!r}",
                        malformed=True)
        children = tuple(
            ChildSpec(label=f"Thread {n}", prompt=f"{full}\n{THREAD_OPEN}\n{n}:") for n in numbers
        )
        return Spawn(children=children, block=full[full.rfind(PARALLEL_OPEN, 0, opened) :])

    def join(self, context: str, text: str, spawn: Spawn, outcomes: list[ChildOutcome]) -> str:
        """The context so far, every thread verbatim in order, then `</Parallel>`."""
        parts = [context, text]
        for number, outcome in enumerate(outcomes, start=1):
            body = outcome.result if outcome.status == "done" and outcome.result is not None else None
            if body is None:
                why = outcome.reason or outcome.status
                body = f" [thread not run to completion: {why}]"
            if not body.endswith(THREAD_CLOSE):
                body += THREAD_CLOSE
            parts.append(f"\n{THREAD_OPEN}\n{number}:{body}")
        parts.append(f"\n{PARALLEL_CLOSE}\n")
        return "".join(parts)


def _in_open_thread(context: str) -> bool:
    return context.rfind(THREAD_OPEN) > context.rfind(THREAD_CLOSE)
