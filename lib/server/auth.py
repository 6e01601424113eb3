"""Authentication with MONAI Label's own settings and roles, with a token check that works and refuses what it must.

MONAI Label's settings (`MONAI_LABEL_AUTH_ENABLE`, `MONAI_LABEL_AUTH_REALM_URI`, `MONAI_LABEL_AUTH_CLIENT_ID`,
`MONAI_LABEL_AUTH_TOKEN_*`, `MONAI_LABEL_AUTH_ROLE_*`) and its role checks (`RBAC`) stay as they are. What is
replaced, through FastAPI's dependency override of MONAI Label's `get_current_user`:
- the token check: MONAI Label 0.8.5 calls PyJWT without `algorithms`, which PyJWT 2.x refuses for every token, so
  no token ever passed; here a token must be signed with an RSA key of the realm (RS*/PS*: never `none`, never a
  shared secret), unexpired (`exp` required), issued by the realm (`iss` required, equal to
  `MONAI_LABEL_AUTH_REALM_URI`), issued to this app's client (`azp` or `aud` naming `MONAI_LABEL_AUTH_CLIENT_ID`; a
  token naming no client is refused) and name its user (`MONAI_LABEL_AUTH_TOKEN_USERNAME`, a non-empty string);
  every refusal is a 401 and a line at info in the log (why, never the token);
- the realm's key is fetched with a timeout and kept for five minutes (a rotated key is picked up); an identity
  provider that can't be reached is a 503, not a hang;
- `POST /auth/token` (3D Slicer's sign-in: user name and password, passed on to the realm's token endpoint) answers
  401 for wrong credentials instead of a 500.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Optional

import jwt
import requests
from fastapi import APIRouter, Depends, HTTPException
from fastapi.security import OAuth2PasswordBearer, OAuth2PasswordRequestForm
from monailabel.config import settings
from monailabel.endpoints.user.auth import DEFAULT_USER, User

from monailabel_app.core.errors import UpstreamError

logger = logging.getLogger(__name__)

ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"]
KEY_CACHE_S = 300
bearer = OAuth2PasswordBearer(tokenUrl="/auth/token", auto_error=False)
_key_cache: dict[str, tuple[float, str]] = {}
_key_lock = threading.Lock()


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status_code=401, detail=detail, headers={"WWW-Authenticate": "Bearer"})


def realm_public_key(realm_uri: str) -> str:
    """The realm's signing key (Keycloak publishes it at the realm's URL), cached for KEY_CACHE_S."""
    with _key_lock:
        cached = _key_cache.get(realm_uri)
        if cached and time.monotonic() - cached[0] < KEY_CACHE_S:
            return cached[1]
    try:
        answer = requests.get(realm_uri, timeout=settings.MONAI_LABEL_AUTH_TIMEOUT)
        answer.raise_for_status()
        key = answer.json()["public_key"]
    except (requests.RequestException, ValueError, KeyError) as error:
        raise UpstreamError(
            f"The identity provider at {realm_uri} can't be reached or gave no key ({error}).", 503
        ) from error
    pem = f"-----BEGIN PUBLIC KEY-----\n{key}\n-----END PUBLIC KEY-----"
    with _key_lock:
        _key_cache[realm_uri] = (time.monotonic(), pem)
    return pem


def user_from_token(token: str) -> User:
    realm = settings.MONAI_LABEL_AUTH_REALM_URI.rstrip("/")
    key = realm_public_key(settings.MONAI_LABEL_AUTH_REALM_URI)
    try:
        payload = jwt.decode(
            token,
            key,
            algorithms=ALGORITHMS,
            issuer=(realm, f"{realm}/"),  # equal to the realm's URI, a trailing slash aside
            options={"require": ["exp", "iss"], "verify_aud": False},
        )
    except jwt.ExpiredSignatureError:
        raise _refused("The sign-in has expired; sign in again.", "expired") from None
    except jwt.MissingRequiredClaimError as error:
        raise _refused(f"The token has no '{error.claim}' claim.", str(error)) from None
    except jwt.InvalidIssuerError:
        issuer = jwt.decode(token, options={"verify_signature": False}).get("iss")  # signed: only the issuer was wrong
        raise _refused(
            f"The token was not issued by this server's identity provider ({realm}).", f"iss={_shown(issuer)}"
        ) from None
    except jwt.InvalidTokenError as error:
        raise _refused("Could not validate credentials.", str(error)) from None
    client = settings.MONAI_LABEL_AUTH_CLIENT_ID
    if not _issued_to_this_app(payload):
        raise _refused(
            f"The token was not issued to this application: neither its 'azp' nor its 'aud' names '{client}'.",
            f"azp={_shown(payload.get('azp'))}, aud={_shown(payload.get('aud'))}",
        )
    username = payload.get(settings.MONAI_LABEL_AUTH_TOKEN_USERNAME)
    if not isinstance(username, str) or not username.strip():
        raise _refused(
            f"The token names no user (its '{settings.MONAI_LABEL_AUTH_TOKEN_USERNAME}' claim is missing or empty).",
            f"{settings.MONAI_LABEL_AUTH_TOKEN_USERNAME}={_shown(username)}",
        )
    return User(
        username=username,
        email=payload.get(settings.MONAI_LABEL_AUTH_TOKEN_EMAIL),
        name=payload.get(settings.MONAI_LABEL_AUTH_TOKEN_NAME),
        roles=_roles(payload),
    )


def _refused(detail: str, why: str) -> HTTPException:
    """A 401 for the client and one line at info for the log: why, never the token."""
    logger.info(f"Refused a token: {why}")
    return _unauthorized(detail)


def _shown(claim: Any) -> str:
    """A claim for the log: quoted (no control characters) and short."""
    text = repr(claim)
    return text if len(text) <= 120 else f"{text[:120]}..."


def _issued_to_this_app(payload: dict[str, Any]) -> bool:
    """Keycloak names the client in `azp` (and often only "account" in `aud`); other providers in `aud`, a string or
    a list. A token that names no client is not this app's."""
    client = settings.MONAI_LABEL_AUTH_CLIENT_ID
    aud = payload.get("aud")
    audiences = [aud] if isinstance(aud, str) else list(aud) if isinstance(aud, list) else []
    return payload.get("azp") == client or client in audiences


def _roles(payload: dict[str, Any]) -> list[str]:
    """Where MONAI Label reads them: `MONAI_LABEL_AUTH_TOKEN_ROLES`, a `#`-separated path (Keycloak's
    realm_access#roles)."""
    value: Any = payload
    for part in settings.MONAI_LABEL_AUTH_TOKEN_ROLES.split("#"):
        value = value.get(part) if isinstance(value, dict) else None
    return [str(role) for role in value] if isinstance(value, list) else []


async def verified_user(token: Optional[str] = Depends(bearer)) -> User:
    """Replaces MONAI Label's `get_current_user`: everyone is MONAI Label's default admin with authentication off."""
    if not settings.MONAI_LABEL_AUTH_ENABLE:
        return DEFAULT_USER
    if not token:
        raise _unauthorized("Sign in: this server needs a bearer token (see the docs/security.md).")
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(user_from_token, token)


def auth_router() -> APIRouter:
    router = APIRouter(prefix="/auth", tags=["Auth"])

    @router.post("/token", summary="Sign in with user name and password (passed to the identity provider)")
    def access_token(form: OAuth2PasswordRequestForm = Depends()):
        if not settings.MONAI_LABEL_AUTH_ENABLE:
            return {"access_token": None, "token_type": None}
        realm = settings.MONAI_LABEL_AUTH_REALM_URI
        try:
            config = requests.get(
                f"{realm}/.well-known/openid-configuration", timeout=settings.MONAI_LABEL_AUTH_TIMEOUT
            )
            config.raise_for_status()
            answer = requests.post(
                config.json()["token_endpoint"],
                data={
                    "client_id": settings.MONAI_LABEL_AUTH_CLIENT_ID,
                    "username": form.username,
                    "password": form.password,
                    "grant_type": "password",
                },
                timeout=settings.MONAI_LABEL_AUTH_TIMEOUT,
            )
        except (requests.RequestException, ValueError, KeyError) as error:
            raise UpstreamError(
                f"The identity provider at {realm} can't be reached ({type(error).__name__}).", 503
            ) from error
        if answer.status_code in (400, 401, 403):
            raise _unauthorized("Wrong user name or password.")
        if answer.status_code != 200:
            raise UpstreamError(f"The identity provider answered HTTP {answer.status_code}.", 502)
        return answer.json()

    return router
