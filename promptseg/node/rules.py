"""Which rule applies to a complete series: the first whose every given condition holds.

Conditions (see :class:`promptseg.node.config.Match`): the Modality is one of a list, the
Series Description and Body Part Examined match regular expressions (whole value,
ignoring case; a missing tag never matches a pattern), the calling AE title is one of a list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from .config import Match, Rule, compile_pattern


@dataclass(frozen=True)
class SeriesFacts:
    """The values rules look at."""

    modality: Optional[str]
    series_description: Optional[str]
    body_part: Optional[str]
    calling_ae: Optional[str]


def _pattern_holds(pattern: Optional[str], value: Optional[str]) -> bool:
    if pattern is None:
        return True
    if value is None:
        return False
    return compile_pattern(pattern).fullmatch(value.strip()) is not None


def matches(match: Match, facts: SeriesFacts) -> bool:
    """True if every condition given in ``match`` holds for ``facts``."""
    if match.modality is not None and (facts.modality or "").strip().upper() not in match.modality:
        return False
    if match.calling_ae is not None and (facts.calling_ae or "").strip() not in match.calling_ae:
        return False
    return _pattern_holds(match.series_description, facts.series_description) and _pattern_holds(match.body_part, facts.body_part)


def select_rule(rules: Sequence[Rule], facts: SeriesFacts) -> Optional[Rule]:
    """The first rule of ``rules`` that matches, or None."""
    return next((rule for rule in rules if matches(rule.match, facts)), None)


def describe(facts: SeriesFacts) -> str:
    """The facts in a quarantine reason (no patient data)."""
    parts = [f"modality {facts.modality or '?'}", f"calling AE {facts.calling_ae or '?'}"]
    if facts.body_part:
        parts.append(f"body part {facts.body_part!r}")
    if facts.series_description:
        parts.append(f"series description {facts.series_description!r}")
    return ", ".join(parts)
