"""Settings → Imports over HTTP, on SQLite and PostgreSQL: upload a file with a bad row,
its counts once the job ran, its failed rows (line and exact error) paged, a refused upload
keeps the resource, CSRF, roles."""

from __future__ import annotations

import re

import httpx
from sqlalchemy import insert, select

from keyrack.domain.tenancy import Scope
from keyrack.services import imports
from keyrack.services.context import Context
from keyrack.storage.tables.exports import Import, ImportRow
from tests.exports.conftest import drain

from .conftest import Browser, People

PAGE = "/console/settings/imports"
IMPORT_REF = re.compile(r"imp_[0-9A-Za-z]{26}")
BODY = b"name,health\r\nAcme,50\r\nToo healthy,500\r\nBeta,\r\n"


def upload(
    browser: Browser,
    resource: str = "clients",
    name: str = "clients.csv",
    body: bytes = BODY,
    *,
    media: str = "text/csv",
    csrf: bool = True,
) -> httpx.Response:
    """Post the page's multipart form as a browser does."""
    browser.get(PAGE)
    data = {"resource": resource, **({"csrf_token": browser.csrf} if csrf else {})}
    return browser.client.post(PAGE, data=data, files={"file": (name, body, media)})


def test_an_uploaded_file_shows_its_counts_and_its_bad_line_with_the_exact_error(
    browser: Browser, people: People, ctx: Context
) -> None:
    browser.sign_in(people.owner)
    assert f'href="{PAGE}"' in browser.get("/console", follow_redirects=True).text  # the nav
    sent = upload(browser)
    assert (sent.status_code, sent.headers["location"]) == (303, f"{PAGE}?notice=uploaded")
    waiting = browser.get(sent.headers["location"]).text
    assert 'role="status"' in waiting and "queued" in waiting
    found = IMPORT_REF.search(waiting)
    assert found is not None
    ref = found.group(0)

    drain(ctx)
    done = browser.get(PAGE).text
    assert "succeeded" in done
    cells = re.findall(r"<td>(\d+)</td>", done)
    assert cells[:3] == ["2", "0", "0"]  # created, updated, unchanged
    assert f'href="{PAGE}/{ref}">1<' in done  # failed: a link to the rows
    rows = browser.get(f"{PAGE}/{ref}")
    assert rows.status_code == 200
    assert "2 created, 0 updated, 0 unchanged, 1 failed." in rows.text
    assert '<th scope="row">3</th><td>health must be a score between 0 and 100</td>' in rows.text
    assert browser.get(f"{PAGE}/imp_nosuchimport").status_code == 404


def test_failed_rows_are_paged_fifty_in_line_order(
    browser: Browser, people: People, ctx: Context
) -> None:
    browser.sign_in(people.admin)
    upload(browser, body=b"name\r\nOne\r\n")
    drain(ctx)
    ref = imports.list_imports(ctx, Scope(people.org_id)).data[0].ref
    with ctx.db.transaction() as session:  # 55 failed rows after the one that worked
        import_id = session.scalar(select(Import.id).where(Import.ref == ref))
        session.execute(
            insert(ImportRow),
            [
                {"import_id": import_id, "line": n, "outcome": "failed", "error": f"bad {n}"}
                for n in range(3, 58)
            ],
        )
    first = browser.get(f"{PAGE}/{ref}").text
    assert first.count('<th scope="row">') == 50 and "bad 3<" in first and "bad 53<" not in first
    more = re.search(r'rel="next" href="([^"]+)"', first)
    assert more is not None
    second = browser.get(more.group(1).replace("&amp;", "&")).text
    assert second.count('<th scope="row">') == 5 and "bad 53<" in second and "bad 57<" in second


def test_a_refused_upload_keeps_the_resource_and_says_why(
    browser: Browser, people: People, ctx: Context
) -> None:
    browser.sign_in(people.admin)
    unnamed = upload(browser, "contacts", "contacts.txt", media="text/plain")
    assert unnamed.status_code == 400
    alert = re.search(r'role="alert">([^<]+)<', unnamed.text)
    assert alert is not None and ".csv" in alert.group(1)
    assert '<option value="contacts" selected>' in unnamed.text
    empty = upload(browser, "engagements", "e.ndjson", b"")
    assert empty.status_code == 400 and "the file is empty" in empty.text
    assert '<option value="engagements" selected>' in empty.text
    unknown = upload(browser, "keys")
    assert unknown.status_code == 400 and "no resource &#39;keys&#39;" in unknown.text
    assert imports.list_imports(ctx, Scope(people.org_id)).data == []  # nothing began


def test_uploading_needs_the_csrf_token_and_an_owner_or_admin(
    browser: Browser, people: People, ctx: Context
) -> None:
    browser.sign_in(people.admin)
    assert upload(browser, csrf=False).status_code == 403
    assert imports.list_imports(ctx, Scope(people.org_id)).data == []
    assert upload(browser).status_code == 303
    ref = imports.list_imports(ctx, Scope(people.org_id)).data[0].ref

    browser.sign_in(people.member)
    assert f'href="{PAGE}"' not in browser.get("/console", follow_redirects=True).text
    assert browser.get(PAGE).status_code == 403
    assert browser.get(f"{PAGE}/{ref}").status_code == 403
    assert upload(browser).status_code == 403
    assert len(imports.list_imports(ctx, Scope(people.org_id)).data) == 1
