"""Leases (bakup.lease): lost once they come within their margin, for good, whatever a later
renewal does; renewed on a thread while their owner works."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from bakup.errors import StorageError
from bakup.lease import Lease, kept


@pytest.fixture(autouse=True)
def short_leases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BAKUP_LEASE_SECONDS", "10")


def test_a_fresh_lease_is_held_and_one_past_half_its_length_is_lost() -> None:
    now = datetime.now(UTC)
    lease = Lease("the claim on x", now + timedelta(seconds=10), lambda _: None)
    assert lease.is_held(now + timedelta(seconds=4.9))
    assert not lease.is_held(now + timedelta(seconds=5))
    with pytest.raises(StorageError, match="the claim on x could not be renewed in time"):
        lease.ensure_held()


def test_a_renewal_after_the_loss_does_not_bring_the_lease_back() -> None:
    written: list[datetime] = []
    now = datetime.now(UTC)
    lease = Lease("x", now + timedelta(seconds=10), written.append)
    assert not lease.is_held(now + timedelta(seconds=6))
    lease.renew()
    assert written == []  # nothing written for a lost lease
    assert not lease.is_held()


def test_failed_renewals_are_tolerated_until_the_margin() -> None:
    def fail(_: datetime) -> None:
        raise StorageError("the store is down", stage="store")

    now = datetime.now(UTC)
    lease = Lease("x", now + timedelta(seconds=10), fail)
    lease.renew()  # logged, not raised
    assert lease.is_held(now + timedelta(seconds=4))
    assert not lease.is_held(now + timedelta(seconds=6))


def test_kept_renews_on_a_thread_while_the_block_runs() -> None:
    written: list[datetime] = []
    renewed = threading.Event()

    def write(expiry: datetime) -> None:
        written.append(expiry)
        renewed.set()

    with kept(Lease("x", Lease.expiry(), write)) as lease:
        assert renewed.wait(5)  # one renewal a tenth of the lease
        assert lease.is_held()
    assert written and written[-1] > datetime.now(UTC)


def test_after_conclude_nothing_more_is_written() -> None:
    written: list[datetime] = []
    with kept(Lease("x", Lease.expiry(), written.append)) as lease:
        time.sleep(2.5)  # renewals a second apart
        lease.conclude()
        count = len(written)
        assert count >= 1
        time.sleep(2.5)
        assert len(written) == count  # a renewal would turn a final record back into a claim
