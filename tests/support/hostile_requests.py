"""A catalogue of hostile and malformed requests, as an attacker on the network (or a broken client) sends them.

Each entry is `(name, send)`: `send(session, base_url)` performs one request and returns the response. Every one of
them must be answered with a 4xx (never a 5xx, never a dropped connection) by a server started on a folder datastore
that holds the image ids `IMAGE_ID` (2D PNG) and `VOLUME_ID` (3D NIfTI). Used by the storm and load tests and by
`benchmarks/server_storm.py`.
"""

from __future__ import annotations

import gzip
import http.client
import io
import json
import struct
import zlib
from typing import Callable
from urllib.parse import urlparse

import nibabel
import numpy as np
import requests

IMAGE_ID, VOLUME_ID = "xray_opacity", "ct_chest_lesion"
QUESTION = "Which structure would explain the dull percussion note over the right lower chest?"

Send = Callable[[requests.Session, str], requests.Response]


def png_bomb(width: int = 32768, height: int = 32768) -> bytes:
    """A PNG of about 70 bytes whose header declares width x height grey pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")
    )


def complex_nifti() -> bytes:
    image = nibabel.Nifti1Image(np.ones((16, 16, 4), np.complex64), np.eye(4))
    return gzip.compress(image.to_bytes())


def detached_nrrd(target: str = "/etc/hostname") -> bytes:
    return f"NRRD0004\ntype: uint8\ndimension: 2\nsizes: 4 4\nencoding: raw\ndata file: {target}\n\n".encode()


def external_mha(target: str = "/etc/hostname") -> bytes:
    return (
        f"ObjectType = Image\nNDims = 2\nDimSize = 4 4\nElementType = MET_UCHAR\nElementDataFile = {target}\n".encode()
    )


def float64_nrrd_bomb() -> bytes:
    """A few bytes declaring 1000 x 1000 x 399 float64 voxels: within the voxel limit, 3 GB decoded."""
    return (
        b"NRRD0004\ntype: double\ndimension: 3\nsizes: 1000 1000 399\nendian: little\nencoding: gzip\n\n"
        + gzip.compress(b"\0" * 1000)
    )


def deep_json(levels: int = 985) -> str:
    """A small JSON object nested `levels` deep (stored info is re-encoded recursively on every datastore write)."""
    return '{"k":' + '{"a":' * levels + "1" + "}" * levels + "}"


def four_d_nifti() -> bytes:
    return gzip.compress(nibabel.Nifti1Image(np.zeros((8, 8, 4, 3), np.int16), np.eye(4)).to_bytes())


def _infer(params, image: str = IMAGE_ID, model: str = "implicit_query", file=None, **query) -> Send:
    def send(session: requests.Session, url: str) -> requests.Response:
        files = {"params": (None, params if isinstance(params, str) else json.dumps(params))}
        if file is not None:
            files["file"] = file
        return session.post(f"{url}/infer/{model}", params={"image": image, **query}, files=files, timeout=120)

    return send


def _call(method: str, path: str, **kwargs) -> Send:
    def send(session: requests.Session, url: str) -> requests.Response:
        return session.request(method, f"{url}{path}", timeout=120, **kwargs)

    return send


def _raw(method: str, raw_path: str) -> Send:
    """A request line sent as written: no client-side normalisation of `..` or of %-escapes."""

    def send(session: requests.Session, url: str) -> requests.Response:
        parsed = urlparse(url)
        connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
        try:
            connection.request(method, raw_path)
            answer = connection.getresponse()
            response = requests.Response()
            response.status_code, response._content = answer.status, answer.read()
            return response
        finally:
            connection.close()

    return send


def _upload(path: str, name: str, content: bytes, field: str = "file", params="{}", **query) -> Send:
    def send(session: requests.Session, url: str) -> requests.Response:
        files = {field: (name, io.BytesIO(content)), "params": (None, params)}
        return session.put(f"{url}{path}", params=query, files=files, timeout=120)

    return send


OK = {"question": QUESTION}
LONG_ID = "a" * 300
PNG_BYTES_BAD = b"\x89PNG not really a picture"

CATALOGUE: list[tuple[str, Send]] = [
    # params that are not one JSON object
    ("params: not JSON", _infer("notjson")),
    ("params: a list", _infer("[1, 2]")),
    ("params: null", _infer("null")),
    ("params: 10,000 open braces", _infer("{" * 10_000)),
    ("params: deep list", _infer("[" * 100_000)),
    ("params: NUL byte", _infer('{"question": "a\u0000b"}'.replace("\\u0000", "\x00"))),
    # options with wrong values
    ("slice: infinity", _infer('{"question": "%s", "slice": 1e400}' % QUESTION, image=VOLUME_ID)),
    ("slice: NaN", _infer('{"question": "%s", "slice": NaN}' % QUESTION, image=VOLUME_ID)),
    ("slice: huge", _infer({**OK, "slice": 10**30}, image=VOLUME_ID)),
    ("slice: -7", _infer({**OK, "slice": -7}, image=VOLUME_ID)),
    ("slice: fraction", _infer({**OK, "slice": 2.5}, image=VOLUME_ID)),
    ("slice: text", _infer({**OK, "slice": "middle"}, image=VOLUME_ID)),
    ("question: a list", _infer({"question": ["a", "b"]})),
    ("question: empty", _infer({"question": "  "})),
    ("question: 20,000 characters", _infer({"question": "why " * 5000})),
    ("window: unknown", _infer({**OK, "window": "disco"})),
    ("think: maybe", _infer({**OK, "think": "maybe"})),
    ("result format", _infer({**OK, "result_extension": ".docx"})),
    ("output=dicom_seg", _infer(OK, output="dicom_seg")),
    ("output=bogus", _infer(OK, output="bogus")),
    ("save_label as final", _infer({**OK, "save_label": True, "label_tag": "final"})),
    ("save_label with traversal tag", _infer({**OK, "save_label": True, "label_tag": "../../x"})),
    # ids and models
    ("image id: empty", _infer(OK, image="")),
    ("image id: unknown", _infer(OK, image="no-such-image")),
    ("image id: 300 characters", _infer(OK, image=LONG_ID)),
    ("image id: ../", _infer(OK, image="../lib/configs/implicit_query")),
    ("image id: absolute path", _infer(OK, image="/etc/hostname")),
    ("image id: NUL", _infer(OK, image="x\x00y")),
    ("image id: right-to-left override", _infer(OK, image="gnp.\u202etxt")),
    ("image id: hidden", _infer(OK, image=".versions")),
    ("image in params", _infer({**OK, "image": "/etc/hostname"}, image="")),
    ("model: unknown", _infer(OK, model="not_a_model")),
    ("session id: ..", _infer(OK, image="", session_id="..")),
    ("session id: unknown", _infer(OK, image="", session_id="6f1c8a52-0000-11ef-8000-000000000000")),
    # uploads with the infer request
    ("upload: garbage PNG", _infer(OK, image="", file=("upload.png", io.BytesIO(PNG_BYTES_BAD)))),
    ("upload: empty", _infer(OK, image="", file=("upload.png", io.BytesIO(b"")))),
    ("upload: PNG bomb", _infer(OK, image="", file=("bomb.png", io.BytesIO(png_bomb())))),
    ("upload: complex NIfTI", _infer(OK, image="", file=("complex.nii.gz", io.BytesIO(complex_nifti())))),
    ("upload: 4D NIfTI", _infer(OK, image="", file=("4d.nii.gz", io.BytesIO(four_d_nifti())))),
    ("upload: detached NRRD", _infer(OK, image="", file=("detached.nrrd", io.BytesIO(detached_nrrd())))),
    ("upload: external MHA", _infer(OK, image="", file=("external.mha", io.BytesIO(external_mha())))),
    ("upload: float64 volume bomb", _infer(OK, image="", file=("big.nrrd", io.BytesIO(float64_nrrd_bomb())))),
    ("upload: a .py file", _infer(OK, image="", file=("probe.py", io.BytesIO(b"print('pwned')")))),
    # datastore
    ("PUT image: ../ id", _upload("/datastore/image", "x.png", PNG_BYTES_BAD, image="../x")),
    ("PUT image: absolute id", _upload("/datastore/image", "x.png", PNG_BYTES_BAD, image="/tmp/x")),
    (
        "PUT image: into lib/configs",
        _upload("/datastore/image", "probe.py", b"import os", image="../lib/configs/zz_probe"),
    ),
    ("PUT image: .py file", _upload("/datastore/image", "probe.py", b"import os", image="zz_probe")),
    ("PUT image: 300-char id", _upload("/datastore/image", "x.png", PNG_BYTES_BAD, image=LONG_ID)),
    ("PUT image: garbage", _upload("/datastore/image", "x.png", PNG_BYTES_BAD, image="garbage")),
    ("PUT image: empty file", _upload("/datastore/image", "x.png", b"", image="empty")),
    ("PUT image: bomb", _upload("/datastore/image", "bomb.png", png_bomb(), image="bomb")),
    ("PUT image: 4D", _upload("/datastore/image", "4d.nii.gz", four_d_nifti(), image="fourd")),
    ("PUT image: params not JSON", _upload("/datastore/image", "x.png", PNG_BYTES_BAD, params="{{{", image="y")),
    (
        "PUT label: unknown image",
        _upload("/datastore/label", "l.png", PNG_BYTES_BAD, "label", image="nope", tag="final"),
    ),
    ("PUT label: ../ tag", _upload("/datastore/label", "l.png", PNG_BYTES_BAD, "label", image=IMAGE_ID, tag="../../x")),
    (
        "PUT label: absolute tag",
        _upload("/datastore/label", "l.png", PNG_BYTES_BAD, "label", image=IMAGE_ID, tag="/tmp/x"),
    ),
    (
        "PUT label: 300-char tag",
        _upload("/datastore/label", "l.png", PNG_BYTES_BAD, "label", image=IMAGE_ID, tag=LONG_ID),
    ),
    ("PUT label: garbage", _upload("/datastore/label", "l.png", PNG_BYTES_BAD, "label", image=IMAGE_ID, tag="final")),
    (
        "PUT label: params a list",
        _upload("/datastore/label", "l.png", PNG_BYTES_BAD, "label", params="[]", image=IMAGE_ID),
    ),
    (
        "PUT label: wrong raw size",
        _upload("/datastore/label", "l.bin", b"\x01" * 17, "label", image=IMAGE_ID, tag="final"),
    ),
    ("DELETE image: absolute", _call("DELETE", "/datastore/image", params={"id": "/tmp"})),
    ("DELETE image: unknown", _call("DELETE", "/datastore/image", params={"id": "no-such-image"})),
    ("DELETE label: unknown", _call("DELETE", "/datastore/label", params={"id": "no-such-image", "tag": "final"})),
    ("GET image: unknown", _call("GET", "/datastore/image", params={"image": "no-such-image"})),
    ("GET image: ../", _call("GET", "/datastore/image", params={"image": "../main.py"})),
    ("GET image info: unknown", _call("GET", "/datastore/image/info", params={"image": "no-such-image"})),
    ("GET label info: unknown", _call("GET", "/datastore/label/info", params={"label": IMAGE_ID, "tag": "final"})),
    ("GET label: traversal tag", _call("GET", "/datastore/label", params={"label": IMAGE_ID, "tag": ".."})),
    (
        "PUT image info: 985 levels deep",
        _call("PUT", "/datastore/image/info", params={"image": IMAGE_ID}, files={"info": (None, deep_json())}),
    ),
    (
        "PUT image info: active learning's record",
        _call(
            "PUT",
            "/datastore/image/info",
            params={"image": IMAGE_ID},
            files={"info": (None, '{"strategy": {"random": {"ts": 99999999999}}}')},
        ),
    ),
    (
        "PUT label: params deep",
        _upload("/datastore/label", "l.png", PNG_BYTES_BAD, "label", params=deep_json(), image=IMAGE_ID, tag="final"),
    ),
    (
        "PUT image info: not JSON",
        _call("PUT", "/datastore/image/info", params={"image": IMAGE_ID}, files={"info": (None, "x")}),
    ),
    ("GET dataset without auth", _call("GET", "/datastore/dataset")),
    # everything else
    ("active learning: unknown", _call("POST", "/activelearning/bogus")),
    ("active learning: params a list", _call("POST", "/activelearning/random", json=[1, 2])),
    ("logs without auth", _call("GET", "/logs/")),
    ("GPU info", _call("GET", "/logs/gpu")),
    ("proxy without a PACS", _call("GET", "/proxy/dicom/qido/studies")),
    ("train: unknown model", _call("POST", "/train/bogus", json={})),
    ("train: bad options", _call("POST", "/train/implicit_query", json={"temperature": 0})),
    ("train: bundle_path", _call("POST", "/train/implicit_query", json={"bundle_path": "/tmp"})),
    ("train: body over 1 MiB", _call("POST", "/train/implicit_query", json={"x": "y" * (2 << 20)})),
    ("scoring: unknown", _call("POST", "/scoring/bogus")),
    ("batch infer: unknown model", _call("POST", "/batch/infer/bogus")),
    ("batch infer: no question", _call("POST", "/batch/infer/implicit_query", json={})),
    ("model file: download", _call("GET", "/model/implicit_query")),
    ("model file: upload", _call("PUT", "/model/implicit_query", files={"file": ("m.pt", b"x")})),
    ("reload", _call("POST", "/reload")),
    ("session: not a UUID", _call("GET", "/session/not-a-uuid")),
    (
        "session: uncompress",
        _call("PUT", "/session/", params={"uncompress": "true"}, files={"files": ("a.zip", b"PK")}),
    ),
    ("WSI infer", _call("POST", "/infer/wsi/implicit_query")),
    ("raw: /session/..", _raw("DELETE", "/session/..")),
    ("raw: /ohif/../../etc/passwd", _raw("GET", "/ohif/%2e%2e/%2e%2e/etc/passwd")),
    ("raw: /datastore/image?image=%2Fetc%2Fpasswd", _raw("GET", "/datastore/image?image=%2Fetc%2Fpasswd")),
]


def good_request(session: requests.Session, url: str) -> requests.Response:
    """What Slicer sends for a question on the 2D picture."""
    params = {**OK, "result_extension": ".nrrd", "result_dtype": "uint8"}
    return session.post(
        f"{url}/infer/implicit_query",
        params={"image": IMAGE_ID},
        files={"params": (None, json.dumps(params))},
        timeout=300,
    )
