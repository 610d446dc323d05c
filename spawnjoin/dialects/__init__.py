"""Dialects: how spawn() and join() look in a model's text. `base` holds the contract.

`get_dialect(name)` returns a built-in dialect by name; pass a `Dialect` instance for your own.
"""

from __future__ import annotations

from typing import Any

from spawnjoin._exceptions import ConfigError
from spawnjoin.dialects.apr import APRDialect
from spawnjoin.dialects.base import ChildOutcome, ChildSpec, Dialect, Done, Spawn
from spawnjoin.dialects.prompted import PromptedDialect
from spawnjoin.dialects.threadweaver import ThreadWeaverDialect

__all__ = [
    "APRDialect",
    "ChildOutcome",
    "ChildSpec",
    "Dialect",
    "Done",
    "PromptedDialect",
    "Spawn",
    "ThreadWeaverDialect",
    "get_dialect",
    "DIALECTS",
]

DIALECTS: dict[str, type[Dialect]] = {
    "apr": APRDialect,
    "threadweaver": ThreadWeaverDialect,
    "prompted": PromptedDialect,
}


def get_dialect(dialect: str | Dialect, **options: Any) -> Dialect:
    """A dialect instance from a name (`apr`, `threadweaver`, `prompted`) or an instance (returned unchanged)."""
    if isinstance(dialect, Dialect):
        return dialect
    try:
        cls = DIALECTS[dialect]
    except KeyError:
        raise ConfigError(f"unknown dialect {dialect!r}; choose one of {sorted(DIALECTS)}") from None
    return cls(**options)
