"""A small OpenAI-compatible HTTP server for a guard model (``manage.py guard_serve``).

Endpoints: ``GET /v1/models``, ``POST /v1/chat/completions`` (non-streaming),
``GET /health``. It runs the transformers backend's generator: greedy at
temperature 0, sampling otherwise; honours ``max_tokens``, ``stop``, ``seed``
and vLLM's structured-output extension (``"structured_outputs": {"regex": ...}``,
or the older top-level ``guided_regex``) by token-level regex-constrained
decoding. The HTTP layer is threaded; concurrent completions are batched:
a single ``GenerationBatcher`` thread owns the model and judges together the
requests that arrive while it is busy (up to the backend's batch size), so the
OpenAI-compatible path is not serial.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from guard.backends.base import GuardError
from guard.backends.transformers_backend import Generation, TransformersBackend

logger = logging.getLogger(__name__)

OWNER = "guardsite"
MAX_BODY_BYTES = 4 * 1024 * 1024
MAX_TOKENS_LIMIT = 4096


class RequestError(Exception):
    def __init__(self, status: HTTPStatus, message: str, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                parts.append(part["text"])
            else:
                raise RequestError(HTTPStatus.BAD_REQUEST, "only text content parts are supported")
        return "".join(parts)
    raise RequestError(HTTPStatus.BAD_REQUEST, "message content must be a string or a list of text parts")


def messages_to_text(messages: list[dict[str, str]], tokenizer: Any) -> str:
    """The model input for chat ``messages``, ending where the assistant turn begins.

    Same rule as ``guard.contract.GuardInput.to_text``: the tokenizer's chat
    template when it has one, else Gemma turn markers with the system message
    folded into the first user turn.
    """
    template = getattr(tokenizer, "chat_template", None)
    if template:
        try:
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception:  # noqa: BLE001 - templates without a system role
            pass
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    turns = [m for m in messages if m["role"] != "system"]
    if system:
        if turns and turns[0]["role"] == "user":
            turns[0] = {"role": "user", "content": f"{system}\n\n{turns[0]['content']}"}
        else:
            turns.insert(0, {"role": "user", "content": system})
    if template:
        return tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    text = ""
    for turn in turns:
        role = "model" if turn["role"] == "assistant" else "user"
        text += f"<start_of_turn>{role}\n{turn['content']}<end_of_turn>\n"
    return text + "<start_of_turn>model\n"


@dataclass
class _Job:
    text: str
    max_tokens: int
    temperature: float
    regex: str | None
    stop: tuple[str, ...]
    seed: int | None
    future: Future = field(default_factory=Future)

    @property
    def key(self) -> tuple:
        """Jobs with equal keys are generated in one backend call (greedy ignores the seed)."""
        seed = self.seed if self.temperature > 0 else None
        return (self.max_tokens, self.temperature, self.regex, self.stop, seed)


class GenerationBatcher:
    """One thread that owns the backend and batches the completions waiting for it.

    While a batch runs, new requests queue up; the next batch takes all that
    are waiting (up to ``max_batch``), grouped by their generation parameters.
    A request whose own input fails (e.g. too long) fails alone."""

    def __init__(self, backend: TransformersBackend, max_batch: int | None = None) -> None:
        self.backend = backend
        self.max_batch = max(1, max_batch or backend.max_batch_size)
        self.jobs: queue.Queue[_Job] = queue.Queue()
        self.batch_sizes: list[int] = []
        self._thread = threading.Thread(target=self._run, name="guard-batcher", daemon=True)
        self._thread.start()

    def submit(self, job: _Job) -> Generation:
        self.jobs.put(job)
        return job.future.result()

    def _run(self) -> None:
        while True:
            batch = [self.jobs.get()]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self.jobs.get_nowait())
                except queue.Empty:
                    break
            self.batch_sizes.append(len(batch))
            groups: dict[tuple, list[_Job]] = {}
            for job in batch:
                groups.setdefault(job.key, []).append(job)
            for jobs in groups.values():
                self._generate(jobs)

    def _generate(self, jobs: list[_Job]) -> None:
        first = jobs[0]
        try:
            results = self.backend.generate(
                [job.text for job in jobs],
                max_new_tokens=first.max_tokens,
                temperature=first.temperature,
                regex=first.regex,
                stop=list(first.stop),
                seed=first.seed,
            )
        except GuardError as error:
            if len(jobs) == 1:
                first.future.set_exception(error)
                return
            for job in jobs:  # find the one(s) at fault; the others still get answers
                self._generate([job])
            return
        except Exception as error:  # noqa: BLE001 - reported to every waiting request
            for job in jobs:
                job.future.set_exception(error)
            return
        for job, result in zip(jobs, results, strict=True):
            job.future.set_result(result)


class GuardHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], backend: TransformersBackend, model_name: str) -> None:
        self.backend = backend
        self.model_name = model_name
        self.created = int(time.time())
        self.batcher = GenerationBatcher(backend)
        super().__init__(address, GuardRequestHandler)

    def chat_completion(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise RequestError(HTTPStatus.BAD_REQUEST, "the body must be a JSON object")
        model = body.get("model")
        if model not in (None, "", self.model_name):
            raise RequestError(
                HTTPStatus.NOT_FOUND, f"the model {model!r} does not exist; this server serves {self.model_name!r}", "NotFoundError"
            )
        if body.get("stream"):
            raise RequestError(HTTPStatus.BAD_REQUEST, "streaming is not supported")
        raw_messages = body.get("messages")
        if not isinstance(raw_messages, list) or not raw_messages:
            raise RequestError(HTTPStatus.BAD_REQUEST, "messages must be a non-empty list")
        messages = []
        for message in raw_messages:
            if not isinstance(message, dict) or message.get("role") not in ("system", "user", "assistant"):
                raise RequestError(HTTPStatus.BAD_REQUEST, "each message needs a role: system, user or assistant")
            messages.append({"role": message["role"], "content": _content_text(message.get("content"))})
        max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
        if max_tokens is None:
            max_tokens = self.backend.max_new_tokens + 48
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or not 1 <= max_tokens <= MAX_TOKENS_LIMIT:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"max_tokens must be an integer from 1 to {MAX_TOKENS_LIMIT}")
        temperature = body.get("temperature", 0.0)
        if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or temperature < 0:
            raise RequestError(HTTPStatus.BAD_REQUEST, "temperature must be a number >= 0")
        stop = body.get("stop") or []
        if isinstance(stop, str):
            stop = [stop]
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise RequestError(HTTPStatus.BAD_REQUEST, "stop must be a string or a list of strings")
        seed = body.get("seed")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise RequestError(HTTPStatus.BAD_REQUEST, "seed must be an integer")
        regex = None
        structured = body.get("structured_outputs")
        if isinstance(structured, dict):
            regex = structured.get("regex")
            unsupported = set(structured) - {"regex"}
            if unsupported:
                raise RequestError(
                    HTTPStatus.BAD_REQUEST, f"structured_outputs: only 'regex' is supported, not {', '.join(sorted(unsupported))}"
                )
        elif structured is not None:
            raise RequestError(HTTPStatus.BAD_REQUEST, "structured_outputs must be an object")
        regex = regex or body.get("guided_regex")
        if regex is not None and not isinstance(regex, str):
            raise RequestError(HTTPStatus.BAD_REQUEST, "structured_outputs.regex must be a string")
        text = messages_to_text(messages, self.backend.tokenizer)
        job = _Job(text, max_tokens, float(temperature), regex, tuple(stop), seed)
        try:
            result = self.batcher.submit(job)
        except GuardError as error:
            raise RequestError(HTTPStatus.BAD_REQUEST, str(error)) from error
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model_name,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": result.text},
                    "finish_reason": result.finish_reason,
                }
            ],
            "usage": {
                "prompt_tokens": result.prompt_tokens,
                "completion_tokens": result.completion_tokens,
                "total_tokens": result.prompt_tokens + result.completion_tokens,
            },
        }

    def models(self) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": self.model_name, "object": "model", "created": self.created, "owned_by": OWNER}],
        }


class GuardRequestHandler(BaseHTTPRequestHandler):
    server: GuardHTTPServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        logger.info("%s %s", self.address_string(), format % args)

    def _send_json(self, status: HTTPStatus, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_error(self, error: RequestError) -> None:
        self._send_json(error.status, {"error": {"message": error.message, "type": error.kind, "code": int(error.status)}})

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        path = self.path.split("?", 1)[0].rstrip("/")
        if path in ("/v1/models", "/models"):
            self._send_json(HTTPStatus.OK, self.server.models())
        elif path == "/health":
            self._send_json(HTTPStatus.OK, {"status": "ok", "model": self.server.model_name})
        else:
            self._send_error(RequestError(HTTPStatus.NOT_FOUND, f"no route {path!r}", "NotFoundError"))

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        path = self.path.split("?", 1)[0].rstrip("/")
        if path not in ("/v1/chat/completions", "/chat/completions"):
            self._send_error(RequestError(HTTPStatus.NOT_FOUND, f"no route {path!r}", "NotFoundError"))
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length <= 0 or length > MAX_BODY_BYTES:
            self._send_error(RequestError(HTTPStatus.BAD_REQUEST, f"a JSON body of 1 to {MAX_BODY_BYTES} bytes is required"))
            return
        try:
            body = json.loads(self.rfile.read(length))
        except ValueError:
            self._send_error(RequestError(HTTPStatus.BAD_REQUEST, "the body is not valid JSON"))
            return
        try:
            payload = self.server.chat_completion(body)
        except RequestError as error:
            self._send_error(error)
            return
        except Exception:  # noqa: BLE001 - a server error is reported, never a dropped connection
            logger.exception("chat completion failed")
            self._send_error(RequestError(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error", "server_error"))
            return
        self._send_json(HTTPStatus.OK, payload)


def make_server(host: str, port: int, backend: TransformersBackend, model_name: str) -> GuardHTTPServer:
    return GuardHTTPServer((host, port), backend, model_name)
