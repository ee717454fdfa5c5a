"""The moderation API (django-ninja) at /api/v1/; OpenAPI document at /api/v1/openapi.json.

Authentication: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``.
Every error is JSON ``{"error": <code>, "detail": <message naming the problem>}``
with a 4xx status (503 with ``Retry-After`` when the database or guard is down).
The request and response schemas are in ``moderation.api_schemas``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse
from django.utils import timezone
from ninja import NinjaAPI, Query, Status
from ninja.errors import HttpError, ValidationError
from ninja.security import APIKeyHeader, HttpBearer

from guardsite.errors import database_is_down
from moderation import conf, dispatch, explain, keys
from moderation.api_schemas import (
    ERRORS,
    BatchIn,
    BatchOut,
    ItemFilters,
    ItemListOut,
    ItemOut,
    ModerateIn,
    VerdictOut,
)
from moderation.models import ApiKey, IdempotencyRecord, Item, Verdict
from moderation.serializers import item_json, verdict_json
from moderation.verdicts import category_actions, store_verdict

logger = logging.getLogger(__name__)

api = NinjaAPI(
    title="Guardsite moderation API",
    version="1",
    # Nested in the "moderation" URL namespace (moderation/urls.py includes it).
    urls_namespace="moderation:api-v1",
    description=(
        "Moderate LLM prompts and responses against a policy. Authenticate with "
        "`Authorization: Bearer <key>` (or `X-API-Key`). Errors are JSON objects "
        '`{"error": code, "detail": message}`.'
    ),
)


class ApiError(Exception):
    """An error answer: status, a stable machine code, and a message naming the problem."""

    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}


def error_response(request: HttpRequest, status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> HttpResponse:
    response = api.create_response(request, {"error": code, "detail": detail}, status=status)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


# ----------------------------------------------------------------- error handlers


@api.exception_handler(ApiError)
def _api_error(request: HttpRequest, exc: ApiError) -> HttpResponse:
    return error_response(request, exc.status, exc.code, exc.detail, exc.headers)


def field_path(loc: tuple | list) -> str:
    """("body", "payload", "items", 2, "prompt") -> "items[2].prompt"."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header"):
        source = parts.pop(0)
        if source == "body" and parts:
            parts.pop(0)  # the view's parameter name
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "request body"


@api.exception_handler(ValidationError)
def _validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    problems = []
    for error in exc.errors:
        where = field_path(error.get("loc", ()))
        message = error.get("msg", "invalid")
        if error.get("type") == "missing" and where == "request body":
            message = "a JSON object is required"
        elif error.get("type") == "extra_forbidden":
            message = "unknown field"
        problems.append(f"{where}: {message}")
    return error_response(request, 422, "invalid_request", "; ".join(problems) or "invalid request")


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    cause = exc.__cause__
    if exc.status_code == 400 and cause is not None:
        if isinstance(cause, json.JSONDecodeError):
            detail = f"the request body is not valid JSON: {cause.msg} at line {cause.lineno} column {cause.colno}"
        else:
            detail = f"the request body could not be parsed: {cause}"
        return error_response(request, 400, "malformed_json", detail)
    if exc.status_code == 401:
        return error_response(request, 401, "missing_api_key", "send the API key as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'")
    return error_response(request, exc.status_code, "http_error", str(exc))


@api.exception_handler(Http404)
def _not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return error_response(request, 404, "not_found", str(exc) or "not found")


@api.exception_handler(Exception)
def _unexpected(request: HttpRequest, exc: Exception) -> HttpResponse:
    if database_is_down(exc):
        return error_response(request, 503, "service_unavailable", "the database is unavailable; retry shortly", {"Retry-After": "5"})
    if isinstance(exc, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        size = request.META.get("CONTENT_LENGTH") or "more than that"
        return error_response(
            request,
            413,
            "request_too_large",
            f"the request body has {size} bytes; the server accepts at most {limit} (MAX_REQUEST_BODY_BYTES): send fewer items per request",
        )
    raise exc  # a real bug: Django's 500 handling (and logging)


# ----------------------------------------------------------------- authentication


def _authenticate(request: HttpRequest, token: str) -> ApiKey:
    try:
        key = keys.authenticate(token)
    except keys.KeyRejected as rejected:
        raise ApiError(401, rejected.code, rejected.detail) from None
    decision = keys.hit(key)
    if not decision.allowed:
        raise ApiError(
            429,
            "rate_limited",
            f"key {key.prefix} is limited to {decision.limit} requests per minute; retry in {decision.retry_after_s} s",
            {"Retry-After": str(decision.retry_after_s)},
        )
    return key


class BearerKey(HttpBearer):
    def authenticate(self, request: HttpRequest, token: str) -> ApiKey:
        return _authenticate(request, token)


class HeaderKey(APIKeyHeader):
    param_name = "X-API-Key"

    def _get_key(self, request: HttpRequest) -> str | None:
        value = super()._get_key(request)
        if not value:
            # Tried last: no key in either header.
            raise ApiError(401, "missing_api_key", "send the API key as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'")
        return value

    def authenticate(self, request: HttpRequest, key: str | None) -> ApiKey:
        return _authenticate(request, key or "")


AUTH = [BearerKey(), HeaderKey()]


# ----------------------------------------------------------------- helpers


class PolicyResolver:
    """Resolves "slug" / "slug@N" once per request."""

    def __init__(self) -> None:
        self.cache: dict[str, Any] = {}

    def __call__(self, reference: str, where: str) -> Any:
        from policies.models import Policy, PolicyVersion

        if reference in self.cache:
            return self.cache[reference]
        reject_nul(reference, where)
        slug, at, number = reference.strip().partition("@")
        if at and (not number.isdigit() or len(number) > 9 or int(number) < 1):
            raise ApiError(422, "unknown_policy", f"{where}: version {number!r} of {slug!r} is not a positive number")
        # One query on the hot path: the wanted (or latest published) version with its policy.
        versions = PolicyVersion.objects.select_related("policy__production_model").filter(policy__slug=slug)
        version = (versions.filter(number=int(number)) if at else versions.filter(number__isnull=False).order_by("-number")).first()
        if version is None:
            policy = Policy.objects.filter(slug=slug).first()
            if policy is None:
                raise ApiError(422, "unknown_policy", f"{where}: no policy with slug {slug!r}")
            published = [str(n) for n in policy.versions.filter(number__isnull=False).order_by("number").values_list("number", flat=True)]
            if not published:
                raise ApiError(422, "unknown_policy", f"{where}: policy {slug!r} has no published version yet")
            raise ApiError(422, "unknown_policy", f"{where}: policy {slug!r} has no version {number} (published: {', '.join(published)})")
        self.cache[reference] = version
        return version


def reject_nul(value: str | None, where: str) -> None:
    """PostgreSQL text cannot hold NUL characters: refuse them as bad input, not a 500."""
    if value is not None and "\x00" in value:
        raise ApiError(422, "invalid_request", f"{where}: contains a NUL (\\u0000) character")


def check_text(prompt: str, response: str | None, where: str) -> None:
    limit = conf.max_text_chars()
    reject_nul(prompt, f"{where}prompt")
    reject_nul(response, f"{where}response")
    if not prompt.strip():
        raise ApiError(422, "invalid_request", f"{where}prompt: must not be empty")
    for name, text in (("prompt", prompt), ("response", response)):
        if text is not None and len(text) > limit:
            raise ApiError(422, "text_too_long", f"{where}{name} has {len(text)} characters; the limit is {limit}")


def check_queue_room(key: ApiKey, adding: int) -> None:
    """429 when ``adding`` more items would put more than ``MODERATION_MAX_QUEUED_PER_KEY``
    of this key's items in the queue (received, queued or running: not yet judged)."""
    cap = conf.max_queued_per_key()
    waiting = Item.objects.filter(client=key, status__in=(*Item.PENDING, Item.Status.RUNNING)).count()
    if waiting + adding <= cap:
        return
    retry_after = queue_retry_after(waiting + adding - cap)
    raise ApiError(
        429,
        "queue_full",
        f"key {key.prefix} has {waiting} item(s) waiting to be judged and the limit is {cap} queued items per key "
        f"(MODERATION_MAX_QUEUED_PER_KEY); this batch of {adding} would exceed it. "
        f"Retry in about {retry_after} s, when some have been judged, or send fewer items",
        {"Retry-After": str(retry_after)},
    )


def queue_retry_after(excess: int) -> int:
    """Seconds until about ``excess`` items have been judged, at the recent per-item pace (5-600 s)."""
    recent = list(Verdict.objects.order_by("-id").values_list("latency_ms", flat=True)[:50])
    per_item_ms = (sum(recent) / len(recent)) if recent else 1000
    return int(min(600, max(5, excess * per_item_ms / 1000)))


def _client_items(key: ApiKey):  # noqa: ANN202 - a QuerySet
    return (
        Item.objects.filter(client=key)
        .select_related("policy_version__policy", "verdict")
        .prefetch_related("decisions")
    )


# ----------------------------------------------------------------- endpoints


@api.post("/moderate", auth=AUTH, response={200: VerdictOut, **ERRORS}, summary="Moderate one conversation now")
def moderate(request: HttpRequest, payload: ModerateIn) -> Status:
    """Runs the guard in this process and answers with the verdict and the decided action.

    The item and its verdict are stored (the answer's ``id``) and may enter the
    human review queue like any other.
    """
    from guard.backends.base import GuardError, GuardRequest
    from guard.runtime import classify

    check_text(payload.prompt, payload.response, "")
    version = PolicyResolver()(payload.policy, "policy")
    model = dispatch.model_name_for(version.policy)
    guard_request = GuardRequest(policy=version.to_spec(), prompt=payload.prompt, response=payload.response, mode=payload.mode)
    thresholds = dispatch.applied_thresholds(model)  # loads the model on first use: not counted as its latency
    started = time.monotonic()
    try:
        result = classify([guard_request], model=model)[0]
    except GuardError as exc:
        raise ApiError(422, "guard_rejected", str(exc)) from exc
    except Exception as exc:
        if database_is_down(exc):
            raise
        logger.exception("guard %s failed", model or "embedded")
        raise ApiError(503, "guard_unavailable", f"the guard model could not run: {exc}", {"Retry-After": "30"}) from exc
    latency_ms = int((time.monotonic() - started) * 1000)
    actions = category_actions(version)
    with transaction.atomic():
        item = Item.objects.create(
            policy_version=version,
            prompt=payload.prompt,
            response=payload.response,
            mode=payload.mode,
            origin=Item.Origin.SYNC,
            client=request.auth,
            status=Item.Status.RUNNING,
            attempts=1,
        )
        verdict, _ = store_verdict(
            item, result, actions, dispatch.model_label(model), latency_ms, thresholds=thresholds
        )
        if verdict.explanation_status == Verdict.ExplanationStatus.PENDING:
            explain.announce_on_commit()  # written after this answer, by the reason pass
    return Status(200, verdict_json(item, verdict))


def _request_fingerprint(payload: BatchIn) -> str:
    canonical = json.dumps(payload.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


# The header submit_items honours, declared for OpenAPI clients (ninja sees only typed parameters).
IDEMPOTENCY_KEY_HEADER = {
    "in": "header",
    "name": "Idempotency-Key",
    "required": False,
    "schema": {"type": "string", "maxLength": 200},
    "example": "order-42",
    "description": (
        "Makes a retry safe: a repeated request with the same key and the same body (from the same API key, "
        "within MODERATION_IDEMPOTENCY_TTL_HOURS) gets the first 202 answer again and creates nothing; "
        "the same key with a different body is answered 409 `idempotency_key_reused`. At most 200 characters."
    ),
}


@api.post(
    "/items",
    auth=AUTH,
    response={202: BatchOut, **ERRORS},
    summary="Submit a batch for asynchronous moderation",
    openapi_extra={"parameters": [IDEMPOTENCY_KEY_HEADER]},
)
def submit_items(request: HttpRequest, payload: BatchIn, response: HttpResponse) -> Status:
    """Accepts up to ``MODERATION_MAX_BATCH`` items and answers 202 with their ids at once.

    The items are committed before the workers hear of them. With an
    ``Idempotency-Key`` header a repeated request gets the first answer again
    (and creates nothing); the same key with a different body is a 409.

    Workers take items round-robin across API keys and policies, so a large
    backlog of one key does not hold up another's. A key may have at most
    ``MODERATION_MAX_QUEUED_PER_KEY`` items waiting to be judged: a batch
    beyond that is refused with 429 ``queue_full`` and ``Retry-After``. A body
    above ``MAX_REQUEST_BODY_BYTES`` (1 MiB by default) is refused with 413.
    """
    key: ApiKey = request.auth  # type: ignore[assignment]
    idempotency_key = (request.headers.get("Idempotency-Key") or "").strip()
    if len(idempotency_key) > 200:
        raise ApiError(400, "invalid_idempotency_key", f"Idempotency-Key has {len(idempotency_key)} characters; the limit is 200")
    if not payload.items:
        raise ApiError(422, "invalid_request", "items: at least one item is required")
    if len(payload.items) > conf.max_batch():
        raise ApiError(422, "batch_too_large", f"items: {len(payload.items)} items; the limit is {conf.max_batch()} per request")
    fingerprint = _request_fingerprint(payload) if idempotency_key else ""
    if idempotency_key:
        replay = _replay(key, idempotency_key, fingerprint, response)
        if replay is not None:
            return replay

    check_queue_room(key, len(payload.items))
    resolve = PolicyResolver()
    rows = []
    for index, entry in enumerate(payload.items):
        where = f"items[{index}]."
        check_text(entry.prompt, entry.response, where)
        reject_nul(entry.external_id, f"{where}external_id")
        if entry.external_id is not None and len(entry.external_id) > 200:
            raise ApiError(422, "invalid_request", f"{where}external_id: at most 200 characters")
        reference = entry.policy or payload.policy
        if not reference:
            raise ApiError(422, "invalid_request", f"{where}policy: required (give it per item or for the whole batch)")
        version = resolve(reference, f"{where}policy" if entry.policy else "policy")
        rows.append(
            Item(
                policy_version=version,
                prompt=entry.prompt,
                response=entry.response,
                mode=entry.mode or payload.mode,
                origin=Item.Origin.ASYNC,
                external_id=entry.external_id or "",
                client=key,
                idempotency_key=idempotency_key,
                # Committed as queued; the wake-up is published after commit. Should that
                # publish fail, dispatch.announce marks them received and the sweeper retries.
                status=Item.Status.QUEUED,
            )
        )

    try:
        with transaction.atomic():
            record = None
            if idempotency_key:
                # Inserted first: a concurrent duplicate blocks on this row's unique key
                # until we commit, then gets IntegrityError and replays our answer.
                record = IdempotencyRecord.objects.create(client=key, key=idempotency_key, request_sha256=fingerprint)
            # Concurrent batches of one key queue one after the other, so the cap holds.
            ApiKey.objects.select_for_update().filter(pk=key.pk).first()
            check_queue_room(key, len(rows))
            created = Item.objects.bulk_create(rows, batch_size=500)
            body = {
                "count": len(created),
                "ids": [item.pk for item in created],
                "items": [{"id": item.pk, "external_id": item.external_id or None} for item in created],
                "status": "queued",
            }
            if record is not None:
                IdempotencyRecord.objects.filter(pk=record.pk).update(response=body, status_code=202)
            dispatch.announce_on_commit(body["ids"], mark_queued=False)
    except IntegrityError:
        replay = _replay(key, idempotency_key, fingerprint, response)
        if replay is None:
            raise
        return replay
    return Status(202, body)


def _replay(key: ApiKey, idempotency_key: str, fingerprint: str, response: HttpResponse) -> Status | None:
    ttl_start = timezone.now() - timedelta(hours=conf.idempotency_ttl_hours())
    record = IdempotencyRecord.objects.filter(client=key, key=idempotency_key).first()
    if record is None:
        return None
    if record.created_at < ttl_start:
        record.delete()  # expired: the key may be used for a new batch
        return None
    if record.request_sha256 != fingerprint:
        raise ApiError(
            409,
            "idempotency_key_reused",
            f"Idempotency-Key {idempotency_key!r} was already used with a different request body",
        )
    response["Idempotent-Replayed"] = "true"
    return Status(record.status_code, record.response)


@api.get("/items/{item_id}", auth=AUTH, response={200: ItemOut, **ERRORS}, summary="One item with its verdict")
def get_item(request: HttpRequest, item_id: int) -> Status:
    in_range = 0 < item_id < 2**63  # a bigint; beyond it the database would raise, not answer "none"
    item = _client_items(request.auth).filter(pk=item_id).first() if in_range else None  # type: ignore[arg-type]
    if item is None:
        raise ApiError(404, "not_found", f"no item {item_id} for this API key")
    return Status(200, item_json(item))


def _parse_cursor(cursor: str) -> tuple[datetime, int]:
    stamp, _, last_id = cursor.rpartition("|")
    try:
        moment, pk = datetime.fromisoformat(stamp), int(last_id)
        # UTC and a bigint-sized id: anything else would be a database error, not a 4xx.
        moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
        if not 0 <= pk < 2**63:
            raise ValueError(pk)
        return moment, pk
    except (ValueError, OverflowError):
        raise ApiError(422, "invalid_request", f"cursor: {cursor!r} is not a cursor returned by this endpoint") from None


@api.get("/items", auth=AUTH, response={200: ItemListOut, **ERRORS}, summary="Poll items by status and time")
def list_items(request: HttpRequest, filters: Query[ItemFilters]) -> Status:
    """Items of this API key, oldest change first. Page with ``next_cursor``."""
    items = _client_items(request.auth).order_by("updated_at", "pk")  # type: ignore[arg-type]
    if filters.status:
        items = items.filter(status=filters.status)
    if filters.since:
        # Normalised to UTC: PostgreSQL refuses offsets beyond +-15:59 that ISO 8601 allows.
        try:
            since = filters.since.astimezone(UTC) if filters.since.tzinfo else filters.since.replace(tzinfo=UTC)
        except OverflowError:
            raise ApiError(422, "invalid_request", f"since: {filters.since.isoformat()} is out of range") from None
        items = items.filter(updated_at__gte=since)
    if filters.cursor:
        stamp, last_id = _parse_cursor(filters.cursor)
        items = items.filter(Q(updated_at__gt=stamp) | Q(updated_at=stamp, pk__gt=last_id))
    page = list(items[: filters.limit + 1])
    more = len(page) > filters.limit
    page = page[: filters.limit]
    next_cursor = f"{page[-1].updated_at.isoformat()}|{page[-1].pk}" if more and page else None
    return Status(200, {"count": len(page), "items": [item_json(i) for i in page], "next_cursor": next_cursor})
