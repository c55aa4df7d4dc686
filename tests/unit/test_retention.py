"""Retention: examples of each rule, and properties that must hold for any history."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from bakup.retention import RetentionPolicy, plan_prune

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class FakeBackup:
    name: str
    created_at: datetime
    verified: bool | None = None


def daily(days: int, *, verified_days: tuple[int, ...] = ()) -> list[FakeBackup]:
    """One backup a day at 02:00 for the last ``days`` days (day 0 is today)."""
    backups = []
    for age in range(days):
        moment = (NOW - timedelta(days=age)).replace(hour=2)
        backups.append(
            FakeBackup(
                moment.strftime("postgres_backup_%Y%m%d_%H%M%S.sql.gz"),
                moment,
                age in verified_days,
            )
        )
    return backups


def kept_names(plan) -> list[str]:
    return [backup.name for backup, _ in plan.keep]


def test_the_original_limits_keep_the_newest_thirty_of_the_last_thirty_days() -> None:
    plan = plan_prune(daily(45), RetentionPolicy(), NOW)
    assert len(plan.keep) == 30
    assert all(
        "older than 30 days" in reason or "beyond the newest 30" in reason
        for _, reason in plan.delete
    )


def test_count_limit_alone_keeps_the_newest_n() -> None:
    backups = daily(10)
    plan = plan_prune(backups, RetentionPolicy(retention_days=0, max_backups=3), NOW)
    assert kept_names(plan) == [backup.name for backup in backups[:3]]
    assert {reason for _, reason in plan.delete} == {"beyond the newest 3 backups"}


def test_age_limit_alone_deletes_what_is_older() -> None:
    plan = plan_prune(daily(10), RetentionPolicy(retention_days=4, max_backups=0), NOW)
    # At noon, the 02:00 backups of today and the three days before are under 4 days old.
    assert len(plan.keep) == 4
    assert all(reason.startswith("older than 4 days") for _, reason in plan.delete)


def test_zero_limits_keep_everything() -> None:
    plan = plan_prune(daily(100), RetentionPolicy(retention_days=0, max_backups=0), NOW)
    assert len(plan.keep) == 100 and plan.delete == []


def test_newest_backup_is_kept_after_forty_days_of_failures() -> None:
    history = daily(60)[40:]  # nothing in the last 40 days
    plan = plan_prune(history, RetentionPolicy(retention_days=30), NOW)
    assert kept_names(plan) == [history[0].name]
    assert plan.keep[0][1] == ["newest backup"]


def test_prune_keeps_newest_verified_backup_even_when_older_than_retention() -> None:
    history = daily(40, verified_days=(35,))
    plan = plan_prune(history, RetentionPolicy(retention_days=30, max_backups=30), NOW)
    verified = [(backup, reasons) for backup, reasons in plan.keep if backup.verified]
    assert len(verified) == 1 and "newest verified backup" in verified[0][1]


def test_weekly_and_monthly_rules_keep_the_newest_backup_of_each_period() -> None:
    plan = plan_prune(
        daily(120),
        RetentionPolicy(retention_days=7, max_backups=7, keep_weekly=4, keep_monthly=4),
        NOW,
    )
    reasons = [reason for _, keep in plan.keep for reason in keep]
    assert sum(reason.startswith("weekly") for reason in reasons) == 4
    assert sum(reason.startswith("monthly") for reason in reasons) == 4
    monthly = [backup for backup, keep in plan.keep if any(r.startswith("monthly") for r in keep)]
    # The newest backup of a month is its last day's (or today's for this month).
    assert [backup.created_at.day for backup in monthly][1:] == [31, 30, 31]


def test_daily_rule_counts_days_that_have_backups_not_calendar_days() -> None:
    history = daily(30)[::3]  # a backup every third day
    plan = plan_prune(history, RetentionPolicy(retention_days=1, max_backups=1, keep_daily=5), NOW)
    assert len(plan.keep) == 5


def test_every_decision_has_a_reason_and_the_plan_is_newest_first() -> None:
    plan = plan_prune(daily(50), RetentionPolicy(keep_monthly=2), NOW)
    assert all(reasons for _, reasons in plan.keep)
    assert all(reason for _, reason in plan.delete)
    times = [backup.created_at for backup, _ in plan.keep]
    assert times == sorted(times, reverse=True)


backups_strategy = st.lists(
    st.builds(
        FakeBackup,
        name=st.text("abcdef0123456789", min_size=6, max_size=12),
        created_at=st.datetimes(
            min_value=datetime(2024, 1, 1), max_value=datetime(2027, 1, 1), timezones=st.just(UTC)
        ),
        verified=st.sampled_from([None, False, True]),
    ),
    max_size=60,
    unique_by=lambda backup: backup.name,
)
policies = st.builds(
    RetentionPolicy,
    retention_days=st.integers(0, 60),
    max_backups=st.integers(0, 40),
    keep_daily=st.integers(0, 10),
    keep_weekly=st.integers(0, 6),
    keep_monthly=st.integers(0, 6),
)


@given(backups_strategy, policies)
def test_every_backup_is_decided_exactly_once(backups, policy) -> None:
    plan = plan_prune(backups, policy, NOW)
    decided = [backup.name for backup, _ in plan.keep] + [backup.name for backup, _ in plan.delete]
    assert sorted(decided) == sorted(backup.name for backup in backups)


@given(backups_strategy, policies)
def test_the_newest_and_the_newest_verified_are_never_deleted(backups, policy) -> None:
    plan = plan_prune(backups, policy, NOW)
    deleted = {backup.name for backup, _ in plan.delete}
    if backups:
        newest = max(backups, key=lambda backup: (backup.created_at, backup.name))
        assert newest.name not in deleted
    verified = [backup for backup in backups if backup.verified]
    if verified:
        newest_verified = max(verified, key=lambda backup: (backup.created_at, backup.name))
        assert newest_verified.name not in deleted


@given(backups_strategy, policies)
def test_without_period_rules_at_most_max_backups_plus_the_protected_are_kept(
    backups, policy
) -> None:
    policy = RetentionPolicy(policy.retention_days, policy.max_backups)
    plan = plan_prune(backups, policy, NOW)
    if policy.max_backups:
        assert len(plan.keep) <= policy.max_backups + 2


@given(backups_strategy, policies)
def test_a_deleted_backup_is_outside_a_limit_and_keeps_nothing_protected(backups, policy) -> None:
    plan = plan_prune(backups, policy, NOW)
    order = sorted(backups, key=lambda backup: (backup.created_at, backup.name), reverse=True)
    for backup, reason in plan.delete:
        rank = order.index(backup)
        too_many = policy.max_backups and rank >= policy.max_backups
        too_old = policy.retention_days and NOW - backup.created_at > timedelta(
            days=policy.retention_days
        )
        assert too_many or too_old, reason


@given(backups_strategy, policies, st.randoms())
def test_the_plan_does_not_depend_on_input_order(backups, policy, random) -> None:
    shuffled = list(backups)
    random.shuffle(shuffled)
    first, second = plan_prune(backups, policy, NOW), plan_prune(shuffled, policy, NOW)
    assert kept_names(first) == kept_names(second)
    assert [b.name for b, _ in first.delete] == [b.name for b, _ in second.delete]


def test_an_empty_history_gives_an_empty_plan() -> None:
    plan = plan_prune([], RetentionPolicy(), NOW)
    assert plan.keep == [] and plan.delete == []


@given(backups_strategy.filter(lambda backups: len(backups) == 1), policies)
def test_a_single_backup_is_never_deleted(backups, policy) -> None:
    assert plan_prune(backups, policy, NOW).delete == []
