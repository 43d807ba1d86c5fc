"""`c2f-edge`: a thin CLI over the library. Each subcommand is a module in c2f_edge/commands/."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import pkgutil
import sys
import traceback

from c2f_edge import __version__
from c2f_edge.core.errors import C2FError, report

DESCRIPTION = """\
Take Conv2Former to edge devices.

Pipeline (each step reads one artifact and writes the next, each with a manifest.json):
  checkpoint --export--> build/onnx/model.onnx
             --compile--> build/<target>/model.so   (TVM, ARM CPUs and OpenCL GPUs)
             --coreml---> build/coreml/model.mlpackage (iOS)
  then `parity` checks any artifact against PyTorch fp32, and `profile` times it on a board.

Typical use:
  c2f-edge export --weights synthetic            # no checkpoint at hand: deterministic test weights
  c2f-edge export --checkpoint conv2former_n.pth  # an official HVision-NKU/Conv2Former checkpoint
  c2f-edge targets                                # what --target accepts
  c2f-edge compile --target arm64

Run `c2f-edge COMMAND --help` for each command's options.
"""


def _command_modules():
    from c2f_edge import commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            yield importlib.import_module(f"c2f_edge.commands.{info.name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="c2f-edge", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"c2f-edge {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    mods = list(_command_modules())
    for mod in sorted(mods, key=lambda m: getattr(m, "ORDER", 50)):
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        with _hash_checks(not getattr(args, "no_verify_hash", False)):
            return int(args.func(args) or 0)
    except C2FError as e:
        if args.verbose:
            traceback.print_exc()
        return report(e)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


@contextlib.contextmanager
def _hash_checks(enabled: bool):
    """--no-verify-hash, for this command only; an environment variable, so the children it starts
    (the profile worker, the qemu kernel runner) skip the check too."""
    from c2f_edge.core.artifacts import VERIFY_HASH_ENV

    if enabled:
        yield
        return
    saved = os.environ.get(VERIFY_HASH_ENV)
    os.environ[VERIFY_HASH_ENV] = "0"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(VERIFY_HASH_ENV, None)
        else:
            os.environ[VERIFY_HASH_ENV] = saved


if __name__ == "__main__":
    sys.exit(main())
