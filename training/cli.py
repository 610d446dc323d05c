"""``spawnjoin-train``: one parser, one module per subcommand.

Each module listed in :data:`COMMANDS` defines ``add_parser(subparsers)``, which registers its subparser and sets
``run`` as the default ``run`` attribute, and ``run(args) -> int``. To add a subcommand, write
``training/<name>.py`` with those two functions and append its module path here. Modules are imported only when
the parser is built, and should import heavy libraries (torch) inside ``run``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS: list[str] = [
    "training.data",
    "training.sft",
    "training.evaluate",
    "training.grpo",
    "training.plots",
    "training.compare",
    "training.probe",
]


def build_parser() -> argparse.ArgumentParser:
    """The ``spawnjoin-train`` parser with every registered subcommand.

    Returns:
        argparse.ArgumentParser: The parser.
    """
    parser = argparse.ArgumentParser(prog="spawnjoin-train", description="Data, training and evaluation for spawnjoin.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(name).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``spawnjoin-train``.

    Args:
        argv (list[str] | None): Arguments; defaults to ``sys.argv[1:]``.

    Returns:
        int: Exit status.
    """
    args = build_parser().parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
