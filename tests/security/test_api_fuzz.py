"""Property-based fuzz of the API from its OpenAPI document: no input gets a 5xx.

A short schemathesis run against the live test server with a valid API key
(fixed seed, a few examples per operation); bench/fuzz_api.py runs a long one
against gunicorn on a throwaway stack and reports the figures.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from moderation import keys
from tests.ops.conftest import publish_policy

REPO = Path(__file__).resolve().parents[2]
SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))


@pytest.fixture
def fuzz_target(transactional_db, live_server, settings):
    from guard.testing import tiny_model_dir

    settings.GUARD_MODEL_DIR = str(tiny_model_dir())
    settings.MODERATION_QC_SAMPLE_RATE = 0.0
    publish_policy("general")
    _, secret = keys.create_key("fuzz", rate_limit_per_minute=10**9)
    return live_server.url, secret


@pytest.mark.slow
def test_schemathesis_finds_no_server_error(fuzz_target, tmp_path):
    url, secret = fuzz_target
    result = subprocess.run(
        [
            SCHEMATHESIS, "run", f"{url}/api/v1/openapi.json", "--header", f"Authorization: Bearer {secret}",
            "--checks", "not_a_server_error", "--max-examples", "15", "--seed", "20261123",
            "--phases", "examples,coverage,fuzzing", "--workers", "1", "--request-timeout", "60",
            "--generation-database", "none", "--no-color",
        ],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-6000:]


@pytest.mark.parametrize(
    "since",
    ["2026-01-01T00:00:00+20:00", "0263-12-14T22:13:04-20:13", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"],
)
def test_listing_items_since_an_extreme_moment_is_not_a_server_error(client, db, since):
    # Found by the fuzz: offsets beyond PostgreSQL's ±15:59 reached the database.
    _, secret = keys.create_key("fuzz")
    response = client.get("/api/v1/items", {"since": since}, headers={"Authorization": f"Bearer {secret}"})
    assert response.status_code in (200, 422), response.content[:300]


def test_a_forged_cursor_with_an_extreme_offset_is_not_a_server_error(client, db):
    _, secret = keys.create_key("fuzz")
    response = client.get("/api/v1/items", {"cursor": "2026-01-01T00:00:00+20:00|1"}, headers={"Authorization": f"Bearer {secret}"})
    assert response.status_code in (200, 422), response.content[:300]
