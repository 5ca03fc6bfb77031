"""What every command needs first: the settings (read once) and logging configured from them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from eusdx.config import Settings, load_settings
from eusdx.logs import configure_logging

__all__ = ["settings_from"]


def settings_from(ctx: typer.Context, **overrides: Any) -> Settings:
    """Load the settings named by the root ``--config`` option and set up logging."""
    obj = ctx.find_root().obj or {}
    settings: Settings | None = obj.get("settings")
    if settings is None or overrides:
        config: Path | None = obj.get("config")
        settings = load_settings(config, **overrides)
    configure_logging(settings.log_level, settings.log_format)
    return settings
