"""Regenerate the sample kit's real-taxon pools from the reference data in ../shared/data.

    python data_manifests/sample_kit/derive_taxa.py ../shared/data

Writes, beside this file:
- inat21_taxa.csv: real iNat21 categories (real category ids) with their real seven ranks, found by walking the
  iNat taxon tree in inat/pyinaturalist-convert/taxonomy.csv for the binomials of the iNat21 label list, plus the
  seven categories of the TFDS iNat21 JSON samples; common names from BioCLIP's iNat21 mapping (the JSON's own
  where the sample has one). Species without a common name are left out.
- bioscan_labels.csv: every distinct (order, family, subfamily, genus, species) label of the real BIOSCAN rows in
  bioscan/small_dataset_validation_metadata.tsv, with how often it occurs there.
- eol_taxa.csv: the 400 Rare Species (real EOL page ids and content ids, seven ranks, common names) from
  bioclip/data/annotation/rare_species/metadata.csv.
"""

import collections
import csv
import json
import sys
from pathlib import Path

HERE = Path(__file__).parent
RANKS = ("kingdom", "phylum", "class", "order", "family", "genus")
SUPERCATEGORY_BY_CLASS = {
    "Amphibia": "Amphibians", "Arachnida": "Arachnids", "Aves": "Birds", "Insecta": "Insects",
    "Mammalia": "Mammals", "Actinopterygii": "Ray-finned Fishes", "Reptilia": "Reptiles",
}
SUPERCATEGORY_BY_KINGDOM = {"Fungi": "Fungi", "Plantae": "Plants"}


def supercategory(kingdom: str, phylum: str, cls: str) -> str:
    if cls in SUPERCATEGORY_BY_CLASS:
        return SUPERCATEGORY_BY_CLASS[cls]
    if phylum == "Mollusca":
        return "Mollusks"
    return SUPERCATEGORY_BY_KINGDOM.get(kingdom, "Animalia")


def inat21_rows(shared: Path) -> list[dict]:
    tree = {r["id"]: r for r in csv.DictReader(open(shared / "inat/pyinaturalist-convert/taxonomy.csv"))}
    labels = {r["scientific_name"]: r for r in csv.DictReader(open(shared / "inat21/inat21_id_species_bioclip_common_name.csv"))}
    rows = {}
    for node in tree.values():
        if node["rank"] != "species" or node["name"] not in labels:
            continue
        chain, cursor = {}, node
        while cursor:
            chain[cursor["rank"]] = cursor["name"]
            cursor = tree.get(cursor["parent_id"])
        label = labels[node["name"]]
        if not all(chain.get(rank) for rank in RANKS) or not label["bioclip_common_name"]:
            continue
        category_id = int(label["category_id"])
        rows[category_id] = {"category_id": category_id, "name": node["name"], "common_name": label["bioclip_common_name"],
                             **{rank: chain[rank] for rank in RANKS}, "specific_epithet": node["name"].split(" ", 1)[1]}
    for split in ("train", "train_mini", "val"):
        for cat in json.load(open(shared / f"inat21/tfds_dummy_{split}.json"))["categories"]:
            category_id = int(cat["image_dir_name"].split("_", 1)[0])
            rows[category_id] = {"category_id": category_id, "name": cat["name"], "common_name": cat["common_name"],
                                 **{rank: cat[rank] for rank in RANKS}, "specific_epithet": cat["specific_epithet"]}
    for row in rows.values():
        row["supercategory"] = supercategory(row["kingdom"], row["phylum"], row["class"])
    return [rows[k] for k in sorted(rows)]


def bioscan_rows(shared: Path) -> list[dict]:
    with open(shared / "bioscan/small_dataset_validation_metadata.tsv", newline="") as f:
        counts = collections.Counter(
            (r["order"], r["family"], r["subfamily"], r["genus"], r["species"]) for r in csv.DictReader(f, delimiter="\t"))
    return [{"order": o, "family": fa, "subfamily": sf, "genus": g, "species": s, "rows": n}
            for (o, fa, sf, g, s), n in sorted(counts.items())]


def eol_rows(shared: Path) -> list[dict]:
    species: dict[str, dict] = {}
    with open(shared / "bioclip/data/annotation/rare_species/metadata.csv", newline="") as f:
        for r in csv.DictReader(f):
            content_id, page_id = Path(r["filepath"]).name.split("_")[:2]
            row = species.setdefault(r["class"], {
                "page_id": int(page_id), "kingdom": r["kingdom"], "phylum": r["phylum"], "class": r["cls"],
                "order": r["order"], "family": r["family"], "genus": r["genus"], "specific_epithet": r["species"],
                "common_name": r["common_name"], "content_ids": []})
            row["content_ids"].append(content_id)
    for row in species.values():
        row["content_ids"] = ";".join(row["content_ids"])
    return sorted(species.values(), key=lambda r: r["page_id"])


def write(name: str, rows: list[dict]) -> None:
    with open(HERE / name, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    print(f"{name}: {len(rows)} rows")


if __name__ == "__main__":
    shared_data = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data")
    write("inat21_taxa.csv", inat21_rows(shared_data))
    write("bioscan_labels.csv", bioscan_rows(shared_data))
    write("eol_taxa.csv", eol_rows(shared_data))
