"""Writers for the taxonomic authority dumps and the IUCN export, in their real formats.

- GBIF backbone: `authorities/gbif/Taxon.tsv` (the 23 Darwin Core columns of backbone.zip, tab-separated, no
  quoting) and `VernacularName.tsv`.
- ITIS: `authorities/itis/species_level_taxonomy_chains.csv` (BioCLIP's derived file: hierarchy strings, terminal
  name and vernaculars, then one column per rank).
- iNaturalist DwC-A: `authorities/inat/taxa.csv` and `VernacularNames-english.csv`.
- EOL: Dynamic Hierarchy `eol/dh/taxon.tab`, `eol/provider_ids.csv.gz`, `eol/vernacularnames.csv`.
- IUCN Red List: `iucn/assessments.csv` as the Red List website's search export writes it.

Coverage is deliberately uneven, as in reality: ITIS skips fungi and some species, GBIF lacks the fish hard case,
placeholder BIOSCAN names are in no authority.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterable
from pathlib import Path

from pipeline.samplekit.archives import atomic_path, deterministic_gzip
from pipeline.samplekit.sources import eol_page_id
from pipeline.samplekit.taxa import Taxon

GBIF_TAXON_COLUMNS = (
    "taxonID", "datasetID", "parentNameUsageID", "acceptedNameUsageID", "originalNameUsageID", "scientificName",
    "scientificNameAuthorship", "canonicalName", "genericName", "specificEpithet", "infraspecificEpithet", "taxonRank",
    "nameAccordingTo", "namePublishedIn", "taxonomicStatus", "nomenclaturalStatus", "taxonRemarks", "kingdom",
    "phylum", "class", "order", "family", "genus",
)
GBIF_VERNACULAR_COLUMNS = ("taxonID", "vernacularName", "language", "country", "countryCode", "sex", "lifeStage", "source")
GBIF_BACKBONE_DATASET = "d7dddbf4-2cf0-4f39-9b2a-bb099caae36c"
ITIS_RANK_COLUMNS = ("Kingdom", "Subkingdom", "Infrakingdom", "Phylum", "Subphylum", "Class", "Order", "Family", "Genus", "Species")
INAT_TAXA_COLUMNS = ("id", "taxonID", "identifier", "parentNameUsageID", "kingdom", "phylum", "class", "order", "family",
                     "genus", "specificEpithet", "infraspecificEpithet", "modified", "scientificName", "taxonRank", "references")
INAT_VERNACULAR_COLUMNS = ("id", "vernacularName", "language", "locality", "countryCode", "source", "lexicon", "contributor", "created")
DH_COLUMNS = ("taxonID", "source", "furtherInformationURL", "acceptedNameUsageID", "parentNameUsageID", "scientificName",
              "higherClassification", "taxonRank", "taxonomicStatus", "taxonRemarks", "datasetID", "canonicalName",
              "EOLid", "EOLidAnnotations", "Landmark")
EOL_PROVIDER_COLUMNS = ("node_id", "resource_pk", "resource_id", "page_id", "preferred_canonical_for_page")
EOL_VERNACULAR_COLUMNS = ("page_id", "canonical_form", "vernacular_string", "language_code", "resource_name",
                          "is_preferred_by_resource", "is_preferred_by_eol")
IUCN_COLUMNS = ("assessmentId", "internalTaxonId", "scientificName", "redlistCategory", "redlistCriteria", "yearPublished",
                "assessmentDate", "criteriaVersion", "language", "rationale", "habitat", "threats", "population",
                "populationTrend", "range", "useTrade", "systems", "conservationActions", "realm", "yearLastSeen",
                "possiblyExtinct", "possiblyExtinctInTheWild", "scopes")
THREATENED = ("Near Threatened", "Vulnerable", "Endangered", "Critically Endangered", "Extinct in the Wild")
RANKS = ("kingdom", "phylum", "class", "order", "family", "genus", "species")
# The DH's own names above the kingdom rank: its kingdoms are Metazoa and Chloroplastida, not Animalia and Plantae.
DH_KINGDOMS = {"Animalia": ("Metazoa", "Opisthokonta"), "Plantae": ("Chloroplastida", "Archaeplastida"),
               "Fungi": ("Fungi", "Opisthokonta")}


def fraction(*parts: object) -> float:
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:8], "big") / 2**64


def is_real_name(genus: str, epithet: str = "x") -> bool:
    """Placeholder names (BOLD interim names, 'sp. 55', lower-case genera) are in no authority."""
    return genus[:1].isupper() and genus.isalpha() and epithet.isalpha() and epithet.islower()


def lineage(taxon: Taxon) -> list[tuple[str, str]]:
    """(rank, name) from kingdom down to the most specific known rank; missing interior ranks are skipped."""
    pairs = [(rank, name) for rank, name in zip(RANKS[:6], taxon.ranks[:6]) if name]
    if taxon.ranks[6] and is_real_name(taxon.ranks[5], taxon.ranks[6]):
        pairs.append(("species", taxon.binomial))
    elif pairs and pairs[-1][0] == "genus" and not is_real_name(pairs[-1][1]):
        pairs.pop()
    return pairs


def write_table(path: Path, columns: Iterable[str], rows: Iterable[Iterable[str]], delimiter: str = ",") -> None:
    """A CSV (or, with tab, a GBIF-style unquoted TSV) written atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        if delimiter == "\t":
            f.writelines("\t".join(row) + "\n" for row in [columns, *rows])
        else:
            csv.writer(f, lineterminator="\n").writerows([columns, *rows])


def gbif_rows(taxa: list[Taxon]) -> tuple[list[list[str]], list[list[str]]]:
    ids: dict[tuple[str, ...], int] = {}
    taxon_rows, vernacular_rows = [], []
    for taxon in taxa:
        if taxon.hard_case == "fish-without-class":
            continue
        chain = lineage(taxon)
        for depth, (rank, name) in enumerate(chain):
            key = tuple(n for _, n in chain[: depth + 1])
            if key in ids:
                continue
            ids[key] = 1000 + len(ids)
            parent = str(ids[key[:-1]]) if depth else ""
            higher = dict(chain[: depth + 1])
            genus, _, epithet = name.partition(" ") if rank == "species" else ("", "", "")
            taxon_rows.append([str(ids[key]), GBIF_BACKBONE_DATASET, parent, "", "", name, "", name, genus, epithet, "",
                               rank, "", "", "accepted", "", "", *(higher.get(r, "") for r in RANKS[:6])])
            if rank == "species" and taxon.common_name:
                vernacular_rows.append([str(ids[key]), taxon.common_name, "en", "", "", "", "", "Catalogue of Life"])
        if taxon.hard_case == "synonym-felis-concolor":
            accepted = ids[tuple(n for _, n in chain)]
            taxon_rows.append([str(9_000_000 + len(taxon_rows)), GBIF_BACKBONE_DATASET, str(ids[tuple(n for _, n in chain[:6])]),
                               str(accepted), "", "Felis concolor Linnaeus, 1771", "Linnaeus, 1771", "Felis concolor",
                               "Felis", "concolor", "", "species", "", "", "synonym", "", "", "Animalia", "Chordata",
                               "Mammalia", "Carnivora", "Felidae", "Puma"])
    return taxon_rows, vernacular_rows


def itis_rows(taxa: list[Taxon]) -> list[list[str]]:
    rows, tsns = [], {}  # chain prefix -> TSN
    for taxon in taxa:
        chain = lineage(taxon)
        if taxon.ranks[0] == "Fungi" or not chain or chain[-1][0] != "species" or taxon.hard_case == "fish-without-class":
            continue
        if fraction("itis-coverage", taxon.binomial) < 0.2:
            continue  # ITIS does not know every species
        named = dict(chain)
        ranks = [("Kingdom", named["kingdom"])]
        if named["kingdom"] == "Animalia":
            ranks += [("Subkingdom", "Bilateria"), ("Infrakingdom", "Deuterostomia" if named.get("phylum") == "Chordata" else "Protostomia")]
        elif named["kingdom"] == "Plantae":
            ranks += [("Subkingdom", "Viridiplantae"), ("Infrakingdom", "Streptophyta")]
        if named.get("phylum"):
            ranks.append(("Phylum", named["phylum"]))
        if named.get("phylum") == "Chordata":
            ranks.append(("Subphylum", "Vertebrata"))
        ranks += [(r.capitalize(), named[r]) for r in ("class", "order", "family", "genus", "species") if r in named]
        # A TSN names a node of the tree, so homonyms (Morus the gannet, Morus the mulberry) get different ones.
        chain_tsns = [tsns.setdefault(tuple(n for _, n in ranks[: depth + 1]), 50_000 + len(tsns) * 7)
                      for depth in range(len(ranks))]
        by_rank = dict(ranks)
        rows.append(["-".join(map(str, chain_tsns)), "->".join(n for _, n in ranks), str(chain_tsns[-1]),
                     taxon.binomial, taxon.common_name, "English" if taxon.common_name else "",
                     "->".join(r for r, _ in ranks), *(by_rank.get(c, "") for c in ITIS_RANK_COLUMNS)])
    return rows


def inat_rows(taxa: list[Taxon]) -> tuple[list[list[str]], list[list[str]]]:
    ids: dict[tuple[str, ...], int] = {}
    taxa_rows, vernacular_rows = [], []
    for taxon in taxa:
        chain = lineage(taxon)
        for depth, (rank, name) in enumerate(chain):
            key = tuple(n for _, n in chain[: depth + 1])
            if key in ids:
                continue
            ids[key] = 48_000 + len(ids)
            url = f"https://www.inaturalist.org/taxa/{ids[key]}"
            parent = f"https://www.inaturalist.org/taxa/{ids[key[:-1]]}" if depth else ""
            higher = dict(chain[: depth + 1])
            epithet = name.split(" ", 1)[1] if rank == "species" else ""
            taxa_rows.append([str(ids[key]), url, url, parent, *(higher.get(r, "") for r in RANKS[:6]), epithet, "",
                              "2021-11-02T06:05:44Z", name, rank, ""])
            if rank == "species" and taxon.common_name:
                vernacular_rows.append([str(ids[key]), taxon.common_name, "en", "", "", "", "English", "", "2008-03-13T02:35:09Z"])
    return taxa_rows, vernacular_rows


def dh_chain(taxon: Taxon) -> list[tuple[str, str, str]]:
    """(DH rank, canonical name, scientific name) from Life down to the taxon, as the Dynamic Hierarchy nests it."""
    kingdom_name, above = DH_KINGDOMS.get(taxon.ranks[0], (taxon.ranks[0], ""))
    nodes = [("no rank", "Life", "Life"), ("no rank", "Cellular Organisms", "Cellular Organisms"), ("domain", "Eukaryota", "Eukaryota")]
    if above:
        nodes.append(("clade", above, above))
    nodes.append(("kingdom", kingdom_name, kingdom_name))
    for rank, name in lineage(taxon)[1:]:
        scientific, canonical = name, name
        if rank == "species" and taxon.dh_name:
            scientific = taxon.dh_name
            if taxon.hard_case.startswith("synonym"):
                canonical = " ".join(taxon.dh_name.split()[:2])  # the page still carries the old name
        nodes.append((rank, canonical, scientific))
        if taxon.hard_case == "fish-without-class" and rank == "phylum":
            nodes.append(("clade", "Vertebrata", "Vertebrata"))
    return nodes


def dh_rows(taxa: list[Taxon]) -> tuple[list[list[str]], list[list[str]]]:
    ids: dict[tuple[str, ...], str] = {}
    rows, providers = [], []
    for taxon in taxa:
        chain = dh_chain(taxon)
        for depth, (rank, canonical, scientific) in enumerate(chain):
            key = tuple(c for _, c, _ in chain[: depth + 1])
            if key in ids:
                continue
            ids[key] = f"EOL-{len(ids) + 1:012d}"
            leaf = depth == len(chain) - 1 and rank == "species"
            page = eol_page_id(taxon) if leaf else 46_000_000 + len(ids)
            higher = "|".join(c for _, c, _ in chain[:depth])
            rows.append([ids[key], f"trunk:{ids[key]}", "", "", ids[key[:-1]] if depth else "", scientific, higher, rank,
                         "accepted", "", "trunk", canonical, str(page), "", ""])
            if leaf:
                providers.append([str(len(providers) + 1), ids[key], "724", str(page), canonical])
    return rows, providers


def eol_vernacular_rows(taxa: list[Taxon]) -> list[list[str]]:
    rows = []
    for taxon in taxa:
        if not taxon.common_name or not taxon.ranks[6]:
            continue
        page = str(eol_page_id(taxon))
        string = taxon.common_name
        if taxon.hard_case == "html-authorship":
            string = "black-billed magpie &amp; kin."
        rows.append([page, taxon.binomial, string, "eng", "EOL Dynamic Hierarchy", "1", "1"])
        rows.append([page, taxon.binomial, string.lower(), "eng", "Wikipedia", "0", "0"])
    return rows


def iucn_rows(rare: list[Taxon], least_concern: list[Taxon]) -> list[list[str]]:
    """Threatened categories for the Rare Species candidates (assigned by the kit), a legacy and a misspelt one."""
    rows = []
    for i, taxon in enumerate(rare):
        category = THREATENED[int(fraction("iucn", taxon.binomial) * len(THREATENED))]
        if i == 0:
            category = "Lower Risk/near threatened"  # a legacy (pre-2001) category, = Near Threatened
        elif i == 1:
            category = "Vulnerabel"  # a typo a curation tool must report, not guess
        rows.append((taxon, category))
    rows += [(taxon, "Least Concern") for taxon in least_concern]
    return [[str(100_000 + i), str(200_000 + i), taxon.binomial, category, "", "2022", "2022-03-01 00:00:00 UTC", "3.1",
             "English", "", "", "", "", "Unknown", "", "", "Terrestrial", "", "", "", "false", "false", "Global"]
            for i, (taxon, category) in enumerate(rows)]


def write_authorities(out: Path, all_taxa: list[Taxon], eol_taxa: list[Taxon], inat_taxa: list[Taxon],
                      rare: list[Taxon]) -> dict[str, dict]:
    """Write every authority dump and the IUCN export; return what each holds (for EXPECTED.json)."""
    taxon_rows, gbif_vernaculars = gbif_rows(all_taxa)
    write_table(out / "authorities/gbif/Taxon.tsv", GBIF_TAXON_COLUMNS, taxon_rows, "\t")
    write_table(out / "authorities/gbif/VernacularName.tsv", GBIF_VERNACULAR_COLUMNS, gbif_vernaculars, "\t")
    chains = itis_rows(all_taxa)
    write_table(out / "authorities/itis/species_level_taxonomy_chains.csv",
                ("hierarchy_string_tsn", "hierarchy_string_names", "terminal_tsn", "terminal_scientific_name",
                 "terminal_vernacular", "terminal_vernacular_lang", "hierarchy_string_ranks", *ITIS_RANK_COLUMNS), chains)
    inat_taxa_rows, inat_vernaculars = inat_rows(inat_taxa)
    write_table(out / "authorities/inat/taxa.csv", INAT_TAXA_COLUMNS, inat_taxa_rows)
    write_table(out / "authorities/inat/VernacularNames-english.csv", INAT_VERNACULAR_COLUMNS, inat_vernaculars)
    dh, providers = dh_rows(eol_taxa)
    write_table(out / "eol/dh/taxon.tab", DH_COLUMNS, dh, "\t")
    with deterministic_gzip(out / "eol/provider_ids.csv.gz") as gz:
        gz.write((",".join(EOL_PROVIDER_COLUMNS) + "\n" + "".join(",".join(r) + "\n" for r in providers)).encode())
    eol_vernaculars = eol_vernacular_rows(eol_taxa)
    write_table(out / "eol/vernacularnames.csv", EOL_VERNACULAR_COLUMNS, eol_vernaculars)
    assessments = iucn_rows(rare, inat_taxa[: max(2, len(inat_taxa) // 4)])
    write_table(out / "iucn/assessments.csv", IUCN_COLUMNS, assessments)
    return {"gbif_taxa": len(taxon_rows), "gbif_vernaculars": len(gbif_vernaculars), "itis_chains": len(chains),
            "inat_taxa": len(inat_taxa_rows), "inat_vernaculars": len(inat_vernaculars), "eol_dh_nodes": len(dh),
            "eol_provider_ids": len(providers), "eol_vernaculars": len(eol_vernaculars), "iucn_assessments": len(assessments)}
