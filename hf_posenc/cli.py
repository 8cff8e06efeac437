"""The ``hf-posenc`` command line.

    hf-posenc list            # the registered positional encodings
    hf-posenc --help

``eval``, ``compare``, ``demo`` and ``finetune`` are reserved for later releases: they exit
with status 2 and say so. hf_posenc (and so torch and transformers) is imported only when a
command needs it, so ``--help`` is fast.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

PLANNED = {
    "eval": "evaluate a model with a given positional encoding (planned)",
    "compare": "compare several positional encodings on one model (planned)",
    "demo": "run a short end-to-end demonstration (planned)",
    "finetune": "fine-tune a model after switching its positional encoding (planned)",
}


class _VersionAction(argparse.Action):
    """``--version``; imports hf_posenc only when asked."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from hf_posenc import __version__

        parser.exit(message=f"{parser.prog} {__version__}\n")


def format_table(rows: Sequence[Sequence[str]], headers: Sequence[str]) -> str:
    """A plain-text table with left-aligned columns."""
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def cmd_list(args: argparse.Namespace) -> int:
    from hf_posenc import list_encodings

    encodings = list_encodings()
    if args.json:
        print(json.dumps(encodings, indent=2))
    else:
        print(format_table(sorted(encodings.items()), headers=("encoding", "description")))
    return 0


def cmd_planned(args: argparse.Namespace) -> int:
    print(f"hf-posenc {args.command}: not implemented yet (planned for a later release)", file=sys.stderr)
    return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-posenc",
        description="Switch the positional encoding of pretrained Hugging Face Transformers models.",
    )
    parser.add_argument("--version", action=_VersionAction, help="show the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("list", help="list the registered positional encodings", description="List the registered positional encodings.")
    p.add_argument("--json", action="store_true", help="print a JSON object name -> description")
    p.set_defaults(func=cmd_list)

    for name, text in PLANNED.items():
        p = sub.add_parser(name, help=text, description=f"{text[0].upper()}{text[1:]}. Not implemented yet.")
        p.set_defaults(func=cmd_planned, planned=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "planned", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return args.func(args)
    except BrokenPipeError:  # e.g. `hf-posenc list | head`: stop quietly, like other CLI tools
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
