"""The dashboard's files as served and as shipped: headers (CSP, caching, ETag), no inline script,
every referenced asset and module import resolvable, nothing loaded from another origin, and the
files present in the built wheel."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

from aistats_gateway.ui.routes import STATIC_DIR, Bundle, content_security_policy
from tests.harness import Gateway

ROOT = Path(__file__).resolve().parents[2]
IMPORT = re.compile(r"""(?:import|from)\s*(?:[\w{}\s,*]+from\s*)?["'](\.[^"']+)["']""")


class Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self.urls: list[str] = []
        self.handlers: list[str] = []
        self.styles = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "script":
            self.scripts.append(a)
        if tag == "style" or "style" in a:
            self.styles += 1
        self.handlers += [k for k in a if k.startswith("on")]
        for key in ("src", "href"):
            value = a.get(key)
            if value and value.startswith("assets/"):
                self.urls.append(value)


def ui(gw: Gateway) -> str:
    return gw.base_url.removesuffix("/v1") + "/ui"


def test_page_headers_and_no_inline_script(gateway: Gateway) -> None:
    redirect = httpx.get(ui(gateway))
    assert redirect.status_code == 308 and redirect.headers["location"] == "ui/"
    root = httpx.get(gateway.base_url.removesuffix("/v1") + "/")
    assert root.status_code == 307 and root.headers["location"] == "ui/"
    page = httpx.get(ui(gateway) + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "style-src 'self'" in csp and "default-src 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp and "frame-ancestors 'none'" in csp
    assert f"ws://127.0.0.1:{gateway.port}" in csp
    assert page.headers["cache-control"] == "no-cache" and page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["x-frame-options"] == "DENY" and page.headers["referrer-policy"] == "no-referrer"
    again = httpx.get(ui(gateway) + "/", headers={"If-None-Match": page.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    head = httpx.head(ui(gateway) + "/")
    assert head.status_code == 200 and head.content == b"" and int(head.headers["content-length"]) == len(page.content)

    parsed = Page()
    parsed.feed(page.text)
    assert parsed.scripts and all(s.get("src") and s.get("type") == "module" for s in parsed.scripts)
    assert parsed.handlers == [] and parsed.styles == 0
    assert "__ASSET_VERSION__" not in page.text
    for url in parsed.urls:
        asset = httpx.get(f"{ui(gateway)}/{url}")
        assert asset.status_code == 200, url
        assert asset.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert "content-security-policy" not in asset.headers  # only the document needs it


def test_every_module_import_resolves_and_is_served_as_javascript(gateway: Gateway) -> None:
    bundle = Bundle()
    base = f"{ui(gateway)}/assets/{bundle.version}/"
    modules = [p for p in bundle.assets if p.endswith(".js")]
    assert "js/main.js" in modules and len(modules) >= 10
    imports = 0
    for rel in modules:
        text = bundle.assets[rel].body.decode()
        for target in IMPORT.findall(text):
            resolved = _normalize((Path(rel).parent / target).as_posix())
            imports += 1
            assert resolved in bundle.assets, f"{rel} imports {target}, which is not shipped"
        served = httpx.get(base + rel)
        assert served.status_code == 200 and served.headers["content-type"].startswith("text/javascript")
        assert served.content == bundle.assets[rel].body
    assert imports >= 25  # the parser did find the import statements


def _normalize(path: str) -> str:
    parts: list[str] = []
    for part in path.split("/"):
        if part == "..":
            parts.pop()
        elif part not in ("", "."):
            parts.append(part)
    return "/".join(parts)


def test_wrong_version_unknown_asset_and_traversal_are_404(gateway: Gateway) -> None:
    version = Bundle().version
    # Assets are looked up by exact name in memory, never on disk, so no path can reach another file.
    for path in ("assets/0000000000000000/app.css", f"assets/{version}/nope.js", f"assets/{version}/..%2Froutes.py",
                 f"assets/{version}/%2e%2e/routes.py", f"assets/{version}/index.html", "nope"):
        resp = httpx.get(f"{ui(gateway)}/{path}")
        assert resp.status_code == 404, path
        assert resp.json()["error"]["type"] == "not_found_error"


def test_nothing_is_loaded_from_another_origin_and_no_markup_is_injected() -> None:
    for path in STATIC_DIR.rglob("*"):
        if not path.is_file():
            continue
        text = path.read_text()
        external = [u for u in re.findall(r"https?://[^\s\"')]+", text) if not u.startswith("http://www.w3.org/")]
        assert external == [], f"{path.name} refers to {external}"
        if path.suffix == ".js":
            assert not re.search(r"\.(innerHTML|outerHTML)\s*=[^=]|insertAdjacentHTML|document\.write|eval\(",
                                 text), f"{path.name} builds markup from strings"


def test_csp_names_only_a_well_formed_host() -> None:
    assert "ws://gw.example:8787 wss://gw.example:8787" in content_security_policy("gw.example:8787")
    assert "ws://[::1]:80" in content_security_policy("[::1]:80")
    for bad in ("evil.com; script-src *", "a b", "", None):
        policy = content_security_policy(bad)
        assert "connect-src 'self';" in policy and "*" not in policy


def test_bundle_version_follows_the_content(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text('<script type="module" src="assets/__ASSET_VERSION__/a.js"></script>')
    (tmp_path / "a.js").write_text("export const a = 1;\n")
    first = Bundle(tmp_path)
    assert f"assets/{first.version}/a.js".encode() in first.index.body
    (tmp_path / "a.js").write_text("export const a = 2;\n")
    second = Bundle(tmp_path)
    assert second.version != first.version and second.index.etag != first.index.etag
    (tmp_path / "index.html").unlink()
    with pytest.raises(RuntimeError, match=r"index\.html is missing"):
        Bundle(tmp_path)


def test_the_wheel_ships_the_dashboard(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                          "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    wheel = next(tmp_path.glob("aistats_gateway-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"aistats_gateway/ui/static/{p.relative_to(STATIC_DIR).as_posix()}"
               for p in STATIC_DIR.rglob("*") if p.is_file()}
    assert shipped and shipped <= names, sorted(shipped - names)
    assert "aistats_gateway/ui/routes.py" in names
