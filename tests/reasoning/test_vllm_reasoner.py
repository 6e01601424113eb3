"""The in-process vLLM backend. Its generation needs vLLM and a CUDA GPU (skipped elsewhere); where either is
missing, the backend must refuse clearly and point to one that works.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from monailabel_app.data.folder_samples import write_folder_dataset
from monailabel_app.demo.tiny_models import DEFAULT_ANSWER_TEXT
from monailabel_app.evaluation.cli import main
from monailabel_app.reasoning.sampling import SamplingSettings
from monailabel_app.reasoning.transformers_reasoner import ReasonerUnavailableError, TransformersReasoner
from monailabel_app.reasoning.vllm_reasoner import VllmReasoner
from tests.support.grounding_datasets import lesion_samples

VLLM_CAN_RUN = importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()
PROMPT = "Where is the lesion?"


@pytest.mark.skipif(VLLM_CAN_RUN, reason="vLLM and a GPU are present here")
def test_without_vllm_or_a_gpu_the_backend_names_the_alternatives(tmp_path):
    with pytest.raises(ReasonerUnavailableError, match="vllm serve.*openai backend, or use transformers"):
        VllmReasoner(str(tmp_path))
    data = write_folder_dataset(lesion_samples(1, pictures=1), tmp_path / "data")
    arguments = ["--data", str(data), "--backend", "vllm", "--model", str(tmp_path), "--segmenter", "none"]
    with pytest.raises(SystemExit, match="error: the vllm backend needs"):
        main([*arguments, "--output", str(tmp_path / "run"), "--no-progress"])


@pytest.mark.skipif(not VLLM_CAN_RUN, reason="needs the vllm package and a CUDA GPU")
def test_vllm_answers_a_batch_like_transformers_in_the_same_frames(format_tuned_reasoner_dir):
    reasoner = VllmReasoner(
        str(format_tuned_reasoner_dir),
        SamplingSettings(max_new_tokens=128),
        max_model_len=2048,
        gpu_memory_utilization=0.3,
    )
    images = [
        np.random.default_rng(seed).integers(0, 256, size=(*size, 3), dtype=np.uint8)
        for seed, size in enumerate([(200, 300), (400, 600), (128, 128)])
    ]
    local = TransformersReasoner(str(format_tuned_reasoner_dir), device="cpu")
    for image, output in zip(images, reasoner.generate_batch(images, [PROMPT] * len(images))):
        assert output.frame == local.prepare_inputs(image, PROMPT)[1]
        assert output.text == DEFAULT_ANSWER_TEXT and output.new_tokens > 10
