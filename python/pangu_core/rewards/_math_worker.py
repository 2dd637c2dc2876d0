"""A math-verify worker process: compares (gold, answer) pairs with math-verify's own timeouts off.

Run by path as ``_math_worker.py READ_FD WRITE_FD MEMORY_BYTES``. Math-verify's signal-based timeouts are turned
off (``parsing_timeout=None``, ``timeout_seconds=None``): the parent enforces the time limit by
killing this process and starting another. Protocol over ``multiprocessing.connection``:
the worker sends ("ready",), then for each received (generation, [(key, gold, answer, float_rounding),
...]) sends one (key, equal: bool | None, error: str) per item as soon as it is decided. Parsed
expressions are cached until the generation changes (the parent's ``clear_cache``).
"""

import logging
import resource
import sys
from multiprocessing.connection import Connection


def _as_latex(text):
    text = text.strip()
    if text.startswith("$") or "\\boxed" in text:
        return text
    return "$" + text + "$"


def main():
    read_fd, write_fd, memory = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    inbox, outbox = Connection(read_fd, writable=False), Connection(write_fd, readable=False)
    logging.disable(logging.CRITICAL)
    from math_verify import parse, verify

    parsed = {}
    generation = None

    def parse_cached(text):
        if text not in parsed:
            if len(parsed) > 4096:
                parsed.clear()
            parsed[text] = parse(_as_latex(text), parsing_timeout=None)
        return parsed[text]

    outbox.send(("ready",))
    while True:
        try:
            batch_generation, batch = inbox.recv()
        except EOFError:
            return
        if batch_generation != generation:
            parsed.clear()
            generation = batch_generation
        for key, gold, answer, rounding in batch:
            try:
                gold_parsed = parse_cached(gold)
                answer_parsed = parse_cached(answer)
                if not gold_parsed:
                    outbox.send((key, None, "reference unparsable"))
                    continue
                equal = bool(verify(gold_parsed, answer_parsed, float_rounding=rounding, timeout_seconds=None))
                outbox.send((key, equal, ""))
            except Exception as error:  # math-verify raising on odd input is a verdict, not a crash
                outbox.send((key, False, f"verify error: {type(error).__name__}"))


if __name__ == "__main__":
    main()
