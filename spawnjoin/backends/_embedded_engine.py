"""One transformers continuous-batching engine and the bridge from its thread to asyncio.

transformers runs continuous batching in a background thread (`ContinuousBatchingManager`). Every output
of every request lands on one thread-safe queue; a dispatcher thread here drains it and hands each output
to its request's `Mailbox` on the request's own event loop, one `call_soon_threadsafe` per loop per drain.
A mailbox keeps only the latest output: outputs are cumulative (all tokens so far), so a slow consumer
skips intermediate ones instead of queueing them.

The manager's own `request_id_iter` polls the shared queue and puts back outputs of other requests, and its
`register_result_handler` runs every handler on the event loop of the last registered one and never
unregisters cancelled requests; the dispatcher avoids both.

Only this module and `embedded.py` import torch/transformers, and only when a backend is built.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import threading
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["Engine", "Mailbox", "EngineClosed", "EngineDied"]

logger = logging.getLogger("spawnjoin.backends.embedded")

# How long the dispatcher blocks on the output queue before checking whether it should stop (seconds).
_POLL_SECONDS = 0.05
# How long closing waits for the engine thread to finish (seconds).
_STOP_TIMEOUT = 30.0

_live_engines: weakref.WeakSet[Engine] = weakref.WeakSet()
_exit_hook_installed = False
_exit_hook_lock = threading.Lock()


class EngineClosed(Exception):
    """Delivered to a mailbox when its engine was closed before the request finished."""


class EngineDied(Exception):
    """Delivered to a mailbox when its engine thread stopped without being asked to."""


class Mailbox:
    """The loop-side end of one request: the latest engine output, and an event to wait on.

    Created, read and written only on the event loop that owns it (the dispatcher posts with
    `call_soon_threadsafe`).
    """

    __slots__ = ("engine_id", "loop", "_event", "_latest", "_closed")

    def __init__(self, engine_id: str, loop: asyncio.AbstractEventLoop) -> None:
        self.engine_id = engine_id
        self.loop = loop
        self._event = asyncio.Event()
        self._latest: Any = None
        self._closed: BaseException | None = None

    def post(self, output: Any) -> None:
        """Store an engine output (called on the owning loop)."""
        self._latest = output
        self._event.set()

    def close(self, error: BaseException) -> None:
        """End the mailbox with `error` (called on the owning loop)."""
        self._closed = error
        self._event.set()

    async def get(self) -> Any:
        """Wait for an output newer than the last one returned; raise the close error, if closed."""
        while self._latest is None:
            if self._closed is not None:
                raise self._closed
            self._event.clear()
            await self._event.wait()
        output, self._latest = self._latest, None
        return output


class Engine:
    """A continuous-batching manager over a shared model, with its dispatcher thread.

    All methods except `submit`, `cancel` and `release` block and belong in a worker thread.

    Args:
        model: A loaded transformers causal LM (shared by every engine of a backend).
        generation_config: The engine-wide `GenerationConfig` (greedy or sampling).
        cb_config: The `ContinuousBatchingConfig`.
        label: A name for logs and thread names.
    """

    def __init__(self, model: Any, generation_config: Any, cb_config: Any, label: str) -> None:
        self._model = model
        self._generation_config = generation_config
        self._cb_config = cb_config
        self.label = label
        self._cm: Any = None
        self._manager: Any = None
        self._mailboxes: dict[str, Mailbox] = {}
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._dispatcher: threading.Thread | None = None
        self._cached: dict[str, int] | None = None
        self._probed_cache: Any = None
        self.prefix_sharing = False

    # -- lifecycle (worker thread) ---------------------------------------------------------------

    def start(self) -> None:
        """Start the engine thread and the dispatcher (blocking)."""
        self._cm = self._model.continuous_batching_context_manager(
            generation_config=self._generation_config,
            continuous_batching_config=self._cb_config,
            block=True,
            timeout=_STOP_TIMEOUT,
        )
        self._manager = self._cm.__enter__()
        self._install_prefix_probe()
        self._dispatcher = threading.Thread(
            target=self._dispatch, name=f"spawnjoin-embedded-{self.label}", daemon=True
        )
        self._dispatcher.start()
        _register(self)

    def close(self) -> None:
        """Cancel what is in flight, stop the engine and the dispatcher (blocking). Safe to call twice."""
        if self._closing.is_set():
            return
        self._closing.set()
        with self._lock:
            in_flight = list(self._mailboxes)
        for engine_id in in_flight:
            self._manager.cancel_request(engine_id)
        # Stopping runs gc.collect() twice over the whole heap (seconds with torch loaded); objects that
        # exist now are alive anyway, so they are set aside while it runs and handed back after.
        gc.freeze()
        try:
            self._cm.__exit__(None, None, None)
        finally:
            gc.unfreeze()
            if self._dispatcher is not None:
                self._dispatcher.join(timeout=_STOP_TIMEOUT)
            self._close_all(EngineClosed(f"the embedded engine ({self.label}) was closed"))
            _live_engines.discard(self)
            self._release_cache()

    def _emergency_stop(self) -> None:
        """Stop at interpreter exit, when the backend was never closed (the engine thread is not a daemon)."""
        if self._manager is not None:
            with contextlib.suppress(Exception):
                self.close()

    def _release_cache(self) -> None:
        """Drop this engine's references to the stopped manager so its KV cache is freed at once.

        The prefix probe is a closure over the cache's own bound method, stored on the cache: a reference cycle
        that only a full garbage collection frees, and full collections are rare in a process with torch's heap.
        A process that builds an engine per step (tree GRPO's rollouts) then kept every step's cache pages
        (192 MiB for the shipped model) until one happened.
        """
        cache, self._probed_cache = self._probed_cache, None
        if cache is not None:
            with contextlib.suppress(AttributeError):
                del cache.search_prefix_match  # the class's method again
        self._manager = None
        self._cm = None

    # -- requests (event loop thread) ------------------------------------------------------------

    def submit(
        self,
        mailbox: Mailbox,
        input_ids: list[int],
        *,
        max_new_tokens: int,
        stop_token_ids: list[int],
        sampling: dict[str, Any],
    ) -> None:
        """Queue a request; its outputs go to `mailbox`. Raises `EngineClosed` if the engine stopped."""
        if self._closing.is_set():
            raise EngineClosed(f"the embedded engine ({self.label}) is closed")
        with self._lock:
            self._mailboxes[mailbox.engine_id] = mailbox
        accepted = self._manager.add_request(
            input_ids,
            request_id=mailbox.engine_id,
            max_new_tokens=max_new_tokens,
            streaming=True,
            eos_token_id=list(stop_token_ids),
            **sampling,
        )
        if accepted is None:
            with self._lock:
                self._mailboxes.pop(mailbox.engine_id, None)
            raise EngineClosed(f"the embedded engine ({self.label}) does not accept requests (it stopped)")

    def cancel(self, engine_id: str) -> None:
        """Stop generating for a request (no more outputs are delivered for it)."""
        with self._lock:
            known = self._mailboxes.pop(engine_id, None) is not None
        if known and not self._closing.is_set():
            self._manager.cancel_request(engine_id)

    def release(self, engine_id: str) -> int | None:
        """Forget a finished request; return the prompt tokens it reused from the prefix cache, if known."""
        with self._lock:
            self._mailboxes.pop(engine_id, None)
        if self._cached is None:
            return None
        return self._cached.pop(engine_id, 0)

    # -- internals -------------------------------------------------------------------------------

    def _install_prefix_probe(self) -> None:
        """Record how many prompt tokens each request reused from shared cache blocks.

        The engine computes this when it schedules a request (`PagedAttentionCache.search_prefix_match`)
        but does not put it in its outputs, so the bound method is wrapped on this engine's cache
        instance. Nothing changes if the internals differ (then `cached_tokens` is reported as None).
        """
        cache = getattr(getattr(self._manager, "batch_processor", None), "cache", None)
        search: Callable[[str, list[int]], int] | None = getattr(cache, "search_prefix_match", None)
        if cache is None or search is None:
            return
        self.prefix_sharing = bool(getattr(cache, "use_prefix_sharing", False))
        if not self.prefix_sharing:
            return
        record: dict[str, int] = {}

        def probe(request_id: str, prompt_ids: list[int]) -> int:
            matched = search(request_id, prompt_ids)
            # The first match counts: a request re-prefilled after eviction matches its own blocks too.
            record.setdefault(request_id, matched)
            return matched

        cache.search_prefix_match = probe
        self._probed_cache = cache
        self._cached = record

    def _dispatch(self) -> None:
        manager = self._manager
        while True:
            output = manager.get_result(timeout=_POLL_SECONDS)
            if output is None:
                if self._closing.is_set() and not manager.is_running():
                    return
                if not manager.is_running() and not self._closing.is_set():
                    self._close_all(EngineDied(f"the embedded engine ({self.label}) stopped unexpectedly"))
                    return
                continue
            batch = [output]
            while (more := manager.get_result(timeout=0)) is not None:
                batch.append(more)
            self._route(batch)

    def _route(self, outputs: list[Any]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Mailbox, Any]]] = {}
        with self._lock:
            for output in outputs:
                mailbox = self._mailboxes.get(output.request_id)
                if mailbox is not None:  # else: cancelled or released already
                    by_loop.setdefault(mailbox.loop, []).append((mailbox, output))
        for loop, items in by_loop.items():
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
                loop.call_soon_threadsafe(_post_all, items)

    def _close_all(self, error: BaseException) -> None:
        with self._lock:
            mailboxes = list(self._mailboxes.values())
            self._mailboxes.clear()
        for mailbox in mailboxes:
            with contextlib.suppress(RuntimeError):
                mailbox.loop.call_soon_threadsafe(mailbox.close, error)


def _post_all(items: list[tuple[Mailbox, Any]]) -> None:
    for mailbox, output in items:
        mailbox.post(output)


def _register(engine: Engine) -> None:
    """Track a live engine so interpreter exit stops it even if the backend was never closed.

    transformers' engine thread is not a daemon, so the interpreter would wait for it forever. Plain
    `atexit` hooks run only after non-daemon threads are joined; `threading._register_atexit` (what
    `concurrent.futures` uses) runs before, so it is preferred when present.
    """
    global _exit_hook_installed
    _live_engines.add(engine)
    with _exit_hook_lock:
        if _exit_hook_installed:
            return
        register = getattr(threading, "_register_atexit", None)
        if register is not None:
            with contextlib.suppress(RuntimeError):  # raised once shutdown has begun
                register(_stop_live_engines)
                _exit_hook_installed = True


def _stop_live_engines() -> None:
    for engine in list(_live_engines):
        engine._emergency_stop()
