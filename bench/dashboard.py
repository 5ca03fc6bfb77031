"""Dashboard page timings over a large audit history, against the same SQL through the raw driver.

    .venv/bin/python bench/dashboard.py [--studies 100000] [--runs 5]

Loads ``--studies`` studies (about 20 chained audit rows each, with pathology feedback on a third
of the analysed ones) with the bulk loader of ``bench/audit.py`` into a SQLite file, then times
each dashboard page through the real app (FastAPI TestClient, a logged-in QA session: session
check, audited read, query, template) and prints a table: median ms of ``--runs`` after a warm-up,
next to the page's core SQL (the same statement the page runs) through ``sqlite3`` alone (the
peer), and their ratio; the page adds the session check, the audited read (a durable qa_event
write) and the template. The deep page
is also timed with OFFSET paging to show what the keyset cursor saves.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audit import AuditLog  # noqa: E402
from audit.auth import hash_token  # noqa: E402
from audit.browse import encode_cursor  # noqa: E402
from audit.schema import FeedbackEvent  # noqa: E402
from audit import http as _http  # noqa: E402

SECRET = "bench-secret"
TOKEN = "bench-qa-token"
COLUMNS = ("study_uid, accession, calling_ae, state, reason, first_seen, updated_at, instances, "
           "label, probability, bundle_version, sr_sop_uid, analysis_seconds")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--db", type=Path, default=None,
                        help="keep the loaded SQLite file here; reused when it exists")
    args = parser.parse_args()
    run(args.studies, args.runs, args.db)


def run(n_studies: int, runs: int, keep: Path | None = None) -> None:
    import datetime as dt
    import sqlite3

    from fastapi.testclient import TestClient

    from dashboard import mount_dashboard
    from eusdx.config import load_settings

    bench_audit = _bench_audit()
    with tempfile.TemporaryDirectory(prefix="eusdx-dash-bench-") as tmp:
        db = keep if keep is not None else Path(tmp) / "audit.db"
        reuse = db.exists()
        url = f"sqlite:///{db}"
        log = AuditLog(url, SECRET)
        log.ensure_schema()
        rng = random.Random(1)
        t0 = time.perf_counter()
        counts = {"rows": 0, "studies": 0, "feedback": 0}
        sample: dict[str, str] = {}

        def chunk(bulk: Any) -> None:
            for uid, study in bulk.studies.items():
                sample.setdefault("uid", uid)
                counts["studies"] += 1
                if study.get("label") and rng.random() < 1 / 3:
                    p = float(study["probability"])
                    truth = "GIST" if rng.random() < (0.15 + 0.7 * p) else "leiomyoma"
                    bulk.add(FeedbackEvent, study["updated_at"] + dt.timedelta(days=20),
                             study_uid=uid, kind="pathology",
                             truth=truth, source="surgery", recorded_by="bench", role="qa")
                    counts["feedback"] += 1
                if counts["studies"] == n_studies // 2:
                    sample["mid_key"] = encode_cursor(
                        study["first_seen"].astimezone(dt.timezone.utc).isoformat(
                            timespec="milliseconds"), uid)
                sample["accession"] = study["accession"]
            counts["rows"] = bulk.seq
            bench_audit.load(log.engine, bulk)

        if reuse:
            with log.engine.connect() as conn:
                counts["studies"] = conn.execute(sa.text("SELECT count(*) FROM studies")).scalar_one()
                counts["rows"] = conn.execute(sa.text("SELECT seq FROM chain_head")).scalar_one()
                first = conn.execute(sa.text("SELECT study_uid, accession FROM studies ORDER BY "
                                             "first_seen LIMIT 1")).one()
                mid = conn.execute(sa.text(
                    "SELECT study_uid, first_seen FROM studies ORDER BY first_seen DESC, "
                    f"study_uid LIMIT 1 OFFSET {counts['studies'] // 2 - 1}")).one()
            sample.update(uid=first.study_uid, accession=first.accession, mid_key=encode_cursor(
                dt.datetime.fromisoformat(str(mid.first_seen)).replace(
                    tzinfo=dt.timezone.utc).isoformat(timespec="milliseconds"), mid.study_uid))
            print(f"reusing {db}: {counts['studies']} studies, {counts['rows']} chained rows",
                  flush=True)
        else:
            for bulk in bench_audit.history_chunks(n_studies):  # the one generator (bench/history.py)
                chunk(bulk)
            load_s = time.perf_counter() - t0
            print(f"loaded {counts['studies']} studies, {counts['rows']} chained rows "
                  f"({counts['feedback']} pathology results) in {load_s:.0f} s", flush=True)

        settings = load_settings(database_url=url, spool_dir=Path(tmp) / "spool",
                                 bundle=Path(tmp) / "none",
                                 api_tokens=[f"bench:qa:{hash_token(TOKEN)}"])
        app = _http.create_app(log, settings)
        mount_dashboard(app, log, settings)
        client = TestClient(app)
        form = client.get("/ui/login").text
        import re

        csrf = re.search(r'name="csrf" value="([^"]+)"', form).group(1)  # type: ignore[union-attr]
        r = client.post("/ui/login", data={"token": TOKEN, "csrf": csrf}, follow_redirects=False)
        assert r.status_code == 303, r.text

        raw = sqlite3.connect(str(db))
        order = " ORDER BY first_seen DESC, study_uid LIMIT 51"

        def sql(where: str = "", params: tuple[Any, ...] = ()) -> Any:
            return lambda: raw.execute(f"SELECT {COLUMNS} FROM studies {where}{order}",
                                       params).fetchall()

        mid_when = sample["mid_key"]
        from audit.browse import decode_cursor

        when, mid_uid = decode_cursor(mid_when)
        when_text = when.strftime("%Y-%m-%d %H:%M:%S.%f")
        month_ago = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=30)).strftime(
            "%Y-%m-%d 00:00:00.000000")
        pages: list[tuple[str, str, Any]] = [
            ("studies, first page", "/ui/studies", sql()),
            ("studies, state=exported result=GIST", "/ui/studies?state=exported&result=GIST",
             sql("WHERE coalesce(state, '') = ? AND coalesce(label, '') = ?",
                 ("exported", "GIST"))),
            ("studies, accession", f"/ui/studies?accession={sample['accession']}",
             sql("WHERE accession = ?", (sample["accession"],))),
            ("studies, bundle + 30 days", "/ui/studies?bundle=1.1.0&since=2027-01-01"
             "&until=2027-01-31", sql("WHERE coalesce(bundle_version, '') = ? AND first_seen >= ? AND "
                                      "first_seen < ?", ("1.1.0", "2027-01-01 00:00:00.000000",
                                                         "2027-01-31 00:00:00.000000"))),
            (f"studies, keyset page at {n_studies // 2}", f"/ui/studies?cursor={mid_when}",
             sql("WHERE first_seen <= ? AND (first_seen < ? OR study_uid > ?)",
                 (when_text, when_text, mid_uid))),
            ("study page", f"/ui/studies/{sample['uid']}",
             lambda: raw.execute("SELECT * FROM study_events WHERE study_uid = ?",
                                 (sample["uid"],)).fetchall()),
            ("failures, default (last 30 days)", "/ui/failures",
             lambda: raw.execute("SELECT seq, ts, reason, study_uid FROM study_events WHERE "
                                 "state = 'failed' AND ts >= ? ORDER BY seq DESC LIMIT 500",
                                 (month_ago,)).fetchall()),
            ("failures, all time (500 newest)", "/ui/failures?since=",
             lambda: raw.execute("SELECT seq, ts, reason, study_uid FROM study_events WHERE "
                                 "state = 'failed' ORDER BY seq DESC LIMIT 500").fetchall()),
            ("performance (all analyses)", "/ui/performance",
             lambda: raw.execute("SELECT seq, ts, study_uid, bundle_version, probability, "
                                 "label, error FROM analyses ORDER BY seq").fetchall()),
            ("operations", "/ui/operations", lambda: None),
        ]
        offset_ms, _ = bench_audit.best_of(lambda: raw.execute(
            f"SELECT {COLUMNS} FROM studies ORDER BY first_seen DESC, study_uid "
            f"LIMIT 51 OFFSET {n_studies // 2}").fetchall(), runs)

        print(f"\nDashboard pages over {counts['studies']:,} studies "
              f"({counts['rows']:,} audit rows), SQLite, median of {runs} (ms)")
        print(f"{'page':42} {'dashboard':>10} {'raw SQL':>9} {'ratio':>7}")
        for name, path, peer in pages:
            def get(path: str = path) -> None:
                resp = client.get(path)
                assert resp.status_code == 200, (path, resp.status_code, resp.text[:300])

            ms, _ = bench_audit.best_of(get, runs)
            peer_ms, _ = bench_audit.best_of(peer, runs)
            ratio = f"{ms / peer_ms:7.1f}" if peer_ms > 0.05 else "      -"
            print(f"{name:42} {ms:10.1f} {peer_ms:9.2f} {ratio}")
        print(f"{'(peer) OFFSET paging to the same row':42} {'':>10} {offset_ms:9.2f}")
        raw.close()
        log.close()


def _bench_audit() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_audit",
                                                  Path(__file__).with_name("audit.py"))
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules["bench_audit"] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


if __name__ == "__main__":
    main()
