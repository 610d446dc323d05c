"""Text helpers of the embedded engine: incremental detokenization and stop-string matching.

Both are pure Python push objects (no torch, no asyncio), fed one token or one text delta at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

__all__ = ["IncrementalDecoder", "StopMatcher"]

# Decoding an incomplete UTF-8 sequence (a byte-level token that ends mid-character) yields U+FFFD.
_REPLACEMENT = "\ufffd"
# Most tokens an incomplete character may stay pending before it is emitted as U+FFFD anyway: a UTF-8
# character has at most four bytes, so longer runs are invalid bytes that will never decode.
_MAX_PENDING_TOKENS = 6


class IncrementalDecoder:
    """Turns a growing list of token ids into text deltas whose concatenation is the decoded text.

    Each step decodes two short windows that start at the same token (`prefix` offset): the tokens already
    emitted from that point, and the same tokens plus the new ones. The delta is the difference of the two.
    Decoding from a shared start keeps decoders that look at neighbours correct (SentencePiece's leading
    space, WordLevel's joining spaces), and waiting while the text ends in U+FFFD keeps a byte-level
    character split across tokens whole. Cost is O(window) per token, not O(length).

    Args:
        decode: Decodes a list of token ids to text (the tokenizer's `decode`, with its options bound).
    """

    def __init__(self, decode: Callable[[list[int]], str]) -> None:
        self._decode = decode
        self._ids: list[int] = []
        self._prefix = 0  # start of the decoding window
        self._read = 0  # tokens before this have been emitted as text

    def push(self, token_id: int) -> str:
        """Add one token and return the text it completes (possibly empty while a character is pending)."""
        self._ids.append(token_id)
        return self._step(final=False)

    def flush(self) -> str:
        """Return any pending text, emitting an incomplete character as U+FFFD."""
        if self._read == len(self._ids):
            return ""
        return self._step(final=True)

    def _step(self, *, final: bool) -> str:
        ids = self._ids
        before = self._decode(ids[self._prefix : self._read]) if self._read > self._prefix else ""
        after = self._decode(ids[self._prefix :])
        pending = len(ids) - self._read
        if not final and after.endswith(_REPLACEMENT) and pending < _MAX_PENDING_TOKENS:
            return ""
        if len(after) <= len(before) and not final:
            # Nothing visible yet (e.g. a token that decodes to the empty string): move on without text.
            self._prefix, self._read = self._read, len(ids)
            return ""
        # A decoder consistent on prefixes gives after == before + delta; otherwise this is the best guess.
        delta = after[len(before) :]
        self._prefix, self._read = self._read, len(ids)
        return delta


class StopMatcher:
    """Finds the first stop string in streamed text, holding back text that may begin one.

    `feed(delta)` returns the text that is safe to emit and, once a stop string is complete, the stop
    string itself; the text is then everything before it. Among overlapping candidates the match that
    completes first wins (then the one that starts first), so the result does not depend on how the text
    was split into deltas.

    Args:
        stops: The stop strings (empty strings are ignored).
    """

    def __init__(self, stops: Iterable[str]) -> None:
        self._stops: tuple[str, ...] = tuple(dict.fromkeys(s for s in stops if s))
        self._longest = max((len(s) for s in self._stops), default=0)
        self._pending = ""
        self.matched: str | None = None

    @property
    def stops(self) -> Sequence[str]:
        """The stop strings, deduplicated, in the given order."""
        return self._stops

    def feed(self, delta: str) -> tuple[str, str | None]:
        """Add `delta`; return (text to emit now, the stop string if one just completed)."""
        if self.matched is not None:
            return "", self.matched
        if not self._stops:
            return delta, None
        text = self._pending + delta
        best: tuple[int, int, str] | None = None  # (end, start, stop)
        for stop in self._stops:
            start = text.find(stop)
            if start >= 0:
                candidate = (start + len(stop), start, stop)
                if best is None or candidate[:2] < best[:2]:
                    best = candidate
        if best is not None:
            _, start, stop = best
            self.matched = stop
            self._pending = ""
            return text[:start], stop
        hold = self._holdback(text)
        self._pending = text[len(text) - hold :] if hold else ""
        return text[: len(text) - hold], None

    def flush(self) -> str:
        """Return the held-back text (generation ended without completing a stop string)."""
        text, self._pending = self._pending, ""
        return text

    def _holdback(self, text: str) -> int:
        """Length of the longest suffix of `text` that is a proper prefix of a stop string."""
        for size in range(min(len(text), self._longest - 1), 0, -1):
            tail = text[-size:]
            if any(stop.startswith(tail) for stop in self._stops):
                return size
        return 0
