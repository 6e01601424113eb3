"""The real server attacked as a hostile client on the network would: no request reaches a file outside the datastore,
becomes code, or destroys what a user saved; every bad request is a clear 4xx; the server keeps serving.

Requests are sent exactly as they go over the wire (requests, and raw request lines where a client library would
normalise `..`); the hostile catalogue is `tests/support/hostile_requests.py`.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests

from monailabel_app.demo.sample_studies import XRAY_LESION, write_png, write_sample_studies, xray_picture
from monailabel_app.imaging.medical_image import read_medical_image
from tests.support.file_trees import differences, snapshot
from tests.support.hostile_requests import CATALOGUE, IMAGE_ID, OK, good_request
from tests.support.hostile_uploads import hostile_uploads
from tests.support.monailabel_server import APP_DIR, MonaiLabelServer, free_port

pytestmark = pytest.mark.server

APP_SKIP = (".git", ".venv", "__pycache__", "logs", ".pytest_cache", ".hypothesis", "model", "benchmarks/results")
SERVED_SAFELY = {"raw: /ohif/../../etc/passwd": lambda r: b"root:" not in r.content}  # the viewer's page, not the file
UPLOAD_LIMIT_MB = 4


class PageServer:
    """A web page on another origin (another port of this machine), as a hospital's own OHIF would be."""

    def __init__(self):
        self.port = free_port()
        self.origin = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "PageServer":
        import http.server

        from tests.support.threaded_http import ThreadedHttpServer

        class Page(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = b"<!doctype html><title>another origin</title>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self._server = ThreadedHttpServer(Page, self.port).start()
        return self

    def __exit__(self, *exc):
        self._server.stop()


ALLOWED_PAGE = PageServer()  # --conf cors_origins names its origin; a second page on another port is not allowed


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    folder = tmp_path_factory.mktemp("studies")
    write_sample_studies(folder)
    return folder


@pytest.fixture(scope="module")
def server(studies, format_tuned_reasoner_dir, tmp_path_factory):
    conf = {"models": "implicit_query", "reasoner": str(format_tuned_reasoner_dir), "max_new_tokens": "96"}
    conf.update(max_upload_mb=str(UPLOAD_LIMIT_MB), keep_versions="3", cors_origins=ALLOWED_PAGE.origin)
    running = MonaiLabelServer(studies, conf, tmp_path_factory.mktemp("logs") / "server.log", own_temp=True).start()
    good_request(requests.Session(), running.url)  # warm: models loaded, the server's own folders made
    scratch_left(running)  # and its request folder cleaned up, before any test takes a "before" picture
    yield running
    running.stop()


def assert_serves(server):
    response = good_request(requests.Session(), server.url)
    assert response.status_code == 200, response.text


def settle(take, before, timeout_s=60):
    """Clean-up of a finished request runs just after its answer is sent; wait for it before comparing."""
    deadline = time.monotonic() + timeout_s
    while True:
        after = take()
        changes = differences(before, after)
        if not any(changes.values()) or time.monotonic() > deadline:
            return changes
        time.sleep(0.2)


def scratch_left(server, timeout_s=60) -> list:
    """The request folders still there once the last answer's clean-up has run (it runs just after sending)."""
    scratch = server.temp_dir / "medreasoner-requests" / str(server.process.pid)
    deadline = time.monotonic() + timeout_s
    while scratch.exists() and list(scratch.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return list(scratch.iterdir()) if scratch.exists() else []


def test_every_hostile_request_is_a_clear_4xx_and_touches_nothing_outside(server, studies):
    temp_before = snapshot(server.temp_dir)
    app_before = snapshot(APP_DIR, APP_SKIP)
    studies_before = snapshot(studies)
    session = requests.Session()  # keep-alive, as a viewer: a dropped connection would show here
    for name, send in CATALOGUE:
        response = send(session, server.url)
        if name in SERVED_SAFELY:
            assert response.status_code < 500 and SERVED_SAFELY[name](response), name
            continue
        assert 400 <= response.status_code < 500, (name, response.status_code, response.text[:300])
        if response.status_code != 413:  # FastAPI's own 413 body is plain text
            assert response.json()["detail"], name  # a message, not an empty refusal
    assert_serves(server)
    assert settle(lambda: snapshot(server.temp_dir), temp_before) == dict(created=[], removed=[], changed=[])
    assert differences(app_before, snapshot(APP_DIR, APP_SKIP)) == dict(created=[], removed=[], changed=[])
    changed = differences(studies_before, snapshot(studies))
    assert changed["created"] == changed["removed"] == [] and set(changed["changed"]) <= {"datastore_v2.json"}
    assert scratch_left(server) == []  # refused uploads left nothing behind


def file_routes() -> list[tuple[str, str, str, bool]]:
    """(path, method, field, several files?) for every route of the app the server runs that takes a file, read from
    the app itself (built in this process only to list its routes): a route added later is walked too."""
    from fastapi import params
    from fastapi.routing import APIRoute

    from lib.server.asgi import build_app

    def api_routes(routes):
        for route in routes:
            included = getattr(route, "original_router", None)  # FastAPI keeps an included router whole
            if included is not None:
                yield from api_routes(included.routes)
            elif isinstance(route, APIRoute):
                yield route

    def file_fields(dependant):
        fields = [field for field in dependant.body_params if isinstance(field.field_info, params.File)]
        return fields + [field for sub in dependant.dependencies for field in file_fields(sub)]

    found = []
    for route in api_routes(build_app().routes):
        for field in file_fields(route.dependant):
            for method in route.methods:
                found.append((route.path, method, field.alias, "List" in str(field.field_info.annotation)))
    return found


# what each file route needs besides the file; a new route without an entry here fails the test below until added
FILE_ROUTE_QUERIES = {
    "/infer/{model}": {"image": ""},
    "/datastore/image": {"image": "gate-probe"},
    "/datastore/": {"image": "gate-probe"},
    "/datastore/label": {"image": IMAGE_ID, "tag": "final"},
    "/session/": {},
}


def test_no_upload_to_any_file_route_reads_another_file(server, studies, tmp_path):
    """Every route that takes a file, every form of header that names pixels elsewhere: a 4xx, the named file never
    read (its access time), nothing stored, and the next good request served."""
    routes = file_routes()
    assert {path for path, *_ in routes} >= {"/infer/{model}", "/datastore/image", "/datastore/label", "/session/"}
    studies_before = snapshot(studies)
    for number, (path, method, field, several) in enumerate(routes):
        (tmp_path / str(number)).mkdir()
        forms = hostile_uploads(tmp_path / str(number))
        for form, (name, content, marker) in forms.items():
            upload_field = [(field, (name, content))] if several else {field: (name, content)}
            response = requests.request(
                method,
                server.url + path.format(model="implicit_query"),
                params=FILE_ROUTE_QUERIES[path],
                data={"params": json.dumps(OK)},
                files=upload_field,
                timeout=120,
            )
            assert 400 <= response.status_code < 500, (path, field, form, response.status_code, response.text[:200])
            assert not marker.was_read(), (path, field, form)
    assert differences(studies_before, snapshot(studies)) == dict(created=[], removed=[], changed=[])
    assert scratch_left(server) == []
    assert_serves(server)


def test_a_planted_config_module_is_never_imported(server, studies, tmp_path):
    """Even if a file got into lib/configs/ (no request can put one there: see above), building the app (as the
    server and every training subprocess do) must not import it."""
    marker = tmp_path / "imported"
    app = tmp_path / "app"  # a copy: a file planted in the repository would be seen by tests running alongside
    for package in ("lib", "monailabel_app"):
        shutil.copytree(APP_DIR / package, app / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy(APP_DIR / "main.py", app / "main.py")
    planted = app / "lib" / "configs" / "zz_probe.py"
    planted.write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    env = {**os.environ, "PYTHONPATH": str(app), "MONAI_LABEL_APP_DIR": str(app)}
    build = [
        sys.executable,
        "-m",
        "monailabel.interfaces.utils.app",
        "-m",
        "info",
        "-a",
        str(app),
        "-s",
        str(studies),
    ]
    built = subprocess.run(build, env=env, cwd=app, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    assert not marker.exists()
    imported = subprocess.run([sys.executable, "-c", "import lib.configs.zz_probe"], env=env, cwd=app, timeout=60)
    assert imported.returncode == 0 and marker.read_text() == "ran"  # the probe does run when imported


def upload(server, path, image_id, name=None, params=None):
    with open(path, "rb") as stream:
        return requests.put(
            f"{server.url}/datastore/image",
            params={"image": image_id},
            files={"file": (name or path.name, stream), "params": (None, json.dumps(params or {}))},
            timeout=120,
        )


def save_label(server, image_id, mask, tmp_path, name="label.png", params=None):
    path = write_png(mask.astype(np.uint8), tmp_path / name)
    with open(path, "rb") as stream:
        return requests.put(
            f"{server.url}/datastore/label",
            params={"image": image_id, "tag": "final"},
            files={"label": (name, stream), "params": (None, json.dumps(params or {}))},
            timeout=120,
        )


def versions_of(studies, image_id):
    folder = studies / ".versions" / image_id
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_nothing_a_user_saved_is_lost(server, studies, tmp_path):
    image_id = "CT chest 2"  # as Slicer names a volume node: spaces are fine
    first = write_png(xray_picture(seed=3), tmp_path / "first.png")
    assert upload(server, first, image_id).status_code == 200
    again = tmp_path / "again.png"
    again.write_bytes(first.read_bytes())
    assert upload(server, again, image_id).status_code == 200  # Slicer re-uploads on every Submit
    assert versions_of(studies, image_id) == []  # the same picture: nothing to keep

    mask = XRAY_LESION.mask(*xray_picture().shape)
    saved = save_label(server, image_id, mask, tmp_path, params={"question": "Where is the opacity?"})
    assert saved.status_code == 200, saved.text
    info = requests.get(
        f"{server.url}/datastore/label/info", params={"label": image_id, "tag": "final"}, timeout=30
    ).json()
    assert info["saved_from"] == "127.0.0.1" and info["saved_at"].endswith("Z") and "saved_by" not in info
    assert save_label(server, image_id, np.zeros_like(mask), tmp_path, "empty.png").status_code == 200  # "nothing here"
    kept = versions_of(studies, image_id)
    assert [name.split("_", 1)[1] for name in kept] == ["label-final.json", "label-final.png"]
    kept_label = read_medical_image(str(studies / ".versions" / image_id / kept[1])).array
    assert (kept_label > 0).sum() == mask.sum()  # the first label, whole

    other = write_png(xray_picture(seed=4), tmp_path / "other.png")
    assert upload(server, other, image_id).status_code == 200  # a different picture under the same id
    kept = versions_of(studies, image_id)
    assert (
        sum(name.endswith("_image.png") for name in kept) == 1
        and sum(name.endswith("label-final.png") for name in kept) == 2
    )
    listed = requests.get(f"{server.url}/datastore/image/info", params={"image": image_id}, timeout=30).json()[
        "versions"
    ]
    assert {entry["reason"] for entry in listed} >= {"replaced by a new upload", "replaced by a newer save"}
    assert (
        requests.head(
            f"{server.url}/datastore/label", params={"image": image_id, "tag": "final"}, timeout=30
        ).status_code
        == 404
    )

    assert requests.delete(f"{server.url}/datastore/image", params={"id": image_id}, timeout=30).status_code == 200
    assert requests.get(f"{server.url}/datastore/image/info", params={"image": image_id}, timeout=30).status_code == 404
    kept = versions_of(studies, image_id)
    assert len([n for n in kept if n.endswith(".json")]) == 3  # bounded: --conf keep_versions 3, the newest kept
    restored = studies / ".versions" / image_id / [n for n in kept if n.endswith("_image.png")][-1]
    assert upload(server, restored, image_id, name="restored.png").status_code == 200  # getting one back: PUT it again
    assert requests.head(f"{server.url}/datastore/image", params={"image": image_id}, timeout=30).status_code == 200


def test_a_label_must_fit_its_image(server, tmp_path):
    wrong = save_label(server, IMAGE_ID, np.ones((20, 30)), tmp_path, "small.png")
    assert wrong.status_code == 422 and "not its label" in wrong.json()["detail"]
    raw = np.zeros(xray_picture().shape, np.uint8)
    raw[10:20, 10:20] = 1
    response = requests.put(
        f"{server.url}/datastore/label",
        params={"image": IMAGE_ID, "tag": "final"},
        files={"label": ("label.bin", raw.tobytes()), "params": (None, "{}")},
        timeout=60,
    )  # OHIF's raw labelmap
    assert response.status_code == 200, response.text
    stored = requests.get(f"{server.url}/datastore/label", params={"label": IMAGE_ID, "tag": "final"}, timeout=60)
    path = tmp_path / ("stored." + stored.headers["content-disposition"].split(".", 1)[1].strip('"'))
    path.write_bytes(stored.content)
    assert np.array_equal(read_medical_image(str(path)).array, raw)


def test_an_upload_over_the_limit_is_413_and_leaves_nothing(server, tmp_path):
    big = tmp_path / "big.nii.gz"
    big.write_bytes(gzip.compress(os.urandom(64)) + os.urandom((UPLOAD_LIMIT_MB + 1) << 20))
    response = upload(server, big, "big")
    assert response.status_code == 413
    assert_serves(server)
    assert scratch_left(server) == []


def test_cross_origin_pages_get_no_access(server):
    evil = {"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}
    preflight = requests.options(f"{server.url}/infer/implicit_query", headers=evil, timeout=30)
    assert "access-control-allow-origin" not in {k.lower() for k in preflight.headers}
    info = requests.get(f"{server.url}/info/", headers={"Origin": "http://evil.example"}, timeout=30)
    assert info.status_code == 200 and "access-control-allow-origin" not in {k.lower() for k in info.headers}


@pytest.mark.browser
def test_a_viewer_on_an_allowed_origin_reaches_the_server_and_others_do_not(server):
    """`--conf cors_origins`: a page served from the allowed origin calls the server from a real browser (a hospital's
    own OHIF on another host); a page from another origin is refused by the browser (no CORS headers for it)."""
    from tests.support.browser import headless_chromium

    call = """async (url) => {
        try { const r = await fetch(url, {method: "POST", headers: {"Content-Type": "application/json"}, body: "{}"});
              return "status " + r.status; }
        catch (error) { return "refused: " + error.message; } }"""
    with ALLOWED_PAGE, PageServer() as other, headless_chromium() as chromium:
        page = chromium.new_page()
        results = {}
        for name, origin in (("allowed", ALLOWED_PAGE.origin), ("other", other.origin)):
            page.goto(origin + "/")
            results[name] = page.evaluate(call, f"{server.url}/activelearning/random")
    assert results["allowed"] == "status 200", results
    assert results["other"].startswith("refused"), results


def test_the_app_refuses_to_serve_without_its_hardened_routes(studies, tmp_path):
    bare = MonaiLabelServer(studies, {"models": "implicit_query"}, tmp_path / "bare.log", hardened=False)
    with pytest.raises(RuntimeError, match="uvicorn_app lib.server.asgi:app"):
        bare.start(timeout_s=180)
    bare.stop()


def test_simultaneous_submits_all_succeed_and_next_sample_always_answers(server, tmp_path):
    mask = XRAY_LESION.mask(*xray_picture().shape)
    image_id = "endoscopy_polyp"
    picture = write_png(xray_picture(seed=9), tmp_path / "polyp.png")
    assert upload(server, picture, image_id).status_code == 200
    paths = [write_png(mask.astype(np.uint8) * (n % 2), tmp_path / f"label{n}.png") for n in range(12)]

    def submit(path):
        with open(path, "rb") as stream:
            return requests.put(
                f"{server.url}/datastore/label",
                params={"image": image_id, "tag": "final"},
                files={"label": (path.name, stream), "params": (None, "{}")},
                timeout=120,
            ).status_code

    with ThreadPoolExecutor(6) as pool:
        assert list(pool.map(submit, paths)) == [200] * len(paths)
    assert (
        requests.delete(
            f"{server.url}/datastore/label", params={"id": image_id, "tag": "final"}, timeout=30
        ).status_code
        == 200
    )
    for _ in range(6):  # several picks within one second: MONAI Label's strategy divided by zero here
        answer = requests.post(f"{server.url}/activelearning/random", json={}, timeout=30)
        assert answer.status_code == 200 and answer.json().get("id"), answer.text
