"""Authentication on (MONAI Label's Keycloak/OIDC settings and roles) against a local realm that signs tokens: 401
without or with a bad token (another issuer, no client, no user name among them), 200 with a valid one, 403 for a role
that may not reach an admin route; the API's description needs a signed-in user; 3D Slicer's sign-in (user name and
password through MONAI Label's client); who saved a label is recorded."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import jwt
import numpy as np
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from monailabel.client import MONAILabelClient
from monailabel.client.client import MONAILabelClientException

from monailabel_app.demo.sample_studies import (
    XRAY_LESION,
    endoscopy_picture,
    write_png,
    write_sample_studies,
    xray_picture,
)
from tests.support.monailabel_server import MonaiLabelServer
from tests.support.stub_realm import OMIT, StubRealm, new_key

pytestmark = pytest.mark.server

USER_ROLES = ["monailabel-user", "monailabel-annotator"]
ADMIN_ROLES = ["monailabel-admin", "monailabel-reviewer", "monailabel-annotator", "monailabel-user"]


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def realm():
    running = StubRealm({"radiologist": ("s3cret", USER_ROLES), "admin": ("adm1n", ADMIN_ROLES)}).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def server(realm, format_tuned_reasoner_dir, tmp_path_factory):
    studies = tmp_path_factory.mktemp("studies")
    write_sample_studies(studies)
    conf = {"models": "implicit_query", "reasoner": str(format_tuned_reasoner_dir), "max_new_tokens": "96"}
    env = {"MONAI_LABEL_AUTH_ENABLE": "true", "MONAI_LABEL_AUTH_REALM_URI": realm.url}
    probe = bearer(realm.sign("admin", ADMIN_ROLES, expires_in=3600))
    running = MonaiLabelServer(
        studies, conf, tmp_path_factory.mktemp("logs") / "server.log", env=env, probe_headers=probe
    )
    yield running.start()
    running.stop()


def test_no_token_is_401_and_a_valid_one_is_200(server, realm):
    assert requests.get(f"{server.url}/info/", timeout=30).status_code == 401
    answer = requests.get(f"{server.url}/info/", headers=bearer(realm.sign("radiologist", USER_ROLES)), timeout=30)
    assert answer.status_code == 200 and "implicit_query" in answer.json()["models"]


def test_the_realms_tokens_name_the_realm_the_server_is_given(server, realm):
    """The issuer check compares with MONAI_LABEL_AUTH_REALM_URI: the valid tokens of these tests must carry it."""
    assert server.extra_env["MONAI_LABEL_AUTH_REALM_URI"] == realm.url
    grant = requests.post(
        f"{realm.url}/protocol/openid-connect/token",
        data={"grant_type": "password", "client_id": realm.client_id, "username": "radiologist", "password": "s3cret"},
        timeout=30,
    ).json()["access_token"]
    for token in (realm.sign("radiologist", USER_ROLES), grant):
        assert jwt.decode(token, options={"verify_signature": False})["iss"] == realm.url


def refusal(server, token: str) -> str:
    """The server's answer to a token it must refuse: 401, and the message."""
    answer = requests.get(f"{server.url}/info/", headers=bearer(token), timeout=30)
    assert answer.status_code == 401, answer.text
    return answer.text


def test_a_token_without_an_issuer_is_401(server, realm):
    assert "'iss'" in refusal(server, realm.sign("radiologist", USER_ROLES, iss=OMIT))


def test_a_token_from_another_issuer_is_401(server, realm):
    """Signed with the realm's key, but naming another realm (or another host) as its issuer."""
    for issuer in (realm.url.replace("/realms/test", "/realms/other"), "https://sso.elsewhere.example/realms/test"):
        assert "identity provider" in refusal(server, realm.sign("radiologist", USER_ROLES, iss=issuer))


def test_a_token_naming_no_client_is_401(server, realm):
    for claims in ({"azp": OMIT}, {"azp": OMIT, "aud": ["account"]}, {"azp": OMIT, "aud": []}):
        assert realm.client_id in refusal(server, realm.sign("radiologist", USER_ROLES, **claims)), claims


def test_the_client_may_be_named_in_azp_or_aud(server, realm):
    for claims in (
        {"aud": "account"},  # as Keycloak issues them: the client in azp
        {"azp": OMIT, "aud": realm.client_id},
        {"azp": OMIT, "aud": ["account", realm.client_id]},
    ):
        token = realm.sign("radiologist", USER_ROLES, **claims)
        assert requests.get(f"{server.url}/info/", headers=bearer(token), timeout=30).status_code == 200, claims


def test_a_token_without_a_user_name_is_401(server, realm):
    for name in (OMIT, "", "  ", 42):
        token = realm.sign("radiologist", USER_ROLES, preferred_username=name)
        assert "names no user" in refusal(server, token), name


def test_refused_tokens_are_logged_without_the_token(server, realm):
    token = realm.sign("radiologist", USER_ROLES, iss="https://sso.elsewhere.example/realms/logged")
    refusal(server, token)
    admin = bearer(realm.sign("admin", ADMIN_ROLES))
    log = requests.get(f"{server.url}/logs/", headers=admin, params={"lines": 5000}, timeout=30).text
    assert "Refused a token: iss='https://sso.elsewhere.example/realms/logged'" in log
    assert token not in log and token.split(".")[2] not in log


def test_the_api_description_needs_a_signed_in_user(server, realm):
    """It lists every route and option: no one reads it without signing in. Any role will do."""
    for token in (realm.sign("radiologist", USER_ROLES), realm.sign("no-roles-yet", [])):
        for path in ("/openapi.json", "/docs", "/"):
            assert requests.get(f"{server.url}{path}", timeout=30).status_code == 401, path
            answer = requests.get(f"{server.url}{path}", headers=bearer(token), timeout=30)
            assert answer.status_code == 200, (path, answer.text)
    schema = requests.get(f"{server.url}/openapi.json", headers=bearer(token), timeout=30).json()
    assert "/infer/{model}" in schema["paths"]


def test_what_slicer_asks_before_signing_in_stays_open(server):
    """3D Slicer asks /auth/ whether to show its login dialog; a browser asks for the icon."""
    answer = requests.get(f"{server.url}/auth/", timeout=30)
    assert answer.status_code == 200 and answer.json()["enabled"] is True
    assert requests.get(f"{server.url}/favicon.ico", timeout=30).status_code == 200


def hs256_signed_with_the_public_key(realm) -> str:
    """The classic algorithm confusion: an HMAC token whose secret is the realm's (public) key."""
    pem = realm.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    def part(data):
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=")

    signing_input = part({"alg": "HS256", "typ": "JWT"}) + b"." + part({"preferred_username": "x", "exp": 2**31})
    signature = base64.urlsafe_b64encode(hmac.new(pem, signing_input, hashlib.sha256).digest()).rstrip(b"=")
    return (signing_input + b"." + signature).decode()


def test_bad_tokens_are_401(server, realm):
    bad = {
        "expired": realm.sign("radiologist", USER_ROLES, expires_in=-60),
        "another key": realm.sign("radiologist", USER_ROLES, key=new_key()),
        "another client": realm.sign("radiologist", USER_ROLES, azp="some-other-app"),
        "alg none": jwt.encode({"preferred_username": "x", "exp": 2**31}, None, algorithm="none"),
        "HS256 with the public key": hs256_signed_with_the_public_key(realm),
        "garbage": "not.a.token",
    }
    for name, token in bad.items():
        answer = requests.get(f"{server.url}/info/", headers=bearer(token), timeout=30)
        assert answer.status_code == 401, (name, answer.text)


def test_a_user_may_not_reach_admin_routes_and_an_admin_may(server, realm):
    user = bearer(realm.sign("radiologist", USER_ROLES))
    admin = bearer(realm.sign("admin", ADMIN_ROLES))
    for method, path, kwargs in (
        ("GET", "/logs/", {}),
        ("DELETE", "/datastore/image", {"params": {"id": "xray_opacity"}}),
        ("POST", "/train/implicit_query", {"json": {}}),
        ("GET", "/datastore/dataset", {}),
    ):
        answer = requests.request(method, f"{server.url}{path}", headers=user, timeout=30, **kwargs)
        assert answer.status_code == 403 and "monailabel-admin" in answer.text, (path, answer.text)
    logs = requests.get(f"{server.url}/logs/", headers=admin, params={"lines": 20}, timeout=30)
    assert logs.status_code == 200 and logs.headers["content-type"].startswith("text/plain")


def test_slicer_signs_in_with_user_name_and_password(server, realm, tmp_path):
    client = MONAILabelClient(server.url, tmpdir=str(tmp_path))
    assert client.auth_enabled()
    with pytest.raises(MONAILabelClientException, match="401"):
        client.auth_token("radiologist", "wrong")
    client.update_auth(client.auth_token("radiologist", "s3cret"))
    assert client.auth_valid_token()
    params = {"question": "Where is the opacity?", "result_extension": ".nrrd", "result_dtype": "uint8"}
    _, result = client.infer("implicit_query", "xray_opacity", params)
    assert result["status"] == "ok"

    mask = write_png(XRAY_LESION.mask(*xray_picture().shape).astype(np.uint8), tmp_path / "label.png")
    client.save_label("xray_opacity", str(mask), tag="final")
    info = requests.get(
        f"{server.url}/datastore/label/info",
        params={"label": "xray_opacity", "tag": "final"},
        headers=client._headers,
        timeout=30,
    ).json()
    assert info["saved_by"] == "radiologist" and info["question"] == "Where is the opacity?"
    admin = bearer(realm.sign("admin", ADMIN_ROLES))
    for _ in range(3):  # active learning's "Next sample" used to log the image's info, with its last question
        requests.post(f"{server.url}/activelearning/random", json={}, headers=client._headers, timeout=30)
    log = requests.get(f"{server.url}/logs/", headers=admin, params={"lines": 5000}, timeout=30).text
    assert "xray_opacity" in log and "Where is the opacity?" not in log  # ids and events, not clinical text


def test_a_user_sees_the_answers_to_their_own_questions_an_admin_all(server, realm):
    mine, theirs = bearer(realm.sign("radiologist", USER_ROLES)), bearer(realm.sign("colleague", USER_ROLES))
    admin = bearer(realm.sign("admin", ADMIN_ROLES))
    params = {"params": (None, json.dumps({"question": "Which finding explains the cough?"}))}
    asked = requests.post(
        f"{server.url}/infer/implicit_query",
        params={"image": "xray_opacity", "output": "json"},
        files=params,
        headers=mine,
        timeout=300,
    )
    answer_id = asked.json()["answer_id"]

    def listed(headers):
        found = requests.get(f"{server.url}/answers/list", params={"limit": 100}, headers=headers, timeout=30)
        return [entry["answer_id"] for entry in found.json()["answers"]]

    assert answer_id in listed(mine) and answer_id in listed(admin) and answer_id not in listed(theirs)
    for path in (f"/answers/{answer_id}", f"/answers/{answer_id}/picture"):
        assert requests.get(f"{server.url}{path}", headers=theirs, timeout=30).status_code == 404
        assert requests.get(f"{server.url}{path}", headers=mine, timeout=30).status_code == 200
    assert requests.get(f"{server.url}/answers/{answer_id}", headers=admin, timeout=30).json()["asked_by"] == (
        "radiologist"
    )
    assert requests.get(f"{server.url}/answers/list", timeout=30).status_code == 401


def test_a_clinician_reads_no_other_clinicians_question_or_reasoning(server, realm, tmp_path):
    """Every route that returns image or label info, a listing, an active-learning sample or answers: another user
    reads none of the asker's question, the model's reasoning or raw answer; the asker, a reviewer and an admin do.
    Another user's clicks don't continue the asker's question. No answer names a server path."""
    asker, colleague = bearer(realm.sign("asker", USER_ROLES)), bearer(realm.sign("colleague", USER_ROLES))
    reviewer = bearer(realm.sign("reviewer", ["monailabel-reviewer", "monailabel-user"]))
    admin = bearer(realm.sign("admin", ADMIN_ROLES))
    image, question = "endoscopy_polyp", "Which lesion explains the bleeding of patient Q7?"
    answer = requests.post(
        f"{server.url}/infer/implicit_query",
        params={"image": image, "output": "json"},
        files={"params": (None, json.dumps({"question": question}))},
        headers=asker,
        timeout=300,
    ).json()
    secrets = [question, answer["reasoning"], answer["raw_text"]]
    assert all(len(secret) > 10 for secret in secrets), answer

    def sample_of(headers) -> str:
        """'Next Sample' until it hands out the asked image (random among the unlabelled ones)."""
        for _ in range(40):
            sample = requests.post(f"{server.url}/activelearning/random", json={}, headers=headers, timeout=30)
            if sample.json().get("id") == image:
                return sample.text
        raise AssertionError("active learning never handed out the image")

    def readable(headers, label_saved: bool) -> dict[str, str]:
        get = {
            "image info": ("/datastore/image/info", {"image": image}),
            "listing": ("/datastore/", {"output": "all"}),
            "training list": ("/datastore/", {"output": "train"}),
            "status": ("/datastore/", {}),
            "answers (OHIF panel's feed)": ("/answers/list", {"limit": 100, "image": image}),
            "info": ("/info/", {}),
        }
        if label_saved:
            get["label info"] = ("/datastore/label/info", {"label": image, "tag": "final"})
        texts = {}
        for name, (path, params) in get.items():
            response = requests.get(f"{server.url}{path}", params=params, headers=headers, timeout=60)
            assert response.status_code == 200, (name, response.text[:200])
            texts[name] = response.text
        if not label_saved:
            texts["active learning"] = sample_of(headers)
        return texts

    for label_saved in (False, True):
        for name, text in readable(colleague, label_saved).items():
            assert not [s for s in secrets if s in text], f"{name} shows the asker's text to a colleague"
            assert str(server.studies) not in text, f"{name} names a server path"
        own = readable(asker, label_saved)
        assert question in own["image info"] and question in own["answers (OHIF panel's feed)"]
        assert str(server.studies) not in "".join(own.values())
        if not label_saved:
            assert question in own["active learning"]  # the asker's own last answer comes with the sample
            mask = np.zeros(endoscopy_picture().shape[:2], np.uint8)
            mask[60:90, 100:140] = 1
            saved = requests.put(
                f"{server.url}/datastore/label",
                params={"image": image, "tag": "final"},
                files={"label": ("label.png", write_png(mask, tmp_path / "label.png").read_bytes())},
                headers=asker,
                timeout=120,
            )
            assert saved.status_code == 200 and saved.json()["answer"]["question"] == question, saved.text
    label_info = {"label": image, "tag": "final"}
    edited = requests.put(  # a colleague with the annotator role edits the label's info: still not theirs to read
        f"{server.url}/datastore/label/info",
        params=label_info,
        files={"info": (None, "{}")},
        headers=colleague,
        timeout=30,
    )
    assert edited.status_code == 200, edited.text
    took = requests.get(f"{server.url}/datastore/label/info", params=label_info, headers=colleague, timeout=30).text
    assert not [s for s in secrets if s in took] and '"updated_by":"colleague"' in took.replace(" ", "")
    for headers in (asker, reviewer, admin):
        info = requests.get(f"{server.url}/datastore/label/info", params=label_info, headers=headers, timeout=30)
        assert info.json()["question"] == question and info.json()["saved_by"] == "asker"
    listing = requests.get(f"{server.url}/datastore/", params={"output": "all"}, headers=reviewer, timeout=30).text
    assert question in listing
    reviewed = requests.get(f"{server.url}/answers/list", params={"image": image}, headers=reviewer, timeout=30)
    assert question in reviewed.text  # a reviewer reads everyone's answers, there too

    click = {"foreground": [[120, 70]], "result_extension": ".png"}  # no question: it would continue their last one
    clicked = requests.post(
        f"{server.url}/infer/implicit_query",
        params={"image": image, "output": "json"},
        files={"params": (None, json.dumps(click))},
        headers=colleague,
        timeout=300,
    )
    assert not [s for s in secrets if s in clicked.text]
