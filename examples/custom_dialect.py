"""A new spawn/join syntax in about 40 lines: a `<fork>` dialect, run on a scripted model.

What it shows:

* A dialect is a subclass of `spawnjoin.Dialect` answering four questions (stop strings, what a finished
  request means, each child's prompt, the parent's context after the join). It holds no I/O and imports
  nothing from the scheduler.
* The scheduler (`spawnjoin.runtime.Scheduler`) runs it unchanged: budgets, events, the trace and the
  metrics all work for a syntax it has never seen.
* `ScriptedBackend` takes a handler standing in for a model, so the whole example runs in-process.

The syntax. The parent lists sub-questions and ends its call at `</fork>`::

    <fork>
    - France
    - Japan
    </fork>

Each `- item` becomes a child thread that answers in one line. The join lists the answers, one per item,
and the parent continues::

    <join>
    - France: Paris
    - Japan: Tokyo
    </join>

Run it:  python examples/custom_dialect.py

Expected output: the thread tree (a root and three children, all `done`), the root's transcript with its
`<join>` block, `answer: Paris, Tokyo, Lima`, and `threads 4 · spawns 1`.
"""

from __future__ import annotations

import re

from rich.console import Console

import spawnjoin
from spawnjoin import Budget, Dialect
from spawnjoin.backends.base import GenerationRequest
from spawnjoin.backends.scripted import ScriptedBackend
from spawnjoin.dialects.base import ChildOutcome, ChildSpec, Done, Spawn
from spawnjoin.view import print_trace

# -- the dialect: everything spawnjoin needs to know about the syntax ---------------------------------

FORK, END_FORK, CHILD = "<fork>", "</fork>", "Sub-question: "
_ITEM = re.compile(r"^- (.+)$", re.MULTILINE)


class ForkDialect(Dialect):
    """`<fork>` blocks of `- item` lines; each child answers its item in one line."""

    name = "fork"

    def stop_strings(self, context: str) -> tuple[str, ...]:
        # A child's call ends at its first line break; a parent's at the end of a fork block.
        return ("\n",) if context.startswith(CHILD) else (END_FORK,)

    def after_call(self, context: str, text: str, finish_reason: str) -> Spawn | Done:
        if context.startswith(CHILD) or not text.endswith(END_FORK):
            return Done(reason=None if finish_reason in ("eos", "stop") else f"stopped: {finish_reason}")
        start = text.rfind(FORK)
        items = _ITEM.findall(text[start:]) if start >= 0 else []
        if not items:  # malformed output ends the thread with a reason, never an exception
            return Done(reason="malformed fork: no '- item' lines", malformed=True)
        question = context.splitlines()[0]
        children = tuple(ChildSpec(label=item, prompt=f"{CHILD}{item}\n{question}\nAnswer:") for item in items)
        return Spawn(children=children, block=text[start:])

    def join(self, context: str, text: str, spawn: Spawn, outcomes: list[ChildOutcome]) -> str:
        # Every child is reported, in order, also those that failed or that a budget skipped.
        lines = [f"- {o.label}: {o.result if o.status == 'done' and o.result else '(no answer)'}" for o in outcomes]
        return context + text + "\n<join>\n" + "\n".join(lines) + "\n</join>\n"

    def child_result(self, text: str) -> str | None:
        return text.strip() or None

    def answer(self, text: str) -> str | None:
        # The root's answer is its last non-empty line, after "Answer:".
        last = [line for line in text.splitlines() if line.strip()][-1:]
        return last[0].split("Answer:", 1)[-1].strip() if last else None


# -- a handler standing in for a model -----------------------------------------------------------------

CAPITALS = {"France": "Paris", "Japan": "Tokyo", "Peru": "Lima"}


def model(request: GenerationRequest) -> str:
    """Write what a model trained on this syntax would write (the backend applies the stop strings)."""
    prompt = request.prompt
    if prompt.startswith(CHILD):  # a child: answer the item in one line
        item = prompt[len(CHILD) : prompt.index("\n")]
        return f" {CAPITALS.get(item, 'unknown')}\nand some text after the stop, never streamed"
    if "</join>" in prompt:  # the parent after the join: read the answers back
        answers = re.findall(r"^- \w+: (.+)$", prompt, re.MULTILINE)
        return f"All three are known.\nAnswer: {', '.join(answers)}"
    return "I will look each country up separately.\n<fork>\n" + "".join(f"- {c}\n" for c in CAPITALS) + END_FORK


def main() -> None:
    backend = ScriptedBackend(model)
    result = spawnjoin.solve_sync(
        "Question: what are the capitals of France, Japan and Peru?\n",
        backend=backend,
        dialect=ForkDialect(),  # a Dialect instance instead of "apr" or "threadweaver"
        budget=Budget(max_children=8),
    )
    console = Console(width=100, color_system=None, soft_wrap=True)
    print_trace(result.trace, console)
    print("\n--- root transcript ---")
    print(result.text)
    print("--- end ---")
    print(f"answer: {result.answer}")
    print(f"threads {result.metrics.threads} · spawns {result.metrics.spawns} · status {result.status}")
    print(f"backend requests: {len(backend.requests)} (the parent twice, each child once)")


if __name__ == "__main__":
    main()
