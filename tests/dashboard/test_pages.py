"""Dashboard over the real HTTP app: sessions, roles, CSRF, headers, audited reads, pages, feedback."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from audit import AuditLog
from tests.audit.data import STUDY_A, STUDY_B, STUDY_C, STUDY_D
from tests.dashboard.conftest import TOKENS, Hooks, csrf_of, login

QA_PAGES = ["/ui/studies", f"/ui/studies/{STUDY_A}", "/ui/failures", "/ui/performance",
            "/ui/operations", f"/ui/studies/{STUDY_A}/preview.png"]


def _qa_events(log: AuditLog) -> list[tuple[str, str, dict]]:  # type: ignore[type-arg]
    with log.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT actor, action, params FROM qa_events ORDER BY seq"))
        return [(a, b, json.loads(c)) for a, b, c in rows]


def test_pages_need_a_session(app_client: TestClient) -> None:
    for path in QA_PAGES:
        r = app_client.get(path, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/ui/login?next="), path
    # Bearer tokens do not open pages: only the session cookie does.
    r = app_client.get("/ui/studies", headers={"Authorization": f"Bearer {TOKENS['qa']}"},
                       follow_redirects=False)
    assert r.status_code == 303


def test_login_sets_a_strict_httponly_session_and_security_headers(
        app_client: TestClient, dash_log: AuditLog) -> None:
    form = app_client.get("/ui/login")
    for name, value in {"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff",
                        "Referrer-Policy": "same-origin"}.items():
        assert form.headers[name] == value
    csp = form.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    r = app_client.post("/ui/login", data={"token": TOKENS["qa"], "csrf": csrf_of(form.text)},
                        follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/ui/studies"
    cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith("eusdx_session="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert "Path=/ui" in cookie and TOKENS["qa"] not in cookie
    assert app_client.get("/ui/studies").status_code == 200
    assert ("ui:quality", "ui-login") in [(a, b) for a, b, _ in _qa_events(dash_log)]


def test_login_form_needs_its_csrf_token_and_a_valid_token(app_client: TestClient,
                                                          dash_log: AuditLog) -> None:
    form = app_client.get("/ui/login")
    r = app_client.post("/ui/login", data={"token": TOKENS["qa"], "csrf": "forged"})
    assert r.status_code == 403
    r = app_client.post("/ui/login", data={"token": "wrong-token", "csrf": csrf_of(form.text)})
    assert r.status_code == 401 and "not valid" in r.text
    events = _qa_events(dash_log)
    assert events[-1][:2] == ("ui:-", "ui-login-failed")
    assert all("wrong-token" not in json.dumps(e) for e in events)
    # An open redirect through next= is refused.
    form = app_client.get("/ui/login")
    r = app_client.post("/ui/login", data={"token": TOKENS["qa"], "csrf": csrf_of(form.text),
                                           "next": "//evil.example/ui/x"},
                        follow_redirects=False)
    assert r.headers["location"] == "/ui/studies"


def test_forged_or_expired_session_is_refused(app_client: TestClient) -> None:
    login(app_client, "qa")
    value = app_client.cookies["eusdx_session"]
    payload, mac = value.split(".")
    import base64

    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data["r"] = "admin"
    forged = base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")
    for bad in (f"{forged}.{mac}", f"{payload}.{mac[:-2]}AA", "garbage", ""):
        app_client.cookies.clear()
        app_client.cookies.set("eusdx_session", bad)
        assert app_client.get("/ui/studies", follow_redirects=False).status_code == 303
    app_client.cookies.clear()
    app_client.cookies.set("eusdx_session", value)
    assert app_client.get("/ui/studies", follow_redirects=False).status_code == 200


def test_sessions_expire() -> None:
    from dashboard._session import SessionSigner

    signer = SessionSigner("k", minutes=5)
    value, session = signer.issue("quality", "qa", now=1000.0)
    assert signer.check(value, now=1000.0 + 299) == session
    assert signer.check(value, now=1000.0 + 300) is None
    assert SessionSigner("other-key", minutes=5).check(value, now=1000.0) is None


def test_worklist_role_cannot_reach_qa_pages(app_client: TestClient) -> None:
    login(app_client, "worklist")
    for path in QA_PAGES:
        r = app_client.get(path, follow_redirects=False)
        assert r.status_code == 403, path
    r = app_client.get("/ui/", follow_redirects=False)
    assert r.status_code == 403 and "worklist feed" in r.text


def test_studies_filters_and_keyset_paging(app_client: TestClient) -> None:
    login(app_client, "qa")
    full = app_client.get("/ui/studies").text
    for uid in (STUDY_A, STUDY_B, STUDY_C, STUDY_D):
        assert f"/ui/studies/{uid}" in full
    assert "PID-" not in full  # patient IDs never reach a page (only their keyed hash is stored)
    failed = app_client.get("/ui/studies?state=failed").text
    assert STUDY_C in failed and STUDY_A not in failed
    gist = app_client.get("/ui/studies?result=GIST").text
    assert STUDY_A in gist and STUDY_B not in gist
    none = app_client.get("/ui/studies?result=none").text
    assert STUDY_C in none and STUDY_D in none and STUDY_A not in none
    acc = app_client.get("/ui/studies?accession=ACC-B").text
    assert STUDY_B in acc and STUDY_A not in acc
    assert STUDY_A not in app_client.get("/ui/studies?bundle=9.9").text
    assert app_client.get("/ui/studies?since=2000-01-01&until=2999-01-01").status_code == 200
    assert app_client.get("/ui/studies?state=nonsense").status_code == 400
    assert app_client.get("/ui/studies?cursor=%%%").status_code == 400
    # One study per page: following "next page" visits every study exactly once, in order.
    import re

    order = re.findall(r'href="/ui/studies/([0-9.]+)"', full)
    seen: list[str] = []
    url = "/ui/studies?size=1"
    while url:
        html = app_client.get(url).text
        seen += re.findall(r'href="/ui/studies/([0-9.]+)"', html)
        found = re.search(r'href="([^"]+)" id="next-page"', html)
        url = found.group(1).replace("&amp;", "&") if found else ""
    assert seen == order and len(seen) == 4


def test_study_page_read_is_audited(app_client: TestClient, dash_log: AuditLog) -> None:
    login(app_client, "qa")
    html = app_client.get(f"/ui/studies/{STUDY_A}").text
    assert "GIST" in html and "exported" in html and "Timeline" in html
    assert f"/ui/studies/{STUDY_A}/sr/{STUDY_A}.99.dcm" in html
    events = _qa_events(dash_log)
    assert ("ui:quality", "show", {"study_uid": STUDY_A}) in events
    assert app_client.get("/ui/studies/1.2.3.999").status_code == 404
    assert app_client.get("/ui/studies/not-a-uid").status_code == 400
    # The SR is not kept in this test's outbox: the page says so instead of failing.
    r = app_client.get(f"/ui/studies/{STUDY_A}/sr/{STUDY_A}.99.dcm")
    assert r.status_code == 404 and "retrieve it from PACS" in r.text
    r = app_client.get(f"/ui/studies/{STUDY_A}/preview.png")
    assert r.status_code == 404 and "SR is no longer kept" in r.text


def test_feedback_needs_csrf_and_same_origin(app_client: TestClient, dash_log: AuditLog) -> None:
    login(app_client, "qa")
    page = app_client.get(f"/ui/studies/{STUDY_A}").text
    token = csrf_of(page)
    url = f"/ui/studies/{STUDY_A}/verdict"
    assert app_client.post(url, data={"verdict": "accept"}).status_code == 403
    assert app_client.post(url, data={"verdict": "accept", "csrf": "x" * 32}).status_code == 403
    for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"},
                    {"Sec-Fetch-Site": "cross-site"}):
        r = app_client.post(url, data={"verdict": "accept", "csrf": token}, headers=headers)
        assert r.status_code == 403, headers
    with dash_log.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM feedback")).scalar_one() == 0
    r = app_client.post(url, data={"verdict": "accept", "csrf": token,
                                   "comment": "ROI on the lesion"},
                        headers={"Origin": "http://testserver"}, follow_redirects=False)
    assert r.status_code == 303
    assert app_client.post(url, data={"verdict": "correct", "csrf": token}).status_code == 400


def test_feedback_appends_and_moves_performance(app_client: TestClient) -> None:
    login(app_client, "qa")
    before = app_client.get("/ui/performance").text
    assert 'class="paired">0 (0)' in before
    token = csrf_of(app_client.get(f"/ui/studies/{STUDY_A}").text)
    for uid, truth in ((STUDY_A, "GIST"), (STUDY_B, "leiomyoma")):
        r = app_client.post(f"/ui/studies/{uid}/pathology",
                            data={"truth": truth, "source": "surgery",
                                  "diagnosed_on": "2026-10-02", "csrf": token})
        assert r.status_code == 200 and "Saved: pathology" in r.text
    app_client.post(f"/ui/studies/{STUDY_A}/verdict", data={"verdict": "reject", "csrf": token})
    html = app_client.post(f"/ui/studies/{STUDY_A}/verdict",
                           data={"verdict": "correct", "corrected_label": "leiomyoma",
                                 "csrf": token}).text
    assert 'id="current-verdict">correct -> leiomyoma' in html
    assert html.count("ui:quality (qa)") == 3  # reject, correct, pathology: nothing overwritten
    after = app_client.get("/ui/performance").text
    assert 'class="paired">2 (1)' in after
    assert "1.000 (0.207-1.000)" in after  # sensitivity 1/1: Wilson lower = 1/(1+1.96^2)
    assert "0.000 (0.000-0.793)" in after  # agreement 0 of 1 verdicts (Wilson CI)
    r = app_client.post(f"/ui/studies/{STUDY_A}/pathology",
                        data={"truth": "GIST", "source": "", "csrf": token})
    assert r.status_code == 400 and "source" in r.text


def test_failures_page_and_admin_actions(app_client: TestClient, hooks: Hooks,
                                         dash_log: AuditLog) -> None:
    login(app_client, "qa")
    html = app_client.get("/ui/failures").text
    assert "no-usable-frames" in html and "calling-ae-not-allowed" in html
    assert 'id="dead-letters"' in html and STUDY_B in html
    assert "Re-run" not in html  # qa sees, admin acts
    token = csrf_of(html)
    r = app_client.post("/ui/failures/rerun", data={"study_uid": STUDY_C, "csrf": token})
    assert r.status_code == 403 and hooks.calls == []
    app_client.cookies.clear()
    login(app_client, "admin")
    html = app_client.get("/ui/failures").text
    assert "Re-run" in html and "Re-send" in html
    token = csrf_of(html)
    r = app_client.post("/ui/failures/rerun", data={"study_uid": STUDY_C, "csrf": token})
    assert r.status_code == 200 and "queued for analysis again" in r.text
    r = app_client.post("/ui/failures/resend", data={"study_uid": STUDY_B, "csrf": token})
    assert "re-armed 1" in r.text
    assert hooks.calls == [("rerun", STUDY_C), ("resend", STUDY_B)]
    actions = [(a, b, p) for a, b, p in _qa_events(dash_log) if b in ("ui-rerun", "ui-resend")]
    assert actions == [("ui:root", "ui-rerun", {"study_uid": STUDY_C}),
                       ("ui:root", "ui-resend", {"study_uid": STUDY_B})]


def test_operations_shows_the_prometheus_figures_and_verify(app_client: TestClient) -> None:
    login(app_client, "qa")
    html = app_client.get("/ui/operations").text
    assert "eusdx_queue_depth" in html and 'class="big">3<' in html
    assert "dead-letter" in html and "no bundle at" in html
    token = csrf_of(html)
    html = app_client.post("/ui/operations/verify", data={"csrf": token}).text
    assert 'id="verify-status" class="ok">intact' in html


@pytest.mark.parametrize("reason,expected", [
    ("input: the study holds no image", "input"),
    ("transient-io: OSError: disk", "transient-io"),
    ("dead-letter: 5 deliveries", "dead-letter"),
    ("no-usable-frames", "unclassified"),
    (None, "unclassified"),
])
def test_failure_class_of_stored_reasons(reason: str | None, expected: str) -> None:
    from dashboard._oversight import failure_class

    assert failure_class(reason) == expected


def test_performance_defaults_to_the_bundle_threshold(app_client: TestClient,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ?threshold the page uses the configured bundle's decision threshold (the one its SRs used),
    0.5 only when the bundle records none; an explicit threshold still wins."""
    import dashboard._oversight as oversight
    from dashboard._live import Validation

    login(app_client, "qa")
    assert "at threshold 0.5." in app_client.get("/ui/performance").text  # no bundle configured
    monkeypatch.setattr(oversight, "load_validation",
                        lambda _bundle: (Validation("v1", "combined-svm", 40, 0.8, 0.7, 0.9, 0.37), None))
    assert "at threshold 0.37." in app_client.get("/ui/performance").text
    assert "at threshold 0.6." in app_client.get("/ui/performance?threshold=0.6").text
