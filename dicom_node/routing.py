"""Which studies are EUS and go to analysis.

Default rule (``Settings.route_*``): Modality in ``route_modalities`` (US) and either
BodyPartExamined in ``route_body_parts`` (STOMACH) or ``route_series_pattern`` found in
SeriesDescription. A study is routed when any of its instances matches.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dicom_node.header import InstanceHeader
from eusdx.config import Settings

__all__ = ["RoutingRule"]


@dataclass(frozen=True)
class RoutingRule:
    """The routing decision for one instance header."""

    modalities: frozenset[str]
    body_parts: frozenset[str]
    series_pattern: re.Pattern[str] | None

    @classmethod
    def from_settings(cls, settings: Settings) -> RoutingRule:
        pattern = settings.route_series_pattern
        return cls(
            modalities=frozenset(m.strip().upper() for m in settings.route_modalities),
            body_parts=frozenset(b.strip().upper() for b in settings.route_body_parts),
            series_pattern=re.compile(pattern) if pattern else None,
        )

    def matches(self, header: InstanceHeader) -> bool:
        """True when this instance makes its study an EUS study."""
        if (header.modality or "").strip().upper() not in self.modalities:
            return False
        if (header.body_part or "").strip().upper() in self.body_parts:
            return True
        description = header.series_description or ""
        return bool(self.series_pattern and self.series_pattern.search(description))
