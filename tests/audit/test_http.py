"""HTTP API: roles, problem+json, worklist JSON and FHIR R4, audited reads."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from fastapi import APIRouter
from fastapi.testclient import TestClient

from audit import AuditLog
from audit.auth import TokenTable, hash_token
from audit.http import create_app
from eusdx.config import load_settings
from eusdx.errors import ConfigError
from tests.audit.data import STUDY_A, STUDY_B, populate

TOKENS = {"worklist": "wl-token-123", "qa": "qa-token-456", "admin": "admin-token-789"}


def _auth(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[role]}"}


@pytest.fixture
def client(audit_log: AuditLog) -> Iterator[TestClient]:
    populate(audit_log)
    settings = load_settings(
        database_url=audit_log.database_url,
        api_tokens=[f"ris:worklist:{hash_token(TOKENS['worklist'])}",
                    f"quality:qa:{hash_token(TOKENS['qa'])}",
                    f"root:admin:{hash_token(TOKENS['admin'])}"],
        gist_priority_threshold=0.7,
    )
    extra = APIRouter()

    @extra.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    with TestClient(create_app(audit_log, settings, extra_routers=[extra])) as c:
        yield c


def _is_problem(response, status: int) -> dict:  # type: ignore[no-untyped-def,type-arg]
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict = response.json()  # type: ignore[type-arg]
    assert {"type", "title", "status", "detail"} <= set(body) and body["status"] == status
    return body


AUDIT_PATHS = ["/api/v1/audit/studies", "/api/v1/audit/failures", "/api/v1/audit/timings",
               "/api/v1/audit/exports", "/api/v1/audit/stats", f"/api/v1/audit/studies/{STUDY_A}",
               "/api/v1/audit/verify"]


def test_missing_or_invalid_token_is_401(client: TestClient) -> None:
    for path in AUDIT_PATHS + ["/api/v1/worklist", "/api/v1/worklist/fhir"]:
        body = _is_problem(client.get(path), 401)
        assert "required" in body["detail"], path
        r = client.get(path, headers={"Authorization": "Bearer not-a-token"})
        assert _is_problem(r, 401)["detail"] == "the bearer token is not valid"
        assert "WWW-Authenticate" in r.headers
        _is_problem(client.get(path, headers={"Authorization": f"Basic {TOKENS['qa']}"}), 401)


def test_every_refused_token_leaves_an_audit_row_without_the_token(client: TestClient,
                                                                   audit_log: AuditLog) -> None:
    """A refused bearer token is a failed authentication (IHE ATNA User Authentication, outcome 4)."""
    def refusals() -> list[tuple[str, str]]:
        with audit_log.engine.connect() as conn:
            rows = conn.execute(sa.text("select actor, params from qa_events where action = 'api-auth-failed' "
                                        "order by seq")).all()
        return [(r[0], r[1]) for r in rows]

    before = len(refusals())
    client.get("/api/v1/worklist")
    client.get("/api/v1/audit/stats", headers={"Authorization": "Bearer secret-guess-123"})
    client.get("/api/v1/worklist", headers={"Authorization": f"Bearer {TOKENS['qa']}"})  # accepted
    rows = refusals()[before:]
    assert [actor for actor, _ in rows] == ["api:-", "api:-"]
    assert "no bearer token" in rows[0][1] and "/api/v1/worklist" in rows[0][1]
    assert "unknown bearer token" in rows[1][1]
    assert all("secret-guess-123" not in params for _, params in rows)


def test_worklist_role_cannot_read_audit(client: TestClient) -> None:
    for path in AUDIT_PATHS:
        body = _is_problem(client.get(path, headers=_auth("worklist")), 403)
        assert "role 'worklist'" in body["detail"], path
        assert client.get(path, headers=_auth("qa")).status_code == 200, path
        assert client.get(path, headers=_auth("admin")).status_code == 200, path


def test_qa_events_admin_only(client: TestClient) -> None:
    _is_problem(client.get("/api/v1/audit/qa-events", headers=_auth("qa")), 403)
    client.get("/api/v1/audit/studies?ae=PACS_A", headers=_auth("qa"))
    rows = client.get("/api/v1/audit/qa-events", headers=_auth("admin")).json()["items"]
    assert rows[0]["actor"] == "api:root" and rows[0]["action"] == "qa-events"
    assert rows[1]["actor"] == "api:quality" and '"ae":"PACS_A"' in rows[1]["params"]


def test_worklist_json_priority_and_cursor(client: TestClient) -> None:
    feed = client.get("/api/v1/worklist", headers=_auth("worklist")).json()
    items = {i["study_uid"]: i for i in feed["items"]}
    assert set(items) == {STUDY_A, STUDY_B}  # the analysis error is not a result
    a, b = items[STUDY_A], items[STUDY_B]
    assert (a["label"], a["priority"], a["accession"], a["status"]) == ("GIST", True, "ACC-A",
                                                                       "exported")
    assert a["sr_sop_uid"] == f"{STUDY_A}.99"
    assert (b["label"], b["priority"]) == ("leiomyoma", False)
    first = client.get("/api/v1/worklist?limit=1", headers=_auth("worklist")).json()
    assert len(first["items"]) == 1
    rest = client.get(f"/api/v1/worklist?cursor={first['next_cursor']}",
                      headers=_auth("worklist")).json()
    assert [i["study_uid"] for i in rest["items"]] == [STUDY_B]
    empty = client.get(f"/api/v1/worklist?cursor={rest['next_cursor']}",
                       headers=_auth("worklist")).json()
    assert empty == {"items": [], "next_cursor": rest["next_cursor"]}


@pytest.mark.parametrize("path", ["/api/v1/worklist?format=fhir", "/api/v1/worklist/fhir"])
def test_worklist_fhir_r4_validates(client: TestClient, path: str) -> None:
    from fhir.resources.R4B.bundle import Bundle
    from fhir.resources.R4B.diagnosticreport import DiagnosticReport
    from fhir.resources.R4B.observation import Observation

    r = client.get(path, headers=_auth("worklist"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/fhir+json")
    data = r.json()
    bundle = Bundle.model_validate(data)
    assert bundle.type == "searchset" and bundle.total == 2
    reports = [e["resource"] for e in data["entry"] if e["resource"]["resourceType"] ==
               "DiagnosticReport"]
    observations = {e["fullUrl"]: e["resource"] for e in data["entry"]
                    if e["resource"]["resourceType"] == "Observation"}
    assert len(reports) == 2 and len(observations) == 2
    for report in reports:
        DiagnosticReport.model_validate(report)
        obs = observations[report["result"][0]["reference"]]
        Observation.model_validate(obs)
    gist = next(r for r in reports if r["conclusionCode"][0]["text"] == "GIST")
    gist_obs = observations[gist["result"][0]["reference"]]
    assert gist_obs["valueQuantity"]["value"] == pytest.approx(0.92)
    assert gist_obs["interpretation"][0]["coding"][0]["code"] == "H"
    assert any(i["value"] == f"urn:oid:{STUDY_A}" for i in gist["identifier"])
    leio = next(r for r in reports if r["conclusionCode"][0]["text"] == "leiomyoma")
    assert leio["conclusionCode"][0]["coding"][0]["code"] == "1162890002"


def test_audit_queries_mirror_cli(client: TestClient) -> None:
    h = _auth("qa")
    studies = client.get("/api/v1/audit/studies?label=GIST", headers=h).json()
    assert [s["study_uid"] for s in studies["items"]] == [STUDY_A] and studies["count"] == 1
    csv_text = client.get("/api/v1/audit/studies?format=csv&ae=PACS_B", headers=h)
    assert csv_text.headers["content-type"].startswith("text/csv")
    assert csv_text.text.splitlines()[0].startswith("study_uid,")
    stats = client.get("/api/v1/audit/stats", headers=h).json()
    assert stats["volumes"]["studies"] == 4 and stats["outbox"]["depth"] == 1
    show = client.get(f"/api/v1/audit/studies/{STUDY_B}", headers=h).json()
    assert show["study"]["state"] == "reported"
    verify = client.get("/api/v1/audit/verify", headers=h).json()
    assert verify["ok"] is True and verify["broken"] is None
    assert verify["projection_mismatches"] == []


def test_problem_json_errors(client: TestClient) -> None:
    h = _auth("qa")
    body = _is_problem(client.get("/api/v1/audit/studies?since=someday", headers=h), 400)
    assert "is not an ISO date" in body["detail"]
    _is_problem(client.get("/api/v1/audit/studies?status=bogus", headers=h), 400)
    _is_problem(client.get("/api/v1/audit/studies?limit=-1", headers=h), 422)
    _is_problem(client.get("/api/v1/audit/studies/9.9.9", headers=h), 404)
    _is_problem(client.get("/api/v1/nowhere", headers=h), 404)
    _is_problem(client.post("/api/v1/worklist", headers=h), 405)


@pytest.mark.parametrize("value", ["' OR '1'='1", "x'; DROP TABLE studies; --"])
def test_injection_over_http_is_harmless(client: TestClient, audit_log: AuditLog,
                                         value: str) -> None:
    r = client.get("/api/v1/audit/studies", params={"ae": value, "accession": value},
                   headers=_auth("qa"))
    assert r.status_code == 200 and r.json()["items"] == []
    r = client.get(f"/api/v1/audit/studies/{value}", headers=_auth("qa"))
    assert r.status_code == 404
    with audit_log.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM studies")).scalar_one() == 4


def test_openapi_and_extra_router(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert "/api/v1/worklist/fhir" in schema["paths"] and "/api/v1/audit/stats" in schema["paths"]
    assert "HTTPBearer" in schema["components"]["securitySchemes"]
    assert client.get("/healthz").json() == {"status": "ok"}


def test_every_http_read_is_audited(client: TestClient, audit_log: AuditLog) -> None:
    client.get("/api/v1/worklist", headers=_auth("worklist"))
    client.get("/api/v1/audit/failures?status=rejected", headers=_auth("qa"))
    with audit_log.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT actor, action FROM qa_events ORDER BY seq")).all()
    assert [tuple(r) for r in rows] == [("api:ris", "worklist"), ("api:quality", "failures")]


@pytest.mark.parametrize(
    ("entry", "match"),
    [("nohash:qa", "is not name:role:sha256hex"),
     (f"x:superuser:{'0' * 64}", "unknown role 'superuser'"),
     (f"x:qa:{'z' * 64}", "is not name:role:sha256hex")],
)
def test_bad_token_config(entry: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        TokenTable([entry])


def test_outcomes_and_performance_over_http(client: TestClient) -> None:
    body = {"study_uid": STUDY_A, "truth": "GIST", "source": "pathology"}
    _is_problem(client.post("/api/v1/audit/outcomes", json=body, headers=_auth("worklist")), 403)
    r = client.post("/api/v1/audit/outcomes", json=body, headers=_auth("qa"))
    assert r.status_code == 201 and r.json()["status"] == "recorded"
    _is_problem(client.post("/api/v1/audit/outcomes", json={**body, "truth": "benign"},
                            headers=_auth("qa")), 422)
    _is_problem(client.post("/api/v1/audit/outcomes", json={**body, "study_uid": "1.2'; --"},
                            headers=_auth("qa")), 422)
    client.post("/api/v1/audit/outcomes", headers=_auth("qa"),
                json={"study_uid": STUDY_B, "truth": "leiomyoma"})
    rows = client.get("/api/v1/audit/performance", headers=_auth("qa")).json()["items"]
    assert len(rows) == 1 and rows[0]["n"] == 2
    assert rows[0]["auc"] == pytest.approx(1.0)  # 0.92 (GIST) > 0.15 (leiomyoma)
    _is_problem(client.get("/api/v1/audit/performance?threshold=0", headers=_auth("qa")), 422)
