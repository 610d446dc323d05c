"""Helpers shared by the backend tests: build a request, drain a stream."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from spawnjoin.backends.base import Backend, Chunk, Finish, GenerationRequest, SamplingParams

_ids = itertools.count()


def make_request(prompt: str = "Once", *, affinity: str | None = None, **params: object) -> GenerationRequest:
    """A request with a fresh id."""
    return GenerationRequest(
        prompt=prompt, params=SamplingParams(**params), request_id=f"req-{next(_ids)}", affinity=affinity
    )


@dataclass
class Collected:
    """What one stream delivered."""

    chunks: list[Chunk]
    finish: Finish

    @property
    def text(self) -> str:
        return "".join(c.text for c in self.chunks)

    @property
    def chunk_tokens(self) -> int:
        return sum(c.tokens for c in self.chunks)


async def collect(backend: Backend, request: GenerationRequest) -> Collected:
    """Drain `backend.stream(request)`, checking it ends with exactly one `Finish`."""
    chunks: list[Chunk] = []
    finishes: list[Finish] = []
    async for item in backend.stream(request):
        assert not finishes, "nothing may follow the Finish"
        if isinstance(item, Finish):
            finishes.append(item)
        else:
            assert isinstance(item, Chunk)
            chunks.append(item)
    assert len(finishes) == 1
    return Collected(chunks, finishes[0])
