"""A Celery worker whose first model call stalls (test aid for the SIGKILL test).

The first pool process to reach ``Bundle.predict`` writes its pid to ``$EUSDX_TEST_SLOW_MARKER`` and
sleeps, so the test can SIGKILL it mid-study; later calls (the redelivery) run normally.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any


def main() -> int:
    marker = Path(os.environ["EUSDX_TEST_SLOW_MARKER"])
    import models.bundle as mb

    original = mb.Bundle.predict

    def slow_predict(self: Any, frames: Any, device: str = "cpu", **kwargs: Any) -> Any:
        # the warm-up batch in worker_process_init is not a study: only stall on a real one
        if not marker.exists() and any(f.key != "warm-up" for f in frames):
            marker.write_text(str(os.getpid()))
            time.sleep(600)
        return original(self, frames, device, **kwargs)

    mb.Bundle.predict = slow_predict  # type: ignore[method-assign]
    from cli.main import main as cli

    return cli(["worker", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
