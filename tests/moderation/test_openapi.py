"""The OpenAPI document declares what the API honours beyond typed parameters."""

from __future__ import annotations


def parameters(client, path: str, method: str) -> dict[tuple[str, str], dict]:
    document = client.get("/api/v1/openapi.json").json()
    operation = document["paths"][path][method]
    return {(p["in"], p["name"]): p for p in operation.get("parameters", [])}


def test_openapi_declares_the_idempotency_key_header_on_batch_submission(client):
    declared = parameters(client, "/api/v1/items", "post")
    header = declared[("header", "Idempotency-Key")]
    assert header["required"] is False
    assert header["schema"] == {"type": "string", "maxLength": 200}
    assert "409" in header["description"] and "idempotency_key_reused" in header["description"]


def test_openapi_declares_the_idempotency_key_only_where_it_is_honoured(client):
    assert ("header", "Idempotency-Key") not in parameters(client, "/api/v1/items", "get")
    assert ("header", "Idempotency-Key") not in parameters(client, "/api/v1/moderate", "post")
