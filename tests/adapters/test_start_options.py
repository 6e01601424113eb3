"""The one schema of start options: a mistyped option stops with one line naming it and what it accepts, the docs'
table is the schema's, and the schema knows every choice the code offers."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from lib.options.start_options import (
    BUILT_IN_TEMPLATES,
    BY_NAME,
    SEGMENTER_ENCODERS,
    SEGMENTER_KINDS,
    TASK_NAMES,
    OptionError,
    conf_pairs,
    markdown_table,
    parse_start_options,
    read_start_options,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


@pytest.mark.parametrize(
    "conf, message",
    [
        ({"reasonr": "/models/MedReasoner-Soft-7B"}, "no such option; did you mean `reasoner`?"),
        ({"device": "gpu"}, "--conf device 'gpu': must be auto, cpu, cuda or cuda:N."),
        ({"segmenter": "litemedsamm"}, "--conf segmenter 'litemedsamm': must be one of litemedsam,"),
        ({"confidence_samples": "many"}, "--conf confidence_samples 'many': must be auto or a whole number from 0"),
        ({"max_upload_mb": "-3"}, "--conf max_upload_mb '-3': must be a whole number from 1 or more."),
        ({"demo": "maybe"}, "--conf demo 'maybe': must be true or false."),
        ({"train_group_size": "1"}, "--conf train_group_size '1': must be a whole number from 2 to 64."),
        ({"train_max_step": "5"}, "did you mean `train_max_steps`?"),
        ({"reasoner_backend": "openai"}, "needs --conf reasoner_url"),
        ({"template": "/no/such/template.txt"}, "must name an existing file"),
    ],
)
def test_a_mistyped_option_is_one_line_naming_it(conf, message):
    with pytest.raises(OptionError) as refused:
        parse_start_options(conf)
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_a_gpu_this_machine_lacks_is_refused_at_start():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(OptionError, match="this machine has 0 CUDA GPU"):
        parse_start_options({"device": "cuda:0"})


def test_good_options_parse_to_typed_values_and_defaults_fill_the_rest():
    options = parse_start_options(
        {"demo": "true", "max_upload_mb": "4", "pacs_modalities": "ct, mr", "train_max_steps": "20", "device": "cpu"}
    )
    assert options["demo"] is True and options["max_upload_mb"] == 4 and options["pacs_modalities"] == ("CT", "MR")
    assert options["reasoner"] == "zzzyzh/MedReasoner-Soft-7B" and options["confidence_samples"] is None
    assert options.train_defaults() == {"max_steps": 20} and set(options) == set(BY_NAME)
    assert read_start_options({"demo": "true"}) is read_start_options({"demo": "true"})  # once per process


def test_the_command_line_check_stops_with_one_line(capsys):
    from lib.options.start_options import main

    assert main(["check", "--app", ".", "--conf", "models", "implicit_query", "--conf", "reasonr", "x"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "Not started: --conf reasonr: no such option; did you mean `reasoner`? (the options: docs/configuration.md)."
    ]
    assert main(["check", "--conf", "demo", "true"]) == 0
    assert conf_pairs(["--conf", "a", "1", "--host", "h", "--conf", "a", "2"]) == {"a": "2"}


def test_the_docs_table_is_the_schemas():
    text = DOCS.read_text()
    begin, end = "<!-- BEGIN generated table: python -m lib.options.start_options table -->\n", "<!-- END generated"
    assert text[text.index(begin) + len(begin) : text.index(end)] == markdown_table()


def test_the_schema_knows_every_choice_the_code_offers():
    from main import TASK_CONFIGS
    from monailabel_app.grounding.settings import GroundingSettings
    from monailabel_app.reasoning.prompt import NAMED_TEMPLATES
    from monailabel_app.segmentation.cpu_encoder import ENCODER_CHOICES
    from monailabel_app.segmentation.factory import SEGMENTER_BUILDERS

    assert set(TASK_NAMES) == set(TASK_CONFIGS)
    assert set(SEGMENTER_KINDS) == set(SEGMENTER_BUILDERS)
    assert SEGMENTER_ENCODERS == ENCODER_CHOICES
    assert set(BUILT_IN_TEMPLATES) == set(NAMED_TEMPLATES)
    assert {spec.name for spec in dataclasses.fields(GroundingSettings)} <= set(BY_NAME)
    from lib.trainers.implicit_query import OPTIONS as TRAIN_OPTIONS

    assert {name[len("train_") :] for name in BY_NAME if name.startswith("train_")} == {
        "preset",
        "force_publish",
        *TRAIN_OPTIONS,
    }
    from lib.options.start_options import REWARD_MODES, TRAIN_PRESETS
    from monailabel_app.training.config import PRESETS
    from monailabel_app.training.config import REWARD_MODES as TRAINED_REWARD_MODES

    assert set(TRAIN_PRESETS) == set(PRESETS) and set(REWARD_MODES) == set(TRAINED_REWARD_MODES)


def test_every_conf_key_the_code_reads_is_in_the_schema():
    """No layer reads a `--conf` key the schema does not know (it would pass unchecked and undocumented)."""
    root = Path(__file__).resolve().parents[2]
    read = set()
    for path in [root / "main.py", *(root / "lib").rglob("*.py"), *(root / "monailabel_app").rglob("*.py")]:
        read |= set(re.findall(r"""options\[["']([a-z0-9_]+)["']\]""", path.read_text()))
    assert read and read <= set(BY_NAME), read - set(BY_NAME)


def test_a_mistyped_start_stops_before_anything_starts(tmp_path):
    """The README's start with a typo: one line, exit status 2, no traceback, no Orthanc, no server."""
    import os
    import subprocess

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "STUDIES": str(tmp_path / "studies"), "ALLOW_ROOT": "1"}
    started = subprocess.run(
        ["bash", "scripts/start.sh", "--conf", "reasonr", "/models/MedReasoner-Soft-7B"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert started.returncode == 2
    errors = [line for line in started.stderr.splitlines() if line.strip()]
    assert errors == [
        "Not started: --conf reasonr: no such option; did you mean `reasoner`? (the options: docs/configuration.md)."
    ]
    assert not (tmp_path / "studies").exists()  # stopped before the sample studies were even written


@pytest.mark.server
def test_the_server_itself_refuses_a_bad_option_with_one_line(tmp_path):
    """Started without scripts/start.sh (`monailabel start_server ...` by hand): the same one line, no traceback."""
    from tests.support.monailabel_server import MonaiLabelServer

    server = MonaiLabelServer(tmp_path, {"models": "implicit_query", "device": "gpu"}, tmp_path / "server.log")
    with pytest.raises(RuntimeError) as failed:
        server.start(timeout_s=300)
    log = (tmp_path / "server.log").read_text()
    assert "Not started: --conf device 'gpu': must be auto, cpu, cuda or cuda:N." in log
    assert "Traceback" not in log and "exited with 2" in str(failed.value)
