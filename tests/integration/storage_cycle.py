"""The cycle every storage backend must carry: two backups (the second prunes the first),
list, verify with a test restore, restore, and a claim that only one run can create; shared by
the S3, GCS and Azure tests."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from tests.conftest import REPO, Database, run_bakup

CREATE_TWICE = """
from bakup.storage import open_storage
storage = open_storage({url!r})
print(storage.create_small("claim-test.json", b"first"))
print(storage.create_small("claim-test.json", b"second"))
print(storage.get_small("claim-test.json").decode())
storage.delete("claim-test.json")
"""


def full_cycle(
    env: dict[str, str], target: Database, *, suffix: str
) -> tuple[list[dict[str, Any]], list[subprocess.CompletedProcess[str]]]:
    """Run the cycle with ``env`` (MAX_BACKUPS=1, TARGET_DATABASE_URL=``target``), asserting
    each step; returns the final listing and every run, for checks on their output."""
    first = run_bakup("backup", env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    second = run_bakup("backup", env=env)  # prunes the first: MAX_BACKUPS=1
    assert second.returncode == 0, second.stdout + second.stderr
    listing = json.loads(run_bakup("list", "--json", env=env).stdout)
    assert len(listing) == 1 and listing[0]["name"].endswith(suffix)

    verified = run_bakup("verify", "--restore", env=env)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert json.loads(run_bakup("list", "--json", env=env).stdout)[0]["verified"] is True

    restored = run_bakup("restore", "latest", "--jobs", "2", env=env)
    assert restored.returncode == 0, restored.stderr
    assert "2 parallel jobs" in restored.stdout  # restored from the object store in parallel
    assert target.psql("SELECT count(*) FROM t") == "3000"

    # Claims rely on the store's create-only put: the second creation must be refused.
    created = subprocess.run(
        [sys.executable, "-c", CREATE_TWICE.format(url=env["STORAGE_URL"])],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert created.stdout.split() == ["True", "False", "first"], created.stderr
    return listing, [first, second, verified, restored]
