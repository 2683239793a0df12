"""CRM data rules: client fields, custom fields, engagements, external ids, period buckets
and NPS arithmetic.

Money is integer minor units (cents) throughout: ``arr_cents``, ``amount_cents``.
Health is a score 0-100; its band is green (>= 70), yellow (40-69) or red (< 40).

Every CRM record (a client, contact, contract or engagement) carries ``external_ids``:
the id each other system (``salesforce``, ``hubspot``…) has for it, at most one per
system. A system name is 1-32 lowercase letters, digits, ``_`` and ``-``, starting with
a letter; an id is 1-255 characters of plain text, kept exactly as given. A change is
a map too: a system mapped to an id sets it, mapped to ``None`` removes it, and a
system left out stays as it is (``merge_external_ids``). Lists find a record by one of
its ids written ``system:id`` (``hubspot:123``; the id may hold ``:`` itself).
"""

from __future__ import annotations

import enum
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, NamedTuple

from keyrack.domain.text import check_plain
from keyrack.errors import InvalidInput

MAX_CUSTOM_FIELDS = 50
MAX_CUSTOM_FIELD_KEY = 64
MAX_CUSTOM_FIELD_TEXT = 1000
MAX_CUSTOM_FIELDS_BYTES = 16_384
MAX_USAGE_BATCH = 1000
MAX_MONEY_CENTS = 10**13
MAX_USAGE_COUNT = 1_000_000
MAX_SUBJECT = 500
MAX_ENGAGEMENT_BODY = 65_536
MAX_EXTERNAL_ID = 255
MAX_EXTERNAL_SYSTEMS = 20

CustomValue = str | int | float | bool | None

_CURRENCY = re.compile(r"^[A-Z]{3}$")
_PHONE = re.compile(r"^\+?[0-9][0-9 ().\-]{2,38}$")
_REF_BODY = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")
SYSTEM_PATTERN = r"^[a-z][a-z0-9_-]{0,31}$"
_SYSTEM = re.compile(SYSTEM_PATTERN)


class Unset(enum.Enum):
    """Marks a PATCH field the caller did not send (as opposed to an explicit null)."""

    UNSET = 0


UNSET = Unset.UNSET


class ClientStatus(enum.StrEnum):
    TRIAL = "trial"
    ONBOARDING = "onboarding"
    ACTIVE = "active"
    PAUSED = "paused"
    CHURNED = "churned"


class HealthBand(enum.StrEnum):
    GREEN = "green"
    YELLOW = "yellow"
    RED = "red"


class RecordType(enum.StrEnum):
    """The CRM records that carry external ids and sync with other systems."""

    CLIENTS = "clients"
    CONTACTS = "contacts"
    CONTRACTS = "contracts"
    ENGAGEMENTS = "engagements"


class EngagementKind(enum.StrEnum):
    """What was logged against a client: an email, a call, a meeting or a note."""

    EMAIL = "email"
    CALL = "call"
    MEETING = "meeting"
    NOTE = "note"


class Interval(enum.StrEnum):
    """How often a contract's recurring revenue is billed."""

    MONTH = "month"
    QUARTER = "quarter"
    YEAR = "year"


class Period(enum.StrEnum):
    DAY = "day"
    MONTH = "month"
    QUARTER = "quarter"
    YEAR = "year"


def is_storable(text: str) -> bool:
    """Text every database accepts: valid UTF-8 (no lone surrogates) and no NUL."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def is_ref(kind: str, value: str) -> bool:
    """Whether ``value`` has the shape of a public id of ``kind`` (e.g. ``cli_01…``)."""
    prefix, sep, body = value.partition("_")
    return sep == "_" and prefix == kind and bool(_REF_BODY.fullmatch(body))


def health_band(score: int | None) -> HealthBand | None:
    if score is None:
        return None
    if score >= 70:
        return HealthBand.GREEN
    return HealthBand.YELLOW if score >= 40 else HealthBand.RED


def validate_health(score: int | None) -> int | None:
    if score is not None and not 0 <= score <= 100:
        raise InvalidInput("health must be a score between 0 and 100")
    return score


def validate_cents(value: int, what: str) -> int:
    if not 0 <= value <= MAX_MONEY_CENTS:
        raise InvalidInput(f"{what} must be between 0 and {MAX_MONEY_CENTS} (integer cents)")
    return value


def optional_cents(value: int | None, what: str) -> int | None:
    return None if value is None else validate_cents(value, what)


def validate_currency(code: str) -> str:
    code = code.strip().upper()
    if not _CURRENCY.fullmatch(code):
        raise InvalidInput("currency must be a three-letter ISO 4217 code such as USD")
    return code


def validate_text(
    value: str | None, what: str, max_length: int, *, paragraph: bool = False
) -> str | None:
    """Optional text: stripped, empty becomes None, bounded, no control characters (one
    line, or with ``paragraph`` line breaks and tabs allowed: ``text.check_plain``)."""
    if value is None:
        return None
    value = check_plain(value, what, paragraph=paragraph).strip()
    if len(value) > max_length:
        raise InvalidInput(f"{what} is at most {max_length} characters")
    return value or None


def validate_phone(phone: str | None) -> str | None:
    if phone is None or not phone.strip():
        return None
    phone = phone.strip()
    if not _PHONE.fullmatch(phone):
        raise InvalidInput("phone: digits, spaces and ( ) . - only, optional leading +, 3-40 chars")
    return phone


def validate_custom_fields(fields: Mapping[str, Any]) -> dict[str, CustomValue]:
    """A flat object of at most 50 scalar values and 16 KiB of JSON."""
    if len(fields) > MAX_CUSTOM_FIELDS:
        raise InvalidInput(f"custom_fields holds at most {MAX_CUSTOM_FIELDS} keys")
    clean: dict[str, CustomValue] = {}
    for key, value in fields.items():
        if not isinstance(key, str) or not 1 <= len(key) <= MAX_CUSTOM_FIELD_KEY:
            raise InvalidInput(f"custom field names are 1-{MAX_CUSTOM_FIELD_KEY} characters")
        if not is_storable(key):
            raise InvalidInput("custom field names must be valid text without NUL")
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidInput(f"custom field {key!r} must be a finite number")
        if isinstance(value, str):
            if len(value) > MAX_CUSTOM_FIELD_TEXT or not is_storable(value):
                raise InvalidInput(
                    f"custom field {key!r}: text is at most {MAX_CUSTOM_FIELD_TEXT} "
                    "characters, without NUL"
                )
        elif isinstance(value, bool | int | float) or value is None:
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**53:
                raise InvalidInput(f"custom field {key!r}: integers are limited to 2^53")
        else:
            raise InvalidInput(
                f"custom field {key!r} must be text, a number, true/false or null (not nested)"
            )
        clean[key] = value
    if len(json.dumps(clean).encode()) > MAX_CUSTOM_FIELDS_BYTES:
        raise InvalidInput(f"custom_fields is at most {MAX_CUSTOM_FIELDS_BYTES} bytes of JSON")
    return clean


def check_contract_dates(start: date, end: date | None) -> None:
    if end is not None and end < start:
        raise InvalidInput("end_date must not be before start_date")


def check_recurring(amount_cents: int | None, interval: Interval | None) -> None:
    if (amount_cents is None) != (interval is None):
        raise InvalidInput(
            "recurring_amount_cents and recurring_interval are given together or not at all"
        )


# -- external ids ----------------------------------------------------------------------


class ExternalRef(NamedTuple):
    """One system's id for a record; ``str()`` writes it ``system:id``."""

    system: str
    external_id: str

    def __str__(self) -> str:
        return f"{self.system}:{self.external_id}"


def validate_system(system: str) -> str:
    if not _SYSTEM.fullmatch(system):
        raise InvalidInput(
            f"{system!r} is not a system name (1-32 lowercase letters, digits, _ and -, "
            "starting with a letter)"
        )
    return system


def validate_external_id(system: str, value: str) -> str:
    """An id exactly as the other system gave it: 1-255 characters, no control character."""
    check_plain(value, f"the {system} id")
    if not 1 <= len(value) <= MAX_EXTERNAL_ID or not is_storable(value):
        raise InvalidInput(f"the {system} id is 1 to {MAX_EXTERNAL_ID} characters of text")
    return value


def validate_external_id_changes(changes: Mapping[str, str | None]) -> dict[str, str | None]:
    """A change to a record's external ids: system → id to set, or None to remove it."""
    if len(changes) > MAX_EXTERNAL_SYSTEMS:
        raise InvalidInput(f"external_ids holds at most {MAX_EXTERNAL_SYSTEMS} systems")
    return {
        validate_system(system): None if value is None else validate_external_id(system, value)
        for system, value in changes.items()
    }


def merge_external_ids(
    current: Mapping[str, str], changes: Mapping[str, str | None]
) -> dict[str, str]:
    """``current`` with ``changes`` applied, system by system: an id sets (or replaces) that
    system's, ``None`` removes it, a system not named stays. So two changes applied one after
    the other are the one change ``{**first, **second}``: the later write wins.
    """
    merged = {**current, **changes}
    kept = {system: value for system, value in sorted(merged.items()) if value is not None}
    if len(kept) > MAX_EXTERNAL_SYSTEMS:
        raise InvalidInput(f"a record holds ids of at most {MAX_EXTERNAL_SYSTEMS} systems")
    return kept


def parse_external_ref(text: str) -> ExternalRef:
    """``system:id`` (``hubspot:123``), split at its first colon, both halves validated."""
    system, sep, external_id = text.partition(":")
    if not sep:
        raise InvalidInput("external_id is written system:id, e.g. hubspot:123")
    validate_system(system)
    return ExternalRef(system, validate_external_id(system, external_id))


def validate_score(score: int) -> int:
    if not 0 <= score <= 10:
        raise InvalidInput("score must be an integer from 0 to 10")
    return score


# -- periods ---------------------------------------------------------------------------


def day_of(moment: datetime) -> date:
    """The UTC calendar day of an aware datetime."""
    return moment.astimezone(UTC).date()


def month_of(moment: datetime) -> str:
    """The UTC calendar month of an aware datetime, as ``YYYY-MM``."""
    return day_of(moment).strftime("%Y-%m")


def bucket_label(day: date, period: Period) -> str:
    """The label of the period containing ``day``: ``2026-01-05``, ``2026-01``, ``2026-Q1``, ``2026``."""
    if period is Period.DAY:
        return day.isoformat()
    if period is Period.MONTH:
        return f"{day.year:04d}-{day.month:02d}"
    if period is Period.QUARTER:
        return f"{day.year:04d}-Q{(day.month - 1) // 3 + 1}"
    return f"{day.year:04d}"


def bucket_start(day: date, period: Period) -> date:
    """The first day of the period containing ``day``."""
    if period is Period.DAY:
        return day
    if period is Period.MONTH:
        return day.replace(day=1)
    if period is Period.QUARTER:
        return date(day.year, (day.month - 1) // 3 * 3 + 1, 1)
    return date(day.year, 1, 1)


def check_range(since: datetime | None, until: datetime | None) -> None:
    if since is not None and until is not None and until <= since:
        raise InvalidInput("until must be after since")


# -- NPS -------------------------------------------------------------------------------


class NpsCategory(enum.StrEnum):
    PROMOTER = "promoter"
    PASSIVE = "passive"
    DETRACTOR = "detractor"


def nps_category(score: int) -> NpsCategory:
    validate_score(score)
    if score >= 9:
        return NpsCategory.PROMOTER
    return NpsCategory.PASSIVE if score >= 7 else NpsCategory.DETRACTOR


@dataclass(frozen=True, slots=True)
class NpsTally:
    promoters: int = 0
    passives: int = 0
    detractors: int = 0

    @property
    def responses(self) -> int:
        return self.promoters + self.passives + self.detractors

    @property
    def nps(self) -> float | None:
        """% promoters - % detractors, from -100 to 100 (one decimal); None without responses."""
        if not self.responses:
            return None
        return round(100 * (self.promoters - self.detractors) / self.responses, 1)

    def __add__(self, other: NpsTally) -> NpsTally:
        return NpsTally(
            self.promoters + other.promoters,
            self.passives + other.passives,
            self.detractors + other.detractors,
        )


def tally(scores: Iterable[int]) -> NpsTally:
    counts = dict.fromkeys(NpsCategory, 0)
    for score in scores:
        counts[nps_category(score)] += 1
    return NpsTally(
        counts[NpsCategory.PROMOTER], counts[NpsCategory.PASSIVE], counts[NpsCategory.DETRACTOR]
    )
