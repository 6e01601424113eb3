"""Reasoner backend for any OpenAI-compatible chat-completions endpoint: `vllm serve`, `python -m monailabel_app.serve`,
or a hosted model. Several MONAI Label servers (or evaluation runs) can share one GPU endpoint this way.

Why it is built this way:
- The frame: the image is sent already resized to Qwen's smart-resize frame (`qwen_frame`), so the model answers in the
  size that was sent. A server that reports the frame it used (`monailabel_app.reasoning.endpoint_server` adds
  `"medreasoner": {"model_frame": {...}}` to its reply) is believed instead.
- Sampling is always explicit (`SamplingSettings`): no server default decides silently.
- Transport errors, timeouts and 408/409/429/5xx are retried with exponential backoff (honouring a short
  Retry-After); any other 4xx fails at once, since a wrong model name or key does not heal. After the last try an
  `EndpointError` says what happened; the evaluation records that sample as `no_grounding` and goes on.
- One concurrency limit for every thread using the instance (evaluation workers, MONAI Label request threads).
- The API key comes from an environment variable, never a command-line argument (shell history, process lists).
"""

from __future__ import annotations

import base64
import io
import os
import threading
import time
from typing import Optional

import httpx
import numpy as np

from monailabel_app.core.errors import UpstreamError
from monailabel_app.core.frames import ImageFrame
from monailabel_app.reasoning.frame_bounds import QWEN_MIN_PIXELS, TRAINED_FRAME_MAX_PIXELS
from monailabel_app.reasoning.qwen_frame import resize_to_model_frame
from monailabel_app.reasoning.reasoner import ReasonerOutput
from monailabel_app.reasoning.sampling import SamplingSettings

DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"
# Qwen's chat template inserts this system turn when none is given; sending it makes hosted models see what Qwen saw.
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."
RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
MAX_BACKOFF_S = 30.0
FRAME_FIELD = "medreasoner"  # extension field of our own server's reply: {"model_frame": {"width", "height"}}


class EndpointError(UpstreamError):
    """The endpoint gave no usable answer for this request (after retries where retrying made sense)."""


def png_data_url(picture) -> str:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class OpenAIReasoner:
    """Implements the Reasoner protocol over HTTP. Thread-safe; at most `max_concurrency` requests in flight."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str = DEFAULT_API_KEY_ENV,
        sampling: SamplingSettings = SamplingSettings(),
        max_concurrency: int = 4,
        retries: int = 3,
        backoff_s: float = 1.0,
        timeout_s: float = 300.0,
        min_pixels: int = QWEN_MIN_PIXELS,
        max_pixels: int = TRAINED_FRAME_MAX_PIXELS,
        system_prompt: Optional[str] = DEFAULT_SYSTEM_PROMPT,
    ) -> None:
        if max_concurrency < 1 or retries < 0 or timeout_s <= 0:
            raise ValueError("max_concurrency must be >= 1, retries >= 0 and timeout_s > 0")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.sampling = sampling
        self.max_concurrency = max_concurrency
        self.retries = retries
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self.min_pixels = min_pixels
        self.max_pixels = max_pixels
        self.system_prompt = system_prompt
        api_key = os.environ.get(api_key_env, "")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            base_url=self.base_url + "/",
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)),
            limits=httpx.Limits(max_connections=max_concurrency),
        )
        self._slots = threading.BoundedSemaphore(max_concurrency)

    def close(self) -> None:
        """Closes the connections to the endpoint (the model there is the endpoint's to keep)."""
        self._client.close()

    def generate(self, image: np.ndarray, prompt: str) -> ReasonerOutput:
        """The answer text and its frame; raises EndpointError when the endpoint can't give one.

        The whole request time is reported as `decode_s` (an HTTP endpoint does not split prefill from decoding).
        """
        picture, frame = resize_to_model_frame(image, self.min_pixels, self.max_pixels)
        started = time.perf_counter()
        reply = self._post_with_retries(self.request_body(png_data_url(picture), prompt))
        elapsed = time.perf_counter() - started
        text, new_tokens, served_frame = _read_reply(reply)
        if served_frame is not None:
            frame = ImageFrame(frame.orig_width, frame.orig_height, *served_frame)
        return ReasonerOutput(text=text, frame=frame, prefill_s=0.0, decode_s=elapsed, new_tokens=new_tokens)

    def request_body(self, image_url: str, prompt: str) -> dict:
        """One user turn, image first then text (the order the checkpoints were trained on), plus explicit sampling."""
        user_turn = {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": image_url}}, {"type": "text", "text": prompt}],
        }
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return {"model": self.model, "messages": [*system, user_turn], **self.sampling.chat_completion_fields()}

    def list_models(self) -> list[str]:
        """The model names the endpoint serves (GET /models); raises EndpointError when it can't be asked."""
        try:
            response = self._client.get("models")
            response.raise_for_status()
            return [str(entry.get("id")) for entry in response.json().get("data", [])]
        except (httpx.HTTPError, ValueError, AttributeError) as error:
            raise EndpointError(f"cannot list the models of {self.base_url}: {error}") from error

    def _post_with_retries(self, body: dict) -> dict:
        problem, retry_after = "", None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self._pause_s(attempt, retry_after))
            retry_after = None
            try:
                with self._slots:
                    response = self._client.post("chat/completions", json=body)
            except httpx.TimeoutException:
                problem = f"no reply within the {self.timeout_s:g} s timeout"
                continue
            except httpx.TransportError as error:
                problem = f"{type(error).__name__}: {error}"
                continue
            if response.status_code == 200:
                try:
                    return response.json()
                except ValueError:
                    raise EndpointError(f"{self.base_url} replied with something that is not JSON") from None
            problem = f"HTTP {response.status_code}: {response.text[:300]}"
            if response.status_code not in RETRYABLE_STATUS:
                raise EndpointError(f"{self.base_url} refused the request ({problem})")
            retry_after = _retry_after_s(response)
        raise EndpointError(f"{self.base_url} failed {self.retries + 1} times; last: {problem}")

    def _pause_s(self, attempt: int, retry_after: Optional[float]) -> float:
        """Exponential backoff (backoff_s, 2x, 4x, ...), or the server's Retry-After; never more than MAX_BACKOFF_S."""
        wanted = retry_after if retry_after is not None else self.backoff_s * 2 ** (attempt - 1)
        return min(wanted, MAX_BACKOFF_S)


def _retry_after_s(response: httpx.Response) -> Optional[float]:
    try:
        return max(0.0, float(response.headers.get("retry-after", "")))
    except ValueError:
        return None


def _read_reply(reply: dict) -> tuple[str, int, Optional[tuple[int, int]]]:
    """(text, completion tokens, the frame the server reports or None) of a chat-completions reply."""
    try:
        text = reply["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise EndpointError(f"the reply has no choices[0].message.content: {str(reply)[:300]}") from None
    if not isinstance(text, str):
        raise EndpointError(f"the reply's message content is not text: {str(text)[:300]}")
    usage = reply.get("usage") or {}
    new_tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
    extension = reply.get(FRAME_FIELD)
    frame = extension.get("model_frame") if isinstance(extension, dict) else None
    served_frame = None
    if isinstance(frame, dict) and all(isinstance(frame.get(k), int) and frame[k] > 0 for k in ("width", "height")):
        served_frame = (frame["width"], frame["height"])
    return text, new_tokens if isinstance(new_tokens, int) else 0, served_frame
