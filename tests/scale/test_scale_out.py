"""Scale-out on one machine: ``eusdx serve --no-worker`` plus three separate ``eusdx worker`` processes
(as on three hosts) sharing only Redis, PostgreSQL and the spool/outbox folders.

Every study must be analysed exactly once (one successful audit analysis, one Celery task, one SR at
the DCMTK PACS) and the work must be spread over more than one worker. Throughput per worker count is
``bench/scale.py``'s job, not a test's (2 shared cores make timings meaningless here).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.scale import Cluster, study_folders
from tests.conftest import require_tool

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres, pytest.mark.dcmtk]

N_STUDIES = 9
N_WORKERS = 3


def test_three_workers_analyse_every_study_exactly_once(
    tmp_path: Path, tiny_bundle: Path, redis_url: str, postgres_url: str
) -> None:
    require_tool("/usr/bin/storescu")
    require_tool("/usr/bin/storescp")
    from phantom import generate_cohort

    generate_cohort(tmp_path / "cohort", N_STUDIES, 23)
    folders = study_folders(tmp_path / "cohort")
    uids = {f.name for f in folders}
    assert len(uids) == N_STUDIES

    cluster = Cluster(tmp_path / "var", tiny_bundle, redis_url, postgres_url, N_WORKERS)
    try:
        cluster.start()
        cluster.send(folders)
        cluster.wait_srs(uids, timeout=240)
        per_worker = cluster.analysed_by()
    finally:
        cluster.stop()

    # After every process stopped: nothing arrived late, nothing was analysed twice.
    srs = cluster.srs_at_pacs()
    assert set(srs) == uids
    assert {uid: len(sops) for uid, sops in srs.items()} == {uid: 1 for uid in uids}
    analyses = cluster.analyses()
    assert analyses == {uid: [None] for uid in uids}, analyses
    assert sum(per_worker.values()) == N_STUDIES, per_worker
    busy = [name for name, count in per_worker.items() if count > 0]
    assert len(busy) >= 2, f"one worker did all the work: {per_worker}"
