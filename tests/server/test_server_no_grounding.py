"""A reasoner whose answer can't be used gives a result, not an error: status no_grounding, the raw text, the reason,
and an empty label on the input's geometry. The tiny random-weight reasoner answers gibberish, so it shows this path."""

import numpy as np
import pytest
from monailabel.client import MONAILabelClient

from monailabel_app.demo.sample_studies import CT_SHAPE, write_ct
from monailabel_app.imaging.medical_image import read_medical_image
from tests.support.monailabel_server import MonaiLabelServer

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def server(tiny_reasoner_dir, tmp_path_factory):
    studies = tmp_path_factory.mktemp("studies")
    write_ct(studies / "ct.nii.gz")
    conf = {"models": "implicit_query", "reasoner": str(tiny_reasoner_dir), "max_new_tokens": "48"}
    running = MonaiLabelServer(studies, conf, tmp_path_factory.mktemp("logs") / "server.log").start()
    yield running
    running.stop()


def test_gibberish_answer_is_a_no_grounding_result(server, tmp_path):
    client = MONAILabelClient(server.url, tmpdir=str(tmp_path))
    params = {"question": "Which organ explains the jaundice?", "result_extension": ".nrrd", "result_dtype": "uint8"}
    for _ in range(2):  # and the server keeps answering
        label_file, result = client.infer("implicit_query", "ct", params)
        assert result["status"] == "no_grounding"
        assert result["reason"] and result["raw_text"] and result["box"] is None and result["mask_pixels"] is None
        label = read_medical_image(label_file)
        assert label.array.shape == CT_SHAPE and not label.array.any()
        assert np.allclose(
            label.geometry()["spacing"], read_medical_image(str(server.studies / "ct.nii.gz")).geometry()["spacing"]
        )
