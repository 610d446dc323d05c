"""A test server for SGLang's native ``/generate`` protocol, written from SGLang's documentation.

It is not SGLang (which needs a GPU); it speaks the same wire format over real HTTP:

* Request: ``text`` or ``input_ids``; ``sampling_params`` {``max_new_tokens``, ``stop``, ``ignore_eos``, ...};
  ``stream``; ``return_logprob``; ``rid``.
* Response: ``text`` (cumulative while streaming), ``output_ids``, ``meta_info`` {``id``, ``finish_reason``
  (null until the end, then {``type``: stop|length|abort, ``matched``}), ``prompt_tokens``,
  ``completion_tokens``, ``cached_tokens``, and ``output_token_logprobs`` when asked}. Streams end with
  ``data: [DONE]``.
* Like SGLang it streams each token as decoded, so a partial stop string can appear in one event and be gone
  from the final (trimmed) text: clients must hold back text that may start a stop string.
* ``cached_tokens`` imitates the radix cache: the longest token prefix shared with an earlier prompt.
* End-of-sequence is reported as ``{"type": "stop", "matched": <eos token id>}``, as SGLang does.

``faults`` takes the same `Fault` objects as the completions server (drop, truncate, stall, status, garbage).
"""

from __future__ import annotations

import collections
import math
import time
from typing import Any

from tests.servers._http import Handler, ServerThread
from tests.servers.fault_openai import Fault
from tests.servers.toy_model import ToyModel, Vocab


class _GenerateHandler(Handler):
    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/get_model_info":
            self.send_json(200, {"model_path": "toy", "tokenizer_path": "toy", "is_generation": True})
        elif self.path == "/v1/models":
            owner: SGLangServer = self.server.owner
            self.send_json(
                200,
                {
                    "object": "list",
                    "data": [
                        {
                            "id": "toy",
                            "object": "model",
                            "owned_by": "sglang",
                            "max_model_len": owner.context_length,
                        }
                    ],
                },
            )
        elif self.path == "/health":
            self.send_json(200, {})
        else:
            self.send_json(404, {"detail": "Not Found"})

    def do_POST(self) -> None:  # noqa: N802
        owner: SGLangServer = self.server.owner
        body = self.read_json()
        if self.path != "/generate":
            self.send_json(404, {"detail": "Not Found"})
            return
        owner.requests.append(body)
        fault = owner.faults.popleft() if owner.faults else None
        if fault is not None and fault.kind == "status":
            headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            self.send_json(fault.status, {"error": {"message": f"injected {fault.status}"}}, headers)
            return
        if "input_ids" in body:
            ids = list(body["input_ids"])
            prompt = owner.vocab.decode(ids)
        else:
            prompt = body.get("text", "")
            ids = owner.vocab.encode(prompt)
        params = body.get("sampling_params") or {}
        max_new = params.get("max_new_tokens") or 128
        if len(ids) + max_new > owner.context_length:
            self.send_json(
                400,
                {
                    "error": {
                        "message": (
                            f"Requested token count exceeds the model's maximum context length of {owner.context_length} "
                            f"tokens. You requested a total of {len(ids) + max_new} tokens: {len(ids)} tokens from the input "
                            f"messages and {max_new} tokens for the completion."
                        )
                    }
                },
            )
            return
        cached = owner.cache_lookup(ids)
        stop = params.get("stop") or []
        stop = [stop] if isinstance(stop, str) else list(stop)
        steps = list(owner.model.generate(prompt, max_new, stop, ignore_eos=bool(params.get("ignore_eos"))))
        rid = body.get("rid") or f"rid-{len(owner.requests)}"
        meta = {"id": rid, "prompt_tokens": len(ids), "cached_tokens": cached}
        logprob = bool(body.get("return_logprob"))
        if body.get("stream"):
            self._stream(steps, meta, logprob, fault, owner)
        else:
            self.send_json(200, self._message(steps[-1], steps, len(steps), meta, logprob, owner))

    def _message(
        self, step: Any, steps: list[Any], upto: int, meta: dict[str, Any], logprob: bool, owner: SGLangServer
    ) -> dict[str, Any]:
        done = [s for s in steps[:upto] if s.token is not None]
        out_ids = [owner.vocab.id(s.token) for s in done]
        info = dict(meta, completion_tokens=len(done), finish_reason=None)
        if step.finish == "eos":
            info["finish_reason"] = {"type": "stop", "matched": Vocab.EOS_ID}
        elif step.finish == "stop":
            info["finish_reason"] = {"type": "stop", "matched": step.matched}
        elif step.finish == "length":
            info["finish_reason"] = {"type": "length", "length": len(done)}
        if logprob:
            info["output_token_logprobs"] = [[math.log(0.5), i, None] for i in out_ids]
        return {"text": step.text, "output_ids": out_ids, "meta_info": info}

    def _stream(
        self, steps: list[Any], meta: dict[str, Any], logprob: bool, fault: Fault | None, owner: SGLangServer
    ) -> None:
        self.start_events()
        for n, step in enumerate(steps, 1):
            if fault is not None and n > fault.after and self._inject(fault):
                return
            if step.finish is None and n % owner.stream_interval:
                continue
            self.send_event(self._message(step, steps, n, meta, logprob, owner))
            if owner.chunk_delay:
                time.sleep(owner.chunk_delay)
        self.end_events()

    def _inject(self, fault: Fault) -> bool:
        if fault.kind == "drop":
            self.drop()
        elif fault.kind == "truncate":
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
            self.close_connection = True
        elif fault.kind == "stall":
            self.wait(fault.seconds)
            self.drop()
        elif fault.kind == "garbage":
            self.send_chunk(b'data: {"text": "oops\n\n')
            self.wfile.write(b"0\r\n\r\n")
        else:
            return False
        return True


class SGLangServer(ServerThread):
    """The ``/generate`` test server.

    Args:
        context_length: Context window in tokens.
        eos_every: The toy model's end-of-sequence rate (0: never).
        stream_interval: Tokens per streamed event (SGLang's ``--stream-interval``).
        chunk_delay: Seconds between events.
        port: Port to bind (0: a free one).
    """

    def __init__(
        self,
        *,
        context_length: int = 4096,
        eos_every: int = 0,
        stream_interval: int = 1,
        chunk_delay: float = 0.0,
        port: int = 0,
    ) -> None:
        super().__init__(_GenerateHandler, port)
        self.context_length = context_length
        self.model = ToyModel(eos_every)
        self.vocab = Vocab()
        self.stream_interval = stream_interval
        self.chunk_delay = chunk_delay
        self.faults: collections.deque[Fault] = collections.deque()
        self.requests: list[dict[str, Any]] = []
        self._seen: list[list[int]] = []

    def cache_lookup(self, ids: list[int]) -> int:
        """Longest prefix of `ids` shared with an earlier prompt (then remember `ids`)."""
        best = 0
        for old in self._seen:
            n = 0
            for a, b in zip(old, ids, strict=False):
                if a != b:
                    break
                n += 1
            best = max(best, n)
        self._seen.append(ids)
        return best
