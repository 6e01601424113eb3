"""A thin OpenAI-compatible server over the transformers reasoner, for sites (or tests) where vLLM can't run.

    python -m monailabel_app.serve --model /models/MedReasoner-Soft-7B --port 8001
    python -m monailabel_app.evaluate --backend openai --base-url http://127.0.0.1:8001/v1 --model medreasoner ...

Only what the `openai` backend and ordinary chat clients send: `POST /v1/chat/completions` with one user turn holding
one image (a base64 data URL; remote URLs are refused, the server fetches nothing) and text, and `GET /v1/models`.
Requests are answered one at a time (the reasoner holds a lock); use `vllm serve` for throughput. Decoding:
temperature 0 (or absent) is greedy with the server's `--max-new-tokens`; temperature > 0 samples with the request's
temperature, top_p and max_tokens. Each reply also carries `"medreasoner": {"model_frame": {"width", "height"}}`, the
size the model saw, which the `openai` backend uses to map coordinates exactly.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import io
import os
import re
import time
import uuid
from typing import Any, Optional

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from PIL import Image

from monailabel_app.core.errors import RequestError
from monailabel_app.reasoning.backends import ReasonerSpec, build_reasoner
from monailabel_app.reasoning.frame_bounds import TRAINED_FRAME_MAX_PIXELS
from monailabel_app.reasoning.openai_reasoner import DEFAULT_SYSTEM_PROMPT, FRAME_FIELD
from monailabel_app.reasoning.reasoner import Reasoner, ReasonerOutput
from monailabel_app.reasoning.sampling import SamplingSettings

DATA_URL = re.compile(r"^data:image/[\w.+-]+;base64,(.*)$", re.DOTALL)


class BadRequest(RequestError):
    """The request is not one this server can answer; the message says why (sent back as an OpenAI-style 400)."""


def create_app(reasoner: Reasoner, served_model_name: str, api_key: Optional[str] = None) -> FastAPI:
    app = FastAPI(title="MedReasoner OpenAI-compatible reasoner")

    def refusal(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
        return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status)

    def authorised(request: Request) -> bool:
        return api_key is None or request.headers.get("authorization") == f"Bearer {api_key}"

    @app.get("/v1/models")
    def list_models(request: Request):
        if not authorised(request):
            return refusal(401, "missing or wrong API key", "authentication_error")
        return {"object": "list", "data": [{"id": served_model_name, "object": "model", "owned_by": "medreasoner"}]}

    @app.post("/v1/chat/completions")
    def chat_completions(request: Request, body: dict[str, Any]):
        if not authorised(request):
            return refusal(401, "missing or wrong API key", "authentication_error")
        if body.get("model") != served_model_name:
            wanted = body.get("model")
            return refusal(404, f"model {wanted!r} is not served here; this server serves {served_model_name!r}")
        try:
            image, prompt = read_user_turn(body.get("messages"))
            answer, token_limit = answer_request(reasoner, image, prompt, body)
        except BadRequest as error:
            return refusal(400, str(error))
        return completion_reply(served_model_name, answer, token_limit)

    return app


def read_user_turn(messages: Any) -> tuple[np.ndarray, str]:
    """The image and text of the single user turn; an optional system turn must be Qwen's default one."""
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise BadRequest("'messages' must be a list of message objects")
    system = [m for m in messages if m.get("role") == "system"]
    users = [m for m in messages if m.get("role") == "user"]
    if len(users) != 1 or len(system) + len(users) != len(messages):
        raise BadRequest("send exactly one user message (and at most the default system message)")
    if system and (len(system) > 1 or system[0].get("content") != DEFAULT_SYSTEM_PROMPT):
        raise BadRequest(f"this server only uses the chat template's system message {DEFAULT_SYSTEM_PROMPT!r}")
    content = users[0].get("content")
    if not isinstance(content, list):
        raise BadRequest("the user message content must be a list of one image_url part and text parts")
    images = [part for part in content if isinstance(part, dict) and part.get("type") == "image_url"]
    texts = [part.get("text") for part in content if isinstance(part, dict) and part.get("type") == "text"]
    if len(images) != 1 or not texts or not all(isinstance(t, str) for t in texts):
        raise BadRequest("the user message must hold exactly one image_url part and at least one text part")
    url = (images[0].get("image_url") or {}).get("url") if isinstance(images[0].get("image_url"), dict) else None
    return decode_data_url(url), "".join(texts)


def decode_data_url(url: Any) -> np.ndarray:
    match = DATA_URL.match(url) if isinstance(url, str) else None
    if match is None:
        raise BadRequest("the image must be a base64 data URL (data:image/png;base64,...); remote URLs are not fetched")
    try:
        picture = Image.open(io.BytesIO(base64.b64decode(match.group(1), validate=True)))
        return np.asarray(picture.convert("RGB"))
    except (binascii.Error, OSError, ValueError) as error:
        raise BadRequest(f"the image data URL is not a readable picture ({error})") from None


def answer_request(reasoner: Reasoner, image: np.ndarray, prompt: str, body: dict) -> tuple[ReasonerOutput, int]:
    """The answer and the token limit it ran under (to tell "stop" from "length")."""
    temperature, top_p = body.get("temperature") or 0, body.get("top_p", 1.0)
    max_tokens = body.get("max_tokens") or body.get("max_completion_tokens") or reasoner.max_new_tokens
    if not all(isinstance(v, (int, float)) for v in (temperature, top_p, max_tokens)) or temperature < 0:
        raise BadRequest("temperature, top_p and max_tokens must be numbers, temperature >= 0")
    if temperature == 0:
        return reasoner.generate(image, prompt), reasoner.max_new_tokens
    sampled = reasoner.sample(image, prompt, temperature=temperature, top_p=top_p, max_new_tokens=int(max_tokens))
    return sampled[0], int(max_tokens)


def completion_reply(served_model_name: str, answer: ReasonerOutput, token_limit: int) -> dict:
    finish_reason = "length" if answer.new_tokens >= token_limit else "stop"
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": served_model_name,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": answer.text}, "finish_reason": finish_reason}
        ],
        "usage": {"completion_tokens": answer.new_tokens},
        FRAME_FIELD: {"model_frame": {"width": answer.frame.model_width, "height": answer.frame.model_height}},
    }


def main(argv: Optional[list[str]] = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="local Qwen2.5-VL checkpoint folder")
    parser.add_argument("--served-model-name", default="medreasoner", help="the name clients pass as 'model'")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--max-new-tokens", type=int, default=1024)
    parser.add_argument("--min-pixels", type=int, default=None, help="image size bounds; the checkpoint's by default")
    parser.add_argument(
        "--max-pixels", type=int, default=TRAINED_FRAME_MAX_PIXELS, help="the released checkpoints' training frame"
    )
    parser.add_argument("--api-key-env", default=None, help="require 'Authorization: Bearer $VAR' when given")
    args = parser.parse_args(argv)
    api_key = os.environ.get(args.api_key_env) if args.api_key_env else None
    if args.api_key_env and not api_key:
        parser.error(f"--api-key-env {args.api_key_env}: that environment variable is empty or not set")
    spec = ReasonerSpec(
        args.model,
        SamplingSettings(max_new_tokens=args.max_new_tokens),
        device=args.device,
        min_pixels=args.min_pixels,
        max_pixels=args.max_pixels,
    )
    reasoner = build_reasoner("transformers", spec)  # after --help: the model libraries load here
    uvicorn.run(create_app(reasoner, args.served_model_name, api_key), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
