"""benchmarks/gpu_suite.py: its smoke run goes through every row's code with tiny models on the CPU, so the suite that
measures a GPU host cannot rot while no GPU is at hand; without a GPU and without --smoke it says so and exits 2.
Nothing here needs a GPU, and nothing times anything against a threshold."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
SUITE = REPO_ROOT / "benchmarks" / "gpu_suite.py"

ROW_NAMES = (
    "reasoner prefill",
    "reasoner decode",
    "2048 x 2048 picture: own bound vs trained frame",
    "SAM ViT-H image encoder",
    "SAM2.1 Hiera-T image encoder",
    "one question end to end",
    "16 questions: batched vs one by one",
    "transformers vs vLLM",
    "GRPO step, LoRA (this project's step)",
    "GRPO step, LoRA (TRL GRPOTrainer)",
    "GRPO step, full fine-tuning",
)
NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?")


def run_suite(*args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    """As on a bare host: the script from the checkout, no PYTHONPATH (it finds the app itself), no network."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    return subprocess.run(
        [sys.executable, str(SUITE), *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def table_rows(text: str) -> dict[str, tuple[str, str]]:
    """row name -> (result, details) from the markdown table."""
    rows = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
        if line.startswith("| ") and len(cells) == 4 and cells[0] not in ("row", "---"):
            rows[cells[0]] = (cells[1], cells[2])
    return rows


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_suite") / "results" / "table.md"
    done = run_suite("--smoke", "--out", str(out))
    return done, out


def test_smoke_run_exits_0_and_writes_the_table(smoke):
    done, out = smoke
    assert done.returncode == 0, done.stderr[-3000:]
    assert out.is_file()
    text = out.read_text()
    assert "| row | result | details | row s |" in text
    assert text.strip() in done.stdout  # the same table is printed


def test_every_row_is_measured_or_skipped_with_a_reason(smoke):
    done, out = smoke
    text = out.read_text()
    rows = table_rows(text)
    assert set(ROW_NAMES) <= set(rows), f"missing rows: {set(ROW_NAMES) - set(rows)}"
    assert "Traceback" not in text and "Traceback" not in done.stderr, done.stderr[-3000:]
    for name in ROW_NAMES:
        result, _ = rows[name]
        assert not result.startswith("failed"), f"{name}: {result}"
        if result.startswith(("skipped: ", "not run: ")):
            assert len(result.split(": ", 1)[1]) > 5, f"{name} gives no reason: {result}"
        else:
            assert NUMBER.search(result), f"{name} has no figure: {result}"


def test_smoke_prefill_and_decode_are_positive_token_rates(smoke):
    _, out = smoke
    rows = table_rows(out.read_text())
    for name in ("reasoner prefill", "reasoner decode"):
        result = rows[name][0]
        assert "tokens/s" in result, result
        assert float(NUMBER.search(result).group()) > 0, result
    assert "floor n/a (CPU)" in rows["reasoner decode"][0]
    assert "100 visual" in rows["reasoner prefill"][1]  # the tiny processor's bounds: 840 px -> 280 px -> 100 tokens


def test_the_large_picture_row_compares_the_two_frames(smoke):
    _, out = smoke
    result, details = table_rows(out.read_text())["2048 x 2048 picture: own bound vs trained frame"]
    assert " ms vs " in result, result
    # smoke: a 448 px picture, its own 448 x 448 (256 visual tokens) against a 224 x 224 cap (64)
    assert "448 x 448 (256 visual tokens)" in details and "224 x 224 (64 visual tokens)" in details, details


def test_rows_run_when_their_packages_are_here_and_name_them_when_not(smoke):
    _, out = smoke
    rows = table_rows(out.read_text())
    expected = {
        "SAM ViT-H image encoder": ("segment_anything", "skipped: segment-anything not installed"),
        "SAM2.1 Hiera-T image encoder": ("sam2", "skipped: sam2 not installed"),
        "GRPO step, LoRA (TRL GRPOTrainer)": ("trl", "skipped: trl not installed (bring its wheel: it is small)"),
        "transformers vs vLLM": ("vllm", "skipped: vllm not installed"),
    }
    for name, (module, skipped) in expected.items():
        result = rows[name][0]
        if installed(module):
            assert not result.startswith("skipped: " + module), f"{name}: {result}"
        else:
            assert result.startswith(skipped), f"{name}: {result}"
    for name in ("SAM ViT-H image encoder", "SAM2.1 Hiera-T image encoder"):
        if installed("segment_anything") and installed("sam2"):
            assert rows[name][0].endswith(" ms"), rows[name]
    assert rows["GRPO step, LoRA (this project's step)"][0].endswith("s per step")
    assert rows["GRPO step, full fine-tuning"][0].startswith("not run: a 7B with Adam states")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the suite would run for real")
def test_without_a_gpu_and_without_smoke_it_exits_2_with_a_message(tmp_path):
    out = tmp_path / "table.md"
    done = run_suite("--out", str(out), timeout=120)
    assert done.returncode == 2, (done.stdout, done.stderr[-2000:])
    assert "no CUDA GPU" in done.stderr and "--smoke" in done.stderr
    assert "Traceback" not in done.stderr
    assert not out.exists()


def test_the_7b_has_the_published_size_and_gpu_names_find_their_bandwidth():
    from transformers import Qwen2_5_VLForConditionalGeneration

    from benchmarks.gpu.bandwidth import decode_bytes_per_token, spec_bandwidth
    from benchmarks.gpu.measuring import parameter_count
    from benchmarks.gpu.reasoner import reasoner_config
    from monailabel_app.demo.tiny_models import build_tokenizer

    tokenizer = build_tokenizer()
    with torch.device("meta"):  # shapes only, no memory
        model = Qwen2_5_VLForConditionalGeneration._from_config(
            reasoner_config(tokenizer, smoke=False), dtype=torch.bfloat16
        )
    assert 8.28e9 < parameter_count(model) < 8.30e9  # Qwen2.5-VL-7B-Instruct: 8.29 B
    assert 14.0e9 < decode_bytes_per_token(model, 1100) < 14.4e9  # 7.07 B - embedding + lm_head, bf16
    spec = {name: spec_bandwidth(name) for name in ("NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe")}
    assert spec == {"NVIDIA H100 80GB HBM3": (3.35e12, "H100 SXM"), "NVIDIA H100 PCIe": (2.0e12, "H100 PCIe")}
    assert spec_bandwidth("NVIDIA H200")[0] == 4.8e12
    assert spec_bandwidth("NVIDIA A100-SXM4-80GB")[0] == 2.0e12
    assert spec_bandwidth("NVIDIA A100-PCIE-40GB")[0] == 1.55e12
    assert spec_bandwidth("NVIDIA L40S")[0] == 0.864e12
    for unknown in ("NVIDIA H100 NVL", "NVIDIA GH200 480GB", "Tesla V100-SXM2-16GB"):
        assert spec_bandwidth(unknown) is None  # measured with a device copy instead


def test_the_suite_imports_no_monai_monailabel_or_itk():
    """A bare GPU host has none of them: the suite and every app module its rows import must do without."""
    probe = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("gpu_suite", "benchmarks/gpu_suite.py")
suite = importlib.util.module_from_spec(spec)  # as `python benchmarks/gpu_suite.py` loads it, parts included
spec.loader.exec_module(suite)
import monailabel_app.segmentation.sam2, monailabel_app.segmentation.sam
import monailabel_app.training.config, monailabel_app.training.loss, monailabel_app.training.rollout
print(sorted({n.split(".")[0] for n in sys.modules} & {"monai", "monailabel", "itk", "SimpleITK", "lightning"}))
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
