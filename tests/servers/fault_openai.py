"""A fault-injecting OpenAI-compatible completions server (vLLM's dialect of the protocol) over real HTTP.

Endpoints: ``GET /v1/models`` (with vLLM's ``max_model_len``), ``POST /tokenize`` (vLLM's shape) and
``POST /v1/completions`` (streaming SSE or one JSON body) served by `ToyModel`. Like vLLM it holds back the
last ``len(longest stop) - 1`` characters while streaming, trims the matched stop, reports it in
``stop_reason`` (and in ``matched_stop`` with ``flavor="sglang"``), sends usage when asked through
``stream_options`` and rejects prompt + max_tokens beyond the context window with HTTP 400.

Faults are queued on `FaultServer.faults`; each completions request takes the next one:

* ``Fault("drop", after=n)``: n token events, then the connection is cut mid-body.
* ``Fault("truncate", after=n)``: n token events, then a clean end of body without a finish or ``[DONE]``.
* ``Fault("stall", after=n, seconds=s)``: n token events, then silence for s seconds, then the connection is cut.
* ``Fault("status", status=429, retry_after="1")``: an HTTP error before any event (429, 500, 503, ...).
* ``Fault("garbage", after=n)``: n token events, then an event whose data is not JSON.
* ``Fault("error_event", after=n)``: n token events, then ``data: {"error": ...}`` as vLLM sends on engine errors.

Connection refused is simulated by stopping the server and starting it again on the same port.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass
from typing import Any

from tests.servers._http import Handler, ServerThread
from tests.servers.toy_model import ToyModel, tokenize


@dataclass
class Fault:
    """One injected failure (see the module docstring)."""

    kind: str
    after: int = 0
    status: int = 500
    retry_after: str | None = None
    seconds: float = 0.0


class _CompletionsHandler(Handler):
    @property
    def owner(self) -> FaultServer:
        return self.server.owner

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        owner = self.owner
        if self.path.rstrip("/") == "/v1/models":
            models = [
                {"id": m, "object": "model", "owned_by": owner.flavor, "max_model_len": owner.max_model_len}
                for m in owner.models
            ]
            self.send_json(200, {"object": "list", "data": models})
        else:
            self.send_json(404, {"error": {"message": "Not Found", "type": "NotFoundError", "code": 404}})

    def do_POST(self) -> None:  # noqa: N802
        body = self.read_json()
        owner = self.owner
        if self.path == "/tokenize" and owner.tokenize:
            ids = owner.vocab_ids(body.get("prompt", ""))
            self.send_json(200, {"count": len(ids), "max_model_len": owner.max_model_len, "tokens": ids})
            return
        if self.path != "/v1/completions":
            self.send_json(404, {"error": {"message": "Not Found", "type": "NotFoundError", "code": 404}})
            return
        owner.requests.append({"body": body, "headers": {k.lower(): v for k, v in self.headers.items()}})
        fault = owner.faults.popleft() if owner.faults else None
        if fault is not None and fault.kind == "status":
            headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            self.send_json(fault.status, _error(f"injected {fault.status}", fault.status), headers)
            return
        model = body.get("model")
        if model not in owner.models:
            self.send_json(404, _error(f"The model `{model}` does not exist.", 404))
            return
        prompt = body.get("prompt", "")
        prompt_tokens = len(tokenize(prompt))
        max_tokens = body.get("max_tokens") or 16
        if prompt_tokens + max_tokens > owner.max_model_len:
            message = (
                f"This model's maximum context length is {owner.max_model_len} tokens. However, you requested "
                f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the messages, {max_tokens} in the "
                "completion). Please reduce the length of the messages or completion."
            )
            self.send_json(400, _error(message, 400, "BadRequestError"))
            return
        stop = body.get("stop") or []
        stop = [stop] if isinstance(stop, str) else list(stop)
        steps = list(owner.model.generate(prompt, max_tokens, stop, ignore_eos=bool(body.get("ignore_eos"))))
        if body.get("stream"):
            self._stream(body, steps, stop, prompt_tokens, fault)
        else:
            self._whole(body, steps, prompt_tokens)

    def _choice(self, text: str, finish: str | None, matched: str | None) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "text": text, "logprobs": None, "finish_reason": None}
        if finish is not None:
            choice["finish_reason"] = "stop" if finish in ("stop", "eos") else "length"
        choice["stop_reason"] = matched
        if self.owner.flavor == "sglang" and finish is not None:
            choice["matched_stop"] = matched
        return choice

    def _whole(self, body: dict[str, Any], steps: list[Any], prompt_tokens: int) -> None:
        last = steps[-1]
        tokens = sum(1 for s in steps if s.token is not None)
        self.send_json(
            200,
            {
                "id": "cmpl-toy",
                "object": "text_completion",
                "model": body["model"],
                "choices": [self._choice(last.text, last.finish, last.matched)],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": tokens},
            },
        )

    def _stream(
        self, body: dict[str, Any], steps: list[Any], stop: list[str], prompt_tokens: int, fault: Fault | None
    ) -> None:
        owner = self.owner
        options = body.get("stream_options") or {}
        usage = bool(options.get("include_usage"))
        continuous = usage and bool(options.get("continuous_usage_stats"))
        hold = max((len(s) for s in stop), default=1) - 1
        self.start_events()
        sent = 0
        tokens = 0
        for step in steps:
            if fault is not None and tokens >= fault.after and self._inject(fault):
                return
            if step.token is not None:
                tokens += 1
            final = step.finish is not None
            upto = len(step.text) if final else max(sent, len(step.text) - hold)
            delta, sent = step.text[sent:upto], upto
            if not delta and not final:
                continue
            event: dict[str, Any] = {
                "id": "cmpl-toy",
                "object": "text_completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [self._choice(delta, step.finish, step.matched)],
            }
            if continuous:
                event["usage"] = {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": tokens,
                    "total_tokens": prompt_tokens + tokens,
                }
            self.send_event(event)
            if owner.chunk_delay:
                time.sleep(owner.chunk_delay)
        if usage:
            self.send_event(
                {
                    "id": "cmpl-toy",
                    "object": "text_completion",
                    "model": body["model"],
                    "choices": [],
                    "usage": {
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": tokens,
                        "total_tokens": prompt_tokens + tokens,
                    },
                }
            )
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
            self.send_chunk(b'data: {"choices": [{"text": "oops\n\n')
            self.wfile.write(b"0\r\n\r\n")
        elif fault.kind == "error_event":
            self.send_event(
                {"error": {"message": "injected engine error", "type": "InternalServerError", "code": 500}}
            )
            self.end_events()
        else:
            return False
        return True


def _error(message: str, code: int, kind: str = "Error") -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


class FaultServer(ServerThread):
    """The fault-injecting completions server.

    Args:
        models: Served model names.
        max_model_len: Context window in tokens.
        flavor: ``"vllm"`` (``stop_reason`` only) or ``"sglang"`` (adds ``matched_stop``); also ``owned_by``.
        eos_every: The toy model's end-of-sequence rate (0: never).
        chunk_delay: Seconds between events.
        port: Port to bind (0: a free one).
    """

    def __init__(
        self,
        models: tuple[str, ...] = ("toy",),
        *,
        max_model_len: int = 4096,
        flavor: str = "vllm",
        eos_every: int = 0,
        chunk_delay: float = 0.0,
        port: int = 0,
    ) -> None:
        super().__init__(_CompletionsHandler, port)
        self.models = list(models)
        self.max_model_len = max_model_len
        self.flavor = flavor
        self.model = ToyModel(eos_every)
        self.chunk_delay = chunk_delay
        self.faults: collections.deque[Fault] = collections.deque()
        self.requests: list[dict[str, Any]] = []
        self.tokenize = True
        """Serve vLLM's ``/tokenize`` (False: 404, as a hosted API)."""

    def vocab_ids(self, text: str) -> list[int]:
        return [hash(t) % 50000 for t in tokenize(text)]

    def completions(self) -> list[dict[str, Any]]:
        """Bodies of the completion requests received."""
        return [r["body"] for r in self.requests]
