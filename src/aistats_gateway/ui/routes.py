"""The dashboard's HTTP side: `/ui/` (the single page) and `/ui/assets/<version>/…` (its static files).

Owns serving the files shipped in `ui/static/` (package data: plain HTML, CSS and ES modules, no build
step, no CDN) with their caching and security headers. It never reads a key or any workspace data: the
page calls the public `/v1` API itself with the key the user typed in.

Caching: every asset lives under a version segment, a hash of all shipped files computed at start, so
assets are `immutable` for a year and a new release changes every URL at once (relative ES module
imports inherit the segment). The page itself is `no-cache` with an ETag, so browsers revalidate it
and pick up a new version on the next load. An asset asked for under another version answers 404.

Security: a strict Content-Security-Policy (scripts and styles only from this origin, no inline script
or style, no framing, no plugins, no form posts, WebSocket connections only to this host), `nosniff`,
no referrer, and `X-Frame-Options: DENY` for old browsers.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from aistats_gateway.errors import NotFound

STATIC_DIR = Path(__file__).parent / "static"
VERSION_MARK = "__ASSET_VERSION__"
MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".html": "text/html; charset=utf-8",
}
_HOST = re.compile(r"^[A-Za-z0-9.\-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")
COMMON_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


def content_security_policy(host: str | None) -> str:
    """The page's CSP. `connect-src 'self'` also names ws(s):// of the request's host (when it is a
    plain host[:port]) for browsers whose 'self' does not yet cover WebSocket schemes."""
    connect = "'self'"
    if host and _HOST.match(host):
        connect += f" ws://{host} wss://{host}"
    return "; ".join((
        "default-src 'none'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:",
        "font-src 'self'", f"connect-src {connect}", "manifest-src 'self'", "base-uri 'none'",
        "form-action 'none'", "frame-ancestors 'none'", "object-src 'none'",
    ))


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


class Bundle:
    """Every shipped file, read once at start (the whole dashboard is a few dozen kilobytes)."""

    def __init__(self, root: Path = STATIC_DIR) -> None:
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in MEDIA_TYPES)
        digest = hashlib.sha256()
        raw: dict[str, bytes] = {}
        for path in files:
            rel = path.relative_to(root).as_posix()
            raw[rel] = path.read_bytes()
            digest.update(rel.encode() + b"\0" + raw[rel] + b"\0")
        self.version = digest.hexdigest()[:16]
        if "index.html" not in raw:
            raise RuntimeError(f"the dashboard's index.html is missing from {root} (broken install?)")
        self.assets: dict[str, Asset] = {}
        for rel, body in raw.items():
            if rel == "index.html":
                body = body.replace(VERSION_MARK.encode(), self.version.encode())
            etag = '"' + hashlib.sha256(body).hexdigest()[:24] + '"'
            self.assets[rel] = Asset(body, MEDIA_TYPES[Path(rel).suffix], etag)
        self.index = self.assets.pop("index.html")


def build_router(bundle: Bundle | None = None) -> APIRouter:
    """The `/ui` routes over `bundle` (default: the files shipped in the package)."""
    files = bundle or Bundle()
    router = APIRouter(tags=["dashboard"], include_in_schema=False)

    def respond(request: Request, asset: Asset, cache: str) -> Response:
        headers = {**COMMON_HEADERS, "Cache-Control": cache, "ETag": asset.etag}
        if asset is files.index:
            headers["Content-Security-Policy"] = content_security_policy(request.headers.get("host"))
        if request.headers.get("if-none-match") == asset.etag:
            return Response(status_code=304, headers=headers)
        body = b"" if request.method == "HEAD" else asset.body
        response = Response(body, media_type=asset.media_type, headers=headers)
        if request.method == "HEAD":
            response.headers["content-length"] = str(len(asset.body))
        return response

    @router.api_route("/", methods=["GET", "HEAD"])
    async def root_redirect() -> Response:
        # A browser pointed at the gateway itself lands on the dashboard (API clients never ask for /).
        return RedirectResponse("ui/", status_code=307)

    @router.api_route("/ui", methods=["GET", "HEAD"])
    async def ui_redirect() -> Response:
        # Relative, so the page also works behind a proxy that mounts the gateway under a path prefix.
        return RedirectResponse("ui/", status_code=308)

    @router.api_route("/ui/", methods=["GET", "HEAD"])
    async def ui_index(request: Request) -> Response:
        return respond(request, files.index, "no-cache")

    @router.api_route("/ui/assets/{version}/{path:path}", methods=["GET", "HEAD"])
    async def ui_asset(request: Request, version: str, path: str) -> Response:
        asset = files.assets.get(path) if version == files.version else None
        if asset is None:
            raise NotFound(f"No dashboard asset '{path}' in version '{version}' (current: {files.version}); "
                           "reload the page.", code="asset_not_found", param="path")
        return respond(request, asset, "public, max-age=31536000, immutable")

    return router
