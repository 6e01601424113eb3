"""A local stand-in for a Keycloak realm: what MONAI Label's authentication asks of one, and nothing more.

- `GET  /realms/<name>`: `{"public_key": <base64 DER of the RSA key>}` (Keycloak's realm document);
- `GET  /realms/<name>/.well-known/openid-configuration`: `{"token_endpoint": ...}`;
- `POST .../protocol/openid-connect/token`: the password grant for the users it was given; RS256 tokens carrying
  `preferred_username`, `realm_access.roles`, `azp` (the client id), `iss` and `exp`, as Keycloak issues them.
`sign()` makes any token the tests need (expired, for another client, signed by another key, from another issuer,
or without a claim: pass `OMIT` for it).
"""

from __future__ import annotations

import base64
import json
import time
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.threaded_http import ThreadedHttpServer

OMIT = object()  # sign(..., iss=OMIT): a token without that claim


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class StubRealm:
    def __init__(self, users: dict[str, tuple[str, list[str]]], client_id: str = "monailabel-app", name: str = "test"):
        self.users = users  # user name -> (password, roles)
        self.client_id = client_id
        self.key = new_key()
        self.name = name
        self._server = ThreadedHttpServer(self._handler())
        self.url = f"{self._server.url}/realms/{name}"

    def start(self) -> "StubRealm":
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def public_key_b64(self) -> str:
        der = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(der).decode()

    def sign(
        self, username: str, roles: list[str], expires_in: int = 300, key=None, azp=None, algorithm="RS256", **extra
    ) -> str:
        now = int(time.time())
        claims = {
            "preferred_username": username,
            "realm_access": {"roles": roles},
            "azp": azp or self.client_id,
            "iss": self.url,
            "iat": now,
            "exp": now + expires_in,
            **extra,
        }
        claims = {name: value for name, value in claims.items() if value is not OMIT}
        return jwt.encode(claims, key if key is not None else self.key, algorithm=algorithm)

    def _handler(self):
        realm = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _json(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                base = f"/realms/{realm.name}"
                if self.path == base:
                    self._json(200, {"realm": realm.name, "public_key": realm.public_key_b64()})
                elif self.path == f"{base}/.well-known/openid-configuration":
                    self._json(
                        200, {"issuer": realm.url, "token_endpoint": f"{realm.url}/protocol/openid-connect/token"}
                    )
                else:
                    self._json(404, {"error": "not found"})

            def do_POST(self) -> None:
                form = parse_qs(self.rfile.read(int(self.headers.get("Content-Length", 0))).decode())

                def field(name):
                    return (form.get(name) or [""])[0]

                user = realm.users.get(field("username"))
                if field("grant_type") != "password" or field("client_id") != realm.client_id:
                    self._json(400, {"error": "unauthorized_client"})
                elif user is None or user[0] != field("password"):
                    self._json(401, {"error": "invalid_grant", "error_description": "Invalid user credentials"})
                else:
                    token = realm.sign(field("username"), user[1])
                    self._json(200, {"access_token": token, "token_type": "Bearer", "expires_in": 300})

        return Handler
