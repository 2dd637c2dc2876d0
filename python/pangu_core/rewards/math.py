"""Math rewards: extract the final answer, compare it with the reference through math-verify.

Math-verify guards its parsing and comparison with ``signal.alarm``, which only works in the main
thread: called from a worker thread or a Ray actor's thread it raises, and many trainers catch that
and silently score 0. Here its timeouts are off and the comparisons run in worker processes; a
comparison that overruns ``MathConfig.timeout_seconds`` gets its worker killed and replaced and
scores 0 with reason "timeout". No signal is used, so :class:`MathVerifier` works from any thread.
Verdicts are cached (LRU) by (reference, answer) unless ``MathConfig.cache_size`` is 0; identical text
and plain integers are decided without math-verify unless ``MathConfig.fast_verdicts`` is false.

Before any parsing, an answer longer than ``MathConfig.max_answer_chars`` scores 0 ("answer too
long"), and a hedged answer scores 0 (:func:`hedge_reason`): a relation or qualifier instead of a
value (``\\ge 12``, ``\\approx 12``, ``12 \\pm 1``, "at least 12") or several values ("10, 11, 12",
"10 or 12") where the reference has none of these. Math-verify alone accepts ``\\ge 12`` for 12.
"""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import weakref
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Sequence

from pangu_core.dual.response import QUALIFIER, RELATION, extract_final_answer
from pangu_core.rewards.config import MathConfig
from pangu_core.rewards.types import SourceScore

_WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_math_worker.py")
# Starting a worker imports sympy and math-verify; that time is not charged to any comparison.
_START_SECONDS = 120.0


_INTEGER = re.compile(r"-?\d+")


def fast_verdict(reference: str, answer: str) -> SourceScore | None:
    """A verdict without math-verify where it is certain: identical text (after dropping spaces and
    surrounding $), or two plain integers (where math-verify compares exactly too). Else None."""
    gold, got = (re.sub(r"\s+", "", t).strip("$") for t in (reference, answer))
    if gold and gold == got:
        return SourceScore(1.0)
    if _INTEGER.fullmatch(gold) and _INTEGER.fullmatch(got):
        return SourceScore(1.0) if int(gold) == int(got) else SourceScore(0.0, "wrong answer")
    return None


_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_JOINER = re.compile(r"\b(?:or|and)\b", re.IGNORECASE)
_OPENERS, _CLOSERS = "([{", ")]}"


def _several_values(text: str) -> bool:
    """Whether ``text`` lists values: a comma or semicolon outside every bracket (thousands
    separators such as 1,000 aside), or the words "or" / "and". Linear time."""
    if _JOINER.search(text):
        return True
    depth = 0
    for ch in _THOUSANDS.sub("", text):
        if ch in _OPENERS:
            depth += 1
        elif ch in _CLOSERS:
            depth = max(0, depth - 1)
        elif ch in ",;" and depth == 0:
            return True
    return False


def hedge_reason(reference: str, answer: str) -> str:
    """Why ``answer`` hedges where ``reference`` is one plain value, or "" when it does not.

    A relation (``\\ge``, ``<``, ``\\neq``, ``\\approx``, ``\\sim``, ``\\pm`` ...; "=" is fine, as in
    "x = 12"), a qualifier ("at least", "about", "or more" ...) or several values ("10, 11, 12",
    "10 or 12") in the answer is a hedge unless the reference has the same kind (an inequality, an
    interval or a set is then compared by math-verify as usual).
    """
    if RELATION.search(answer) and not RELATION.search(reference):
        return "hedged answer (a relation, not a value)"
    if QUALIFIER.search(answer) and not QUALIFIER.search(reference):
        return "hedged answer (qualified)"
    if _several_values(answer) and not _several_values(reference):
        return "hedged answer (several values)"
    return ""


def extract_answer(response: str) -> str | None:
    """The final answer outside the thinking block: last \\boxed{}, else "answer is ...", else the
    last number unless it is hedged. None when there is none (see ``extract_final_answer``)."""
    return extract_final_answer(response)


class _Worker:
    """One math-verify process and its two pipe ends."""

    def __init__(self, memory_bytes: int) -> None:
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        try:
            self.proc = subprocess.Popen(
                # -I keeps this folder (whose math.py/types.py would shadow the stdlib) off sys.path.
                [sys.executable, "-I", _WORKER, str(to_child_r), str(from_child_w), str(memory_bytes)],
                pass_fds=(to_child_r, from_child_w), stdin=subprocess.DEVNULL, start_new_session=True,
            )
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        self.send = Connection(to_child_w, readable=False)
        self.recv = Connection(from_child_r, writable=False)
        try:
            ready = self.recv.poll(_START_SECONDS) and self.recv.recv() == ("ready",)
        except (EOFError, OSError):
            ready = False
        if not ready:
            self.close()
            raise RuntimeError("math verifier: a worker process failed to start (is math-verify installed?)")

    def close(self) -> None:
        try:
            self.proc.kill()
        except OSError:
            pass
        self.proc.wait()
        self.send.close()
        self.recv.close()


def _close_idle(idle: "queue.Queue[_Worker | None]") -> None:
    while True:
        try:
            worker = idle.get_nowait()
        except queue.Empty:
            return
        if worker is not None:
            worker.close()


class MathVerifier:
    """Scores math answers against references; thread-safe; ``close()`` (or ``with``) ends workers."""

    def __init__(self, config: MathConfig | None = None) -> None:
        self.config = config or MathConfig()
        if not isinstance(self.config, MathConfig):
            raise TypeError(f"config: expected MathConfig, got {type(self.config).__name__}")
        self._idle: queue.Queue[_Worker | None] = queue.Queue()
        for _ in range(self.config.workers):
            self._idle.put(None)  # started on first use
        self._cache: OrderedDict[tuple[str, str], SourceScore] = OrderedDict()
        self._lock = threading.Lock()
        self._closed = False
        self._generation = 0
        # Workers end with the verifier even when close() is never called (e.g. in a dropped actor).
        self._finalizer = weakref.finalize(self, _close_idle, self._idle)
        self.stats = {"timeouts": 0, "restarts": 0, "cache_hits": 0, "fast": 0}

    def __enter__(self) -> "MathVerifier":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stops all idle workers (workers in use stop when returned)."""
        self._closed = True
        _close_idle(self._idle)

    def clear_cache(self) -> None:
        """Forgets cached verdicts, and the workers forget parsed expressions on their next batch."""
        with self._lock:
            self._cache.clear()
            self._generation += 1

    def compare(self, pairs: Sequence[tuple[str, str]]) -> list[SourceScore]:
        """Verdicts for (reference, answer) pairs: 1.0 equivalent, 0.0 not, with a reason."""
        pairs = [(self._check_text(g, f"pairs[{i}][0]"), self._check_text(a, f"pairs[{i}][1]"))
                 for i, (g, a) in enumerate(pairs)]
        out: list[SourceScore | None] = [None] * len(pairs)
        todo: dict[tuple[str, str], list[int]] = {}
        with self._lock:
            for i, key in enumerate(pairs):
                refused = self._refuse(*key)
                if refused is not None:
                    out[i] = refused
                    continue
                hit = self._cache.get(key)
                if hit is not None:
                    self._cache.move_to_end(key)
                    self.stats["cache_hits"] += 1
                    out[i] = hit
                    continue
                out[i] = fast_verdict(*key) if self.config.fast_verdicts else None
                if out[i] is not None:
                    self.stats["fast"] += 1
                else:
                    todo.setdefault(key, []).append(i)
        keys = list(todo)
        if keys:
            # Work is handed out in slices from a shared feed rather than split up front, so a worker
            # that drew quick comparisons takes more instead of idling while another finishes; one
            # pipe round trip per slice, about four slices per worker.
            workers = min(self.config.workers, len(keys))
            step = -(-len(keys) // (workers * 4))
            feed: queue.SimpleQueue[list[tuple[str, str]]] = queue.SimpleQueue()
            for start in range(0, len(keys), step):
                feed.put(keys[start:start + step])
            if workers == 1:
                verdicts = [self._run_feed(feed)]
            else:
                with ThreadPoolExecutor(workers) as pool:
                    verdicts = list(pool.map(self._run_feed, [feed] * workers))
            with self._lock:
                for part in verdicts:
                    for key, verdict in part.items():
                        for i in todo[key]:
                            out[i] = verdict
                        if verdict.decided and self.config.cache_size:
                            self._cache[key] = verdict
                            while len(self._cache) > self.config.cache_size:
                                self._cache.popitem(last=False)
        return out  # type: ignore[return-value]

    def score(self, responses: Sequence[str], references: Sequence[str]) -> list[SourceScore]:
        """Extracts each response's final answer and compares it with its reference."""
        if len(responses) != len(references):
            raise ValueError(f"references: expected {len(responses)} items like responses, got {len(references)}")
        answers = [extract_answer(r) if isinstance(r, str) else r for r in responses]
        pairs = [(str(ref), a) for ref, a in zip(references, answers) if a is not None]
        verdicts = iter(self.compare(pairs))
        return [SourceScore(self.config.no_answer_reward, "no final answer") if a is None else next(verdicts)
                for a in answers]

    def _refuse(self, reference: str, answer: str) -> SourceScore | None:
        """A 0 verdict decided before parsing: an answer over the length cap, or a hedged one."""
        if len(answer) > self.config.max_answer_chars:
            return SourceScore(0.0, f"answer too long ({len(answer)} chars > {self.config.max_answer_chars})")
        if len(reference) > self.config.max_answer_chars:
            return None  # a long reference is the caller's; math-verify decides it under the time limit
        why = hedge_reason(reference, answer)
        return SourceScore(0.0, why) if why else None

    @staticmethod
    def _check_text(value: object, name: str) -> str:
        if not isinstance(value, str):
            raise TypeError(f"{name}: expected str, got {type(value).__name__}")
        return value.strip()

    def _run_feed(self, feed: "queue.SimpleQueue[list[tuple[str, str]]]") -> dict[tuple[str, str], SourceScore]:
        """Takes slices of keys from ``feed`` until it is empty, on one worker process."""
        if self._closed:
            raise RuntimeError("math verifier: used after close()")
        slot = [self._idle.get()]  # the worker in use; _run_slice replaces it, None when it died
        results: dict[tuple[str, str], SourceScore] = {}
        try:
            while True:
                try:
                    pending = feed.get_nowait()
                except queue.Empty:
                    break
                self._run_slice(slot, pending, results)
        finally:
            if self._closed and slot[0] is not None:
                slot[0].close()
                slot[0] = None
            self._idle.put(slot[0])
        return results

    def _run_slice(self, slot: list[_Worker | None], keys: list[tuple[str, str]],
                   results: dict[tuple[str, str], SourceScore]) -> None:
        """Verdicts for ``keys`` into ``results`` on ``slot[0]`` (started, or replaced after an overrun)."""
        pending = list(keys)
        while pending:
            if slot[0] is None:
                slot[0] = _Worker(self.config.memory_bytes)
            worker = slot[0]
            worker.send.send((self._generation,
                              [(i, g, a, self.config.float_rounding) for i, (g, a) in enumerate(pending)]))
            done = 0
            while done < len(pending):
                if not worker.recv.poll(self.config.timeout_seconds):
                    # Overrun: this item is a timeout; the worker cannot be interrupted safely.
                    results[pending[done]] = SourceScore(0.0, "timeout", decided=False)
                    self.stats["timeouts"] += 1
                    self.stats["restarts"] += 1
                    slot[0] = None
                    worker.close()
                    done += 1
                    break
                try:
                    index, equal, error = worker.recv.recv()
                except EOFError:
                    results[pending[done]] = SourceScore(0.0, "verifier crashed", decided=False)
                    self.stats["restarts"] += 1
                    slot[0] = None
                    worker.close()
                    done += 1
                    break
                if equal is None:
                    results[pending[index]] = SourceScore(0.0, error, decided=False)
                else:
                    results[pending[index]] = SourceScore(1.0 if equal else 0.0, "" if equal else (error or "wrong answer"))
                done = index + 1
            pending = pending[done:]
