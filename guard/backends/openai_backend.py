"""Any OpenAI-compatible chat-completions server (``vllm serve``, ``guard_serve``, ...).

Requests are the contract's chat messages (``contract.render(...).messages``);
answers are parsed with ``contract.parse`` (an answer that does not parse
becomes ``contract.failed_verdict``). Servers that support vLLM's structured
outputs are asked for the answer block with ``contract.answer_regex``
(``"structured_outputs": {"regex": ...}``); whether the server supports it is
learnt from ``GET /v1/models`` (``owned_by`` ``vllm`` or ``guardsite``) and, if
a server rejects the field anyway, the request is repeated without it.

Timeouts and bounded retries with exponential backoff apply to connection
errors, timeouts, HTTP 429 and 5xx; other 4xx answers fail at once. HTTP
backends cannot score logits: ``confidence`` stays None.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from guard import contract
from guard.backends.base import GuardError, GuardRequest, setting
from guard.contract import Verdict

logger = logging.getLogger(__name__)

STRUCTURED_OWNERS = ("vllm", "guardsite")
# Room for the four label lines on top of the explanation budget.
LABEL_LINES_TOKENS = 48
# Fast mode stops generating where the explanation would begin.



class OpenAIBackend:
    name = "openai"

    def __init__(
        self,
        base_url: str | None = None,
        model: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        connect_timeout: float = 5.0,
        retries: int = 3,
        backoff: float = 0.5,
        concurrency: int = 8,
        structured: bool | None = None,
        max_input_tokens: int | None = None,
        max_new_tokens: int | None = None,
    ) -> None:
        url = (base_url or setting("GUARD_OPENAI_BASE_URL", "") or "").strip().rstrip("/")
        if not url:
            raise GuardError("GUARD_OPENAI_BASE_URL is not set: the openai backend needs a server URL")
        if not url.endswith("/v1"):
            url += "/v1"
        self.base_url = url
        self.model = model
        self.api_key = api_key if api_key is not None else setting("GUARD_OPENAI_API_KEY", "")
        self.retries = max(0, int(retries))
        self.backoff = backoff
        self.concurrency = max(1, int(concurrency))
        # None: find out from /v1/models on first use.
        self.structured = structured
        self.max_input_tokens = int(max_input_tokens or setting("GUARD_MAX_INPUT_TOKENS", 2048))
        self.max_new_tokens = int(max_new_tokens or setting("GUARD_MAX_NEW_TOKENS", 96))
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        self._client = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
        )
        self._probe_lock = threading.Lock()

    # ----------------------------------------------------------------- HTTP

    def _send(self, method: str, path: str, payload: dict[str, Any] | None = None) -> httpx.Response:
        """One request with bounded retries; returns any non-retryable response."""
        last_error = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                response = self._client.request(method, path, json=payload)
            except httpx.TimeoutException as error:
                last_error = f"timed out ({type(error).__name__})"
                continue
            except httpx.TransportError as error:
                last_error = f"connection failed ({error})"
                continue
            if response.status_code == 429 or response.status_code >= 500:
                last_error = f"HTTP {response.status_code}: {response.text[:200]}"
                continue
            return response
        raise GuardError(
            f"guard server {self.base_url} did not answer {method} {path} after "
            f"{self.retries + 1} attempts: {last_error}"
        )

    def _model_name(self) -> str:
        if self.model:
            return self.model
        self._probe()
        return self.model or "default"

    def _probe(self) -> None:
        """Learn the served model's name and whether it takes structured outputs."""
        with self._probe_lock:
            if self.model and self.structured is not None:
                return
            response = self._send("GET", "/models")
            if response.status_code != 200:
                raise GuardError(f"guard server {self.base_url}: GET /models answered HTTP {response.status_code}")
            models = response.json().get("data") or []
            if not self.model:
                if not models:
                    raise GuardError(f"guard server {self.base_url} serves no model")
                self.model = str(models[0].get("id"))
            if self.structured is None:
                owners = {str(m.get("owned_by", "")).lower() for m in models}
                self.structured = bool(owners & set(STRUCTURED_OWNERS))

    # ----------------------------------------------------------------- classify

    def classify_batch(self, requests: list[GuardRequest], *, constrained: bool = True) -> list[Verdict]:
        if not requests:
            return []
        for request in requests:
            if not isinstance(request.prompt, str) or not request.prompt.strip():
                raise GuardError("the prompt is empty: there is nothing to judge")
        model = self._model_name()
        if self.structured is None:
            self._probe()
        if len(requests) == 1:
            return [self._classify_one(requests[0], model, constrained)]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(requests))) as pool:
            return list(pool.map(lambda r: self._classify_one(r, model, constrained), requests))

    def _classify_one(self, request: GuardRequest, model: str, constrained: bool) -> Verdict:
        spec = contract.as_spec(request.policy)
        policy_tokens = len(contract.render_policy(spec)) // 4 + 200
        budget = max(self.max_input_tokens - policy_tokens - LABEL_LINES_TOKENS - self.max_new_tokens, 64)
        rendered = contract.render(spec, request.prompt, request.response, request.mode, max_text_tokens=budget)
        payload: dict[str, Any] = {
            "model": model,
            "messages": rendered.messages,
            "max_tokens": self.max_new_tokens + LABEL_LINES_TOKENS,
            "temperature": 0,
        }
        if request.mode == "fast":
            # Fast mode over HTTP: the answer block without its explanation (no logits to score).
            payload["stop"] = [contract.FAST_STOP]
        if request.adapter_path:
            # vLLM serves LoRA adapters under their registered name; the caller passes it.
            payload["model"] = request.adapter_path
        use_structured = constrained and bool(self.structured)
        if use_structured:
            payload["structured_outputs"] = {"regex": contract.answer_regex(spec, rendered.has_response)}
        response = self._send("POST", "/chat/completions", payload)
        if use_structured and response.status_code in (400, 422) and "structured" in response.text:
            logger.warning("guard server rejected structured outputs; continuing without them")
            self.structured = False
            payload.pop("structured_outputs")
            response = self._send("POST", "/chat/completions", payload)
        if response.status_code != 200:
            raise GuardError(
                f"guard server {self.base_url} answered HTTP {response.status_code}: {response.text[:300]}"
            )
        try:
            text = response.json()["choices"][0]["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError) as error:
            raise GuardError(f"guard server {self.base_url} sent an unexpected body: {response.text[:300]}") from error
        return contract.verdict_from_generation(text, spec, rendered)

    def close(self) -> None:
        self._client.close()
