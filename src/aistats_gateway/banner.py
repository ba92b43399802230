"""What a starting gateway tells the person who started it: where the API and the dashboard are, and
a generated API key, boxed so it stands out of the migration and server logs around it.

Plain functions of the settings, so tests can read the text without starting anything. The URLs are
ones a browser on this machine can open (a wildcard bind address is shown as 127.0.0.1).
"""

from __future__ import annotations

from aistats_gateway.config import Settings

WILDCARDS = ("", "0.0.0.0", "::", "[::]")


def base(settings: Settings) -> str:
    """`http://host:port` with a host a local browser can open."""
    host = "127.0.0.1" if settings.host in WILDCARDS else settings.host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


def api_url(settings: Settings) -> str:
    return f"{base(settings)}/v1"


def dashboard_url(settings: Settings) -> str:
    return f"{base(settings)}/ui/"


def key_box(key: str) -> str:
    """A generated key, framed, with what to do with it: it is shown this once only."""
    lines = ["API key for the default workspace (generated; shown only this once, only its hash is stored):",
             "", f"    {key}", "",
             "Keep it (the dashboard and `aistats batch` ask for it), or set AISTATS_API_KEY to choose your own."]
    width = max(len(line) for line in lines)
    return "\n".join(["", "╔" + "═" * (width + 2) + "╗", *(f"║ {line:<{width}} ║" for line in lines),
                      "╚" + "═" * (width + 2) + "╝"])


def ready(settings: Settings, generated_key: str | None) -> str:
    """Printed once the gateway accepts connections: the key box (if any), then where to go."""
    text = (f"ready: API {api_url(settings)} · dashboard {dashboard_url(settings)} · "
            f"health {api_url(settings)}/health")
    return (key_box(generated_key) + "\n" if generated_key else "") + text
