"""The ``hf-posenc`` command line.

    hf-posenc list            # the registered positional encodings
    hf-posenc demo            # the main job: context extension on the embedded SmolLM2
    hf-posenc eval ...        # perplexity by length and pass-key retrieval, variants side by side
    hf-posenc compare ...     # train one small model per encoding, compare lengths (the seed's A/B)
    hf-posenc finetune ...    # switch or extend, then fine-tune (accelerate)
    hf-posenc --help
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

# name -> (module with add_arguments(parser) and run(args), help)
COMMANDS = {
    "demo": ("hf_posenc.demo", "the main job: no extension vs YaRN/NTK/Self-Extend on the embedded SmolLM2"),
    "eval": ("hf_posenc.evaluation.command", "perplexity by length and pass-key retrieval of model variants"),
    "compare": ("hf_posenc.compare", "train one small model per encoding from scratch and compare lengths"),
    "finetune": ("hf_posenc.training", "switch or extend a model's encoding, then fine-tune it (accelerate)"),
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




def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser; with ``only`` set, the other commands' modules (torch, transformers) are
    not imported and get a placeholder parser (enough for the top-level ``--help`` listing)."""
    parser = argparse.ArgumentParser(
        prog="hf-posenc",
        description="Switch the positional encoding of pretrained Hugging Face Transformers models.",
    )
    parser.add_argument("--version", action=_VersionAction, help="show the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("list", help="list the registered positional encodings", description="List the registered positional encodings.")
    p.add_argument("--json", action="store_true", help="print a JSON object name -> description")
    p.set_defaults(func=cmd_list)

    import importlib

    for name, (module_name, text) in COMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=text)
            continue
        module = importlib.import_module(module_name)
        if hasattr(module, "add_arguments"):
            p = sub.add_parser(name, help=text)
            module.add_arguments(p)
            p.set_defaults(func=module.run)
        else:  # a command with its own parser (`main(argv)`): hand it every argument, --help included
            p = sub.add_parser(name, help=text, add_help=False)
            p.set_defaults(func=lambda a, _m=module, _n=name: _m.main(a.passthrough, prog=f"hf-posenc {_n}"),
                           passthrough=[])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    first = next((a for a in argv if not a.startswith("-")), None)
    # Import only the command that runs: `hf-posenc --help` answers without loading torch.
    parser = build_parser(only=first if first in COMMANDS else ("" if first is None else None))
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "passthrough"):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.passthrough = extra
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
