"""Reading Prometheus text exposition in tests, through prometheus-client's own parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


class Scrape:
    """One exposition: its families by name and every sample's value."""

    def __init__(self, text: str) -> None:
        self.families = {family.name: family for family in text_string_to_metric_families(text)}
        self.values = {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in self.families.values()
            for sample in family.samples
        }

    def value(self, name: str, **labels: str) -> float:
        """The sample `name` with exactly these labels; KeyError names what exists."""
        try:
            return self.values[(name, frozenset(labels.items()))]
        except KeyError:
            present = sorted(dict(k) for n, k in self.values if n == name) or "none"
            raise KeyError(f"no sample {name}{labels}; with that name: {present}") from None

    def labels(self, name: str) -> list[dict[str, str]]:
        """The label sets of every sample called `name`."""
        return [dict(key) for sample, key in self.values if sample == name]
