"""Property-based fuzzing of the API from its own OpenAPI document: no input yields a 500."""

from __future__ import annotations

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, settings

schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", get_wsgi_application())


@pytest.fixture
def fuzz_key(make_key, house_policy, tiny_guard) -> str:
    return make_key("fuzzer", rate_limit_per_minute=10**6)[1]


# The WSGI app closes the database connection after each request (as in production),
# which only a transactional test database survives.
@pytest.mark.django_db(transaction=True)
@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_generated_request_gets_a_server_error(case, fuzz_key):
    response = case.call(headers={"Authorization": f"Bearer {fuzz_key}"})
    assert response.status_code < 500, (case.as_curl_command(), response.status_code, response.text[:500])
