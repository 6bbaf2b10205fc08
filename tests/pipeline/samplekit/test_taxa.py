"""The kit's taxon pools are the real reference data, re-derivable from ../shared/data."""

import importlib.util
from pathlib import Path

import data_manifests
from pipeline.samplekit.taxa import bioscan_pool, hard_case_taxa, inat21_pool, rare_pool


def load_derivation():
    spec = importlib.util.spec_from_file_location("derive_taxa", data_manifests.path("sample_kit/derive_taxa.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_checked_in_pools_equal_a_fresh_derivation(shared_data: Path) -> None:
    derive = load_derivation()
    for name, rows in (("inat21_taxa.csv", derive.inat21_rows(shared_data)),
                       ("bioscan_labels.csv", derive.bioscan_rows(shared_data)),
                       ("eol_taxa.csv", derive.eol_rows(shared_data))):
        checked_in = data_manifests.path(f"sample_kit/{name}").read_text(encoding="utf-8").splitlines()
        assert len(checked_in) == len(rows) + 1, name


def test_pools_hold_real_taxa_with_seven_ranks() -> None:
    inat = inat21_pool()
    assert len(inat) > 100 and all(all(t.ranks) and t.common_name for t in inat)
    assert {t.ranks[0] for t in inat} == {"Animalia", "Plantae", "Fungi"}
    rare = rare_pool()
    assert len(rare) == 400 and all(len(t.eol_content_ids) >= 21 for t in rare)
    bioscan = bioscan_pool()
    assert any(not t.ranks[5] for t in bioscan), "BIOSCAN has family-only labels"
    assert all(t.ranks[:3] == ("Animalia", "Arthropoda", "Insecta") for t in bioscan)


def test_hard_cases_are_complete_and_consistent() -> None:
    taxa = hard_case_taxa()
    kinds = {t.hard_case for t in taxa}
    assert {"homonym-morus-bird", "homonym-morus-plant", "synonym-felis-concolor", "fish-without-class",
            "bioscan-family-only", "misspelt-epithet", "html-authorship"} <= kinds
    assert all(len(t.ranks) == 7 for t in taxa)
    assert all(t.eol_page_id or t.bioscan for t in taxa)
