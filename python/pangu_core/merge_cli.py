"""`pangu-core merge CONFIG.yaml --out DIR [--overwrite] [--threads N]`: merge checkpoint folders.

The YAML takes mergekit's common fields (merge_method, base_model, models with weight/density
parameters, top-level parameters, dtype); see :class:`pangu_core.merge.MergeConfig`.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `pangu-core merge`."""
    parser.add_argument("config", help="merge config (YAML, mergekit-style fields)")
    parser.add_argument("--out", required=True, help="output folder (sharded safetensors + index)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument("--threads", type=int, default=None, help="kernel threads (default: all cores)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--input-hash", choices=("xxh64", "sha256", "none"), default=None,
                        help="digest of the input files recorded in the output (default: the config's "
                             "input_hash, xxh64 unless set)")
    parser.add_argument("--no-hash", action="store_true", help="record no input digest (--input-hash none)")


def run(args: argparse.Namespace) -> int:
    """Runs the merge; returns 0, or 2 with a one-paragraph error on stderr for bad input."""
    from pangu_core.merge import MergeConfig
    from pangu_core.merge_files import merge_checkpoints

    try:
        config = MergeConfig.from_yaml(args.config)
        if args.input_hash is not None:
            config = dataclasses.replace(config, input_hash=args.input_hash)
        out = merge_checkpoints(config, args.out, overwrite=args.overwrite, threads=args.threads,
                                progress=not args.no_progress, hash_inputs=not args.no_hash)
    except (ValueError, KeyError, FileExistsError, FileNotFoundError, OSError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"pangu-core merge: error: {message}", file=sys.stderr)
        return 2
    print(out)
    return 0
