"""The Celery enqueuer against the real Redis: by task name, onto the analysis queue."""

from __future__ import annotations

import base64
import json
import time

import pytest

from dicom_node.enqueue import ANALYSIS_QUEUE, ANALYZE_TASK, BrokerUnavailable, CeleryEnqueuer, Enqueuer
from tests.conftest import free_port

pytestmark = pytest.mark.redis


def test_celery_enqueuer_sends_task_by_name(redis_url):
    import redis

    enq = CeleryEnqueuer(redis_url)
    assert isinstance(enq, Enqueuer)
    enq.enqueue("1.2.3.4")
    client = redis.Redis.from_url(redis_url)
    raw = client.lpop(ANALYSIS_QUEUE)
    assert raw is not None
    message = json.loads(raw)
    assert message["headers"]["task"] == ANALYZE_TASK
    args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
    assert (args, kwargs) == ([], {"study_uid": "1.2.3.4"})
    enq.close()


def test_celery_enqueuer_broker_down_raises_quickly():
    enq = CeleryEnqueuer(f"redis://127.0.0.1:{free_port()}/0", timeout=1.0)
    t0 = time.monotonic()
    with pytest.raises(BrokerUnavailable, match="unavailable"):
        enq.enqueue("1.2.3.4")
    assert time.monotonic() - t0 < 15
    enq.close()
