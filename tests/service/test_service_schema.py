"""The OpenAPI document: checked in, equal to the served one, and fuzzed with schemathesis.

Schemathesis generates up to 20 requests per operation from the checked-in
document and sends them to the live server with a key of a role allowed to
call the operation; no answer may be a server error, and every error is
problem+json.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from facetrust.service import PERMISSIONS, PUBLIC, Role
from facetrust.service.app import openapi_document
from gallery_fixtures import BAD_IDS, GOOD_IDS

from .conftest import LiveServer

SPEC_PATH = Path(__file__).parent.parent.parent / "docs" / "openapi.json"
SPEC = json.loads(SPEC_PATH.read_text(encoding="utf-8"))
KEY_OF_ROLE = {Role.ENROLLER: "enroller", Role.OPERATOR: "operator-schema",
               Role.AUDITOR: "auditor", Role.ADMIN: "admin"}

schema = schemathesis.openapi.from_dict(SPEC)
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]


def test_checked_in_spec_is_current() -> None:
    assert openapi_document() == SPEC, (
        "docs/openapi.json is out of date: run .venv/bin/python scripts/update_openapi.py"
    )


def test_served_spec_equals_the_checked_in_one(live_server: LiveServer) -> None:
    served = httpx.get(f"{live_server.url}/openapi.json").json()
    assert served == SPEC


def test_every_operation_declares_bearer_auth_unless_public() -> None:
    for path, methods in SPEC["paths"].items():
        for method, operation in methods.items():
            secured = bool(operation.get("security"))
            assert secured == (operation["operationId"] not in PUBLIC), (method, path)


@pytest.fixture(scope="module")
def server(live_server: LiveServer) -> LiveServer:
    return live_server


@schema.parametrize()
@settings(max_examples=20, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
def test_no_server_errors(case: schemathesis.Case, server: LiveServer) -> None:
    operation_id = case.operation.definition.raw["operationId"]
    headers = {}
    if operation_id not in PUBLIC:
        role = sorted(PERMISSIONS[operation_id])[0]
        headers["Authorization"] = f"Bearer {server.keys[KEY_OF_ROLE[role]]}"
    response = case.call(base_url=server.url, headers=headers, timeout=60)
    assert response.status_code < 500, (operation_id, response.status_code, response.text)
    # Documented status code, content type and body schema, for successes and problems alike.
    # (Not "negative data rejection": the API is lenient where pydantic is, e.g. it reads a
    # number as a Unix time.)
    case.validate_response(response, headers=headers, checks=CHECKS)
    if response.status_code >= 400:
        assert response.headers["content-type"][0].startswith("application/problem+json")
        assert "Traceback" not in response.text


def subject_id_schemas() -> list[tuple[str, dict[str, object]]]:
    """Every subject id the document describes (path parameters and body fields)."""
    found = []
    for path, operations in SPEC["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                if parameter["name"] == "subject_id":
                    found.append((f"{method} {path}", parameter["schema"]))
    for name, model in SPEC["components"]["schemas"].items():
        field = model.get("properties", {}).get("subject_id")
        if field is not None:
            found.append((name, next((s for s in field.get("anyOf", [field])
                                      if s.get("type") == "string"), field)))
    return found


def test_the_document_describes_subject_ids_by_the_gallerys_own_grammar() -> None:
    described = subject_id_schemas()
    assert len(described) >= 8  # subjects, consents, enrolments, verify, reviews, references
    for where, subject_id in described:
        def accepts(value: str, s: dict[str, object] = subject_id) -> bool:
            return (len(value) <= int(str(s["maxLength"]))
                    and re.search(str(s["pattern"]), value) is not None)

        assert [v for v in GOOD_IDS if not accepts(v)] == [], where
        assert [v for v in BAD_IDS if accepts(v)] == [], where
