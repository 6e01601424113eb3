"""The answer in front of the clinician and in the archive, through the real server and MONAI Label's own client (the
one 3D Slicer's module bundles), with a folder datastore:

- Slicer's Auto-segmentation panel names the segment from the result's `label_names`: the answer in a few words;
- Slicer's "Submit Label" dialog shows the JSON the save returns: the answer the saved label records;
- the saved final label's info keeps the whole answer record; every answer is in the answer log with its picture,
  which the answers page (checked in Chromium in test_ohif_browser.py) and OHIF's panel read.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import requests
from fastapi import FastAPI
from fastapi.testclient import TestClient
from monailabel.client import MONAILabelClient
from monailabel.client.client import MONAILabelClientException
from PIL import Image

from lib.server.routes.viewer import OHIF_DIR, viewer_router
from monailabel_app.demo.sample_studies import CT_SHAPE, write_ct, write_png, xray_picture
from monailabel_app.imaging.medical_image import read_medical_image
from tests.server.test_server import ohif_infer
from tests.support.monailabel_server import MonaiLabelServer

pytestmark = pytest.mark.server

QUESTION = "Which structure would explain the reduced breath sounds over the left base?"
CT_ID, XRAY_ID = "ct_chest_lesion", "xray_opacity"
RECORD_KEYS = ("question", "reasoning", "raw_text", "box", "points", "window", "slice", "reasoner", "answered_at")


@pytest.fixture(scope="module")
def server(format_tuned_reasoner_dir, tmp_path_factory):
    studies = tmp_path_factory.mktemp("studies")
    write_ct(studies / f"{CT_ID}.nii.gz")
    write_png(xray_picture(), studies / f"{XRAY_ID}.png")
    conf = {"models": "implicit_query", "reasoner": str(format_tuned_reasoner_dir), "max_new_tokens": "96"}
    conf["embedding_cache_mb"] = "128"  # the volume tests' slices (4 MiB each) are encoded once for the module
    running = MonaiLabelServer(studies, conf, tmp_path_factory.mktemp("logs") / "server.log").start()
    yield running
    running.stop()


def slicer_client(server, tmp_path) -> MONAILabelClient:
    return MONAILabelClient(server.url, tmpdir=str(tmp_path))


def slicer_segmentation(client: MONAILabelClient, image_id: str, question: str, **extra):
    """Slicer's "Run" in Auto-segmentation: the model's config values (first item of lists) plus its result format."""
    config = client.info()["models"]["implicit_query"]["config"]
    params = {k: v[0] if isinstance(v, list) else v for k, v in config.items()}
    params.update(question=question, result_extension=".nrrd", result_dtype="uint8", **extra)
    return client.infer("implicit_query", image_id, params)


def test_slicer_names_the_segment_after_the_answer(server, tmp_path):
    _, result = slicer_segmentation(slicer_client(server, tmp_path), CT_ID, QUESTION)
    # Slicer: labels = params["label_names"], sorted by value -> the segment names it imports the label map under
    (name,) = [k for k, _ in sorted(result["label_names"].items(), key=lambda item: item[1])]
    assert name == f"Answer: {QUESTION}" and result["label_names"][name] == 1
    long_question = "Which structure, " + "given the history, " * 10 + "explains it?"
    _, result = slicer_segmentation(slicer_client(server, tmp_path), CT_ID, long_question)
    (name,) = result["label_names"]
    assert len(name) <= 90 and name.endswith("…") and name.startswith("Answer: Which structure")


def test_slicer_submit_dialog_shows_the_answer_and_the_label_keeps_it(server, tmp_path):
    client = slicer_client(server, tmp_path)
    label_file, result = slicer_segmentation(client, CT_ID, QUESTION, window="lung")
    saved = client.save_label(CT_ID, label_file, params={"label_info": [{"name": "target", "idx": 1}]})
    # Slicer shows this JSON under "Show Details" of "Label-Mask saved into MONAI Label Server"
    answer = saved["answer"]
    assert answer["question"] == QUESTION and answer["reasoning"] == result["reasoning"]
    assert answer["box"] == result["box"] and answer["slice"] == result["slice"] and answer["window"] == "lung"
    assert saved["answers_page"] == f"/answers/?image={CT_ID}"
    info = requests.get(f"{server.url}/datastore/label/info", params={"label": CT_ID, "tag": "final"}, timeout=30)
    record = info.json()
    for key in RECORD_KEYS:
        assert record[key] == result[key], key
    assert record["reasoner_version"] == result["reasoner_version"] and record["reasoner_version"]["sha256"]
    assert record["answer_id"] == result["answer_id"]


def test_every_answer_is_kept_with_its_picture(server, tmp_path):
    _, result = slicer_segmentation(slicer_client(server, tmp_path), XRAY_ID, QUESTION)
    listed = requests.get(f"{server.url}/answers/list", params={"image": XRAY_ID, "limit": 1}, timeout=30).json()
    (entry,) = listed["answers"]
    assert entry["answer_id"] == result["answer_id"] and entry["image_id"] == XRAY_ID
    for key in ("question", "reasoning", "raw_text", "box", "points", "answered_at", "reasoner_version"):
        assert entry[key] == result[key], key
    assert entry["latency_s"] >= result["latencies"]["total"] > 0 and entry["model"] == "implicit_query"
    one = requests.get(f"{server.url}/answers/{result['answer_id']}", timeout=30).json()
    assert one == entry
    picture = requests.get(f"{server.url}/answers/{result['answer_id']}/picture", timeout=30)
    assert picture.headers["content-type"] == "image/png"
    drawn = np.asarray(Image.open(io.BytesIO(picture.content)).convert("RGB")).astype(int)
    assert (drawn.max(axis=-1) - drawn.min(axis=-1) > 40).sum() >= result["mask_pixels"] * 0.5  # tinted mask
    page = requests.get(f"{server.url}/answers/", timeout=30)
    assert page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]


@pytest.mark.parametrize(
    "path, params, status",
    [
        ("/answers/list", {"limit": 0}, 422),
        ("/answers/list", {"limit": 1000}, 422),
        ("/answers/list", {"image": "../etc/passwd"}, 422),
        ("/answers/list", {"study": "1.2.3;DROP"}, 422),
        ("/answers/..%2F..%2Fetc%2Fpasswd", {}, 404),
        ("/answers/20261203T101500123456-1a2b3c4d", {}, 404),
        ("/answers/20261203T101500123456-1a2b3c4d/picture", {}, 404),
        ("/answers/static/..%2Fanswers.py", {}, 404),
        ("/answers/static/answers.html", {}, 404),
    ],
)
def test_bad_answer_requests_are_refused(server, path, params, status):
    response = requests.get(f"{server.url}{path}", params=params, timeout=30)
    assert response.status_code == status, response.text
    assert requests.get(f"{server.url}/answers/list", params={"limit": 1}, timeout=30).status_code == 200


def test_ohif_gets_the_answer_panel_unless_the_admin_turns_it_off(server):
    served = requests.get(f"{server.url}/ohif/app-config.js", timeout=30)
    assert served.status_code == 200 and "/answers/static/" in served.text
    original = Path(OHIF_DIR, "app-config.js").read_text(encoding="utf-8")
    assert served.text.startswith(original)  # OHIF's own configuration, unchanged, then the loader
    app = FastAPI()
    app.include_router(viewer_router(None, 30.0, answer_panel=False))  # --conf ohif_answer_panel false
    assert TestClient(app).get("/ohif/app-config.js").text == original
    assert served.text.index('"answer-text.js"') < served.text.index('"ohif-panel.js"')  # the wording, then the panel
    for name in ("answer-text.js", "ohif-panel.js"):
        script = requests.get(f"{server.url}/answers/static/{name}", timeout=30)
        assert script.status_code == 200 and "innerHTML" not in script.text, name
    panel = requests.get(f"{server.url}/answers/static/ohif-panel.js", timeout=30)
    assert "textContent" in panel.text and "MedReasonerAnswerText" in panel.text


def test_slicer_scope_volume_carries_the_answer_through_the_lesion(server, tmp_path):
    client = slicer_client(server, tmp_path)
    label_file, result = slicer_segmentation(client, CT_ID, QUESTION, scope="volume", window="soft_tissue")
    carried = result["propagation"]
    label = read_medical_image(label_file)
    source = read_medical_image(str(server.studies / f"{CT_ID}.nii.gz"))
    assert label.array.shape == source.array.shape
    for key in ("spacing", "origin", "direction"):
        assert np.allclose(label.geometry()[key], source.geometry()[key])
    filled = np.flatnonzero(label.array.reshape(label.array.shape[0], -1).any(axis=1)).tolist()
    assert filled == list(range(carried["slice_range"][0], carried["slice_range"][1] + 1))
    assert len(filled) > 1 and carried["key_slice"] == result["slice"] and carried["seconds_per_slice"] > 0
    assert set(carried["stopped"]) == {"up", "down"} and carried["method"] == "neighbour prompt"
    (entry,) = requests.get(f"{server.url}/answers/list", params={"limit": 1}, timeout=30).json()["answers"]
    assert entry["propagation"] == carried
    with pytest.raises(MONAILabelClientException, match="scope"):
        slicer_segmentation(client, CT_ID, QUESTION, scope="everywhere")


@pytest.mark.parametrize("forged", ["reasoning", "Reasoning", "raw_text", "answer_id", "reasoner_version", "box"])
def test_a_save_cannot_put_words_in_the_models_mouth(server, tmp_path, forged):
    client = slicer_client(server, tmp_path)
    label_file, _ = slicer_segmentation(client, XRAY_ID, QUESTION)
    with pytest.raises(MONAILabelClientException, match="the server keeps them"):
        client.save_label(XRAY_ID, label_file, params={"label_info": [{"name": "target"}], forged: "forged"})


def slicer_points(client: MONAILabelClient, model: str, image_id: str, foreground, background, k=None):
    """Slicer's point panel: the model's config values, the clicks (voxel [i, j, k]) and, from a 2D view, the slice
    of the click (`onClickDeepgrow`: a 3D view sends every click and no slice)."""
    config = client.info()["models"][model]["config"]
    params = {key: v[0] if isinstance(v, list) else v for key, v in config.items()}
    params.update(question=QUESTION, label="target", foreground=foreground, background=background, window="soft_tissue")
    params.update(result_extension=".nrrd", result_dtype="uint8", **({} if k is None else {"slice": k}))
    return client.infer(model, image_id, params)


def filled_slices(label: np.ndarray) -> list[int]:
    return np.flatnonzero(label.reshape(label.shape[0], -1).any(axis=1)).tolist()


def test_slicer_clicks_correct_the_answer_without_asking_again_in_2d_and_3d(server, tmp_path):
    client, k = slicer_client(server, tmp_path), CT_SHAPE[0] // 2 - 2  # a slice no other test asked this question on
    chooser, background = [80, 40, k], [20, 20, k]
    _, asked = slicer_points(client, "implicit_query_slice", CT_ID, [chooser], [], k)
    assert asked["status"] == "ok" and asked["reasoner_called"] is True and asked["clicks_chose_slice"] == 1
    label_file, refined = slicer_points(client, "implicit_query_slice", CT_ID, [chooser], [background], k)
    assert refined["reasoner_called"] is False and refined["clicks_chose_slice"] == 1
    assert refined["refined_by_clicks"] == {"foreground": [], "background": [[20, 20]]}
    for key in ("question", "reasoning", "raw_text", "box", "points", "reasoner_version"):
        assert refined[key] == asked[key], key
    assert refined["answer_id"] != asked["answer_id"] and "reasoner_prefill" not in refined["latencies"]
    (name,) = refined["label_names"]
    assert name == f"Answer (refined by 1 click): {QUESTION}"
    assert filled_slices(read_medical_image(label_file).array) in ([k], [])  # the 2D view writes its slice only
    entry = requests.get(f"{server.url}/answers/{refined['answer_id']}", timeout=30).json()
    assert entry["reasoner_called"] is False and entry["refined_by_clicks"] == refined["refined_by_clicks"]

    saved = client.save_label(CT_ID, label_file, params={"label_info": [{"name": "target", "idx": 1}]})
    assert saved["answer"]["question"] == QUESTION
    record = requests.get(f"{server.url}/datastore/label/info", params={"label": CT_ID, "tag": "final"}, timeout=30)
    assert record.json()["refined_by_clicks"] == refined["refined_by_clicks"]  # the label was corrected by clicks

    label_file, volume = slicer_points(client, "implicit_query_3d", CT_ID, [chooser], [background])  # no slice
    assert volume["reasoner_called"] is False and volume["slice"] == k  # the answer above, the same correction
    assert volume["reasoning"] == asked["reasoning"] and volume["propagation"]["key_slice"] == k
    first, last = volume["propagation"]["slice_range"]
    assert filled_slices(read_medical_image(label_file).array) == list(range(first, last + 1))


def test_ohif_point_prompts_correct_the_image_s_last_answer_on_the_slice_they_are_on(server):
    n, k = CT_SHAPE[0], CT_SHAPE[0] // 2 + 1
    asked = ohif_infer(server, "implicit_query", CT_ID, {"question": QUESTION, "slice": k, "window": "soft_tissue"})
    assert asked.status_code == 200, asked.text
    # OHIF's point prompts: no question, no slice, voxel indices of OHIF's volume (the slices in the volume's order)
    clicks = {"foreground": [[80, 40, k]], "background": [[20, 20, k]]}
    refined = ohif_infer(server, "implicit_query_slice", CT_ID, clicks)
    assert refined.status_code == 200, refined.text
    latest = requests.get(f"{server.url}/answers/list", params={"image": CT_ID, "limit": 1}, timeout=30).json()
    (entry,) = latest["answers"]
    assert entry["model"] == "implicit_query_slice" and entry["reasoner_called"] is False
    assert entry["question"] == QUESTION and entry["slice"] == k and entry["window"] == "soft_tissue"
    assert entry["refined_by_clicks"] == {"foreground": [[80, 40]], "background": [[20, 20]]}
    label_path = Path(server.studies.parent / "ohif_refined.nrrd")
    label_path.write_bytes(refined.content)
    stored = read_medical_image(str(label_path))  # written on that slice only, the volume's geometry kept
    assert filled_slices(stored.array) == [k] and stored.geometry()["direction"][2][2] > 0
    off_grid = ohif_infer(server, "implicit_query_slice", CT_ID, {"foreground": [[80, 40, n]]})
    assert off_grid.status_code == 422 and "outside the volume" in off_grid.text


NO_SPACES = "pneumothorax" * 25  # 300 characters that a browser can't wrap at a space
HOSTILE_QUESTION = f"Where\u202eis{NO_SPACES}\u2066here?"  # a right-to-left override and an isolate, never closed
BIDI_CONTROLS = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"


def test_the_answers_page_shows_a_hostile_question_inside_its_box_in_written_order(server, tmp_path):
    """An asker's text can't push the answers page sideways or reorder what a clinician reads: each bidirectional
    control is shown as an escape, and a question without spaces wraps inside its card."""
    from tests.support.browser import headless_chromium, require_chromium
    from tests.whole_day.test_ohif_browser import ARTIFACTS_DIR

    require_chromium()
    _, result = slicer_segmentation(slicer_client(server, tmp_path), XRAY_ID, HOSTILE_QUESTION)
    stored = requests.get(f"{server.url}/answers/{result['answer_id']}", timeout=30).json()
    assert stored["question"] == HOSTILE_QUESTION  # kept as asked: the page, not the log, makes it safe to read
    with headless_chromium() as chromium:
        page = chromium.new_page(viewport={"width": 1000, "height": 800})
        page.goto(f"{server.url}/answers/?image={XRAY_ID}")
        question = page.locator(f"#answer-{result['answer_id']} h2")
        question.wait_for()
        shown = question.evaluate(
            """(question) => {
                const text = document.createRange();
                text.selectNodeContents(question);
                const { left, right, top, bottom } = text.getBoundingClientRect();
                return { text: question.textContent, box: { left, right, top, bottom },
                         card: question.closest("article").getBoundingClientRect(),
                         page: [document.documentElement.scrollWidth, document.documentElement.clientWidth] }
            }"""
        )
        ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS_DIR / "answers_page_hostile_question.png"))
        scroll_width, client_width = shown["page"]
        assert scroll_width <= client_width, shown  # no sideways scroll
        assert shown["text"] == f"Where⟨U+202E⟩is{NO_SPACES}⟨U+2066⟩here?", shown  # in written order, none raw
        box, card = shown["box"], shown["card"]
        assert card["left"] <= box["left"] and box["right"] <= card["right"], shown  # the text wraps inside its card
        assert card["top"] <= box["top"] and box["bottom"] <= card["bottom"], shown
        every_control = page.evaluate("(text) => window.MedReasonerAnswerText.visible(text)", BIDI_CONTROLS)
        assert not set(every_control) & set(BIDI_CONTROLS) and every_control.count("⟨U+") == len(BIDI_CONTROLS)
