"""Settings rules that need the packages the settings configure: the `[[prices]]` entries must make a price
catalog, and `batch_api = true` needs a provider kind that has a batch API.

They live here, not in config.py, because config is the bottom layer every package imports (storage
included): config importing pricing or providers back would tie the layers into a knot. The CLI runs
`check_settings` right after loading (a bad entry stops `aistats serve` before anything starts) and
`open_gateway` runs it again for settings built any other way.
"""

from __future__ import annotations

from aistats_gateway.config import ConfigError, Settings
from aistats_gateway.pricing.catalog import PriceCatalog
from aistats_gateway.providers.kinds import BATCH_API_KINDS


def check_settings(settings: Settings) -> Settings:
    """`settings` when they can run; else ConfigError naming the entry and why."""
    if settings.prices:
        try:
            PriceCatalog.load(settings.prices)
        except ValueError as exc:
            raise ConfigError(f"invalid [[prices]] entry: {exc}") from exc
    for provider in settings.providers:
        if provider.batch_api and provider.kind not in BATCH_API_KINDS:
            raise ConfigError(f"provider '{provider.name}': batch_api = true needs kind "
                              + " or ".join(f"'{k}'" for k in sorted(BATCH_API_KINDS))
                              + f" (kind '{provider.kind}' has no batch API)")
    return settings
