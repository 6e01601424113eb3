""" "Not in this image" through the real server, as Slicer and OHIF ask: a reasoner that answers the absent form under
the opt-in `abstain` template gives status `not_found` with its reasoning, an empty label on the input's geometry and
a segment named so; the clinician saves the empty label as the final one (a deliberate "no finding"), and retraining
reads it as a negative."""

from __future__ import annotations

import numpy as np
import pytest
import requests
from monailabel.client import MONAILabelClient

from monailabel_app.data.datastore_folder import datastore_entries
from monailabel_app.data.loaders import load_samples
from monailabel_app.data.sample import NEGATIVE_TRUTH
from monailabel_app.demo.sample_studies import CT_SHAPE, write_ct
from monailabel_app.demo.tiny_models import build_tiny_reasoner
from monailabel_app.imaging.medical_image import read_medical_image
from tests.server.test_server import ohif_infer
from tests.support.monailabel_server import MonaiLabelServer

pytestmark = pytest.mark.server

ABSENT = "<think>Both lung bases are clear; nothing here explains it.</think><answer>{'found': false}</answer>"
QUESTION = "Which finding explains the reduced breath sounds over the left base?"
CT_ID = "ct_clear"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    reasoner = build_tiny_reasoner(tmp_path_factory.mktemp("absent_reasoner"), seed=0, answer_text=ABSENT)
    studies = tmp_path_factory.mktemp("studies")
    write_ct(studies / f"{CT_ID}.nii.gz")
    conf = {"models": "implicit_query", "reasoner": str(reasoner), "max_new_tokens": "64", "template": "abstain"}
    running = MonaiLabelServer(studies, conf, tmp_path_factory.mktemp("logs") / "server.log").start()
    yield running
    running.stop()


def test_not_found_reaches_slicer_and_ohif_and_a_saved_no_finding_trains_as_a_negative(server, tmp_path):
    client = MONAILabelClient(server.url, tmpdir=str(tmp_path))
    params = {"question": QUESTION, "result_extension": ".nrrd", "result_dtype": "uint8"}
    label_file, result = client.infer("implicit_query", CT_ID, params)
    assert result["status"] == "not_found" and result["box"] is None and result["mask_pixels"] is None
    assert result["reasoning"] == "Both lung bases are clear; nothing here explains it."
    assert list(result["label_names"]) == [f"Not in this image: {QUESTION}"]  # Slicer's segment name
    label = read_medical_image(label_file)
    assert label.array.shape == CT_SHAPE and not label.array.any()

    response = ohif_infer(server, "implicit_query", CT_ID, {"question": QUESTION})
    assert response.status_code == 200 and response.content  # OHIF gets the empty label too

    saved = client.save_label(CT_ID, label_file, params={"label_info": [{"name": "target", "idx": 1}]})
    assert saved["answer"]["status"] == "not_found"  # Slicer's Submit dialog
    info = requests.get(f"{server.url}/datastore/label/info", params={"label": CT_ID, "tag": "final"}, timeout=30)
    assert info.json()["status"] == "not_found" and info.json()["question"] == QUESTION
    (negative,) = load_samples(datastore_entries(server.studies))
    assert negative.is_negative and negative.ground_truth == NEGATIVE_TRUTH and negative.question == QUESTION
    assert negative.extra["slice"] == result["slice"]  # the slice the question was asked on
    assert np.array_equal(negative.mask, np.zeros(CT_SHAPE[1:], bool))
