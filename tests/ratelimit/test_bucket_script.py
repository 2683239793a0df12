"""The bucket script is package data (so it ships in the wheel), and the constants it
writes out agree with the Python side's."""

from __future__ import annotations

from importlib import resources

from keyrack.ratelimit import wire
from keyrack.ratelimit.base import MICRO


def test_the_bucket_script_loads_as_package_data_with_the_python_sides_constants() -> None:
    script = resources.files("keyrack.ratelimit").joinpath("bucket.lua").read_text("utf-8")
    assert script == wire.SCRIPT
    assert f"\nlocal MICRO = {MICRO}  --" in script
    assert f"\nlocal TTL_SLACK_MS = {wire.TTL_SLACK_MS}  --" in script
    assert "redis.call('HMGET', KEYS[1], 'tokens', 'stamp')" in script
