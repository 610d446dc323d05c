"""The `prompted` dialect: spawn/join for instruction models that were never trained to spawn.

A system prompt teaches a small tag protocol. The model delegates with::

    <spawn>
    <task>first independent sub-task</task>
    <task>second independent sub-task</task>
    </spawn>

and generation stops at `</spawn>`. Each child is a fresh conversation holding only its task (or, with
`child_context="shared"`, the parent's problem too) and answers inside `<answer>...</answer>`. The parent
then reads::

    <join>
    <result task="1">...</result>
    <result task="2">...</result>
    </join>

either appended to its own open assistant message (`continuation="continue"`: vLLM and SGLang continue it
with `continue_final_message`) or as a new user turn (`continuation="user_turn"`: any chat API). Contexts are
ChatML text (`spawnjoin.conversation`); chat backends turn them back into messages.
"""

from __future__ import annotations

import re
from typing import Literal

from spawnjoin.budget import Budget
from spawnjoin.conversation import IM_END, IM_START, ChatMessage, is_chatml, parse_chatml, render_chatml
from spawnjoin.dialects.base import ChildOutcome, ChildSpec, Dialect, Done, Spawn

__all__ = ["PromptedDialect", "DEFAULT_SYSTEM_PROMPT", "DEFAULT_CHILD_SYSTEM_PROMPT"]

DEFAULT_SYSTEM_PROMPT = """\
You can split work into independent sub-tasks that run in parallel.
To delegate, write exactly:
<spawn>
<task>a complete, self-contained description of sub-task 1</task>
<task>a complete, self-contained description of sub-task 2</task>
</spawn>
and stop writing. Each task is solved by a helper who sees only that task. You will then receive:
<join>
<result task="1">the helper's answer</result>
...
</join>
Use the results to continue. Delegate only when sub-tasks are independent; at most {max_tasks} tasks at once.
When you are done, give the final answer inside <answer>...</answer>."""

DEFAULT_CHILD_SYSTEM_PROMPT = """\
Solve the task you are given. Be concise. Give your final answer inside <answer>...</answer>."""

SPAWN_OPEN, SPAWN_CLOSE = "<spawn>", "</spawn>"
_TASK = re.compile(r"<task>(.*?)</task>", re.DOTALL)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def _clean(text: str) -> str:
    """Text from one conversation made safe to place in another (no ChatML markers)."""
    return text.replace(IM_START, "<im_start>").replace(IM_END, "<im_end>")


class PromptedDialect(Dialect):
    """Spawn/join through a system prompt and tags, over chat completions.

    Args:
        system_prompt: The parent's system prompt (`{max_tasks}` is filled in). Defaults to
            `DEFAULT_SYSTEM_PROMPT`.
        child_system_prompt: Children's system prompt. Children may spawn too when `nested` is True (they
            then get the parent's system prompt instead).
        child_context: `task` (only the task) or `shared` (the parent's problem, then the task).
        continuation: `continue` (append the join to the open assistant message) or `user_turn`.
        max_tasks: The number of tasks the system prompt allows; more run only as far as the `Budget`
            allows (the rest are reported "not run"), and over 4x this the block is malformed (a runaway).
        max_task_chars: A task longer than this makes the block malformed.
        max_result_chars: A child's result is cut to this many characters in the join.
        nested: Whether children may spawn (they get the parent's system prompt).
    """

    name = "prompted"
    shares_prefix = False

    def __init__(
        self,
        *,
        system_prompt: str | None = None,
        child_system_prompt: str | None = None,
        child_context: Literal["task", "shared"] = "task",
        continuation: Literal["continue", "user_turn"] = "user_turn",
        max_tasks: int = 8,
        max_task_chars: int = 4000,
        max_result_chars: int = 4000,
        nested: bool = False,
    ) -> None:
        self.system_prompt = (system_prompt or DEFAULT_SYSTEM_PROMPT).replace("{max_tasks}", str(max_tasks))
        self.child_system_prompt = child_system_prompt or DEFAULT_CHILD_SYSTEM_PROMPT
        self.child_context = child_context
        self.continuation = continuation
        self.max_tasks = max_tasks
        self.max_task_chars = max_task_chars
        self.max_result_chars = max_result_chars
        self.nested = nested

    def stop_strings(self, context: str) -> tuple[str, ...]:
        """Every thread stops at `</spawn>`."""
        return (SPAWN_CLOSE,)

    def root_prompt(self, prompt: str, budget: Budget | None = None) -> str:
        """System prompt + the user's prompt + an open assistant message (ChatML prompts pass through)."""
        if is_chatml(prompt):
            return prompt
        return render_chatml(
            [ChatMessage(role="system", content=self.system_prompt), ChatMessage(role="user", content=prompt)]
        )

    def _may_spawn(self, context: str) -> bool:
        return self.nested or context.startswith(f"{IM_START}system\n{self.system_prompt}{IM_END}")

    def after_call(self, context: str, text: str, finish_reason: str) -> Spawn | Done:
        """`</spawn>` ends a spawn block; its `<task>`s become children."""
        if not text.endswith(SPAWN_CLOSE):
            return Done(reason=None if finish_reason in ("eos", "stop") else f"stopped: {finish_reason}")
        if not self._may_spawn(context):
            return Done(reason="malformed spawn: this thread may not spawn (nested=False)", malformed=True)
        start = text.rfind(SPAWN_OPEN)
        if start < 0:
            return Done(reason=f"malformed spawn: {SPAWN_CLOSE} without {SPAWN_OPEN}", malformed=True)
        body = text[start + len(SPAWN_OPEN) : -len(SPAWN_CLOSE)]
        if SPAWN_OPEN in body:
            return Done(reason="malformed spawn: nested <spawn> blocks", malformed=True)
        tasks = [t.strip() for t in _TASK.findall(body)]
        if not tasks:
            return Done(reason="malformed spawn: the <spawn> block holds no <task>", malformed=True)
        if len(tasks) > 4 * self.max_tasks:
            return Done(reason=f"malformed spawn: {len(tasks)} tasks, more than 4 x max_tasks={self.max_tasks}",
                        malformed=True)
        if any(not t or len(t) > self.max_task_chars for t in tasks):
            return Done(reason="malformed spawn: an empty task or one longer than max_task_chars", malformed=True)
        if _TASK.sub("", body).strip():
            return Done(reason="malformed spawn: text between <task> entries", malformed=True)
        problem = _first_user_message(context)
        children = []
        for i, task in enumerate(tasks, start=1):
            content = _clean(task)
            if self.child_context == "shared" and problem:
                content = f"Overall problem:\n{_clean(problem)}\n\nYour sub-task:\n{content}"
            system = self.system_prompt if self.nested else self.child_system_prompt
            messages = [ChatMessage(role="system", content=system), ChatMessage(role="user", content=content)]
            children.append(ChildSpec(label=f"task {i}", prompt=render_chatml(messages)))
        return Spawn(children=tuple(children), block=text[start:])

    def join(self, context: str, text: str, spawn: Spawn, outcomes: list[ChildOutcome]) -> str:
        """The `<join>` block, appended to the open message or sent as a user turn."""
        lines = ["<join>"]
        for n, outcome in enumerate(outcomes, start=1):
            if outcome.status == "done":
                body = outcome.result or ""
            elif outcome.status == "skipped":
                body = f"not run: {outcome.reason or 'budget exhausted'}; do this part yourself"
            else:
                body = f"the helper {outcome.status}: {outcome.reason or 'no reason given'}"
            lines.append(f'<result task="{n}">{_clean(body)}</result>')
        lines.append("</join>")
        block = "\n".join(lines)
        if self.continuation == "continue":
            return f"{context}{text}\n{block}\n"
        messages, _ = parse_chatml(context + text)
        messages.append(ChatMessage(role="user", content=f"{block}\nContinue."))
        return render_chatml(messages)

    def child_result(self, text: str) -> str | None:
        """The child's `<answer>` (or its whole last message, cut to `max_result_chars`)."""
        return _answer(_last_assistant(text))[: self.max_result_chars]

    def answer(self, text: str) -> str | None:
        """The root's final `<answer>`, else its last assistant message."""
        return _answer(_last_assistant(text)) or None


def _first_user_message(context: str) -> str:
    messages, _ = parse_chatml(context) if is_chatml(context) else ([], False)
    return next((m.content for m in messages if m.role == "user"), "")


def _last_assistant(text: str) -> str:
    """The text after the last assistant header (or all of it)."""
    marker = f"{IM_START}assistant\n"
    at = text.rfind(marker)
    tail = text[at + len(marker) :] if at >= 0 else text
    return tail.removesuffix(IM_END).strip()


def _answer(text: str) -> str:
    found = _ANSWER.findall(text)
    return found[-1].strip() if found else text.strip()
