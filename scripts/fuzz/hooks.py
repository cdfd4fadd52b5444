"""Schemathesis hooks of scripts/fuzz-api: the API's prose rules as a check.

The OpenAPI document states in JSON Schema what JSON Schema can express, and in its descriptions
the rules it cannot: a custom range needs both bounds, the four custom-range rules with the 60 s
clamp, the event timestamp window, the body limit and the metadata limits. A request can keep its
schema and still break one of those, so schemathesis's `positive_data_acceptance` is told (in
schemathesis.toml) that 400 / 413 / 422 may answer schema-valid data, and this check makes that
precise: for every schema-valid request it works out from the rules, as the document states them
(limits read from the served document's `x-` values), whether the API must accept it or refuse it
and with which status and exact message, and fails on any difference. So every refusal of a
schema-valid request is one the document explains, and a request that breaks a prose rule is
refused.

It also widens the `date-time` values generated: besides any date of years 1 to 9999, half of
them lie near the server's "now" (the last 95 days, the next two, and around every limit: the
24 h and 5 min of the event window, the 90-day horizon), so custom ranges and event timestamps
are accepted often enough for their answers to be checked too, and the rules are probed at
their edges.
"""

from __future__ import annotations

import atexit
import collections
import json
import os
import re
import time
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, urlparse

import schemathesis
from hypothesis import strategies as st

READS = {"/performance", "/usage", "/time-series", "/requests", "/usage/count"}
DAY = 86_400
QUICK = {"24h": DAY, "7d": 7 * DAY, "30d": 30 * DAY, "90d": 90 * DAY}
MAX_RANGE = 90 * DAY
SLACK = 60
# Tolerances for what this side cannot know exactly: the server's "now" (between sending the
# request and reading the answer, plus this much), and metadata sizes (Python and serde_json
# spell some floats differently).
CLOCK_TOLERANCE = 2.0
SIZE_TOLERANCE = 64

RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
)


def days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146_097 + doe - 719_468


EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def render(epoch: float, offset_minutes: int, digits: int, lower: bool) -> str:
    """An RFC 3339 date-time for `epoch` in a `offset_minutes` offset, `digits` fraction digits."""
    whole = int(epoch // 1)
    nanos = min(int((epoch - whole) * 1e9), 999_999_999)
    local = EPOCH.astimezone(timezone(timedelta(minutes=offset_minutes))) + timedelta(seconds=whole)
    text = f"{local.year:04d}-{local.month:02d}-{local.day:02d}T{local:%H:%M:%S}"
    if digits:
        text += "." + f"{nanos:09d}"[:digits]
    if offset_minutes == 0 and not lower:
        text += "Z"
    elif offset_minutes == 0:
        text += "z"
    else:
        sign = "+" if offset_minutes > 0 else "-"
        text += f"{sign}{abs(offset_minutes) // 60:02d}:{abs(offset_minutes) % 60:02d}"
    return text.replace("T", "t") if lower else text


OFFSETS = st.one_of(st.just(0), st.integers(-23 * 60 - 59, 23 * 60 + 59))
# Seconds from now: anywhere in the last 95 days and the next two, or within two minutes of a
# limit of the rules.
EDGES = [0, -DAY, 300, -90 * DAY, -90 * DAY - SLACK, SLACK]
NEAR_NOW = st.one_of(
    st.floats(-95 * DAY, 2 * DAY),
    st.sampled_from(EDGES).flatmap(lambda edge: st.floats(edge - 120, edge + 120)),
)
# Years 1 to 9999 (in UTC, clear of both ends so every offset still renders).
ANY_TIME = st.floats(days_from_civil(1, 1, 2) * DAY, days_from_civil(9999, 12, 30) * DAY)


def date_times() -> st.SearchStrategy[str]:
    near = st.builds(
        lambda delta, off, digits, lower: render(time.time() + delta, off, digits, lower),
        NEAR_NOW, OFFSETS, st.integers(0, 9), st.booleans(),
    )
    wide = st.builds(render, ANY_TIME, OFFSETS, st.integers(0, 9), st.booleans())
    return st.one_of(near, wide)


def parse_rfc3339(text: str) -> float | None:
    """Seconds since the epoch, or None when `text` is no RFC 3339 date-time."""
    m = RFC3339.match(text)
    if not m:
        return None
    y, mo, d, h, mi, s = (int(g) for g in m.groups()[:6])
    frac = float(m.group(7) or 0)
    zone = m.group(8)
    offset = 0 if zone in ("Z", "z") else (1 if zone[0] == "+" else -1) * (
        int(zone[1:3]) * 3600 + int(zone[4:6]) * 60
    )
    return days_from_civil(y, mo, d) * DAY + h * 3600 + mi * 60 + s + frac - offset


def span(seconds: int) -> str:
    """A window limit as the API's messages spell it: `24 h`, `5 min`, `90 s`."""
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def custom_range(start: float, end: float, now: float) -> str | None:
    """The first custom-range rule (start_date's description) broken, as its message."""
    if start >= end:
        return "start_date must be before end_date"
    if end > now:
        return "end_date must not be in the future"
    if end - start > MAX_RANGE:
        return "the range from start_date to end_date must not span more than 90 days"
    if now - start > MAX_RANGE:
        return "start_date must not be more than 90 days ago (data is kept for 90 days)"
    return None


def range_rules(start: float, end: float, now: float) -> str | None:
    """`custom_range` with the 60 s clamp of both bounds that compare with now."""
    broken = custom_range(start, end, now)
    if broken not in (
        "end_date must not be in the future",
        "start_date must not be more than 90 days ago (data is kept for 90 days)",
    ):
        return broken
    if end > now + SLACK:
        return "end_date must not be in the future"
    horizon = now - MAX_RANGE
    if start + SLACK < horizon:
        return "start_date must not be more than 90 days ago (data is kept for 90 days)"
    return custom_range(max(start, horizon), min(end, now), now)


RAW_RETENTION = 7 * DAY
UNSUPPORTED = (
    "5-minute buckets of one endpoint are read from raw requests, which are kept for 7 days: "
    "use interval=hourly, or a range that starts within the last 7 days"
)


def expected_read(path: str, query: dict[str, str], now: float) -> tuple[int, str] | None:
    """The refusal a schema-valid read of `path` must get, or None when it must be served."""
    if path == "/time-series" and query.get("method") and not query.get("endpoint"):
        return 422, "method filters one endpoint's requests: give endpoint too"
    refused = expected_range(query, now)
    if refused is not None or path != "/time-series" or not query.get("endpoint"):
        return refused
    # A filtered series: 5-minute buckets come from raw rows, kept for 7 days.
    start, end = query.get("start_date"), query.get("end_date")
    if start and end:
        first = parse_rfc3339(start)
        length = min(parse_rfc3339(end), now) - max(first, now - MAX_RANGE)
    else:
        length = QUICK[query.get("time_range") or "24h"]
        first = now - length
    interval = query.get("interval") or ("5min" if length <= DAY else "hourly")
    if interval == "5min" and first < now - RAW_RETENTION:
        return 400, UNSUPPORTED
    return None


def expected_range(query: dict[str, str], now: float) -> tuple[int, str] | None:
    """The refusal of a schema-valid read's range, or None when it is fine."""
    start = query.get("start_date") or None
    end = query.get("end_date") or None
    if start is None and end is None:
        return None
    if start is None or end is None:
        missing = "end_date" if end is None else "start_date"
        return 422, f"start_date and end_date must be given together ({missing} is missing)"
    for name, value in (("start_date", start), ("end_date", end)):
        if parse_rfc3339(value) is None:
            # Not a date-time: the schema must not have let it through (the check fails on it).
            return 422, (
                f"{name} must be an RFC 3339 timestamp such as 2024-06-01T00:00:00Z (got {json.dumps(value)})"
            )
    broken = range_rules(parse_rfc3339(start), parse_rfc3339(end), now)
    return None if broken is None else (400, broken)


def depth(value: object) -> int:
    """Nesting depth as the API counts it: a scalar 0, `{}` and `[]` 1."""
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


def holds_nul(value: object) -> bool:
    """Whether a NUL (U+0000) is in any key or string at any depth (PostgreSQL cannot store it)."""
    if isinstance(value, str):
        return "\0" in value
    if isinstance(value, dict):
        return any(holds_nul(k) or holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(holds_nul(v) for v in value)
    return False


def nul_message(field: str) -> str:
    return f"{field} must not contain NUL (U+0000) characters, which the metrics store cannot keep"


def event_problems(index: int, event: dict, now: float, doc: dict) -> list[tuple[int, str, str]] | None:
    """The prose-rule problems of one schema-valid event; None when this side cannot be sure."""
    schema = doc["components"]["schemas"]["UsageEvent"]["properties"]
    window = schema["timestamp"]["x-accepted-window"]
    meta_limits = schema["metadata"]
    problems = []
    t = parse_rfc3339(event["timestamp"])
    if t is None:
        problems.append((index, "timestamp", "timestamp must be an RFC 3339 timestamp such as 2024-06-01T12:00:00Z"))
    elif t < now - window["before_seconds"]:
        before = span(window["before_seconds"])
        problems.append((index, "timestamp", f"timestamp must not be more than {before} before the server time"))
    elif t > now + window["after_seconds"]:
        after = span(window["after_seconds"])
        problems.append((index, "timestamp", f"timestamp must not be more than {after} after the server time"))
    # The schema keeps event_type within its enum (no NUL) and the names within their lengths.
    for field in ("page_name", "element_id"):
        if holds_nul(event.get(field)):
            problems.append((index, field, nul_message(field)))
    metadata = event.get("metadata")
    if isinstance(metadata, dict):
        max_depth, max_bytes = meta_limits["x-max-depth"], meta_limits["x-max-bytes"]
        size = len(json.dumps(metadata, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
        if depth(metadata) > max_depth:
            problems.append((index, "metadata", f"metadata must be at most {max_depth} levels deep"))
        elif abs(size - max_bytes) <= SIZE_TOLERANCE:
            return None
        elif size > max_bytes:
            problems.append((index, "metadata", f"metadata must be at most {max_bytes} bytes as JSON"))
        elif holds_nul(metadata):
            problems.append((index, "metadata", nul_message("metadata keys and strings")))
    return problems


def batch_problems(events: list, now: float, doc: dict) -> list[tuple[int, str, str]] | None:
    problems = []
    for index, event in enumerate(events):
        found = event_problems(index, event, now, doc)
        if found is None:
            return None
        problems.extend(found)
    return sorted(problems)


schemathesis.openapi.format("date-time", date_times())

# What the check saw, by outcome ("accepted" or the refusal's status and message), written as
# JSON to $FUZZ_API_TALLY at exit for scripts/fuzz-api to print. Shrinking and replays call
# checks again, so the counts are of calls, not of distinct cases.
TALLY: collections.Counter[str] = collections.Counter()


def _write_tally() -> None:
    path = os.environ.get("FUZZ_API_TALLY")
    if path:
        with open(path, "w", encoding="utf-8") as out:
            json.dump(dict(TALLY), out, indent=1, sort_keys=True)


atexit.register(_write_tally)


def body_bytes(response) -> bytes:
    body = response.request.body
    if body is None:
        return b""
    return body if isinstance(body, bytes) else body.encode("utf-8")


@schemathesis.check
def documented_refusal(ctx, response, case):
    """A schema-valid request is refused exactly when a prose rule of the document says so."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return None
    if response.status_code in (401, 403) or response.status_code >= 500:
        return None  # identity, admin and store answers: the other checks judge them
    doc = case.operation.schema.raw_schema
    path = case.operation.path
    now_hi = time.time()
    nows = (now_hi - response.elapsed - CLOCK_TOLERANCE, now_hi)
    got = response.status_code
    try:
        message = json.loads(response.content).get("message")
    except (ValueError, AttributeError):
        message = None

    if path in READS and case.method.upper() == "GET":
        sent = parse_qs(urlparse(response.request.url).query, keep_blank_values=True)
        query = {k: v[-1] for k, v in sent.items()}
        wanted = {expected_read(path, query, now) for now in nows}
        if len(wanted) > 1:
            return None  # on a boundary within the clock tolerance
        expected = wanted.pop()
        TALLY[f"GET reads: {'served' if expected is None else f'{expected[0]} {expected[1]}'}"] += 1
        if expected is None:
            if not 200 <= got < 300:
                raise AssertionError(
                    f"A schema-valid read that keeps every rule the document states was refused: {got} {message!r}"
                )
        elif (got, message) != expected:
            raise AssertionError(
                f"The document says this read is refused with {expected[0]} {expected[1]!r}; got {got} {message!r}"
            )
        return None

    if path == "/usage-events" and case.method.upper() == "POST":
        raw = body_bytes(response)
        limit = doc["paths"]["/usage-events"]["post"]["requestBody"]["x-max-body-bytes"]
        if len(raw) > limit:
            want = f"The request body exceeds the limit of {limit} bytes"
            TALLY[f"POST /usage-events: 413 {want}"] += 1
            if (got, message) != (413, want):
                raise AssertionError(f"A body over x-max-body-bytes ({len(raw)} > {limit}) got {got} {message!r}")
            return None
        events = json.loads(raw)["events"]
        wanted = [batch_problems(events, now, doc) for now in nows]
        if None in wanted or wanted[0] != wanted[1]:
            return None  # on a boundary within a tolerance
        expected = wanted[0]
        for problem in sorted({text for _, _, text in expected}) or ["accepted"]:
            TALLY[f"POST /usage-events: {'' if problem == 'accepted' else '422 '}{problem}"] += 1
        if not expected:
            if got != 202:
                raise AssertionError(
                    f"A schema-valid batch that keeps every rule the document states was refused: {got} {message!r}"
                )
            return None
        if got != 422:
            raise AssertionError(f"The document says this batch is refused with 422 ({expected[0][2]!r}); got {got}")
        details = json.loads(response.content).get("details", {}).get("errors", [])
        found = sorted((e["index"], e["field"], e["message"]) for e in details)
        if found != expected:
            raise AssertionError(f"The document's rules give the problems {expected}; the API listed {found}")
        return None
    return None
