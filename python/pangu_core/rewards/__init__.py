"""MARS: multi-source adaptive rewards (math, code, LLM evaluator, shaping), routing and weighting."""
