"""Point spawnjoin at a served model: vLLM or SGLang (OpenAI-compatible), or SGLang's native `/generate`.

What it shows:

* `OpenAICompletions(base_url, model)` talks to any `/v1/completions` server (vLLM, SGLang, llama.cpp, a
  hosted API); `SGLangBackend(base_url)` to SGLang's native `/generate` (`--sglang`); several `--endpoint`
  flags become one `MultiBackend` (least-loaded endpoint, sibling threads kept on one server for its prefix
  cache, failover).
* The runtime sizes every request's `max_tokens` so that prompt + `max_tokens` fits the server's context
  window (servers reject requests that do not fit), and caps each call with `Budget.max_tokens_per_call`.
* The result: the thread tree, the metrics, and the server's prefix-cache hits when it reports them.

Where the server comes from: `--endpoint URL [--model NAME]`, else `$SPAWNJOIN_VLLM_URL` and
`$SPAWNJOIN_VLLM_MODEL` (what `source .ci/vllm.sh` exports after starting vLLM on this CPU with a tiny random
model). With neither, it prints a skip message and exits 0.

Run it:  vllm serve MODEL --port 8000 --enable-prefix-caching        (on a GPU machine), then
         python examples/endpoint.py --endpoint http://127.0.0.1:8000/v1 --model MODEL
         python examples/endpoint.py --sglang --endpoint http://127.0.0.1:30000    (SGLang native)

Expected output: `backend: ...`, the thread tree (`root done ...`), its totals, then
`status done · threads N · total tokens T · sequential S · max context C`. A model trained to spawn shows
children; a random test model never writes spawn syntax, so its tree is one root thread (`threads 1`) and
the example says so.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from rich.console import Console

import spawnjoin
from spawnjoin import Backend, Budget
from spawnjoin.backends import MultiBackend, OpenAICompletions, SGLangBackend
from spawnjoin.view import print_trace


def make_backend(urls: list[str], model: str | None, sglang: bool) -> Backend:
    """One backend for one URL, a `MultiBackend` over several."""
    if sglang:
        if len(urls) > 1:
            return MultiBackend.from_urls(urls, factory=SGLangBackend)
        return SGLangBackend(urls[0])
    if len(urls) > 1:
        return MultiBackend.from_urls(urls, model=model)
    # model=None asks the server's /v1/models and uses the only model it serves.
    return OpenAICompletions(urls[0], model)


async def run(args: argparse.Namespace, urls: list[str], model: str | None) -> int:
    budget = Budget(
        max_tokens_per_call=args.max_tokens_per_call,  # a random model never stops on its own
        max_threads=16,
        deadline=args.deadline,  # seconds for the whole solve; a partial tree comes back after it
    )
    async with make_backend(urls, model, args.sglang) as backend:  # closes connections at the end
        print(f"backend: {backend!r}")
        result = await spawnjoin.solve(
            args.prompt, backend=backend, dialect=args.dialect, budget=budget, trace_path=args.save
        )
        if isinstance(backend, MultiBackend):
            for e in backend.statistics():  # requests each server took, failures, whether marked down
                print(f"endpoint {e.name}: served {e.served}, failures {e.failures}, down {e.down}")
    print_trace(result.trace, Console(width=110, color_system=None, soft_wrap=True))
    m = result.metrics
    print(f"status {result.status} · threads {m.threads} · total tokens {m.total_tokens} · "
          f"sequential {m.sequential_tokens} · max context {m.max_context}"
          + (f" · cached prompt tokens {m.cached_tokens}" if m.cached_tokens is not None else ""))
    if m.spawns == 0:
        print("no spawn: this model wrote no spawn block (a random test model never does)")
    if args.save:
        print(f"trace saved to {args.save}; view it with: spawnjoin show {args.save} --html trace.html")
    return 0 if result.status == "done" else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", action="append", metavar="URL",
                        help="server base URL (repeat for several servers); default $SPAWNJOIN_VLLM_URL")
    parser.add_argument("--model", help="served model name (default $SPAWNJOIN_VLLM_MODEL, else the only one)")
    parser.add_argument("--sglang", action="store_true", help="use SGLang's native /generate API")
    parser.add_argument("--dialect", choices=("threadweaver", "apr"), default="threadweaver")
    parser.add_argument("--prompt", default="Reach 24 with 4 6 9 3.\n")
    parser.add_argument("--max-tokens-per-call", type=int, default=64)
    parser.add_argument("--deadline", type=float, default=120.0)
    parser.add_argument("--save", metavar="TRACE.json", help="write the trace here")
    args = parser.parse_args()

    urls = args.endpoint or ([os.environ["SPAWNJOIN_VLLM_URL"]] if os.environ.get("SPAWNJOIN_VLLM_URL") else [])
    if not urls:
        print("skipped: no endpoint configured (pass --endpoint URL, or set SPAWNJOIN_VLLM_URL; "
              "`source .ci/vllm.sh` starts vLLM on this CPU and sets it)")
        return 0
    model = args.model or (os.environ.get("SPAWNJOIN_VLLM_MODEL") if not args.endpoint else None)
    return asyncio.run(run(args, urls, model))


if __name__ == "__main__":
    sys.exit(main())
