"""A fault-injecting OpenAI-compatible completions and chat server (vLLM's dialect of the protocol) over HTTP.

Endpoints: ``GET /v1/models`` (with vLLM's ``max_model_len``), ``POST /tokenize`` (vLLM's shape, with a
``prompt`` or chat ``messages``), ``POST /v1/completions`` and ``POST /v1/chat/completions`` (streaming SSE or
one JSON body) served by `ToyModel`. Like vLLM it holds back the last ``len(longest stop) - 1`` characters
while streaming, trims the matched stop, reports it in ``stop_reason`` (and in ``matched_stop`` with
``flavor="sglang"``), sends usage when asked through ``stream_options`` and rejects prompt + max_tokens beyond
the context window with HTTP 400.

The chat endpoint renders messages with `render_chat` (the tiny vLLM test model's template:
``<|role|>\ncontent</s>\n`` per message, then ``<|assistant|>\n``) and, like vLLM, honours
``continue_final_message`` (the last message is left open: no end marker, no generation prompt) and
``add_generation_prompt``. Each request's rendered prompt is recorded in ``requests[i]["prompt"]``.

Faults are queued on `FaultServer.faults`; each completions or chat request takes the next one:

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

CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"


def render_chat(
    messages: list[dict[str, Any]],
    *,
    add_generation_prompt: bool = True,
    continue_final_message: bool = False,
) -> str:
    """The prompt the chat endpoint generates from (the tiny test model's chat template)."""
    parts = [f"<|{m['role']}|>\n{m['content']}</s>\n" for m in messages]
    if continue_final_message and parts:
        parts[-1] = parts[-1].removesuffix("</s>\n")
    elif add_generation_prompt:
        parts.append("<|assistant|>\n")
    return "".join(parts)


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
            if owner.tokenize_faults:
                status = owner.tokenize_faults.popleft()
                self.send_json(status, _error(f"injected {status}", status))
                return
            text = _chat_prompt(body) if "messages" in body else body.get("prompt", "")
            ids = owner.vocab_ids(text or "")
            self.send_json(200, {"count": len(ids), "max_model_len": owner.max_model_len, "tokens": ids})
            return
        if self.path not in (COMPLETIONS_PATH, CHAT_PATH):
            self.send_json(404, {"error": {"message": "Not Found", "type": "NotFoundError", "code": 404}})
            return
        chat = self.path == CHAT_PATH
        prompt = _chat_prompt(body) if chat else body.get("prompt", "")
        owner.requests.append(
            {
                "path": self.path,
                "body": body,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "prompt": prompt,
            }
        )
        if prompt is None:
            message = "Cannot set both `continue_final_message` and `add_generation_prompt` to True."
            self.send_json(400, _error(message, 400, "BadRequestError"))
            return
        fault = owner.faults.popleft() if owner.faults else None
        if fault is not None and fault.kind == "status":
            headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            self.send_json(fault.status, _error(f"injected {fault.status}", fault.status), headers)
            return
        model = body.get("model")
        if model not in owner.models:
            self.send_json(404, _error(f"The model `{model}` does not exist.", 404))
            return
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
            self._stream(body, steps, stop, prompt_tokens, fault, chat)
        else:
            self._whole(body, steps, prompt_tokens, chat)

    def _choice(
        self, text: str, finish: str | None, matched: str | None, chat: bool = False, whole: bool = False
    ) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": None}
        if not chat:
            choice["text"] = text
        elif whole:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["delta"] = {"content": text}
        if finish is not None:
            choice["finish_reason"] = "stop" if finish in ("stop", "eos") else "length"
        choice["stop_reason"] = matched
        if self.owner.flavor == "sglang" and finish is not None:
            choice["matched_stop"] = matched
        return choice

    def _whole(self, body: dict[str, Any], steps: list[Any], prompt_tokens: int, chat: bool = False) -> None:
        last = steps[-1]
        tokens = sum(1 for s in steps if s.token is not None)
        self.send_json(
            200,
            {
                "id": "cmpl-toy",
                "object": "chat.completion" if chat else "text_completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [self._choice(last.text, last.finish, last.matched, chat, whole=True)],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": tokens},
            },
        )

    def _stream(
        self,
        body: dict[str, Any],
        steps: list[Any],
        stop: list[str],
        prompt_tokens: int,
        fault: Fault | None,
        chat: bool = False,
    ) -> None:
        owner = self.owner
        options = body.get("stream_options") or {}
        usage = bool(options.get("include_usage"))
        continuous = usage and bool(options.get("continuous_usage_stats"))
        hold = max((len(s) for s in stop), default=1) - 1
        kind = "chat.completion.chunk" if chat else "text_completion"
        self.start_events()
        if chat:  # vLLM opens a chat stream with the role alone
            role = {
                "index": 0,
                "delta": {"role": "assistant", "content": ""},
                "logprobs": None,
                "finish_reason": None,
            }
            self.send_event(
                {
                    "id": "cmpl-toy",
                    "object": kind,
                    "created": int(time.time()),
                    "model": body["model"],
                    "choices": [role],
                }
            )
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
                "object": kind,
                "created": int(time.time()),
                "model": body["model"],
                "choices": [self._choice(delta, step.finish, step.matched, chat)],
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
                    "object": kind,
                    "created": int(time.time()),
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


def _chat_prompt(body: dict[str, Any]) -> str | None:
    """The rendered prompt of a chat request (None: contradictory template options, a 400 on vLLM)."""
    continue_final = bool(body.get("continue_final_message", False))
    generation_prompt = bool(body.get("add_generation_prompt", True))
    if continue_final and generation_prompt:
        return None
    return render_chat(
        body.get("messages") or [],
        add_generation_prompt=generation_prompt,
        continue_final_message=continue_final,
    )


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
        self.tokenize_faults: collections.deque[int] = collections.deque()
        """Statuses the next ``/tokenize`` requests fail with, one each."""

    def vocab_ids(self, text: str) -> list[int]:
        return [hash(t) % 50000 for t in tokenize(text)]

    def completions(self) -> list[dict[str, Any]]:
        """Bodies of the completion requests received."""
        return [r["body"] for r in self.requests if r["path"] == COMPLETIONS_PATH]

    def chats(self) -> list[dict[str, Any]]:
        """Bodies of the chat completion requests received."""
        return [r["body"] for r in self.requests if r["path"] == CHAT_PATH]

    def prompts(self) -> list[str]:
        """The prompt of every completion and chat request, as the model saw it (chat: rendered)."""
        return [r["prompt"] for r in self.requests]
