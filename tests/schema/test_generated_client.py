"""A client no one here wrote: ``openapi-python-client`` generates one from the served
document, and it works against a live server (typed answers, paging, typed errors).

Generation takes a couple of seconds (it formats the package with ruff): the price of
checking the document the way integrators use it. SQLite only: the routes behind it
are tested on both backends elsewhere.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from keyrack.domain.permissions import PERMISSIONS
from keyrack.ratelimit.memory import MemoryLimiter
from keyrack.server import create_app
from keyrack.services import keys
from keyrack.services.context import Context
from tests.conftest import OPERATOR, seed_org
from tests.live import serve_in_thread

GENERATOR = Path(sys.executable).with_name("openapi-python-client")
PACKAGE = "keyrack_client"  # what the generator names a package for the title "Keyrack"


@pytest.fixture
def database_url(_sqlite_template: Path, tmp_path: Path) -> str:
    target = tmp_path / "keyrack.db"
    shutil.copyfile(_sqlite_template, target)
    return f"sqlite:///{target}"


@pytest.fixture
def server(ctx: Context) -> Iterator[tuple[str, str, str]]:
    """The app on a socket, its limiter's clock stopped (a spent token never comes back);
    a key with every permission and ample limits, and one allowed a single request."""
    org = seed_org(ctx, "gen")
    _, secret = keys.create_key(
        ctx, OPERATOR, org.scope, name="Generated", permissions=PERMISSIONS, rate_per_second=1000
    )
    _, once = keys.create_key(
        ctx, OPERATOR, org.scope, name="Once", permissions=PERMISSIONS, rate_per_second=1
    )
    app = create_app(ctx=ctx)
    app.state.limiter = MemoryLimiter(clock=lambda: 0.0)
    with serve_in_thread(app) as url:
        yield url, secret, once


@pytest.fixture
def generated(server: tuple[str, str, str], tmp_path: Path) -> Iterator[ModuleType]:
    """The package generated from the document the server serves, importable."""
    document = tmp_path / "openapi.json"
    document.write_bytes(httpx.get(f"{server[0]}/api/v2/openapi.json").content)
    env = {**os.environ, "PATH": f"{GENERATOR.parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        [GENERATOR, "generate", "--path", document, "--meta", "none", "--output-path", PACKAGE],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Warning" not in done.stdout + done.stderr, done.stdout + done.stderr
    sys.path.insert(0, str(tmp_path))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(tmp_path))
        for name in [name for name in sys.modules if name.split(".")[0] == PACKAGE]:
            del sys.modules[name]


def test_a_generated_client_creates_pages_and_reads_typed_errors(
    generated: ModuleType, server: tuple[str, str, str]
) -> None:
    url, secret, once = server
    api = importlib.import_module(f"{PACKAGE}.api.clients")
    models = importlib.import_module(f"{PACKAGE}.models")
    create_client = importlib.import_module(f"{api.__name__}.create_client")
    list_clients = importlib.import_module(f"{api.__name__}.list_clients")
    get_client = importlib.import_module(f"{api.__name__}.get_client")
    introspection = importlib.import_module(f"{PACKAGE}.api.introspection.get_key_self")

    with generated.AuthenticatedClient(base_url=url, token=secret) as client:  # Bearer
        made = [
            create_client.sync(client=client, body=models.ClientCreate(name=f"Client {n}"))
            for n in range(5)
        ]
        assert all(isinstance(c, models.ClientOut) for c in made)

        seen, cursor, pages = [], None, 0
        while True:
            kwargs = {"cursor": cursor} if cursor else {}
            page = list_clients.sync(client=client, limit=2, **kwargs)
            assert isinstance(page, models.ListPageClientOut)
            seen += [c.id for c in page.data]
            pages += 1
            if not (cursor := page.next_cursor):
                break
        assert (sorted(seen), pages) == (sorted(c.id for c in made), 3)

        missing = get_client.sync_detailed(client=client, client_id="cli_nope")
        assert missing.status_code == 404
        assert isinstance(missing.parsed, models.Problem)
        assert missing.parsed.type_ == "https://keyrack.dev/problems/not-found"
        assert "ratelimit" in missing.headers

    # the other header the document declares: X-API-Key
    as_header = generated.AuthenticatedClient(
        base_url=url, token=secret, auth_header_name="X-API-Key", prefix=""
    )
    with as_header:
        assert isinstance(introspection.sync(client=as_header), models.KeySelf)

    with generated.AuthenticatedClient(base_url=url, token=once) as client:
        first = get_client.sync_detailed(client=client, client_id="cli_nope")
        throttled = get_client.sync_detailed(client=client, client_id="cli_nope")
    assert first.status_code == 404
    assert throttled.status_code == 429
    assert isinstance(throttled.parsed, models.Problem)
    assert throttled.parsed.type_ == "https://keyrack.dev/problems/rate-limited"
    assert int(throttled.headers["retry-after"]) >= 1
    assert throttled.headers["ratelimit"].startswith('"key";r=0')
