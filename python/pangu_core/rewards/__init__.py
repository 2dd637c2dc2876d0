"""MARS: multi-source adaptive rewards (math, code, LLM evaluator, shaping), routing and weighting.

Nothing heavy is imported here: the math verifier's workers, the sandbox and the evaluator model
start only when a scorer or source first needs them.
"""

from pangu_core.rewards.config import (
    CodeConfig,
    ConfigError,
    JudgeConfig,
    MathConfig,
    RewardConfig,
    RouterConfig,
    SandboxLimits,
    ShapingConfig,
)
from pangu_core.rewards.router import AdaptiveWeights, create_source, known_sources, register_source
from pangu_core.rewards.scorer import RewardScorer
from pangu_core.rewards.types import CodeTest, RewardResult, Sample, SourceScore

__all__ = [
    "AdaptiveWeights", "CodeConfig", "CodeTest", "ConfigError", "JudgeConfig", "MathConfig", "RewardConfig",
    "RewardResult", "RewardScorer", "RouterConfig", "Sample", "SandboxLimits", "ShapingConfig", "SourceScore",
    "create_source", "known_sources", "register_source",
]
