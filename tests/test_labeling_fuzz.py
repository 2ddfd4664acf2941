"""The labeling API fuzzed from its own OpenAPI schema (/api/openapi.json) with schemathesis: for every
operation, the schema's examples, its coverage cases (boundaries, missing and wrong-typed fields) and
random valid and invalid requests, sent as an admin with a bearer token to an app on a store with
questions. No response may be a 5xx; every response (errors included) must be a documented status code
with the documented content type and body; invalid requests must be refused."""

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("schemathesis")
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from rewards.labeling.app import create_app
from rewards.labeling.store import LabelingStore
from tests.test_labeling_app import fill

# the schema, read from an app on an empty in-memory store; each test sends its cases to an app of its own
schema = schemathesis.openapi.from_asgi("/api/openapi.json", create_app(":memory:"))
schema.config.generation.update(max_examples=25, deterministic=True, database="none")
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    """An app on a store with 8 questions (half of them wanting duplicate answers) and an admin's token."""
    path = tmp_path_factory.mktemp("fuzz") / "labels.db"
    fill(path, n=8)
    with LabelingStore(path) as users:
        token = users.add_labeler("fuzz", admin=True)
    return create_app(path, duplicate_share=0.5), {"Authorization": f"Bearer {token}"}


def test_the_schema_lists_every_operation():
    labels = {result.ok().label for result in schema.get_all_operations()}
    assert labels == {
        "POST /api/login",
        "POST /api/logout",
        "GET /api/me",
        "GET /api/next",
        "POST /api/answers",
        "GET /api/answers",
        "GET /api/admin/stats",
        "GET /api/admin/dashboard",
        "GET /api/admin/export",
    }


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_the_api_survives_fuzzing_from_its_schema(case, target):
    app, auth = target
    case.call_and_validate(app=app, headers=auth, checks=CHECKS)
