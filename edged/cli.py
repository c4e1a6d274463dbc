"""The `edged` command line: one sub-command per module in edged.commands; exit 0 ok, 1 failure, 2 config/usage."""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from typing import Sequence

import edged
import edged.commands
from edged import logsetup
from edged.errors import ConfigError

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors on exit code 2 (argparse's own default, kept explicit)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_CONFIG, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The parser with every sub-command found in edged.commands."""
    parser = _Parser(prog="edged", description="Edge runtime daemon for smart manufacturing cells.")
    parser.add_argument("--version", action="version", version=f"edged {edged.__version__}")
    parser.add_argument("--log-level", default=None, choices=["debug", "info", "warning", "error"],
                        help="log level (default: the cell's, else info)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for info in sorted(pkgutil.iter_modules(edged.commands.__path__), key=lambda m: m.name):
        mod = importlib.import_module(f"edged.commands.{info.name}")
        if not hasattr(mod, "run"):
            continue
        name = getattr(mod, "NAME", info.name.replace("_", "-"))
        p = sub.add_parser(name, help=mod.__doc__.strip().splitlines()[0] if mod.__doc__ else None,
                           description=mod.__doc__)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `edged` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help(sys.stderr)
        return EXIT_CONFIG
    logsetup.setup(args.log_level or "info")
    try:
        return int(args._run(args) or 0)
    except ConfigError as exc:
        for issue in exc.issues:
            print(str(issue), file=sys.stderr)
        print(f"edged: {len(exc.issues)} config error(s)", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return EXIT_OK
    except BrokenPipeError:
        return EXIT_OK
