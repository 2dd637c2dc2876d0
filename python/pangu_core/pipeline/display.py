"""The pipeline's one status display, and the capture of everything the stages print into its log.

:func:`capture_output` sends the process's stderr (the ``sys.stderr`` object and file descriptor 2,
so worker processes and C code are caught too) to ``OUT/log.txt`` while the stages run, and feeds
each line written through ``sys.stderr`` to a :class:`Display` (what child processes write reaches
the log only). The display reads the stage drivers' own log lines
(``step 400/4000``, ``round 2/3``, ``phase2``) into a fraction of the stage done and shows, on the
terminal it was given, one line: stage, its latest step, elapsed time and an ETA. On a terminal
that line is redrawn in place; elsewhere (a CI log, a pipe) a line is printed per stage and at most
one status line a minute.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TextIO

# A stage's share of the default pipeline's time (2 cores), used only to turn stage fractions into an ETA.
STAGE_SHARES = {"sft": 0.64, "distill": 0.11, "rl": 0.06, "dual": 0.19}
_DUAL_PHASES = {"phase1": 0.02, "labels": 0.4, "phase2": 0.5, "eval": 0.75}
_STEP = re.compile(r"step (\d+)/(\d+)")
_ROUND = re.compile(r"round (\d+)/(\d+)")
_ROUND_STEP = re.compile(r"round (\d+): sft step (\d+)/(\d+)")


def _ratio(match: re.Match) -> float:
    total = int(match.group(2))
    return int(match.group(1)) / total if total else 0.0


def stage_fraction(stage: str, line: str, current: float, memory: dict | None = None) -> float:
    """The fraction of ``stage`` done after its driver logged ``line`` (``current`` before it).

    ``memory`` keeps what earlier lines said (the distillation's number of rounds)."""
    memory = {} if memory is None else memory
    step = _STEP.search(line)
    if stage == "sft" and step:
        return 0.95 * _ratio(step)
    if stage == "rl" and step:
        return 0.85 * _ratio(step)
    if stage == "distill":
        round_match, round_step = _ROUND.search(line), _ROUND_STEP.search(line)
        if round_match:
            memory["rounds"] = int(round_match.group(2))
            return (int(round_match.group(1)) - 1) / memory["rounds"]
        if round_step and memory.get("rounds"):
            # a round scores its pool first (about a quarter of its time), then trains
            steps = int(round_step.group(3))
            done = int(round_step.group(2)) / steps if steps else 0.0
            return (int(round_step.group(1)) - 1 + 0.25 + 0.65 * done) / memory["rounds"]
        return current
    if stage == "dual":
        for phase, at in _DUAL_PHASES.items():
            if line.rstrip().endswith(f"dual: {phase}"):
                return at
        if step and "phase 1:" in line:
            return 0.02 + 0.38 * _ratio(step)
        if step and "phase 2:" in line:
            return 0.5 + 0.25 * _ratio(step)
    return current


def _clock(seconds: float) -> str:
    seconds = int(max(0.0, seconds))
    return f"{seconds // 60:02d}:{seconds % 60:02d}" if seconds < 3600 else f"{seconds // 3600}h{seconds % 3600 // 60:02d}"


class Display:
    """The status of a pipeline run on one terminal line; thread-safe (any thread's stderr lines feed it)."""

    def __init__(self, stages: Sequence[str], progress: bool = True, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.stages, self.progress, self.clock = list(stages), progress, clock
        self.stream = stream if stream is not None else sys.stderr
        self.tty = progress and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.lock = threading.Lock()
        self.started = clock()
        self.stage: str | None = None
        self.fraction = 0.0
        self.message = ""
        self.done_share = 0.0       # shares of the stages finished (or skipped)
        self.skipped_share = 0.0    # shares skipped by this invocation (not counted in its speed)
        self.last_status = clock()
        self.memory: dict = {}
        self.resumed = False
        self.echo: TextIO | None = None   # the log, while capture_output runs: stage lines go there too

    # -- what the pipeline tells it ----------------------------------------------------------------------
    def start(self, stage: str, skipped: bool = False, resumed: bool = False) -> None:
        """Stage ``stage`` begins (``skipped``: done before; ``resumed``: an earlier run did part of it)."""
        with self.lock:
            self.stage, self.fraction, self.message, self.memory = stage, 0.0, "", {}
            self.resumed = resumed
            index = self.stages.index(stage) + 1
            if skipped:
                self.done_share += STAGE_SHARES.get(stage, 0.0)
                self.skipped_share += STAGE_SHARES.get(stage, 0.0)
                self._line(f"pipeline [{index}/{len(self.stages)}] {stage}: done before, skipped")
            else:
                self._line(f"pipeline [{index}/{len(self.stages)}] {stage}: started")

    def finish(self, stage: str, seconds: float) -> None:
        with self.lock:
            self.done_share += STAGE_SHARES.get(stage, 0.0)
            self.fraction, self.message = 0.0, ""
            self._line(f"pipeline [{self.stages.index(stage) + 1}/{len(self.stages)}] {stage}: finished in "
                       f"{_clock(seconds)}")

    def log_line(self, line: str) -> None:
        """A line a stage wrote to the log."""
        with self.lock:
            if self.stage is None or not line.strip():
                return
            self.fraction = max(self.fraction, stage_fraction(self.stage, line, self.fraction, self.memory))
            if self.resumed and self.fraction > 0:
                # a resumed stage's first progress line tells how much an earlier run did: not this one's speed
                self.resumed = False
                self.skipped_share += STAGE_SHARES.get(self.stage, 0.0) * self.fraction
            self.message = line.split(": ", 1)[-1].strip()[:60]
            self._status()

    def close(self) -> None:
        with self.lock:
            if self.tty:
                self.stream.write("\n")
                self.stream.flush()

    # -- drawing ---------------------------------------------------------------------------------------
    def eta(self) -> float | None:
        """Seconds left by the stage shares, from this invocation's speed (None until it is measurable)."""
        total = sum(STAGE_SHARES.get(s, 0.0) for s in self.stages)
        done = self.done_share + STAGE_SHARES.get(self.stage or "", 0.0) * self.fraction
        worked = done - self.skipped_share
        if worked < 0.01 * total:
            return None
        return (self.clock() - self.started) * (total - done) / worked

    def status(self) -> str:
        index = self.stages.index(self.stage) + 1 if self.stage else 0
        eta = self.eta()
        return (f"pipeline [{index}/{len(self.stages)}] {self.stage} {self.fraction:4.0%} | {self.message} | "
                f"{_clock(self.clock() - self.started)} elapsed, ETA {_clock(eta) if eta is not None else '?'}")

    def _status(self) -> None:
        if self.tty:
            self.stream.write("\r\033[K" + self.status())
            self.stream.flush()
        elif self.progress and self.clock() - self.last_status >= 60:
            self.last_status = self.clock()
            self.stream.write(self.status() + "\n")
            self.stream.flush()

    def _line(self, text: str) -> None:
        self.stream.write(("\r\033[K" if self.tty else "") + text + "\n")
        self.stream.flush()
        if self.echo is not None:
            self.echo.write(text + "\n")


class _LineTee(io.TextIOBase):
    """A text stream writing to ``log`` and handing every complete line to ``on_line``."""

    def __init__(self, log: TextIO, on_line: Callable[[str], None]):
        self.log, self.on_line, self.pending = log, on_line, ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.log.write(text)
        self.log.flush()
        self.pending += text
        *lines, self.pending = re.split(r"[\r\n]", self.pending)
        for line in lines:
            self.on_line(line)
        return len(text)

    def flush(self) -> None:
        self.log.flush()

    def fileno(self) -> int:
        return self.log.fileno()

    @property
    def encoding(self) -> str:
        return self.log.encoding


@contextlib.contextmanager
def capture_output(log_path: str | Path, display: Display) -> Iterator[None]:
    """Appends the process's stderr to ``log_path`` while the block runs, feeding its lines to ``display``.

    ``sys.stderr`` is replaced by a stream that writes the log and tells the display; file
    descriptor 2 is pointed at the log, so child processes and C code write there too. Both are
    restored on every exit path; an exception leaving the block has its traceback written to the log.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    log = open(log_path, "a", encoding="utf-8", buffering=1)
    saved_fd = os.dup(2)
    terminal, stream = None, display.stream
    if _writes_fd2(stream):
        # The display keeps writing where stderr went before: a copy of the old descriptor.
        terminal = display.stream = open(os.dup(saved_fd), "w", encoding="utf-8", buffering=1)
    os.dup2(log.fileno(), 2)
    display.echo = log
    try:
        with contextlib.redirect_stderr(_LineTee(log, display.log_line)):
            yield
    except BaseException:
        traceback.print_exc(file=log)
        raise
    finally:
        sys.stderr.flush()
        display.echo = None
        os.dup2(saved_fd, 2)
        os.close(saved_fd)
        log.close()
        if terminal is not None:
            terminal.close()
            display.stream = stream


def _writes_fd2(stream: TextIO) -> bool:
    try:
        return stream.fileno() == 2
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return False
