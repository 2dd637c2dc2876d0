"""Math verification: equivalence table with measured precision/recall, timeouts from threads, cache."""

from __future__ import annotations

import threading

import pytest

from pangu_core.rewards.config import MathConfig
from pangu_core.rewards.math import MathVerifier, extract_answer, fast_verdict

# (reference, answer): equivalent pairs across the forms models write.
EQUIVALENT = [
    ("\\frac{1}{2}", "0.5"), ("1/2", "\\frac12"), ("\\dfrac{3}{2}", "1.5"), ("-\\frac{1}{3}", "-1/3"),
    ("\\frac{-3}{4}", "-0.75"), ("3", "3.0"), ("-2", "-2.00"), ("1,000", "1000"),
    ("0.5", "50\\%"), ("25\\%", "0.25"), ("\\{1,2,3\\}", "\\{3,2,1\\}"), ("[0,1)", "[0, 1)"),
    ("(-\\infty, 2]", "(-\\infty,2]"), ("10", "10\\text{ cm}"), ("5", "5 \\mathrm{m}"), ("\\$5", "5"),
    ("\\sqrt{2}/2", "\\frac{\\sqrt{2}}{2}"), ("2\\pi", "6.283185307"), ("x^2+2x+1", "(x+1)^2"), ("(1,2)", "(1, 2)"),
]
# Non-equivalent pairs, many of them near misses.
DIFFERENT = [
    ("\\frac{1}{2}", "0.25"), ("3", "-3"), ("-1/2", "1/2"), ("\\{1,2\\}", "\\{1,2,3\\}"), ("[0,1)", "[0,1]"),
    ("(0,1)", "[0,1]"), ("10", "100"), ("2\\pi", "\\pi"), ("x+1", "x-1"), ("0.5", "0.51"), ("1", "2"),
    ("50\\%", "0.05"), ("\\sqrt{2}", "\\sqrt{3}"), ("(1,2)", "(2,1)"), ("10\\text{ cm}", "12"),
]


@pytest.fixture(scope="module")
def verifier():
    with MathVerifier(MathConfig(workers=2, timeout_seconds=10.0)) as v:
        yield v


def test_precision_and_recall_on_the_table(verifier):
    # The verifier must accept nearly all equivalent forms and never accept a different value.
    got_eq = [s.score == 1.0 for s in verifier.compare(EQUIVALENT)]
    got_ne = [s.score == 1.0 for s in verifier.compare(DIFFERENT)]
    true_pos, false_pos = sum(got_eq), sum(got_ne)
    recall = true_pos / len(EQUIVALENT)
    precision = true_pos / max(1, true_pos + false_pos)
    assert recall >= 0.9, [p for p, ok in zip(EQUIVALENT, got_eq) if not ok]
    assert precision >= 0.95, [p for p, ok in zip(DIFFERENT, got_ne) if ok]


def test_scores_responses_end_to_end(verifier):
    responses = ["<think>3/6 = 1/2 so 7?</think>So the answer is \\boxed{\\frac{1}{2}}.",
                 "<think>\\boxed{0.5}</think>I am not sure.",
                 "<think>unfinished \\boxed{0.5}"]
    scores = verifier.score(responses, ["0.5", "0.5", "0.5"])
    assert scores[0].score == 1.0
    # Only what is outside the thinking block counts.
    assert scores[1].score == 0.0 and scores[1].reason == "no final answer"
    assert scores[2].score == 0.0 and scores[2].reason == "no final answer"


def test_pathological_input_times_out_in_a_thread():
    # Math-verify without our workers would hang here (or raise off the main thread); we cut it.
    out = []
    with MathVerifier(MathConfig(workers=1, timeout_seconds=1.5)) as v:
        thread = threading.Thread(target=lambda: out.extend(v.compare([("1", "(10^{10})!"), ("2", "2")])))
        thread.start()
        thread.join(60)
        assert not thread.is_alive()
        assert out[0].score == 0.0 and out[0].reason == "timeout" and not out[0].decided
        assert out[1].score == 1.0  # the next comparison ran on a replacement worker
        assert v.stats["restarts"] == 1


def test_cache_answers_repeats(verifier):
    verifier.clear_cache()
    before = verifier.stats["cache_hits"]
    first = verifier.compare([("7", "7.0")])
    second = verifier.compare([("7", "7.0"), ("7", "7.0")])
    assert first[0] == second[0] == second[1]
    assert verifier.stats["cache_hits"] - before == 2


def test_concurrent_callers_get_their_own_answers(verifier):
    results = {}

    def work(n):
        results[n] = verifier.compare([(str(n), f"{n}.0"), (str(n), str(n + 1))])

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(results[n][0].score == 1.0 and results[n][1].score == 0.0 for n in range(6))


def test_fast_path_agrees_with_math_verify(verifier):
    # Identical text and plain integers skip the workers; their verdicts must match math-verify's.
    pairs = [("42", "42"), ("42", "042"), ("-3", "3"), ("7", "-7"), ("\\frac{1}{2}", " \\frac{1}{2} "), ("10", "11")]
    fast = [fast_verdict(g, a) for g, a in pairs]
    assert all(f is not None for f in fast)
    from math_verify import parse, verify

    reference = [verify(parse(f"${g}$", parsing_timeout=None), parse(f"${a}$", parsing_timeout=None), timeout_seconds=None)
                 for g, a in pairs]
    assert [f.score == 1.0 for f in fast] == reference
    assert fast_verdict("1/2", "0.5") is None


def test_cache_and_fast_verdicts_can_be_turned_off():
    # cache_size 0 and fast_verdicts False send every pair, every time, to math-verify (benchmarks).
    pairs = [("42", "42"), ("7", "-7"), ("\\frac{1}{2}", "0.5")]
    with MathVerifier(MathConfig(workers=1, timeout_seconds=10.0, cache_size=0, fast_verdicts=False)) as v:
        first = [s.score for s in v.compare(pairs)]
        second = [s.score for s in v.compare(pairs)]
        assert first == second == [1.0, 0.0, 1.0]
        assert v.stats["fast"] == 0 and v.stats["cache_hits"] == 0
    with MathVerifier(MathConfig(workers=1, timeout_seconds=10.0)) as v:
        assert [s.score for s in v.compare(pairs + pairs)] == [1.0, 0.0, 1.0] * 2
        assert v.stats["fast"] == 4  # the defaults keep the shortcut


def test_extract_answer_order():
    assert extract_answer("<think>\\boxed{1}</think>\\boxed{2} then \\boxed{\\frac{3}{4}}") == "\\frac{3}{4}"
    assert extract_answer("So the answer is 42.") == "42"
    assert extract_answer("we get 3 and then 1,250 apples") == "1250"
    assert extract_answer("no numbers here") is None


def test_front_door_errors(verifier):
    with pytest.raises(TypeError, match=r"pairs\[0\]\[1\]"):
        verifier.compare([("1", 1)])
    with pytest.raises(ValueError, match="references"):
        verifier.score(["a"], [])
    with pytest.raises(ValueError, match="timeout_seconds"):
        MathConfig(timeout_seconds=0)


def test_workers_end_with_the_verifier():
    import gc

    v = MathVerifier(MathConfig(workers=1))
    v.compare([("1", "1.0")])
    [worker] = list(v._idle.queue)
    proc = worker.proc
    del v, worker
    gc.collect()
    assert proc.wait(timeout=30) is not None


# Hedged answers for the reference 12: a list of candidates, a bound, an approximation. Each must
# score 0, whatever math-verify would say (it accepts "\ge 12", "\approx 12" and "12 \text{ or more}").
HEDGED = ["10, 11, 12", "10, 11, or 12", "10 or 12", "10 \\text{ or } 12", "12, 12", "10; 12", "\\ge 12",
          "\\geq 12", "x \\ge 12", "x \\geq 12", "> 12", ">= 12", "<= 12", "\\le 12", "\\leq 12", "< 13",
          "\\neq 11", "\\ne 11", "\\approx 12", "\\sim 12", "12 \\pm 1", "12 \\mp 0", "≥ 12", "≈ 12", "± 12",
          "at least 12", "about 12", "approximately 12", "12 \\text{ or more}", "either 12 or 13", "12 and 13"]
# Right answers in the forms models write: these stay right.
RIGHT = ["12", "12.0", "\\frac{24}{2}", "x = 12", "$12$", "12.", "12 \\text{ apples}", "\\boxed{12}", "012",
         "12.00", "24/2", "x=12"]


def test_hedged_answers_score_zero(verifier):
    scores = verifier.compare([("12", answer) for answer in HEDGED])
    assert [s.score for s in scores] == [0.0] * len(HEDGED), [a for a, s in zip(HEDGED, scores) if s.score]
    assert all(s.reason.startswith("hedged answer") for s in scores), scores


def test_right_answers_stay_right(verifier):
    scores = verifier.compare([("12", answer) for answer in RIGHT])
    assert [s.score for s in scores] == [1.0] * len(RIGHT), [(a, s) for a, s in zip(RIGHT, scores) if s.score != 1]


def test_relations_and_lists_in_the_reference_are_compared_as_usual(verifier):
    # A reference that is itself an inequality, an interval, a set or a number with a thousands
    # separator is no hedge check's business: math-verify compares as before.
    pairs = [("x \\ge 12", "x \\geq 12"), ("\\{1,2,3\\}", "\\{3,2,1\\}"), ("[0,1)", "[0, 1)"), ("1,000", "1000"),
             ("1000", "1,000"), ("(1,2)", "(1, 2)"), ("x > 3", "x>3")]
    assert [s.score for s in verifier.compare(pairs)] == [1.0] * len(pairs)


def test_hedged_responses_score_zero_end_to_end(verifier):
    # Whatever the answer's form (no box, an "answer is" phrase, a box), a hedge gets no reward.
    responses = ["<think>t</think>It could be 10, 11, or 12.", "<think>t</think>The answer is 10 or 12.",
                 "<think>t</think>\\boxed{\\ge 12}", "<think>t</think>So at least 12 apples.",
                 "<think>t</think>The answer is 12.", "<think>t</think>\\boxed{12}", "<think>t</think>We get 12."]
    scores = [s.score for s in verifier.score(responses, ["12"] * len(responses))]
    assert scores == [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0]


def test_long_answers_are_refused_before_parsing():
    # An answer over max_answer_chars scores 0 without a worker ever being started.
    with MathVerifier(MathConfig(workers=1, max_answer_chars=10)) as v:
        [long_one] = v.compare([("12", "1" * 11)])
        assert long_one.score == 0.0 and long_one.reason.startswith("answer too long")
        assert list(v._idle.queue) == [None]  # no worker was needed
