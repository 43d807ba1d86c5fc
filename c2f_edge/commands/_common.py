"""Options shared by several commands."""

from __future__ import annotations

import argparse

from c2f_edge.models import list_variants
from c2f_edge.models.weights import SYNTHETIC_WARNING

WEIGHTS_HELP = ("'synthetic': deterministic, seeded weights under which every block contributes "
                "(layer scales 0.1-1, real BatchNorm statistics). They are NOT trained weights: "
                "use them to test a pipeline, not to classify images.")


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--variant", default="n", help=f"Conv2Former variant: {', '.join(list_variants())} (default n)")
    src = g.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", metavar="PATH",
                     help="official HVision-NKU/Conv2Former checkpoint (.pth): bare state_dict or under "
                          "model/state_dict/state_dict_ema, `module.` prefix allowed")
    src.add_argument("--weights", choices=["synthetic"], help=WEIGHTS_HELP)
    g.add_argument("--seed", type=int, default=0, help="seed for --weights synthetic (default 0)")


def model_from_args(args):
    import sys

    from c2f_edge.models.weights import load_model

    if args.weights == "synthetic":
        print(f"warning: {SYNTHETIC_WARNING}", file=sys.stderr)
    return load_model(args.variant, checkpoint=args.checkpoint, weights=args.weights, seed=args.seed)


def add_hash_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-verify-hash", action="store_true",
                   help="load artifacts even when they do not match the sha256 their manifest records "
                        "(for files you changed on purpose)")
