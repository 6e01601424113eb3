"""Retraining feeds the reasoner exactly what it answered in the clinic: a saved final label, turned into a GRPO
sample, gives the same `input_ids` and `pixel_values` as the request that answered it (one model-input builder; the
window, template, think flag and pixel bounds travel with the label and the site's settings). And the train task's
presets come from their files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monailabel.interfaces.tasks.infer_v2 import InferType
from transformers import AutoProcessor

from lib.infers.answer_request import AnswerRequest, ImageRef
from lib.infers.implicit_query import ImplicitQueryInfer
from lib.trainers.implicit_query import ImplicitQueryTrainer
from monailabel_app.data.datastore_samples import datastore_samples
from monailabel_app.demo.sample_studies import CT_LESION, CT_SHAPE, write_ct
from monailabel_app.grounding.service import GroundingService
from monailabel_app.grounding.settings import GroundingSettings
from monailabel_app.imaging.medical_image import read_medical_image, write_label
from monailabel_app.reasoning import transformers_reasoner as transformers_reasoner_module
from monailabel_app.reasoning.prompt import build_prompt
from monailabel_app.reasoning.transformers_reasoner import TransformersReasoner
from monailabel_app.training.config import HOSPITAL_PRESET, PAPER_PRESET
from monailabel_app.training.rollout import encode_prompt

QUESTION = "Which finding would explain the dull percussion note over the right lower chest?"


class RecordingReasoner(TransformersReasoner):
    """The real reasoner, keeping a copy of every input it builds."""

    inputs: list = []

    def prepare_inputs(self, image, prompt):
        features, frame = super().prepare_inputs(image, prompt)
        RecordingReasoner.inputs.append({k: v.detach().clone() for k, v in features.items()})
        return features, frame


@pytest.fixture
def site_settings(tmp_path, format_tuned_reasoner_dir):
    template = tmp_path / "site_template.txt"
    template.write_text("Our site's prompt. Question: {question}\nAnswer as <answer>{...}</answer>.", encoding="utf-8")
    return GroundingSettings(
        reasoner=str(format_tuned_reasoner_dir),
        think=False,
        template=str(template),
        max_new_tokens=32,
        segmenter_encoder="torch-fp32",  # no conversion thread left running when the test process ends
        min_pixels=112 * 112,
        max_pixels=196 * 196,
    )


def test_a_saved_label_trains_on_the_input_the_server_answered(tmp_path, site_settings, monkeypatch, one_torch_thread):
    monkeypatch.setattr(
        transformers_reasoner_module, "TransformersReasoner", RecordingReasoner
    )  # what the registry builds
    RecordingReasoner.inputs = []
    service = GroundingService(site_settings, str(tmp_path / "model"))
    task_config = {"question": "", "think": False, "window": ["auto"]}
    task = ImplicitQueryInfer(service, InferType.SEGMENTATION, 3, "test", task_config)
    ct = write_ct(tmp_path / "ct.nii.gz")
    k = CT_SHAPE[0] // 2 + 1
    asked = AnswerRequest("implicit_query", ImageRef(str(ct)), {"question": QUESTION, "slice": k, "window": "lung"})
    answer, _ = task.ground(asked, str(tmp_path))
    served = RecordingReasoner.inputs[-1]

    label = np.zeros(CT_SHAPE, np.uint8)
    label[k][CT_LESION.mask(*CT_SHAPE[1:])] = 1  # the clinician's corrected mask on that slice
    label_path = write_label(label, read_medical_image(str(ct)), str(tmp_path / "ct_label.nii.gz"))
    info = answer.record().to_info()  # what the app copies into the saved label's info
    assert info["window"] == "lung" and info["slice"] == k and info["think"] is False

    config = ImplicitQueryTrainer(str(tmp_path / "model"), service.reasoner_path, {}, site_settings).config_for({})
    samples = datastore_samples([{"image": str(ct), "label": label_path, "label_info": info}])
    (sample,) = [s for s in samples if not s.is_negative]  # the far slices are "not in this image" negatives
    processor = AutoProcessor.from_pretrained(site_settings.reasoner)
    prompt = build_prompt(sample.question, config.think, config.template)
    trained = encode_prompt(processor, sample.image, prompt, config.min_pixels, config.max_pixels).features
    assert torch.equal(trained["input_ids"], served["input_ids"].cpu())
    assert torch.equal(trained["image_grid_thw"], served["image_grid_thw"].cpu())
    assert torch.equal(trained["pixel_values"], served["pixel_values"].cpu())


def test_the_train_task_shows_the_hospital_preset_and_paper_means_the_papers(tmp_path, site_settings):
    trainer = ImplicitQueryTrainer(str(tmp_path), lambda: "base", {}, site_settings)
    shown = trainer.config()
    assert (shown["max_steps"], shown["epochs"], shown["max_new_tokens"]) == (
        HOSPITAL_PRESET.max_steps,
        HOSPITAL_PRESET.epochs,
        HOSPITAL_PRESET.max_new_tokens,
    )
    as_slicer_sends = {k: v[0] if isinstance(v, list) else v for k, v in shown.items()}  # every option, defaults too
    paper = trainer.config_for({**as_slicer_sends, "preset": "paper"})
    assert (paper.group_size, paper.prompts_per_step, paper.lr, paper.lora) == (
        PAPER_PRESET.group_size,
        PAPER_PRESET.prompts_per_step,
        PAPER_PRESET.lr,
        PAPER_PRESET.lora,
    )
    changed = trainer.config_for({**as_slicer_sends, "preset": "paper", "max_steps": 7})
    assert changed.max_steps == 7 and changed.group_size == PAPER_PRESET.group_size
    hospital = trainer.config_for({})
    assert hospital.think is False and hospital.template == site_settings.template
    assert (hospital.min_pixels, hospital.max_pixels) == (site_settings.min_pixels, site_settings.max_pixels)
