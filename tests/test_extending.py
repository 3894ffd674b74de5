"""docs/extending.md stays true: every registry entry has its line there, and the names a study or
config accepts are exactly the registry's (a half-done addition fails here, not in a user's study)."""

from __future__ import annotations

import typing
from pathlib import Path

from vpsearch.config import SVGModelConfig
from vpsearch.models.backbones import BACKBONES
from vpsearch.reporting.figures import STUDY_FIGURES
from vpsearch.reporting.tables import STRATEGY_TABLES
from vpsearch.search.pruners import PRUNERS
from vpsearch.search.samplers import PROPOSERS
from vpsearch.search.spec import PRUNER_NAMES, PRUNER_OPTIONS, SAMPLER_OPTIONS, PrunerSpec, SamplerSpec

DOCS = Path(__file__).resolve().parent.parent / "docs"


def literal(model, field: str) -> set[str]:
    return set(typing.get_args(model.model_fields[field].annotation))


def test_every_registry_entry_has_its_line_in_the_docs():
    text = (DOCS / "extending.md").read_text() + (DOCS / "reports.md").read_text()
    registries = {"sampler": PROPOSERS, "pruner": PRUNERS, "backbone": BACKBONES, "figure": STUDY_FIGURES}
    missing = [f"{kind} {name}" for kind, reg in registries.items() for name in reg if f"`{name}`" not in text]
    assert missing == []
    tables = (DOCS / "reports.md").read_text()
    assert [s.csv for s in STRATEGY_TABLES.values() if f"`{s.csv}" not in tables] == []


def test_the_names_a_study_or_config_accepts_are_the_registries():
    assert literal(SamplerSpec, "name") == set(PROPOSERS) == set(SAMPLER_OPTIONS)
    assert literal(PrunerSpec, "name") == set(PRUNERS) == set(PRUNER_NAMES) == set(PRUNER_OPTIONS)
    assert literal(SVGModelConfig, "backbone") == set(BACKBONES)
