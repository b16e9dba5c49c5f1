"""The one Prometheus text-format reader (engines' and gateways' /metrics pages), on prometheus-client's
own parser, never a regex.

Two uses, two tempers:
- `strict` (the agent: a load report rests on it): any malformed line fails the whole page, so a confused
  endpoint becomes a stale source rather than an idle-looking one;
- lenient (the load tester's sampler: it must keep going when one exporter prints something odd): a page
  that does not parse whole is read line by line and the lines that do not parse are skipped.
"""

from __future__ import annotations

from collections.abc import Collection

from prometheus_client.parser import text_string_to_metric_families

Sample = tuple[str, dict[str, str], float]


class PromTextError(ValueError):
    """The text does not parse as the Prometheus text format (strict reading)."""


def _read(text: str, wanted: Collection[str] | None) -> list[Sample]:
    out: list[Sample] = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if wanted is None or s.name in wanted:
                out.append((s.name, dict(s.labels), float(s.value)))
    return out


def read_samples(text: str, wanted: Collection[str] | None = None, *, strict: bool = True) -> list[Sample]:
    """[(sample name, labels, value)] of the wanted names (all when None), in page order."""
    try:
        return _read(text, wanted)
    except Exception as exc:  # the parser raises ValueError/IndexError/... on malformed lines
        if strict:
            raise PromTextError(f"unparseable Prometheus text: {type(exc).__name__}: {exc}") from None
    out: list[Sample] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            out += _read(line + "\n", wanted)
        except Exception:  # noqa: BLE001 - a bad line is skipped, by design of the lenient reading
            continue
    return out
