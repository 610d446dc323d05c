"""Adaptive parallel reasoning with a chat model: `OpenAIChat` + the prompted dialect, on any chat endpoint.

What it shows:

* `OpenAIChat(base_url, model, api_key)` talks to any OpenAI-compatible ``/v1/chat/completions`` endpoint: a
  hosted API, or vLLM / SGLang serving an instruction model.
* `PromptedDialect` teaches an instruction model that was never trained to spawn a small tag protocol through
  its system prompt: it delegates independent sub-tasks in a ``<spawn><task>...</task></spawn>`` block,
  each task runs as a child thread (in parallel), and the results come back in a ``<join>`` block.
* ``--continuation user_turn`` (the default) hands the ``<join>`` back as a new user turn, which every chat API
  accepts. ``--continuation continue`` appends it to the model's own open message instead, which needs
  ``continue_final_message`` (vLLM and SGLang have it; hosted APIs do not, and `OpenAIChat` then raises a
  `ConfigError` saying to use ``user_turn``).

Configuration, from the environment:

    SPAWNJOIN_CHAT_BASE_URL   the endpoint, e.g. https://api.openai.com/v1 or http://127.0.0.1:8000/v1
    SPAWNJOIN_CHAT_MODEL      the model name (optional for a local server that serves one model)
    SPAWNJOIN_CHAT_API_KEY    the API key (optional for a local server)

Run it:  SPAWNJOIN_CHAT_BASE_URL=https://api.openai.com/v1 SPAWNJOIN_CHAT_MODEL=gpt-4o-mini \\
         SPAWNJOIN_CHAT_API_KEY=sk-... python examples/chat_endpoint.py

Expected behaviour:

* No ``SPAWNJOIN_CHAT_BASE_URL``: it prints ``skipped: no chat endpoint configured ...`` and exits 0.
* A capable instruction model: ``backend: OpenAIChat(...)`` (the key shown as its last four characters), then
  the thread tree, typically ``root`` with two children (one per product) that are ``done``, its totals,
  ``answer: 809`` and ``status done · threads 3 · spawns 1 · total tokens ...``. Models differ: one
  that prefers to do the arithmetic itself shows a single ``root`` thread and the line
  ``no spawn: the model answered without delegating``; the answer should still be 809.
* A random test model (the vLLM CPU server of ``.ci/vllm.sh``) writes no tags: one root thread that stops
  at ``--max-tokens-per-call``, its text as the "answer", and the no-spawn line.
* Exit status 0 when the solve finished (``status done``), 1 otherwise (failed, deadline, cancelled); an
  unreachable endpoint ends as ``status failed`` and ``error: ConnectError: cannot reach ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from rich.console import Console

import spawnjoin
from spawnjoin import Budget
from spawnjoin.backends.openai_chat import OpenAIChat
from spawnjoin.dialects import PromptedDialect
from spawnjoin.view import print_trace

QUESTION = (
    "Compute 17 * 23 and 19 * 22 separately, then add the two products. "
    "What is 17 * 23 + 19 * 22? (The two products are independent sub-tasks.)"
)


async def run(args: argparse.Namespace, base_url: str) -> int:
    budget = Budget(
        max_threads=8,
        max_depth=1,  # children answer; they do not delegate further
        max_tokens_per_call=args.max_tokens_per_call,
        deadline=args.deadline,  # seconds for the whole solve; a partial tree comes back after it
    )
    dialect = PromptedDialect(continuation=args.continuation, max_tasks=3)
    backend = OpenAIChat(
        base_url,
        os.environ.get("SPAWNJOIN_CHAT_MODEL") or None,  # None: the only model the server serves
        os.environ.get("SPAWNJOIN_CHAT_API_KEY") or None,
        max_concurrency=4,  # children run in parallel, within a polite cap for hosted APIs
    )
    async with backend:  # closes connections at the end
        print(f"backend: {backend!r}")
        result = await spawnjoin.solve(args.question, backend=backend, dialect=dialect, budget=budget)
    print_trace(result.trace, Console(width=110, color_system=None, soft_wrap=True))
    m = result.metrics  # print_trace has shown the tree, its totals and the answer
    print(f"status {result.status} · threads {m.threads} · spawns {m.spawns} · total tokens {m.total_tokens} · "
          f"sequential {m.sequential_tokens}")
    if result.error:
        print(f"error: {result.error}")
    if m.spawns == 0 and result.status == "done":
        print("no spawn: the model answered without delegating (a random test model never delegates)")
    return 0 if result.status == "done" else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--question", default=QUESTION)
    parser.add_argument("--continuation", choices=("user_turn", "continue"), default="user_turn",
                        help="how results return: a new user turn (any API) or the open message (vLLM, SGLang)")
    parser.add_argument("--max-tokens-per-call", type=int, default=512)
    parser.add_argument("--deadline", type=float, default=180.0)
    args = parser.parse_args()

    base_url = os.environ.get("SPAWNJOIN_CHAT_BASE_URL")
    if not base_url:
        print("skipped: no chat endpoint configured; set SPAWNJOIN_CHAT_BASE_URL (and SPAWNJOIN_CHAT_MODEL, "
              "SPAWNJOIN_CHAT_API_KEY for a hosted API) to run this example")
        return 0
    return asyncio.run(run(args, base_url))


if __name__ == "__main__":
    sys.exit(main())
