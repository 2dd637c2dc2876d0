"""`pangu-core merge CONFIG.yaml --out DIR [--overwrite] [--threads N]`: merge checkpoint folders.

The YAML takes mergekit's common fields (merge_method, base_model, models with weight/density
parameters, top-level parameters, dtype); see :class:`pangu_core.merge.MergeConfig`. Its ``dtype`` is
the OUTPUT dtype; the merge always accumulates in float32.
"""

from __future__ import annotations

import argparse

from pangu_core.merge.config import INPUT_HASHES, MergeConfig
from pangu_core.merge.files import merge_checkpoints


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `pangu-core merge`."""
    parser.add_argument("config", help="merge config (YAML, mergekit-style fields)")
    parser.add_argument("--out", required=True, help="output folder (sharded safetensors + index)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument("--threads", type=int, default=None, help="kernel threads (default: all cores)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--input-hash", choices=INPUT_HASHES, default=None,
                        help="digest of the input files recorded in the output (default: the config's "
                             "input_hash, xxh64 unless set)")
    parser.add_argument("--no-hash", action="store_true", help="record no input digest (--input-hash none)")


def run(args: argparse.Namespace) -> int:
    """Runs the merge and prints the output folder; returns 0.

    Bad input raises, for the top-level command to print on one line: ConfigError (a ValueError)
    for an unreadable or invalid YAML file, FileNotFoundError for a missing input checkpoint,
    FileExistsError for an existing output without --overwrite, ValueError for mismatched inputs
    or bad options.
    """
    if args.no_hash and args.input_hash not in (None, "none"):
        raise ValueError(f"--no-hash: conflicts with --input-hash {args.input_hash}")
    config = MergeConfig.from_yaml(args.config)
    out = merge_checkpoints(config, args.out, overwrite=args.overwrite, threads=args.threads,
                            progress=not args.no_progress, input_hash="none" if args.no_hash else args.input_hash)
    print(out)
    return 0
