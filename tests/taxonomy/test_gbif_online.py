"""The pygbif fallback on GBIF's recorded answers (pygbif's cassettes) replayed at requests.get: never the network."""

import json
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
import requests

from pipeline.cli import main
from taxonomy.authorities.schema import create_tables
from taxonomy.gbif_online import Answer, GbifOnline, Query, online_decision, online_query, parse_answer
from taxonomy.profiles import get_profile
from taxonomy.records import Match, Outcome, SourceLabel, Unresolved, UnresolvedReason
from taxonomy.resolve import resolve_labels

yaml = pytest.importorskip("yaml")
SUNFLOWER = ("Plantae", "Tracheophyta", "Magnoliopsida", "Asterales", "Asteraceae", "Helianthus", "annuus")
HELIANTHUS = SourceLabel("inat21", "inat21:1", SUNFLOWER, "Helianthus annuus", common_name="common sunflower")
ASO = SourceLabel("inat21", "inat21:2", ("", "", "", "", "", "Aso", ""), "Aso")


@pytest.fixture(scope="module")
def cassettes(shared_data: Path) -> dict[str, dict]:
    """Scientific name -> the recorded interaction (request uri, response status, headers and body)."""
    found = {}
    for name in ("test_name_backbone.yaml", "test_name_backbone_multiple_matches.yaml"):
        document = yaml.safe_load((shared_data / "gbif/pygbif_cassettes" / name).read_text())
        for interaction in document["interactions"]:
            query = requests.utils.urlparse(interaction["request"]["uri"]).query
            found[dict(p.split("=", 1) for p in query.split("&"))["name"].replace("+", " ")] = interaction
    return found


class FakeGbif:
    """Replaces requests.get as pygbif calls it: answers from the cassettes, recording every call."""

    def __init__(self, cassettes: dict[str, dict]) -> None:
        self.cassettes, self.calls, self.fail_with = cassettes, [], []

    def __call__(self, url, params=None, headers=None, **kwargs) -> requests.Response:
        self.calls.append((url, {k: v for k, v in (params or {}).items() if v is not None}))
        response = requests.Response()
        response.url = url
        if self.fail_with:  # a status, or (status, headers)
            failure = self.fail_with.pop(0)
            status, headers = failure if isinstance(failure, tuple) else (failure, {})
            response.status_code, response._content = status, b"{}"
            response.headers.update(headers)
            return response
        recorded = self.cassettes[params["scientificName"]]["response"]
        response.status_code = recorded["status"]["code"]
        response.headers.update({k: v[0] for k, v in recorded["headers"].items()})
        response._content = recorded["body"]["string"].encode()
        return response


@pytest.fixture()
def gbif(cassettes, monkeypatch: pytest.MonkeyPatch) -> FakeGbif:
    fake = FakeGbif(cassettes)
    monkeypatch.setattr(requests, "get", fake)
    return fake


def empty_db() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    create_tables(con)
    return con


def test_recorded_answers_parse(cassettes) -> None:
    body = json.loads(cassettes["Helianthus annuus"]["response"]["body"]["string"])
    assert parse_answer(body) == Answer("EXACT", SUNFLOWER, False, "9206251")
    aso = parse_answer(json.loads(cassettes["Aso"]["response"]["body"]["string"]))
    assert aso.match_type == "NONE" and aso.ranks == ("",) * 7


def test_api_v2_answers_parse() -> None:
    v2 = {"usage": {"key": "6QWZ", "name": "Procryptocerus", "canonicalName": "Procryptocerus", "rank": "GENUS"},
          "classification": [{"name": "Animalia", "rank": "KINGDOM"}, {"name": "Arthropoda", "rank": "PHYLUM"},
                             {"name": "Insecta", "rank": "CLASS"}, {"name": "Hymenoptera", "rank": "ORDER"},
                             {"name": "Formicidae", "rank": "FAMILY"}, {"name": "Myrmicinae", "rank": "SUBFAMILY"},
                             {"name": "Procryptocerus", "rank": "GENUS"}],
          "diagnostics": {"matchType": "HIGHERRANK", "confidence": 95}, "synonym": False}
    ants = ("Animalia", "Arthropoda", "Insecta", "Hymenoptera", "Formicidae", "Procryptocerus", "")
    assert parse_answer(v2) == Answer("HIGHERRANK", ants, False, "6QWZ")
    assert parse_answer({"diagnostics": {"matchType": "NONE"}}).match_type == "NONE"
    assert parse_answer({}).match_type == "NONE"


def test_labels_no_dump_resolves_are_matched_online(gbif: FakeGbif, tmp_path: Path) -> None:
    profile = get_profile("gbif-first")  # takes no source as given, so iNat21 labels are looked up
    online = GbifOnline(profile, tmp_path / "cache", rate=1000)
    result = resolve_labels(empty_db(), [HELIANTHUS, ASO], profile, fallback=online)
    [sunflower] = result.taxa
    assert sunflower.ranks == SUNFLOWER and sunflower.authorities == ("gbif_online",) * 7
    assert sunflower.matches == ("exact",) * 7 and sunflower.status == "resolved"
    assert sunflower.common_name == "common sunflower"  # the label's own, by gbif-first's precedence
    mappings = {m.key: m for m in result.mappings}
    assert (mappings["inat21:1"].match, mappings["inat21:1"].reason) == ("exact", "gbif_online: EXACT 9206251")
    [aso] = result.unresolved
    assert aso.reason == UnresolvedReason.NO_MATCH and "gbif_online: NONE" in aso.detail
    hints = dict(zip(("kingdom", "phylum", "class", "order", "family", "genus"), SUNFLOWER))
    assert [params for _, params in gbif.calls] == [{"scientificName": "Helianthus annuus", **hints},
                                                    {"scientificName": "Aso"}]
    assert all(url.endswith("/species/match") for url, _ in gbif.calls)
    assert (online.stats.fetched, online.stats.cached, online.stats.errors) == (2, 0, 0)

    gbif.calls.clear()  # a second run asks GBIF nothing: every answer comes from the cache
    again = GbifOnline(profile, tmp_path / "cache", rate=1000)
    assert resolve_labels(empty_db(), [HELIANTHUS, ASO], profile, fallback=again) == result
    assert gbif.calls == [] and (again.stats.cached, again.stats.fetched) == (2, 0)


def test_labels_the_dumps_resolve_or_the_profile_takes_as_given_are_not_asked(gbif: FakeGbif, tmp_path: Path) -> None:
    online = GbifOnline(get_profile("bioclip-v1"), tmp_path, rate=1000)
    result = resolve_labels(empty_db(), [HELIANTHUS], get_profile("bioclip-v1"), fallback=online)
    assert result.taxa[0].authorities == ("inat21",) * 7 and gbif.calls == [] and online.stats.labels == 0


def test_throttled_requests_are_retried_and_failures_leave_the_decision(gbif: FakeGbif, tmp_path: Path) -> None:
    profile, slept = get_profile("gbif-first"), []
    gbif.fail_with = [503, (429, {"Retry-After": "7"})]
    online = GbifOnline(profile, tmp_path, rate=1000, sleep=slept.append)
    [taxon] = resolve_labels(empty_db(), [HELIANTHUS], profile, fallback=online).taxa
    assert taxon.authorities[0] == "gbif_online" and len(gbif.calls) == 3
    assert len(slept) == 2 and 0.5 <= slept[0] <= 1 and slept[1] == 7  # backoff, then the server's Retry-After
    assert online.limiter.rate < 1000  # throttled by the 503 and the 429
    gbif.fail_with, gbif.calls = [500], []
    failing = GbifOnline(profile, tmp_path / "other", rate=1000, sleep=slept.append)
    result = resolve_labels(empty_db(), [HELIANTHUS], profile, fallback=failing)
    assert len(gbif.calls) == 1 and failing.stats.errors == 1 and not list((tmp_path / "other").rglob("*.json"))
    assert result.taxa[0].matches[6] == "given" and "gbif_online: HTTP 500" in result.mappings[0].reason


def test_what_each_match_type_makes_of_a_bioscan_label() -> None:
    profile = get_profile("bioclip-v1")
    label = SourceLabel("bioscan", "bioscan:Hymenoptera|Formicidae|Procryptocerus|Procryptocerus nov",
                        ("", "", "", "Hymenoptera", "Formicidae", "Procryptocerus", ""), "Procryptocerus nov")
    ants = ("Animalia", "Arthropoda", "Insecta", "Hymenoptera", "Formicidae", "Procryptocerus")
    given = Outcome((*ants, "nov"), ("bioscan",) * 3 + ("gbif",) * 3 + ("bioscan",),
                    ("given",) * 3 + ("exact",) * 3 + ("given",), "", (), ())
    query = online_query(label, given, profile)
    assert query == Query("Procryptocerus nov", tuple(zip(("kingdom", "phylum", "class", "order", "family", "genus"),
                                                              ants)))
    higher = online_decision(label, given, query, Answer("HIGHERRANK", (*ants, ""), False, "1"), profile)
    assert higher.ranks == (*ants, "") and higher.authorities[5] == "gbif_online" and higher.matches[5] == "exact"
    fuzzy = online_decision(label, given, query, Answer("FUZZY", (*ants, "nova"), False, "2"), profile)
    assert fuzzy.ranks[6] == "nova" and set(fuzzy.matches) == {Match.FUZZY}
    none = online_decision(label, given, query, Answer("NONE", ("",) * 7, False, ""), profile)
    assert none.ranks == (*ants, "") and none.authorities[5] == "gbif" and "confirmed" in none.note
    plant = ("Plantae", "Tracheophyta", "Liliopsida", "Asparagales", "Orchidaceae", "Procryptocerus", "nov")
    homonym = online_decision(label, given, query, Answer("EXACT", plant, False, "3"), profile)
    assert homonym.ranks == (*ants, "") and "homonym" in homonym.note
    unconfirmed = Outcome((*ants, "nov"), ("bioscan",) * 7, ("given",) * 7, "", (), ())
    gone = online_decision(label, unconfirmed, query, Answer("NONE", ("",) * 7, False, ""), profile)
    assert isinstance(gone, Unresolved) and gone.reason == UnresolvedReason.NO_MATCH


def test_online_through_the_cli(kit: Path, gbif: FakeGbif, tmp_path: Path) -> None:
    categories = [{"id": 1, "name": "Helianthus annuus", "common_name": "common sunflower",
                   **dict(zip(("kingdom", "phylum", "class", "order", "family", "genus", "specific_epithet"),
                              SUNFLOWER))},
                  {"id": 2, "name": "Aso", "genus": "Aso"}]
    (tmp_path / "train.json").write_text(json.dumps({"categories": categories, "images": [], "annotations": []}))
    argv = ["taxonomy", str(tmp_path), str(tmp_path / "out"), "--profile", "gbif-first", "--online", "--inat21-json",
            str(tmp_path / "train.json"), "--authorities", str(kit), "--gbif-rate", "50"]
    assert main(argv) == 0 and len(gbif.calls) == 2
    summary = json.loads((tmp_path / "out/summary.json").read_text())
    assert summary["online"] == {"labels": 2, "queries": 2, "cached": 0, "fetched": 2, "errors": 0,
                                 "match_types": {"EXACT": 1, "NONE": 1}}
    taxa = pq.read_table(tmp_path / "out/taxa.parquet").to_pylist()
    assert [t["species_authority"] for t in taxa] == ["gbif_online"]
    assert list((tmp_path / "out/gbif_cache").rglob("*.json"))
    gbif.calls.clear()
    assert main(argv) == 0 and gbif.calls == []
