"""Active learning by the reasoner's doubt: the record of confidences, the `least_confident` strategy on a real
datastore, and the whole loop through the real server as Slicer's "Next Sample" asks it."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
import requests
from monailabel.client import MONAILabelClient

from lib.activelearning.least_confident import LeastConfident
from lib.activelearning.reasoner_confidence import ActiveLearningSettings
from lib.datastore.local import GatedLocalDatastore
from lib.options.start_options import parse_start_options
from monailabel_app.demo.sample_studies import write_png, xray_picture
from monailabel_app.grounding.confidence_book import (
    CONFIDENCE_KEY,
    MAX_QUESTIONS,
    MAX_SITE_QUESTIONS,
    answered_by,
    lowest_confidence,
    with_entry,
)
from tests.support.monailabel_server import MonaiLabelServer


def _store(folder, names):
    for seed, name in enumerate(names):
        write_png(xray_picture(seed=seed), folder / f"{name}.png")
    return GatedLocalDatastore(str(folder), keep_versions=2, extensions=["*.png"])


def _record(store, image_id, question, confidence, reasoner="r1"):
    book = with_entry(store.get_image_info(image_id), question, confidence, reasoner, "answer")
    store.update_image_info(image_id, {CONFIDENCE_KEY: book})


def _label(store, folder, image_id):
    mask = folder / f"{image_id}_mask.png"
    write_png(np.zeros(xray_picture().shape, dtype=np.uint8), mask)
    store.save_label(image_id, str(mask), "final", {})


def test_least_confident_ranks_by_an_images_most_doubtful_question(tmp_path):
    store = _store(tmp_path, ["a", "b", "c", "d", "never"])
    _record(store, "a", "Where is the opacity?", 0.9)
    _record(store, "a", "Which lobe is collapsed?", 0.2)  # a's doubt: its lowest, 0.2
    _record(store, "b", "Where is the opacity?", 0.4)
    _record(store, "c", "Where is the opacity?", 0.1)
    _record(store, "d", "Where is the opacity?", 0.6)
    strategy, order = LeastConfident(), []
    while (picked := strategy({"strategy": "least_confident"}, store)) is not None:
        order.append((picked["id"], picked["confidence"]))
        _label(store, tmp_path, picked["id"])  # a labelled image never comes back
    assert order == [("c", 0.1), ("a", 0.2), ("b", 0.4), ("d", 0.6), ("never", None)]


def test_what_a_client_wrote_into_image_info_is_not_trusted(tmp_path):
    store = _store(tmp_path, ["a", "b"])
    _record(store, "b", "Where is the opacity?", 0.5)
    hostile = {"x": {"confidence": -3}, "y": {"confidence": "0"}, "z": {"confidence": math.inf}, "w": 0.0, "v": None}
    store.update_image_info("a", {CONFIDENCE_KEY: hostile})
    assert lowest_confidence(store.get_image_info("a")) is None
    assert LeastConfident()({}, store)["id"] == "b"
    store.update_image_info("a", {CONFIDENCE_KEY: ["not", "a", "book"]})
    assert LeastConfident()({}, store)["id"] == "b"
    with pytest.raises(ValueError):
        with_entry({}, "q", 1.5, "r1", "answer")


def test_clinicians_questions_never_push_out_the_sites_scored_ones():
    info: dict = {}
    for n in range(MAX_SITE_QUESTIONS):
        info = {CONFIDENCE_KEY: with_entry(info, f"site question {n}?", 0.5, "r1", "scoring")}
    for n in range(3 * MAX_QUESTIONS):
        info = {CONFIDENCE_KEY: with_entry(info, f"asked {n}?", 0.9, "r1", "answer")}
    assert len(info[CONFIDENCE_KEY]) == MAX_QUESTIONS
    assert {f"site question {n}?" for n in range(MAX_SITE_QUESTIONS)} <= answered_by(info, "r1")


def test_the_record_keeps_the_newest_questions_and_knows_who_answered():
    info: dict = {}
    for n in range(MAX_QUESTIONS + 5):
        info = {CONFIDENCE_KEY: with_entry(info, f"question {n}?", n / 100, "r1" if n % 2 else "r2", "scoring")}
    assert len(info[CONFIDENCE_KEY]) == MAX_QUESTIONS and "question 0?" not in info[CONFIDENCE_KEY]
    assert lowest_confidence(info) == 0.05
    assert answered_by(info, "r1") == {f"question {n}?" for n in range(5, MAX_QUESTIONS + 5) if n % 2}


def test_the_question_list_is_checked_at_start(tmp_path):
    questions = tmp_path / "questions.txt"
    questions.write_text("# site questions\nWhere is the opacity?\n\nWhere is the opacity?\nWhich rib is broken?\n")
    settings = from_conf({"al_questions": str(questions), "al_budget": "3"})
    assert settings.questions == ("Where is the opacity?", "Which rib is broken?") and settings.budget == 3
    for conf, message in [
        ({"al_questions": str(tmp_path / "missing.txt")}, "must name an existing file"),
        ({"al_questions": str(questions), "al_budget": "0"}, "al_budget"),
        ({"al_questions": str(questions), "al_confidence_samples": "0"}, "from 1 to 16"),
    ]:
        with pytest.raises(ValueError, match=message):
            from_conf(conf)
    (tmp_path / "long.txt").write_text("x" * 3000 + "\n")
    with pytest.raises(ValueError, match="line 1"):
        from_conf({"al_questions": str(tmp_path / "long.txt")})
    assert from_conf({}).questions == ()


def from_conf(conf):
    return ActiveLearningSettings.from_options(parse_start_options(conf))


# --------------------------------------------------------------------------------------------- the real server

IMAGES = ["img_a", "img_b", "img_c", "img_d"]
QUESTIONS = ["Which structure would explain the dull percussion note?", "Where is the opacity?"]


@pytest.fixture(scope="module")
def server(tmp_path_factory, format_tuned_reasoner_dir):
    studies = tmp_path_factory.mktemp("al_studies")
    for seed, name in enumerate(IMAGES):
        write_png(xray_picture(seed=seed + 10), studies / f"{name}.png")
    questions = tmp_path_factory.mktemp("al_conf") / "questions.txt"
    questions.write_text("\n".join(QUESTIONS) + "\n")
    conf = {
        "models": "implicit_query",
        "reasoner": str(format_tuned_reasoner_dir),
        "max_new_tokens": "96",
        "al_questions": str(questions),
        "al_budget": "3",
        "al_confidence_samples": "3",
        "confidence_temperature": "1.0",
    }
    running = MonaiLabelServer(studies, conf, tmp_path_factory.mktemp("al_logs") / "server.log").start()
    yield running
    running.stop()


def scoring_status(server) -> dict:
    return requests.get(f"{server.url}/scoring/", timeout=30).json()


def wait_for_scoring(server, runs: int, timeout_s: float = 240) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = scoring_status(server)
        if status["runs"] >= runs and not status["running"]:
            return status
        time.sleep(0.5)
    raise TimeoutError(f"scoring did not finish {runs} run(s): {status}\n{server.log_tail()}")


def image_doubt(server, image_id):
    info = requests.get(f"{server.url}/datastore/image/info", params={"image": image_id}, timeout=30).json()
    return lowest_confidence(info), info.get(CONFIDENCE_KEY, {})


def test_next_sample_offers_the_least_confident_image_and_never_a_labelled_one(server, tmp_path):
    client = MONAILabelClient(server.url, tmpdir=str(tmp_path))
    first = wait_for_scoring(server, runs=1)  # MONAI Label scores at start
    result = first["last"]["reasoner_confidence"]["result"]
    assert result["asked"] == 3 and result["waiting"] == len(IMAGES) * len(QUESTIONS) - 3  # the budget holds
    runs = first["runs"]
    while True:  # every "Next Sample" starts another bounded run, until every image was asked every question
        client.next_sample("least_confident", {})
        runs += 1
        status = wait_for_scoring(server, runs)
        runs = status["runs"]
        if status["last"]["reasoner_confidence"]["result"]["waiting"] == 0:
            break
    doubts = {image: image_doubt(server, image) for image in IMAGES}
    assert all(len(book) == len(QUESTIONS) for _, book in doubts.values())
    assert all(0.0 <= doubt <= 1.0 for doubt, _ in doubts.values())
    expected = sorted(IMAGES, key=lambda image: (doubts[image][0], image))

    offered = []
    for _ in IMAGES:
        sample = client.next_sample("least_confident", {})
        offered.append(sample["id"])
        assert sample["confidence"] == pytest.approx(doubts[sample["id"]][0])
        mask = tmp_path / f"{sample['id']}.png"
        write_png(np.zeros(xray_picture().shape, dtype=np.uint8), mask)
        client.save_label(sample["id"], str(mask), tag="final")
    assert offered == expected  # least confident first, and no image twice
    assert client.next_sample("least_confident", {}) == {}  # all labelled: nothing is offered again
    loads = server.log_path.read_text().count("Loading reasoner")
    assert loads == 1, f"the reasoner was loaded {loads} times"  # scoring used the server's models


def test_an_answer_with_a_confidence_joins_the_record(server, tmp_path):
    client = MONAILabelClient(server.url, tmpdir=str(tmp_path))
    question = "Which rib is fractured?"
    _, result = client.infer("implicit_query", IMAGES[0], {"question": question, "confidence_samples": 2})
    _, book = image_doubt(server, IMAGES[0])
    assert book[question]["confidence"] == result["confidence"] and book[question]["source"] == "answer"


def test_a_client_cannot_write_the_confidence_record(server):
    forged = {CONFIDENCE_KEY: {"Where?": {"confidence": 0.0, "reasoner": "x", "source": "scoring", "at": "9999"}}}
    response = requests.put(
        f"{server.url}/datastore/image/info", params={"image": IMAGES[1]}, data={"info": json.dumps(forged)}, timeout=30
    )
    assert response.status_code == 422 and CONFIDENCE_KEY in response.text
    assert "Where?" not in image_doubt(server, IMAGES[1])[1]


def test_unknown_scoring_method_is_404(server):
    assert requests.post(f"{server.url}/scoring/bogus", timeout=30).status_code == 404
    assert requests.post(f"{server.url}/scoring/reasoner_confidence", json={"gpus": "0"}, timeout=30).status_code == 422
    assert requests.delete(f"{server.url}/scoring/", timeout=30).status_code == 405
