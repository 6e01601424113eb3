"""The transformers reasoner on tiny Qwen2.5-VL checkpoints built in code: the same loading, chat-template,
processor and generate path as Lingshu-7B / MedReasoner-7B, fully offline."""

import json
import os
import shutil
import threading

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from transformers import AutoConfig, AutoProcessor
from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

from monailabel_app.demo.tiny_models import TINY_MAX_PIXELS, TINY_MIN_PIXELS, TINY_MODEL_MARKER
from monailabel_app.reasoning.transformers_reasoner import ReasonerUnavailableError, TransformersReasoner

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py

GROUNDING_PROMPT = (
    "This is a medical localisation task. Question: which region best explains the patient's symptoms? "
    "Output one <think>...</think> then <answer>{'bbox': [xmin, ymin, xmax, ymax], 'points_1': [x1, y1], "
    "'points_2': [x2, y2]}</answer>."
)


@pytest.fixture(scope="module")
def tiny_reasoner(tiny_reasoner_dir):
    return TransformersReasoner(tiny_reasoner_dir, max_new_tokens=16)


@pytest.fixture(scope="module")
def format_tuned_answer(format_tuned_reasoner_dir) -> str:
    return json.loads((format_tuned_reasoner_dir / TINY_MODEL_MARKER).read_text())["answer_text"]


def random_rgb(seed: int, height: int, width: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def test_tiny_checkpoint_is_a_standard_marked_qwen2_5_vl_folder(tiny_reasoner_dir):
    marker = json.loads((tiny_reasoner_dir / TINY_MODEL_MARKER).read_text())
    assert marker["toy"] is True and marker["format_tuned"] is False
    config = AutoConfig.from_pretrained(tiny_reasoner_dir, local_files_only=True)
    processor = AutoProcessor.from_pretrained(tiny_reasoner_dir, local_files_only=True)
    tokenizer = processor.tokenizer
    assert config.model_type == "qwen2_5_vl"
    assert config.image_token_id == tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert config.video_token_id == tokenizer.convert_tokens_to_ids("<|video_pad|>")
    assert config.vision_start_token_id == tokenizer.convert_tokens_to_ids("<|vision_start|>")
    assert config.vision_end_token_id == tokenizer.convert_tokens_to_ids("<|vision_end|>")
    assert config.text_config.eos_token_id == tokenizer.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert config.text_config.vocab_size >= len(tokenizer)
    text = "Ünïcode, digits 0123 and <think>tags</think> {'bbox': [1, 2, 3, 4]}\n\ttabs"
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Where?"}]}]
    assert processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|image_pad|><|vision_end|>Where?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_generate_offline_returns_text_and_the_processor_frame(tiny_reasoner, monkeypatch, capfd):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    image = random_rgb(0, 300, 500)
    output = tiny_reasoner.generate(image, GROUNDING_PROMPT)

    assert isinstance(output.text, str) and "<|im_start|>" not in output.text
    assert 1 <= output.new_tokens <= 16
    assert output.prefill_s > 0 and output.decode_s >= 0
    inputs, _ = tiny_reasoner.prepare_inputs(image, GROUNDING_PROMPT)
    _, grid_h, grid_w = inputs["image_grid_thw"][0].tolist()
    frame = output.frame
    assert (frame.orig_width, frame.orig_height) == (500, 300)
    assert (frame.model_width, frame.model_height) == (grid_w * 14, grid_h * 14)
    assert frame.model_width % 28 == 0 and frame.model_height % 28 == 0
    assert TINY_MIN_PIXELS <= frame.model_width * frame.model_height <= TINY_MAX_PIXELS
    assert abs(frame.scale_x - frame.scale_y) / frame.scale_x < 0.15  # aspect ratio kept up to 28-px rounding
    # the checkpoint ships Qwen's sampling defaults (temperature 0.1, top_p 0.001): greedy must not warn about them
    assert "temperature" not in capfd.readouterr().err


@settings(max_examples=40, deadline=None)
@given(width=st.integers(1, 2500), height=st.integers(1, 2500), fx=st.floats(0, 1), fy=st.floats(0, 1))
def test_processor_frame_matches_smart_resize_and_round_trips(tiny_reasoner, width, height, fx, fy):
    assume(max(width, height) / min(width, height) <= 200)  # Qwen's processor refuses more elongated images
    _, frame = tiny_reasoner.prepare_inputs(np.zeros((height, width, 3), np.uint8), "Where?")
    expected_h, expected_w = smart_resize(height, width, 28, TINY_MIN_PIXELS, TINY_MAX_PIXELS)
    assert (frame.model_width, frame.model_height) == (expected_w, expected_h)
    x, y = fx * (width - 1), fy * (height - 1)
    back_x, back_y = frame.point_to_original(frame.point_to_model((x, y)))
    assert abs(back_x - x) < 1 and abs(back_y - y) < 1


def test_pixel_bounds_override_the_checkpoint_processor(tiny_reasoner_dir):
    reasoner = TransformersReasoner(tiny_reasoner_dir, max_new_tokens=1, min_pixels=56 * 56, max_pixels=56 * 56 * 4)
    _, frame = reasoner.prepare_inputs(random_rgb(1, 300, 500), "Where?")
    assert (frame.model_width, frame.model_height) == (140, 84)


def test_format_tuned_model_answers_its_text_greedily_for_any_image(format_tuned_reasoner_dir, format_tuned_answer):
    reasoner = TransformersReasoner(format_tuned_reasoner_dir)
    answer_tokens = len(reasoner.processor.tokenizer(format_tuned_answer)["input_ids"])
    for image in (random_rgb(2, 240, 320), np.full((700, 450, 3), 30, np.uint8)):
        output = reasoner.generate(image, GROUNDING_PROMPT)
        assert output.text == format_tuned_answer
        assert output.new_tokens == answer_tokens + 1  # + <|im_end|>


def test_concurrent_requests_are_serialised(format_tuned_reasoner_dir, format_tuned_answer):
    reasoner = TransformersReasoner(format_tuned_reasoner_dir)
    texts = []

    def request(seed):
        texts.append(reasoner.generate(random_rgb(seed, 200, 200), GROUNDING_PROMPT).text)

    threads = [threading.Thread(target=request, args=(seed,)) for seed in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert texts == [format_tuned_answer] * 3


def test_sampling_returns_a_group(tiny_reasoner):
    outputs = tiny_reasoner.sample(random_rgb(3, 200, 300), "Where?", num_return_sequences=4, max_new_tokens=8)
    assert len(outputs) == 4
    assert all(1 <= output.new_tokens <= 8 for output in outputs)
    assert len({output.text for output in outputs}) > 1  # temperature 1, not the checkpoint's top_k=1


def test_missing_local_folder_raises_an_actionable_error(tmp_path):
    missing = tmp_path / "models" / "MedReasoner-Soft-7B"
    with pytest.raises(ReasonerUnavailableError) as error:
        TransformersReasoner(missing)
    message = str(error.value)
    assert str(missing) in message
    assert f"hf download zzzyzh/MedReasoner-Soft-7B --local-dir {missing}" in message
    assert f"--conf reasoner {missing}" in message


def test_uncached_hub_id_raises_without_network(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    with pytest.raises(ReasonerUnavailableError, match="hf download someone/not-cached-7B --local-dir"):
        TransformersReasoner("someone/not-cached-7B")


def test_other_vlm_families_are_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2_vl"}))
    with pytest.raises(ReasonerUnavailableError, match="only Qwen2.5-VL"):
        TransformersReasoner(tmp_path)


def test_republished_checkpoint_is_picked_up_without_restart(
    tmp_path, tiny_reasoner_dir, format_tuned_reasoner_dir, format_tuned_answer
):
    """The server's one owner of reload (`ReasonerSlot`) swaps in a republished folder and closes the old backend."""
    from monailabel_app.grounding.reasoner_slot import ReasonerSlot

    live = tmp_path / "reasoner"
    shutil.copytree(tiny_reasoner_dir, live)
    built: list[TransformersReasoner] = []

    def build(path: str) -> TransformersReasoner:
        built.append(TransformersReasoner(path, max_new_tokens=1024))
        return built[-1]

    slot = ReasonerSlot(build, describe=lambda path: {"path": path, "built": len(built)})
    image = random_rgb(4, 200, 260)
    first = slot.current(str(live))
    assert first.reasoner.generate(image, GROUNDING_PROMPT).text != format_tuned_answer
    assert slot.current(str(live)) is first and len(built) == 1  # unchanged: not loaded again
    assert first.identity == {"path": str(live), "built": 1}  # handed out with the reasoner, taken at its load

    # publish the way a trainer does: stage a complete folder, then swap it in by rename
    staging = tmp_path / "reasoner.staging"
    shutil.copytree(format_tuned_reasoner_dir, staging)
    os.rename(live, tmp_path / "reasoner.previous")
    assert slot.current(str(live)) is first  # mid-swap: keeps serving what it has
    os.rename(staging, live)

    second = slot.current(str(live))
    assert second is not first and first.reasoner.model is None  # the old one was closed before the new one loaded
    assert second.reasoner.generate(image, GROUNDING_PROMPT).text == format_tuned_answer
    assert second.identity["built"] == 2 and first.identity["built"] == 1  # each answer keeps its own model's
    assert slot.current(str(live)) is second
    (live / "VERSION").write_text("2")  # a trainer that rewrites files in place marks the change
    assert slot.current(str(live)) is not second and len(built) == 3
    slot.close()
    assert built[-1].model is None
