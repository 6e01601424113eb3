"""Each environment the README installs resolves, and the manual's GPU instructions name only what exists.

`uv pip compile` resolves against the package index (metadata only; a source package is built against the pinned
torch through build-constraints.txt), bounded in time, so a pin that stops resolving fails here, not at a hospital.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lib.options.start_options import parse_start_options
from monailabel_app.grounding.settings import GroundingSettings

ROOT = Path(__file__).resolve().parents[2]
UV = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))
PLATFORM = ["--python-platform", "x86_64-manylinux_2_28", "--no-header", "--quiet"]
TIMEOUT_S = 420

pytestmark = pytest.mark.skipif(not Path(UV).exists(), reason="uv is installed by requirements-test.txt")


def compile_lock(*requirements: str, python: str, tmp_path: Path) -> tuple[subprocess.CompletedProcess, str]:
    out = tmp_path / "lock.txt"
    command = [UV, "pip", "compile", *requirements, "-b", "build-constraints.txt", "--python-version", python]
    command += [*PLATFORM, "-o", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT_S)
    return done, out.read_text() if out.exists() else ""


def pins(lock: str) -> dict[str, str]:
    return dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", lock, flags=re.MULTILINE))


def test_the_app_environment_resolves_with_its_pins(tmp_path):
    done, lock = compile_lock("requirements.txt", python="3.11", tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    resolved = pins(lock)
    assert (resolved["torch"], resolved["transformers"], resolved["numpy"]) == ("2.13.0", "5.23.0", "1.26.4")
    assert "monailabel" in resolved and "sam2" in resolved  # MONAI Label's own dependencies came along


def test_the_vllm_serve_environment_resolves(tmp_path):
    done, lock = compile_lock("requirements-vllm-serve.txt", python="3.12", tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert pins(lock)["vllm"] == "0.32.0"


def test_vllm_cannot_join_the_app_environment(tmp_path):
    """Why vLLM has its own environment (docs/reasoner-hosting.md, A GPU host); if this ever resolves, that section must change."""
    done, _ = compile_lock("requirements.txt", "requirements-vllm-serve.txt", python="3.11", tmp_path=tmp_path)
    assert done.returncode != 0 and "No solution found" in done.stderr, done.stderr[-3000:]


def gpu_section_commands() -> list[list[str]]:
    page = (ROOT / "docs" / "reasoner-hosting.md").read_text(encoding="utf-8")
    section = page.split("## A GPU host", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash", 1)[1].split("\n", 1)[1].split("```", 1)[0].replace("\\\n", " ")
    return [shlex.split(line) for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_the_readme_gpu_instructions_name_files_and_options_that_exist():
    commands = gpu_section_commands()
    required = [c[c.index("-r") + 1] for c in commands if "-r" in c]
    assert required == ["requirements-vllm-serve.txt"] and all((ROOT / f).is_file() for f in required)
    starts = [c for c in commands if c[:2] == ["bash", "scripts/start.sh"]]
    assert len(starts) == 2
    for command in starts:
        conf = {command[i + 1]: command[i + 2] for i, word in enumerate(command) if word == "--conf"}
        assert set(conf) <= {f for f in GroundingSettings.__dataclass_fields__}, conf
        device = conf.pop("device", "auto")  # a GPU host's start: this machine may have none to check it against
        assert device in ("auto", "cpu") or re.fullmatch(r"cuda(:\d+)?", device), device
        parse_start_options(conf)  # values a server start accepts
    serve = next(c for c in commands if c[0].endswith("vllm") and c[1] == "serve")
    kwargs = serve[serve.index("--mm-processor-kwargs") + 1]
    assert kwargs == '{"max_pixels": %d}' % GroundingSettings().max_pixels  # the app's frame bound
