"""URL sources: fetched safely (no request to loopback, private, link-local or metadata addresses, before
or after a redirect, by default), bounded, retried, rate-limited per host, and cached in the episode folder."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from document_makers import article_html
from fakeapi import FakeApi, Reply
from podspool.daemon.ratelimit import memory_limiter
from podspool.stages import artifacts
from podspool.stages.base import EpisodeInput, StageContext
from podspool.stages.registry import run_stage
from podspool.stages.settings import ResearchSettings, StageSettings
from podspool.stages.sources import addresses, fetch
from podspool_helpers import cli
from provider_helpers import make_ctx


class Listener:
    """A socket listening on `host` that counts every connection made to it (and answers none)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sock = socket.create_server((host, port))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    lst = Listener()
    yield lst
    lst.close()


def _ctx(**research: object) -> StageContext:
    return StageContext(settings=StageSettings(research=ResearchSettings.model_validate(research)),
                        limiter=memory_limiter({}))


def _episode(*sources: str) -> EpisodeInput:
    return EpisodeInput(episode_id="ep_001_f", batch_id="f", number=1, topic="The lake and its axolotl",
                        sources=sources)


def _research(tmp_path: Path, *sources: str, **research: object) -> tuple[bool, str, Path]:
    folder = tmp_path / "ep"
    folder.mkdir(exist_ok=True)
    result = run_stage("research", folder, _episode(*sources), _ctx(**research))
    return result.ok, result.error or "", folder


@pytest.mark.parametrize("url, kind", [
    ("http://127.0.0.1:{port}/x", "loopback address"),
    ("http://localhost:{port}/x", "(localhost resolves to"),
    ("http://[::ffff:127.0.0.1]:{port}/x", "loopback address"),
    ("http://10.1.2.3:{port}/x", "private address"),
    ("http://192.168.0.9:{port}/x", "private address"),
    ("http://169.254.169.254/latest/meta-data/", "cloud metadata address"),
    ("http://169.254.10.1:{port}/x", "link-local address"),
])
def test_private_addresses_are_refused_by_default_and_never_reached(tmp_path: Path, listener: Listener,
                                                                   url: str, kind: str) -> None:
    url = url.format(port=listener.port)
    ok, error, folder = _research(tmp_path, url)
    assert not ok and kind in error and "allow_private_urls" in error, error
    assert "localhost" not in url or "loopback address" in error
    assert listener.connections == 0
    assert not (folder / artifacts.RESEARCH_JSON).exists()


def test_a_redirect_to_a_private_address_is_refused_and_never_reached(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    inner = Listener("127.0.0.2")
    # the test's web server sits on 127.0.0.1: count that one address as public, nothing else
    real = addresses.address_class
    monkeypatch.setattr(addresses, "address_class", lambda ip: None if str(ip) == "127.0.0.1" else real(ip))
    try:
        with FakeApi(Reply(status=302, headers={"Location": f"http://127.0.0.2:{inner.port}/admin"})) as web:
            ok, error, _ = _research(tmp_path, web.base_url + "/go")
            assert not ok and "loopback address" in error and "127.0.0.2" in error, error
            web.queue(Reply(status=301, headers={"Location": "http://169.254.169.254/latest/meta-data/"}))
            ok, error, _ = _research(tmp_path, web.base_url + "/meta")
            assert not ok and "cloud metadata" in error, error
            assert [r.path for r in web.requests] == ["/go", "/meta"]
    finally:
        inner.close()
    assert inner.connections == 0


def test_only_http_and_https_and_private_literals_are_refused_at_validate(tmp_path: Path,
                                                                         listener: Listener) -> None:
    specs = [f"http://127.0.0.1:{listener.port}/a", "http://169.254.169.254/latest", "ftp://example.org/a.pdf",
             "file:///etc/passwd", f"http://localhost:{listener.port}/b"]
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"episodes": [{"number": i + 1, "topic": "x", "sources": [s]}
                                                 for i, s in enumerate(specs)]}))
    out = cli("validate", str(manifest), cwd=tmp_path)
    said = out.stdout + out.stderr
    assert out.returncode == 2, said
    for number, reason in [(1, "loopback address"), (2, "cloud metadata"), (3, "only http and https"),
                           (4, "only http and https"), (5, "loopback address (localhost)")]:
        assert any(f"episode {number}:" in ln and reason in ln for ln in said.splitlines()), (number, said)
    allowed = tmp_path / "allow.toml"
    allowed.write_text("[research]\nallow_private_urls = true\n")
    out = cli("validate", str(manifest), "--config", str(allowed), cwd=tmp_path)
    assert "episode 1:" not in out.stdout + out.stderr and "episode 3:" in out.stdout + out.stderr
    assert listener.connections == 0  # validate never fetches


@pytest.mark.soak  # a daemon's whole run: .ci/run runs it with the soak tests, under their bound
def test_a_fetched_page_is_cited_by_url_and_not_fetched_again_on_retry(tmp_path: Path) -> None:
    page = article_html("Salamander news", "The axolotl of the lake was seen again near the old pier.")
    other = article_html("Pond notes", "The newt of the pond hides under the lily leaves all summer long.")
    with FakeApi(Reply(body=other.encode(), content_type="text/html")) as web:
        good, flaky = web.base_url + "/a.html", web.base_url + "/b.html"
        web.queue(Reply(body=page.encode(), content_type="text/html"), *[Reply(status=503)] * 3)
        ok, error, folder = _research(tmp_path, good, flaky, allow_private_urls=True)
        assert not ok and "HTTP 503" in error and "3 attempt(s)" in error, error
        ok, error, folder = _research(tmp_path, good, flaky, allow_private_urls=True)
        paths = [r.path for r in web.requests]
    assert ok, error
    assert paths == ["/a.html", "/b.html", "/b.html", "/b.html", "/b.html"]  # /a.html came from the cache
    out, doc = artifacts.load_research(folder)
    assert {f.source for f in out.findings} == {good, flaky}
    assert any("axolotl" in f.text and f.source == good for f in out.findings)
    assert any("newt" in f.text and f.source == flaky for f in out.findings)
    assert {s["url"]: s["title"] for s in doc["sources"]} == {good: "Salamander news", flaky: "Pond notes"}


def test_requests_to_one_host_are_spaced(tmp_path: Path) -> None:
    page = article_html("Salamander news", "The axolotl of the lake was seen again near the old pier.")
    with FakeApi(Reply(body=page.encode(), content_type="text/html")) as web:
        ok, error, _ = _research(tmp_path, web.base_url + "/1", web.base_url + "/2", allow_private_urls=True)
        times = [r.arrived for r in web.requests]
    assert ok, error
    assert times[1] - times[0] >= fetch.HOST_INTERVAL_S * 0.9


def test_wrong_content_type_and_oversized_bodies_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch, "MAX_FETCH_BYTES", 1000)
    with FakeApi(Reply(body=b"\x89PNG" + b"0" * 50, content_type="image/png")) as web:
        ok, error, _ = _research(tmp_path, web.base_url + "/cat.png", allow_private_urls=True)
        assert not ok and "content type image/png" in error, error
        web.queue(Reply(body=b"x" * 5000, content_type="text/plain"))
        ok, error, _ = _research(tmp_path, web.base_url + "/big.txt", allow_private_urls=True)
        assert not ok and "more than the 1000" in error, error


@pytest.mark.parametrize("which", ["websearch", "perplexity"])
def test_web_providers_ground_on_the_fetched_page_too(tmp_path: Path, which: str) -> None:
    page = article_html("Salamander news", "The axolotl of the lake was seen again near the old pier.")
    web_url = "https://web.example/lake"
    replies = {"websearch": {"results": [{"title": "Lake", "url": web_url, "score": 0.5,
                                          "content": "The lake holds salamanders all year round."}]},
               "perplexity": {"choices": [{"message": {"content": "The lake holds salamanders all year round [1]."}}],
                              "citations": [web_url], "usage": {"prompt_tokens": 10, "completion_tokens": 10}}}
    with FakeApi(Reply(body=page.encode(), content_type="text/html")) as site, FakeApi(Reply(body=replies[which])) as api:
        ctx = make_ctx(api, which, **({"api": "sonar"} if which == "perplexity" else {}))
        ctx.settings.research.provider = which  # type: ignore[assignment]
        ctx.settings.research.allow_private_urls = True
        folder = tmp_path / "ep"
        folder.mkdir()
        result = run_stage("research", folder, _episode(site.base_url + "/news"), ctx)
        site_url = site.base_url + "/news"
    assert result.ok, result.error
    out, doc = artifacts.load_research(folder)
    assert out.findings[0].source == site_url and "axolotl" in out.findings[0].text  # the operator's own first
    assert web_url in [f.source for f in out.findings]
    assert {s["name"] for s in doc["sources"]} == {site_url, web_url}


def test_the_connection_goes_to_the_address_that_was_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A name that answers a public address to the check and a private one afterwards (DNS rebinding)
    is fetched from the address checked: it is never asked again."""
    real_class, real_lookup = addresses.address_class, socket.getaddrinfo
    monkeypatch.setattr(addresses, "address_class", lambda ip: None if str(ip) == "127.0.0.1" else real_class(ip))
    asked: list[str] = []

    def lookup(host: object, port: object, *args: object, **kwargs: object) -> object:
        if host == "rebind.test":
            asked.append(host)
            address = "127.0.0.1" if len(asked) == 1 else "127.0.0.2"
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]
        return real_lookup(host, port, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    page = article_html("Salamander news", "The axolotl of the lake was seen again near the old pier.")
    with FakeApi(Reply(body=page.encode(), content_type="text/html")) as web:
        port = web.base_url.rsplit(":", 1)[1]
        inner = Listener("127.0.0.2", int(port))  # where a second lookup would lead, on the same port
        try:
            ok, error, _ = _research(tmp_path, f"http://rebind.test:{port}/news")
            hosts = [r.headers.get("host") for r in web.requests]
        finally:
            inner.close()
    assert ok, error
    assert asked == ["rebind.test"] and hosts == [f"rebind.test:{port}"] and inner.connections == 0
