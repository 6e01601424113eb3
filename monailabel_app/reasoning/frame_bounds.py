"""The pixel bounds of Qwen2.5-VL's "smart resize", and the default this app uses: the frame the released checkpoints
were trained on.

A Qwen2.5-VL checkpoint's processor accepts 3,136 to 12,845,056 pixels, so a 2048 x 2048 radiograph would go in at
full size: 5,329 visual tokens, far outside what MedReasoner and Lingshu saw in training (MedReasoner's fine-tuning
config caps pictures at 705,600 pixels = 840 x 840, and U-MRG's pictures are 840 x 840) and slow to prefill. So the
server, the evaluation, retraining and the OpenAI-compatible client default to at most `TRAINED_FRAME_MAX_PIXELS`
(a 2048 x 2048 picture then goes in at 812 x 812, 841 visual tokens; an 840 x 840 one unchanged); `--conf max_pixels`
/ `--max-pixels` override it (12845056 for the processor's own bound). The bound is a cap: a checkpoint whose processor
already allows fewer pixels (the tiny test models: 280 x 280) keeps its own. Kept free of heavy imports so the command
lines' `--help` can show it.
"""

from __future__ import annotations

from typing import Optional

QWEN_PATCH_FACTOR = 28  # 14 px patches merged 2x2
QWEN_MIN_PIXELS = 56 * 56  # preprocessor_config.json of the Qwen2.5-VL family
QWEN_MAX_PIXELS = 16384 * 28 * 28
TRAINED_FRAME_MAX_PIXELS = 840 * 840  # 705,600: the released checkpoints' training frame


def capped_max_pixels(requested: Optional[int], processor_max: int) -> int:
    """The largest frame the model is fed: the requested cap, never above what the checkpoint's processor allows."""
    return processor_max if requested is None else min(int(requested), int(processor_max))


def visual_tokens(model_width: int, model_height: int) -> int:
    """Visual tokens of one picture in a model frame: one per 28 x 28 pixels (14 px patches merged 2 x 2)."""
    return (model_width // QWEN_PATCH_FACTOR) * (model_height // QWEN_PATCH_FACTOR)
