"""A deterministic toy language model for the test servers.

Tokens are words with their leading space. The next token is a hash of the last 32 characters of the text, so
the model is a pure function of the text so far: continuing ``prompt + partial output`` yields exactly the rest
of the output for ``prompt``, as greedy decoding of a real model does when tokenisation is stable. That makes
"resume after a broken stream" checkable to the token.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

WORDS = [
    "the",
    "cat",
    "sat",
    "on",
    "a",
    "mat",
    "and",
    "dog",
    "ran",
    "far",
    "away",
    "while",
    "bird",
    "sang",
    "high",
    "above",
    "green",
    "hills",
    "under",
    "blue",
    "sky",
    "so",
    "many",
    "small",
    "stones",
    "lay",
    "near",
    "old",
    "trees",
    "by",
    "river",
    "banks",
    "where",
    "fish",
    "swim",
    "slowly",
    "past",
    "quiet",
    "boats",
]
VOCAB = [" " + w for w in WORDS]
_TOKEN_RE = re.compile(r"\s*\S+|\s+")


def tokenize(text: str) -> list[str]:
    """Cut text into tokens (a word keeps its leading whitespace)."""
    return _TOKEN_RE.findall(text)


class Vocab:
    """Token ids for `input_ids` prompts: known words first, new tokens numbered as they are seen."""

    EOS_ID = 0

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self._tokens: list[str] = ["</s>"]
        for word in VOCAB:
            self.id(word)

    def id(self, token: str) -> int:
        if token not in self._ids:
            self._ids[token] = len(self._tokens)
            self._tokens.append(token)
        return self._ids[token]

    def encode(self, text: str) -> list[int]:
        return [self.id(t) for t in tokenize(text)]

    def decode(self, ids: list[int]) -> str:
        return "".join(self._tokens[i] for i in ids if i != self.EOS_ID)


@dataclass
class Step:
    """One generated token as a server sees it."""

    token: str | None  # None: end of sequence
    finish: str | None = None  # "stop" | "length" | "eos"
    matched: str | None = None
    text: str = ""  # the whole output so far (stop string trimmed once matched)


class ToyModel:
    """The toy model and a server's generation loop around it.

    Args:
        eos_every: About one token in this many is end-of-sequence (0: never).
    """

    def __init__(self, eos_every: int = 40) -> None:
        self.eos_every = eos_every

    def next_token(self, text: str) -> str | None:
        h = zlib.crc32(text[-32:].encode())
        if self.eos_every and h % self.eos_every == 0 and len(text) > 0:
            return None
        return VOCAB[(h >> 8) % len(VOCAB)]

    def generate(
        self, prompt: str, max_tokens: int, stop: list[str] | None = None, *, ignore_eos: bool = False
    ) -> Iterator[Step]:
        """Greedy generation as vLLM/SGLang run it: stop strings are checked after every token."""
        stops = [s for s in (stop or []) if s]
        out = ""
        for n in range(1, max_tokens + 1):
            token = self.next_token(prompt + out)
            if token is None and ignore_eos:
                token = VOCAB[n % len(VOCAB)]
            if token is None:
                yield Step(None, "eos", text=out)
                return
            before = len(out)
            out += token
            hits = [(out.find(s, max(0, before - len(s) + 1)), s) for s in stops]
            hits = [(at, s) for at, s in hits if at != -1]
            if hits:
                at, s = min(hits)
                yield Step(token, "stop", s, out[:at])
                return
            yield Step(token, "length" if n == max_tokens else None, text=out)
