"""The dual system: fast / slow / auto modes, fusion training data, the selector, self-repair, the Reasoner.

What exists: :mod:`.chat_format` (prompt rendering per mode, the chat template), :mod:`.response`
(thinking and answer parts of a response), :mod:`.self_repair` (the loop detector and generation
with repair), :mod:`.selector` (the probability of the fast decision in auto mode, and a bias on it),
:mod:`.fusion` (mode labels, explicit and auto pairs, the progressive schedule, self-repair pairs)
and :mod:`.reasoner` (:class:`Reasoner`: answers in fast, slow or auto mode, with self-repair).
The ``pangu-core dual`` run: :mod:`.config` (:class:`~.config.DualConfig`), :mod:`.run`
(:func:`~.run.run_dual`: explicit modes, labels, auto mode, evaluation), :mod:`.metrics` (savings,
oracle router, random-mix line, test mixes) and :mod:`.report` (the report's measurement section).

Names are re-exported here and imported on first use, so ``import pangu_core.dual`` stays light.
"""

from __future__ import annotations

from pangu_core._lazy import lazy_exports

_EXPORTS = {
    "ChatFormat": "chat_format", "parse_response": "chat_format", "render_prompt": "chat_format",
    "ThinkingMarkers": "response", "split_thinking": "response", "extract_final_answer": "response",
    "RepairConfig": "self_repair", "LoopDetector": "self_repair", "find_loop": "self_repair",
    "generate_with_repair": "self_repair", "RepairedOutput": "self_repair",
    "fast_probability": "selector", "CloseMarkerBias": "selector", "decision_bias": "selector",
    "decision_prompts": "selector",
    "FusionConfig": "fusion", "FusionItem": "fusion", "Pair": "fusion", "RepairPair": "fusion",
    "label_modes": "fusion", "explicit_pairs": "fusion", "auto_pairs": "fusion", "progressive_pairs": "fusion",
    "repair_pairs": "fusion", "teacher_items": "fusion", "to_stages": "fusion", "encode_fusion_pairs": "fusion",
    "Reasoner": "reasoner", "Answer": "reasoner",
    "DualConfig": "config", "run_dual": "run",
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
