"""The README's configuration table matches ``Settings``: every variable, its default."""

from __future__ import annotations

import re
from pathlib import Path

from keyrack.config import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def _documented() -> dict[str, str]:
    """``KEYRACK_X`` → the default cell's text, for every row of the configuration table."""
    rows: dict[str, str] = {}
    for line in README.read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 3 or "KEYRACK_" not in cells[0]:
            continue
        names = re.findall(r"`(KEYRACK_[A-Z_]+)`", cells[0])
        defaults = re.findall(r"`([^`]*)`", cells[1]) or [cells[1]]
        if len(defaults) != len(names):
            defaults = defaults[:1] * len(names)
        rows.update(zip(names, defaults, strict=True))
    return rows


def _shown(value: object) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def test_readme_documents_every_setting_with_its_default() -> None:
    documented = _documented()
    fields = Settings.model_fields
    assert sorted(documented) == sorted(f"KEYRACK_{name.upper()}" for name in fields)
    for name, field in fields.items():
        if name == "secret_key":  # documented as "a development value", never printed
            continue
        assert documented[f"KEYRACK_{name.upper()}"] == _shown(field.default), name
