"""StreamDyCoke: DyCoke's visual-token compression made streaming, for video LLMs on live cameras.

The core is pure PyTorch and imports nothing from Ray, Kafka or Redis.
"""

from .budget import frame_token_budget, ttm_frame_budgets, ttm_retained_count
from .config import PipelineConfig
from .encoders import EncoderSpec, build_encoder
from .pipeline import FrameOutcome, FramePipeline, build_pipeline
from .policy import FixedRatioPolicy, FrameContext, Policy, PolicyNet, PolicySpec, ThresholdPolicy, build_policy, load_policy
from .sampler import FrameSampler, SamplerConfig
from .segment import SegmentFormatError, TokenSegment, apply_segment, decode_segment, encode_segment, fidelity, reconstruct
from .store import CacheLostError, InMemoryTokenStore, TokenStore
from .stream import StreamCompressor, StreamConfig, StreamState, StreamStats
from .ttm import TTMResult, dycoke_ttm
from .patch import PatchConfig, apply_patch

__version__ = "0.1.0"

__all__ = [
    "PatchConfig", "apply_patch",
    "EncoderSpec", "FixedRatioPolicy", "FrameContext", "FrameOutcome", "FramePipeline", "FrameSampler",
    "CacheLostError", "InMemoryTokenStore", "PipelineConfig", "Policy", "PolicyNet", "PolicySpec", "SamplerConfig", "SegmentFormatError", "StreamCompressor", "StreamConfig",
    "StreamState", "StreamStats", "TTMResult", "ThresholdPolicy", "TokenSegment", "TokenStore",
    "apply_segment", "build_encoder", "build_pipeline", "build_policy", "decode_segment", "dycoke_ttm", "encode_segment", "fidelity", "frame_token_budget",
    "load_policy", "reconstruct", "ttm_frame_budgets", "ttm_retained_count",
]
