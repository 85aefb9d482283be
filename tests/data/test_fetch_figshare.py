"""``instlib data fetch``: figshare's paged file listing, the committed checksum table, and refusals.

The network is replaced at ``urllib.request.urlopen`` by answers in the shape figshare's API v2
documents for ``GET /articles/{id}/versions/{v}/files`` (a JSON list of files with ``id``, ``name``,
``size``, ``download_url``, ``computed_md5``, ...), served page by page, so everything from the
request to the import runs as it does online.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import shutil
import urllib.error
import urllib.parse
from pathlib import Path

import pytest

import instlib.data.fetch as fetch
from instlib.data.folder import read_manifest

from cli_runner import run_cli
from idcia_layout import IMAGES, make_idcia

PAGE_SIZE = 2
DOWNLOADS = "https://ndownloader.figshare.com/files/"


class Answer:
    """An HTTP answer as ``urlopen`` returns it; ``broken_after`` bytes, then the connection drops."""

    def __init__(self, body: bytes, status: int = 200, broken_after: int | None = None):
        self.status, self._body, self._broken_after = status, io.BytesIO(body), broken_after

    def read(self, n: int = -1) -> bytes:
        if self._broken_after is not None and self._body.tell() >= self._broken_after:
            raise ConnectionResetError("connection reset by peer")
        return self._body.read(n if self._broken_after is None or n < 0 else min(n, self._broken_after))

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Figshare:
    """Version 1 of an article with ``files`` (name -> bytes), listed ``PAGE_SIZE`` files a page."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.listed_md5 = {name: hashlib.md5(data).hexdigest() for name, data in files.items()}
        # What to answer instead: an Answer (once), bytes (a fresh 200 answer each time) or an exception.
        self.downloads: dict[str, Answer | bytes | Exception] = {}
        self.listing: Answer | bytes | Exception | None = None  # for every page of the listing
        self.requests: list[str] = []

    def record(self) -> list[dict]:
        return [{"id": 40000000 + i, "name": name, "size": len(data), "is_link_only": False,
                 "download_url": f"{DOWNLOADS}{40000000 + i}", "supplied_md5": self.listed_md5[name],
                 "computed_md5": self.listed_md5[name], "mimetype": "application/octet-stream"}
                for i, (name, data) in enumerate(self.files.items())]

    def urlopen(self, request, timeout=None):
        url = request.full_url
        self.requests.append(url)
        if url.startswith(fetch.DATASETS["idcia"].files_url):
            if self.listing is not None:
                return self._serve(self.listing)
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
            page, size = int(query["page"][0]), int(query["page_size"][0])
            return Answer(json.dumps(self.record()[(page - 1) * size:page * size]).encode())
        file_id = int(url.removeprefix(DOWNLOADS)) - 40000000
        name = list(self.files)[file_id]
        return self._serve(self.downloads.get(name, Answer(self.files[name])))

    @staticmethod
    def _serve(answer):
        if isinstance(answer, Exception):
            raise answer
        return Answer(answer) if isinstance(answer, bytes) else answer


def _idcia_files(tmp_path: Path, extra: int) -> dict[str, bytes]:
    """The shipped layout as one zip (listed last: only paging reaches it) after ``extra`` small files."""
    make_idcia(tmp_path / "IDCIA")
    archive = Path(shutil.make_archive(str(tmp_path / "IDCIA_v1"), "zip", tmp_path, "IDCIA"))
    files = {f"notes_{i}.txt": f"note {i}\n".encode() for i in range(extra)}
    return files | {archive.name: archive.read_bytes()}


def _serve(monkeypatch, tmp_path: Path, files: dict[str, bytes], pins: dict[str, str] | None = None) -> Figshare:
    """Answer with ``files`` and pin ``pins`` (default: the true MD5s) in a checksum table of the test."""
    server = Figshare(files)
    table = tmp_path / "idcia.md5"
    pins = pins or server.listed_md5
    table.write_text("# test table\n" + "".join(f"{md5}  {name}\n" for name, md5 in pins.items()))
    monkeypatch.setitem(fetch.DATASETS, "idcia", dataclasses.replace(fetch.DATASETS["idcia"], table=table))
    monkeypatch.setattr(fetch, "PAGE_SIZE", PAGE_SIZE)
    monkeypatch.setattr(fetch.urllib.request, "urlopen", server.urlopen)
    return server


def _fetch(capsys, tmp_path: Path, *options: str) -> tuple[int, str, str]:
    """Exit code, stdout and the one ``error: ...`` line (progress bars share stderr), or all of stderr."""
    code, out, err = run_cli(capsys, "data", "fetch", "idcia", "--dest", tmp_path / "idcia",
                             "--cache", tmp_path / "cache", *options)
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == (code != 0) and "Traceback" not in err, err
    return code, out, errors[0] if errors else err


def _left_behind(tmp_path: Path) -> list[Path]:
    """What a failed fetch left: any file in the cache (hidden temporaries included) and the destination."""
    cache = tmp_path / "cache"
    return ([p for p in cache.rglob("*") if p.is_file()] if cache.exists() else []) + \
        ([tmp_path / "idcia"] if (tmp_path / "idcia").exists() else [])


@pytest.mark.parametrize("extra, pages", [(2, 2), (3, 3)])  # a short last page; full pages, then an empty one
def test_fetch_follows_every_page_of_the_pinned_version_and_imports(capsys, monkeypatch, tmp_path, extra, pages):
    server = _serve(monkeypatch, tmp_path, _idcia_files(tmp_path, extra))
    code, out, err = _fetch(capsys, tmp_path)
    assert code == 0, err
    listing = fetch.DATASETS["idcia"].files_url
    assert listing.endswith("/articles/21970604/versions/1/files")
    assert server.requests[:pages] == [f"{listing}?page={p}&page_size={PAGE_SIZE}" for p in range(1, pages + 1)]
    assert sorted(server.requests[pages:]) == sorted(f"{DOWNLOADS}{40000000 + i}" for i in range(extra + 1))
    manifest = read_manifest(tmp_path / "idcia").set_index("name")
    assert manifest["split"].to_dict() == {n: split for n, (_, split, _) in IMAGES.items()}
    assert "IDCIA_v1.zip.unzip/IDCIA/train.csv" in out
    # a second fetch finds every file in the cache with its pinned MD5 and downloads nothing
    server.requests.clear()
    again = run_cli(capsys, "data", "fetch", "idcia", "--dest", tmp_path / "again", "--cache", tmp_path / "cache")
    assert again[0] == 0
    assert not [u for u in server.requests if u.startswith(DOWNLOADS)]


def test_a_download_whose_md5_differs_from_the_committed_table_is_refused_and_not_kept(capsys, monkeypatch, tmp_path):
    files = _idcia_files(tmp_path, 1)
    server = _serve(monkeypatch, tmp_path, files)
    server.downloads["IDCIA_v1.zip"] = files["IDCIA_v1.zip"][:-10] + b"0123456789"  # altered in transit
    code, _, err = _fetch(capsys, tmp_path)
    assert code == 2
    assert err.startswith(f"error: {DOWNLOADS}40000001: the downloaded 'IDCIA_v1.zip' has MD5 ")
    assert f"pins {server.listed_md5['IDCIA_v1.zip']}" in err and "instlib data import" in err
    assert _left_behind(tmp_path) == [tmp_path / "cache" / "notes_0.txt"]  # verified before; nothing partial


def test_a_listing_that_disagrees_with_the_committed_table_stops_before_any_download(capsys, monkeypatch, tmp_path):
    files = _idcia_files(tmp_path, 1)
    real = hashlib.md5(files["IDCIA_v1.zip"]).hexdigest()
    server = _serve(monkeypatch, tmp_path, files, pins={"notes_0.txt": hashlib.md5(b"note 0\n").hexdigest(),
                                                        "IDCIA_v1.zip": "0" * 32})
    code, _, err = _fetch(capsys, tmp_path)
    listing = fetch.DATASETS["idcia"].files_url
    assert code == 2 and err.startswith(f"error: {listing}: gives 'IDCIA_v1.zip' the MD5 {real}, but ")
    assert not [u for u in server.requests if u.startswith(DOWNLOADS)] and _left_behind(tmp_path) == []


def test_the_committed_table_pins_every_file_figshare_lists(capsys, monkeypatch, tmp_path):
    """With the table instlib ships (see its header), a file it does not pin is refused by name."""
    server = Figshare({"IDCIA_v1.zip": b"whatever figshare serves"})
    monkeypatch.setattr(fetch.urllib.request, "urlopen", server.urlopen)
    shipped = fetch.DATASETS["idcia"].table
    assert shipped.is_file() and shipped.name == "idcia.md5"
    code, _, err = _fetch(capsys, tmp_path)
    assert code == 2
    assert err.startswith(f"error: {fetch.DATASETS['idcia'].files_url}: lists 'IDCIA_v1.zip' "
                          f"(MD5 {server.listed_md5['IDCIA_v1.zip']}), which instlib's checksum table {shipped} "
                          "does not pin")
    assert not [u for u in server.requests if u.startswith(DOWNLOADS)] and _left_behind(tmp_path) == []


def test_trust_listing_accepts_figshare_md5s_only_while_the_table_pins_nothing(capsys, monkeypatch, tmp_path):
    files = _idcia_files(tmp_path, 1)
    server = _serve(monkeypatch, tmp_path, files)
    empty = tmp_path / "empty.md5"
    empty.write_text("# not filled in\n")
    monkeypatch.setitem(fetch.DATASETS, "idcia", dataclasses.replace(fetch.DATASETS["idcia"], table=empty))
    code, _, err = _fetch(capsys, tmp_path, "--trust-listing")
    assert code == 0, err
    assert f"note: {empty} pins no file yet; accepting the MD5s figshare lists" in err
    written = (tmp_path / "cache" / "empty.md5").read_text().splitlines()
    assert sorted(written) == sorted(f"{md5}  {name}" for name, md5 in server.listed_md5.items())
    assert len(read_manifest(tmp_path / "idcia")) == len(IMAGES)
    # A table with entries is enforced whatever the option says.
    server = _serve(monkeypatch, tmp_path, files, pins={"notes_0.txt": "0" * 32, "IDCIA_v1.zip": "0" * 32})
    code, _, err = _fetch(capsys, tmp_path, "--trust-listing", "--overwrite")
    assert code == 2 and "the MD5 " in err and "pins 00000000" in err


def _forbidden(url: str) -> urllib.error.HTTPError:
    return urllib.error.HTTPError(url, 403, "Forbidden", None, io.BytesIO(b"<html>Access denied</html>"))


@pytest.mark.parametrize("answer, problem", [
    (lambda url: _forbidden(url), "figshare answered HTTP 403 Forbidden (figshare's firewall refuses some"),
    (lambda url: Answer(b"", status=202), "figshare answered HTTP 202 with a challenge page of its firewall"),
])
@pytest.mark.parametrize("where", ["listing", "download"])
def test_403_and_the_empty_202_challenge_page_are_clear_errors_naming_the_url(capsys, monkeypatch, tmp_path, answer,
                                                                              problem, where):
    server = _serve(monkeypatch, tmp_path, _idcia_files(tmp_path, 0))
    listing = f"{fetch.DATASETS['idcia'].files_url}?page=1&page_size={PAGE_SIZE}"
    url = listing if where == "listing" else f"{DOWNLOADS}40000000"
    if where == "listing":
        server.listing = answer(url)
    else:
        server.downloads["IDCIA_v1.zip"] = answer(url)
    code, _, err = _fetch(capsys, tmp_path)
    assert code == 2
    assert err.startswith(f"error: {url}: {problem}")
    assert "download version 1 of IDCIA by hand from https://figshare.com/articles/dataset/Dataset/21970604" in err
    assert _left_behind(tmp_path) == []


def test_a_download_that_breaks_off_leaves_nothing_partial(capsys, monkeypatch, tmp_path):
    files = _idcia_files(tmp_path, 0)
    server = _serve(monkeypatch, tmp_path, files)
    server.downloads["IDCIA_v1.zip"] = Answer(files["IDCIA_v1.zip"], broken_after=100)
    code, _, err = _fetch(capsys, tmp_path)
    assert code == 2 and err.startswith(f"error: {DOWNLOADS}40000000: the download broke off (connection reset")
    assert _left_behind(tmp_path) == []


@pytest.mark.parametrize("body, what", [(b"", "an empty page"), (b"<html>maintenance</html>", "something other")])
def test_a_listing_that_is_not_a_file_list_is_refused(capsys, monkeypatch, tmp_path, body, what):
    server = _serve(monkeypatch, tmp_path, _idcia_files(tmp_path, 0))
    server.listing = body
    code, _, err = _fetch(capsys, tmp_path)
    assert code == 2 and f"figshare answered {what}" in err and _left_behind(tmp_path) == []


def test_a_server_that_ignores_the_page_parameter_cannot_loop_for_ever(capsys, monkeypatch, tmp_path):
    server = _serve(monkeypatch, tmp_path, _idcia_files(tmp_path, 1))  # exactly one full page
    server.listing = json.dumps(server.record()).encode()
    code, _, err = _fetch(capsys, tmp_path)
    assert code == 2 and "page=2" in err and "lists 'notes_0.txt' a second time" in err
