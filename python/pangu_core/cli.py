"""The `pangu-core` command: one subcommand per part, each defined in its own module.

Only the module of the subcommand being run is imported, so `pangu-core bench` does not pay for
transformers and `pangu-core --help` imports nothing heavy. A user error (a bad config, a missing
file, a value out of range) is answered in one line, ``pangu-core CMD: error: ...``, with exit
status 2; set ``PANGU_TRACEBACK=1`` to see the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

# name -> (module defining add_arguments(parser) and run(args) -> int, one-line help)
COMMANDS = {
    "ablate": ("pangu_core.distill.ablate", "distillation ablations: selection or merging arms over seeds"),
    "bench": ("pangu_core.bench.cli", "run microbenchmarks (ours vs a baseline, same run)"),
    "distill": ("pangu_core.distill.cli", "iterative distillation: select by pass rate, fine-tune, merge rounds"),
    "dual": ("pangu_core.dual.cli", "dual system: explicit modes, mode labels, auto mode, Pareto evaluation"),
    "info": ("pangu_core.cli", "print how the C++ core was built and which devices exist"),
    "merge": ("pangu_core.merge.cli", "merge checkpoints from a YAML config (mergekit-style fields)"),
    "pipeline": ("pangu_core.pipeline.cli", "the whole recipe: SFT, distillation, RL, dual system; one report"),
    "rl": ("pangu_core.rl.cli", "GRPO on the latency-tolerant scheduler from a checkpoint: report and curves"),
    "sft": ("pangu_core.distill.sft_cli", "train the tiny model on the default tasks and evaluate it"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `pangu-core info` (none)."""


def run(args: argparse.Namespace) -> int:
    """`pangu-core info`: build_info() and the devices found, as JSON."""
    import pangu_core
    from pangu_core import device

    report = pangu_core.build_info()
    report["devices"] = [vars(d) for d in device.available()]
    print(json.dumps(report, indent=2))
    return 0


def _top_parser() -> argparse.ArgumentParser:
    lines = "\n".join(f"  {name:<8} {help_text}" for name, (_, help_text) in COMMANDS.items())
    return argparse.ArgumentParser(
        prog="pangu-core",
        usage="pangu-core COMMAND [options]   (or pangu-core --version)",
        description=f"commands:\n{lines}\n\nRun `pangu-core COMMAND --help` for a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


# What a command raises for a mistake in its input (config, paths, values): answered in one line.
USER_ERRORS = (ValueError, TypeError, KeyError, OSError)


def error_line(error: BaseException) -> str:
    """The message of a user error on one line (a ConfigError's problems joined by "; ")."""
    from pangu_core.config import ConfigError

    if isinstance(error, ConfigError):
        return error.one_line()
    if isinstance(error, KeyError) and error.args:
        text = str(error.args[0])
    elif isinstance(error, OSError) and error.filename is not None and error.strerror:
        text = f"{error.filename}: {error.strerror}"
    else:
        text = str(error) or type(error).__name__
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def main(argv: list[str] | None = None) -> int:
    """Runs `pangu-core` with ``argv`` (default: the process's arguments); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser()
    if not argv or argv[0] in ("-h", "--help"):
        top.print_help()
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from pangu_core._version import __version__

        print(f"pangu-core {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        top.error(f"unknown command {name!r}; known: {', '.join(COMMANDS)}")
    module_name, help_text = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"pangu-core {name}", description=help_text)
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    try:
        return int(module.run(args) or 0)
    except USER_ERRORS as error:
        if os.environ.get("PANGU_TRACEBACK"):
            raise
        print(f"pangu-core {name}: error: {error_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pangu-core {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
