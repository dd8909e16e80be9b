"""``python tests/rf_publish_pause.py WHEN rf-args...``: run rf's normal entry point with a
pause inside a publish, for tests/test_releases.py to kill the process there.

WHEN is ``item:N`` (pause inside the transaction once item N, 0-based, is applied;
prints ``RF_TEST_PAUSED N+1``) or ``commit`` (pause once the release has committed;
prints ``RF_TEST_COMMITTED``). The fault injection lives here: the product code only
calls no-op hooks (``ReleasesService._after_release_item`` / ``_after_release_commit``).
"""

from __future__ import annotations

import sys
import time

from rf.services.releases import ReleasesService


def main() -> None:
    when, args = sys.argv[1], sys.argv[2:]

    def after_item(self: ReleasesService, n: int) -> None:
        if when == f"item:{n}":
            print(f"RF_TEST_PAUSED {n + 1}", flush=True)
            time.sleep(60)

    def after_commit(self: ReleasesService, release_id: str) -> None:
        if when == "commit":
            print("RF_TEST_COMMITTED", flush=True)
            time.sleep(60)

    ReleasesService._after_release_item = after_item  # type: ignore[method-assign]
    ReleasesService._after_release_commit = after_commit  # type: ignore[method-assign]
    sys.argv = ["rf", *args]
    from rf.cli import main as rf_main

    rf_main()


if __name__ == "__main__":
    main()
