"""Quota arithmetic (docs/quotas.md): UTC calendar windows, Retry-After, tightest limits,
headers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dsl import QuotaLimit
from gateway.quota.limits import (
    WINDOWS,
    Limit,
    QuotaRequest,
    QuotaSettings,
    Usage,
    estimate_tokens,
    first_exhausted,
    quota_refusal,
    rate_limit_headers,
    remaining_field,
    retry_after_seconds,
    tightest,
    window_reset,
    window_start,
)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0,
        micro: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)


@pytest.mark.parametrize(("window", "now", "start", "reset"), [
    ("minute", utc(2024, 3, 5, 10, 7, 59, 999999), utc(2024, 3, 5, 10, 7), utc(2024, 3, 5, 10, 8)),
    ("hour", utc(2024, 12, 31, 23, 30), utc(2024, 12, 31, 23), utc(2025, 1, 1)),
    ("daily", utc(2024, 3, 5, 23, 59, 59), utc(2024, 3, 5), utc(2024, 3, 6)),
    ("daily", utc(2024, 3, 6), utc(2024, 3, 6), utc(2024, 3, 7)),
    # 2024-03-04 is a Monday: a week runs Monday 00:00 to the next Monday 00:00.
    ("weekly", utc(2024, 3, 10, 23, 59), utc(2024, 3, 4), utc(2024, 3, 11)),
    ("weekly", utc(2024, 3, 11, 0, 0), utc(2024, 3, 11), utc(2024, 3, 18)),
    ("weekly", utc(2025, 1, 1, 12), utc(2024, 12, 30), utc(2025, 1, 6)),
    ("monthly", utc(2023, 2, 28, 23, 59, 59), utc(2023, 2, 1), utc(2023, 3, 1)),  # 28 days
    ("monthly", utc(2024, 2, 29, 12), utc(2024, 2, 1), utc(2024, 3, 1)),  # leap year
    ("monthly", utc(2024, 12, 31, 23, 59), utc(2024, 12, 1), utc(2025, 1, 1)),
    ("monthly", utc(2025, 1, 31), utc(2025, 1, 1), utc(2025, 2, 1)),
])
def test_window_start_and_reset(window: str, now: datetime, start: datetime,
                                reset: datetime) -> None:
    assert window_start(window, now) == start
    assert window_reset(window, now) == reset


def test_windows_are_utc_whatever_the_clock_zone() -> None:
    # 01:30 at UTC+2 on the 1st is 23:30 UTC on the last day of the previous month.
    local = datetime(2024, 3, 1, 1, 30, tzinfo=timezone(timedelta(hours=2)))
    assert window_start("monthly", local) == utc(2024, 2, 1)
    assert window_start("daily", local) == utc(2024, 2, 29)


def test_february_has_28_days_then_29_in_a_leap_year() -> None:
    assert window_reset("monthly", utc(2023, 2, 10)) - window_start(
        "monthly", utc(2023, 2, 10)) == timedelta(days=28)
    assert window_reset("monthly", utc(2024, 2, 10)) - window_start(
        "monthly", utc(2024, 2, 10)) == timedelta(days=29)


@pytest.mark.parametrize(("window", "now", "seconds"), [
    ("minute", utc(2024, 3, 5, 10, 7, 15), 45),
    ("minute", utc(2024, 3, 5, 10, 7, 59, 500000), 1),  # rounded up, never 0
    ("hour", utc(2024, 3, 5, 10, 59), 60),
    ("daily", utc(2024, 3, 5, 23, 0), 3600),
    ("weekly", utc(2024, 3, 10, 0, 0), 86400),  # Sunday 00:00 -> Monday 00:00
    ("monthly", utc(2023, 2, 28, 0, 0), 86400),
])
def test_retry_after_is_seconds_to_reset(window: str, now: datetime, seconds: int) -> None:
    assert retry_after_seconds(window, now) == seconds


@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1),
                    timezones=st.just(UTC)), st.sampled_from(WINDOWS))
def test_every_instant_lies_in_its_window(now: datetime, window: str) -> None:
    start, reset = window_start(window, now), window_reset(window, now)
    assert start <= now < reset
    assert window_start(window, reset) == reset  # the next window starts where this one ends
    assert window_start(window, reset - timedelta(microseconds=1)) == start


def test_unknown_window_is_refused() -> None:
    with pytest.raises(ValueError, match="fortnight"):
        window_start("fortnight", utc(2024, 1, 1))


def test_tightest_limit_wins_per_unit_and_window() -> None:
    chosen = tightest([QuotaLimit("requests", "daily", 100), QuotaLimit("requests", "daily", 30),
                       QuotaLimit("requests", "hour", 50), QuotaLimit("tokens", "daily", 0)])
    assert chosen == {("requests", "daily"): 30, ("requests", "hour"): 50}


def test_request_limits_cover_project_and_user_subjects() -> None:
    request = QuotaRequest("proj", "alice", 10,
                           project_limits=(QuotaLimit("requests", "daily", 9),
                                           QuotaLimit("requests", "daily", 5)),
                           user_limits=(QuotaLimit("tokens", "monthly", 700),))
    assert request.limits() == [Limit("project", "proj", "requests", "daily", 5),
                                Limit("user", "alice", "tokens", "monthly", 700)]


def test_estimate_uses_max_output_or_the_default() -> None:
    assert estimate_tokens(12, 100, 1024) == 112
    assert estimate_tokens(12, None, 1024) == 1036
    assert estimate_tokens(12, 0, 1024) == 12


def _usage(kind: str, unit: str, window: str, limit: int, used: int) -> Usage:
    now = utc(2024, 3, 5, 10, 0, 30)
    return Usage(Limit(kind, "s", unit, window, limit), used, window_reset(window, now))


def test_headers_name_the_quota_with_least_remaining() -> None:
    usages = [_usage("project", "requests", "daily", 100, 10),
              _usage("user", "requests", "minute", 5, 3),
              _usage("user", "tokens", "monthly", 1000, 400)]
    assert dict(rate_limit_headers(usages)) == {
        "x-ratelimit-limit-requests": "5", "x-ratelimit-remaining-requests": "2",
        "x-ratelimit-reset-requests": "2024-03-05T10:01:00Z",
        "x-ratelimit-limit-tokens": "1000", "x-ratelimit-remaining-tokens": "600",
        "x-ratelimit-reset-tokens": "2024-04-01T00:00:00Z"}


def test_remaining_field_groups_by_subject_and_never_goes_negative() -> None:
    field = remaining_field([_usage("project", "tokens", "daily", 100, 130)])
    assert field == {"project": [{"unit": "tokens", "window": "daily", "limit": 100,
                                  "remaining": 0, "reset_at": "2024-03-06T00:00:00Z"}]}
    assert remaining_field([]) is None


def test_refusal_names_the_exhausted_subject_and_its_reset() -> None:
    now = utc(2024, 3, 5, 10, 0, 30)
    full_user = _usage("user", "requests", "minute", 5, 5)
    full_project = _usage("project", "tokens", "daily", 100, 100)
    usages = [full_user, full_project, _usage("project", "requests", "hour", 9, 1)]
    exhausted = first_exhausted(usages)
    assert exhausted is full_project  # the later reset: waiting less would not help
    refused = quota_refusal(exhausted, usages, now)
    assert (refused.status, refused.code) == (429, "quota_exceeded")
    assert refused.reason_code == "PROJECT_QUOTA_EXCEEDED"
    assert refused.headers["retry-after"] == str(13 * 3600 + 59 * 60 + 30)
    assert quota_refusal(full_user, [full_user], now).reason_code == "USER_QUOTA_EXCEEDED"
    assert first_exhausted([_usage("user", "requests", "minute", 5, 4)]) is None


def test_settings_validate_the_quotas_section() -> None:
    assert QuotaSettings.from_mapping({}, total_timeout=100).reservation_ttl_seconds == 160
    assert QuotaSettings.from_mapping({"default_output_tokens": 7}).default_output_tokens == 7
    with pytest.raises(ValueError, match="unknown"):
        QuotaSettings.from_mapping({"default_tokens": 7})
    with pytest.raises(ValueError):
        QuotaSettings.from_mapping({"reservation_ttl_seconds": 0})


def test_configured_quotas_apply_to_every_project_and_to_named_ones() -> None:
    settings = QuotaSettings.from_mapping({
        "budget": {"tokens": {"monthly": 1000}},
        "user_quota": {"requests": {"minute": 5}},
        "projects": {"proj_a": {"budget": {"requests": {"daily": 10}},
                                "user_quota": {"requests": {"minute": 2}}}}})
    project, user = settings.configured_limits("proj_a")
    assert set(project) == {QuotaLimit("tokens", "monthly", 1000),
                            QuotaLimit("requests", "daily", 10)}
    # Both user limits are kept: the store enforces the tightest (2 per minute).
    request = QuotaRequest("proj_a", "u1", 1, project_limits=project, user_limits=user)
    assert [(lm.kind, lm.unit, lm.window, lm.limit) for lm in request.limits()
            if lm.kind == "user"] == [("user", "requests", "minute", 2)]
    assert settings.configured_limits("proj_other") == (
        (QuotaLimit("tokens", "monthly", 1000),), (QuotaLimit("requests", "minute", 5),))


@pytest.mark.parametrize("section", [
    {"budget": {"requests": {"fortnight": 3}}},
    {"budget": {"bytes": {"daily": 3}}},
    {"user_quota": {"requests": {"daily": -1}}},
    {"projects": {"proj_a": {"budget": {"requests": {"daily": 1.5}}}}},
    {"projects": {"proj_a": {"limits": {}}}},
    {"projects": ["proj_a"]},
])
def test_malformed_configured_quotas_are_refused(section: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        QuotaSettings.from_mapping(section)
