"""Architecture boundaries: which part may import which, checked over every module.

Each module's imports are read from its source (``ast``, any depth, ``TYPE_CHECKING``
included) and followed through Keyrack's own modules, so a rule also holds for what a
module imports by way of another. The SDK's import is light, and the public names of
``keyrack`` and ``keyrack.client`` are exactly their ``__all__``.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

import keyrack

SERVER_DEPS = ("fastapi", "sqlalchemy", "redis", "starlette", "alembic")
FRAMEWORKS = ("fastapi", "starlette", "sqlalchemy", "alembic", "redis", "httpx", "jinja2", "typer")

MODULES = sorted(info.name for info in pkgutil.walk_packages(keyrack.__path__, prefix="keyrack."))

ADAPTERS = ("http", "console", "cli", "server")
"""The parts that serve people and programs, and the composition root above them all."""
BELOW_SERVICES = ("services", "integrations", *ADAPTERS)
PLAIN = ("storage", "cache", "ratelimit", "jobs", "outbound", "routing", "problems")
"""Parts with a job of their own that plain rules (and the SDK) need none of."""

LAYERS: dict[str, tuple[str, ...]] = {
    # part: the parts of Keyrack it must not import, directly or through another module
    "domain": (*PLAIN, *BELOW_SERVICES),
    # the SDK shares the key format and webhook signatures (plain domain code), nothing else
    "client": (*PLAIN, *BELOW_SERVICES, "config"),
    "ratelimit": ("storage", "cache", "jobs", *BELOW_SERVICES),
    "cache": ("ratelimit", *BELOW_SERVICES),
    "storage": BELOW_SERVICES,
    "jobs": BELOW_SERVICES,
    "outbound": ("storage", *BELOW_SERVICES),
    "routing": ("storage", *BELOW_SERVICES),  # shared by the API and the console
    "problems": ("storage", *BELOW_SERVICES),  # shared by every answer
    "services": ADAPTERS,
    "integrations": ADAPTERS,
    "http": ("console", "cli", "server"),
    "console": ("http", "cli", "server"),
}


def _source(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None, module
    return Path(spec.origin)


@cache
def _imports(module: str) -> frozenset[str]:
    """Everything ``module``'s source imports: dotted module names, as written."""
    path = _source(module)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # maybe submodules
    return frozenset(found)


def _own(name: str) -> str | None:
    """``name`` as a Keyrack module, when it is one (a name imported from a module is not)."""
    return name if name in MODULES or name == "keyrack" else None


@cache
def _reach(module: str) -> frozenset[str]:
    """Every module importing ``module`` loads: its packages, and what each imports; but for
    the ``keyrack`` package itself, which loads the SDK only (its own test says so)."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        parts = current.split(".")
        todo.extend(".".join(parts[:n]) for n in range(2, len(parts)))  # its packages
        for name in _imports(current):
            if name.startswith("keyrack"):
                if (own := _own(name)) is not None and own != "keyrack":
                    todo.append(own)
            else:
                seen.add(name)
    return frozenset(seen)


def _part(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_module_is_walked() -> None:
    assert {"keyrack.domain.tenancy", "keyrack.ratelimit.wire", "keyrack.server"} <= set(MODULES)
    assert len(MODULES) > 100


@pytest.mark.parametrize("part", sorted(LAYERS))
def test_a_part_imports_none_of_the_parts_above_it(part: str) -> None:
    forbidden = {f"keyrack.{name}" for name in LAYERS[part]}
    broken = {
        module: sorted(
            name for name in _reach(module) if ".".join(name.split(".")[:2]) in forbidden
        )
        for module in MODULES
        if _part(module) == part
    }
    assert {module: names for module, names in broken.items() if names} == {}


def test_the_domain_imports_no_framework_database_cache_or_http_client() -> None:
    broken = {
        module: sorted(
            name
            for name in _reach(module)
            if not name.startswith("keyrack") and name.split(".")[0] in FRAMEWORKS
        )
        for module in MODULES
        if _part(module) == "domain"
    }
    assert {module: names for module, names in broken.items() if names} == {}


def _modules_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return {name.split(".")[0] for name in out.stdout.split()}


def test_import_keyrack_loads_no_server_dependency() -> None:
    loaded = _modules_after("import keyrack")
    assert not loaded & set(SERVER_DEPS)


def test_importing_every_domain_module_loads_no_framework_database_or_cache() -> None:
    domain = [module for module in MODULES if _part(module) == "domain"]
    loaded = _modules_after("; ".join(f"import {module}" for module in domain))
    assert not (loaded - _modules_after("import keyrack")) & set(FRAMEWORKS)


@pytest.mark.parametrize("module", ["keyrack", "keyrack.client"])
def test_public_names_are_exactly_all_sorted(module: str) -> None:
    imported = importlib.import_module(module)
    offered = {
        name
        for name, value in vars(imported).items()
        if not name.startswith("_") and not isinstance(value, type(sys))  # no submodules
    }
    assert imported.__all__ == sorted(imported.__all__)
    assert set(imported.__all__) - {"__version__"} == offered  # complete, and nothing more
    assert all(hasattr(imported, name) for name in imported.__all__)
