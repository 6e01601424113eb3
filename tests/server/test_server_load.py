"""The real server under a storm of bad requests and under a crowd of clients: every request answered (200, a 4xx,
or a 503 with Retry-After), no 5xx, no dropped connection, the next good request served, and no file outside the
datastore created, changed or removed. Figures (counts, memory) are printed by `benchmarks/server_storm.py`."""

from __future__ import annotations

import os

import pytest
import requests

from monailabel_app.demo.sample_studies import write_sample_studies
from tests.server.test_server_security import APP_SKIP, scratch_left, settle
from tests.support.file_trees import snapshot
from tests.support.hostile_requests import CATALOGUE, good_request
from tests.support.monailabel_server import APP_DIR, MonaiLabelServer
from tests.support.storm import load, storm

pytestmark = pytest.mark.server

STORM_REQUESTS, STORM_THREADS = 600, 8
LOAD_SECONDS = float(os.environ.get("LOAD_TEST_SECONDS", "30"))  # longer: LOAD_TEST_SECONDS=600
LOAD_CLIENTS = 16


@pytest.fixture(scope="module")
def server(format_tuned_reasoner_dir, tmp_path_factory):
    studies = tmp_path_factory.mktemp("studies")
    write_sample_studies(studies)
    conf = {"models": "implicit_query", "reasoner": str(format_tuned_reasoner_dir), "max_new_tokens": "96"}
    running = MonaiLabelServer(studies, conf, tmp_path_factory.mktemp("logs") / "server.log", own_temp=True).start()
    session = requests.Session()
    good_request(session, running.url)
    for _, send in CATALOGUE:  # warm: every code path once, so only the storm's own effects are compared
        send(session, running.url)
    yield running
    running.stop()


def test_a_storm_of_bad_requests_gets_only_4xx_and_changes_nothing_outside(server):
    temp_before = snapshot(server.temp_dir)
    app_before = snapshot(APP_DIR, APP_SKIP)
    outcome = storm(server.url, STORM_REQUESTS, STORM_THREADS)
    assert outcome.errors == []  # no dropped or refused connection
    assert outcome.count() == STORM_REQUESTS and outcome.server_errors() == 0, outcome.statuses
    assert all(400 <= status < 500 for (kind, status) in outcome.statuses if kind == "bad" and status != 200), (
        outcome.statuses
    )
    assert outcome.statuses[("good", 200)] == outcome.count("good") == STORM_REQUESTS // 10
    assert good_request(requests.Session(), server.url).status_code == 200
    unchanged = dict(created=[], removed=[], changed=[])
    assert settle(lambda: snapshot(server.temp_dir), temp_before) == unchanged
    assert settle(lambda: snapshot(APP_DIR, APP_SKIP), app_before) == unchanged
    assert scratch_left(server) == []


def test_sixteen_clients_for_half_a_minute_are_all_answered(server):
    outcome = load(server.url, LOAD_SECONDS, LOAD_CLIENTS)
    assert outcome.errors == []
    assert outcome.server_errors() == 0 and outcome.retry_after_missing == 0, outcome.statuses
    assert outcome.statuses[("good", 200)] > 0 and outcome.count("bad") > 0
    assert {status for (kind, status) in outcome.statuses if kind == "good"} <= {200, 503}
    assert good_request(requests.Session(), server.url).status_code == 200
