"""Recipes and flags to configs: every field of a config dataclass is a flag, and flags win over a recipe file.

`spawnjoin-train sft` and `spawnjoin-train grpo` both read their configs this way (`SpawnJoinSFTConfig`,
`TreeGRPOConfig`). A recipe is a YAML (or JSON) mapping of field names to values; an unknown key is an error.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_type_hints

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = ["add_config_arguments", "config_fields", "config_from", "load_config"]


def config_fields(cls: type[DataclassInstance] | None = None) -> list[dataclasses.Field]:
    """The init fields of a config dataclass (default `SpawnJoinSFTConfig`) with their types resolved."""
    if cls is None:
        from .sft_config import SpawnJoinSFTConfig

        cls = SpawnJoinSFTConfig
    hints = get_type_hints(cls)
    fields = []
    for f in dataclasses.fields(cls):
        if f.init:
            f.type = hints[f.name]
            fields.append(f)
    return fields


def add_config_arguments(parser: argparse.ArgumentParser, cls: type[DataclassInstance] | None = None) -> None:
    """Add every field of a config dataclass as a `--name` flag whose default is *absent*, so that only flags
    actually given override a recipe file.

    Args:
        parser (`argparse.ArgumentParser`): The (sub)parser.
        cls (`type`, *optional*): The config dataclass; defaults to `SpawnJoinSFTConfig`.
    """
    from transformers import HfArgumentParser

    group = parser.add_argument_group(cls.__name__ if cls else "SpawnJoinSFTConfig")
    for f in config_fields(cls):
        # HF annotates a parser but only calls add_argument, which an argument group has too.
        HfArgumentParser._parse_dataclass_field(group, f)  # type: ignore[arg-type]
    for action in group._group_actions:
        action.default = argparse.SUPPRESS


def load_config(argv: list[str] | None = None, *, recipe: str | None = None,
                overrides: dict[str, Any] | None = None, cls: type[DataclassInstance] | None = None) -> Any:
    """Build a config from a recipe file, then flags, then keyword overrides (later wins).

    Args:
        argv (`list[str]`, *optional*): Flags as on the command line (may include `--recipe FILE`).
        recipe (`str`, *optional*): Recipe file (YAML or JSON), used when `argv` names none.
        overrides (`dict`, *optional*): Field values applied last.
        cls (`type`, *optional*): The config dataclass; defaults to `SpawnJoinSFTConfig`.

    Returns:
        The configuration.
    """
    parser = argparse.ArgumentParser(prog="spawnjoin-train")
    parser.add_argument("--recipe", default=recipe)
    add_config_arguments(parser, cls)
    ns = vars(parser.parse_args(argv or []))
    return config_from(ns.pop("recipe"), ns, overrides, cls)


def config_from(recipe: str | None, flags: dict[str, Any], overrides: dict[str, Any] | None = None,
                cls: type[DataclassInstance] | None = None) -> Any:
    """Merge a recipe file, flags and overrides (later wins) into a config dataclass, rejecting unknown keys."""
    if cls is None:
        from .sft_config import SpawnJoinSFTConfig

        cls = SpawnJoinSFTConfig
    values: dict[str, Any] = {}
    if recipe:
        import yaml

        values.update(yaml.safe_load(Path(recipe).read_text()) or {})
    values.update(flags)
    values.update(overrides or {})
    known = {f.name for f in config_fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {unknown} (from {recipe or 'flags'})")
    return cls(**values)
