"""`make demo`: the product's stages on the bundled sample kit, on CPU, in minutes.

    python -m pipeline.demo --out demo-out --port 8765

Builds a sample kit in OUT/kit; serves its EOL images on 127.0.0.1:PORT with faults switched on (429 with
Retry-After, 503, latency, besides the kit's own failing URLs) and downloads them politely with `tol download`;
then reads all three sources and processes every image, and prints what was kept and why the rest was dropped,
per source and per reason, next to where everything is; then resolves every label with `tol taxonomy` into
OUT/taxonomy; then curates a small Rare Species set with `tol rare-species` into OUT/rare_species; then runs
`tol build` (its exclusions honoured) into OUT/shards and OUT/manifests and queries the manifests; then trains
the tiny-cpu model on the shards with `tol train` (OUT/runs/demo), evaluates it zero-shot and few-shot on the
Rare Species set, whose species the build excluded from training, with `tol eval`, printing its accuracy next to
chance, and names one image's species with `tol predict`; and ends with the build's data card, `tol report`
(OUT/report/DATA_CARD.md).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import shutil
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

import apache_beam as beam

from pipeline import build, cli, download
from pipeline.argtypes import int_at_least, non_negative_int, port
from pipeline.front import FrontHalf, SourcePaths
from pipeline.query import query
from pipeline.samplekit.kit import MIN_SCALE, KitConfig, build_kit
from pipeline.serve_kit import FaultSpec, KitServer
from rare_species import curate
from taxonomy.build import TaxonomyConfig, build_taxonomy, format_summary

DEMO_FAULTS = "429=0.05:1,503=0.05,latency=0.05:0.2"
# The kit server is ours, on loopback: a higher rate than the polite default keeps the demo short.
DOWNLOAD_FLAGS = ("--rate", "40", "--burst", "4", "--read-timeout", "2", "--connect-timeout", "2", "--max-attempts",
                  "3", "--backoff-base", "0.2", "--contact", "demo@localhost")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipeline.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("demo-out"), help="where the demo writes (default demo-out)")
    parser.add_argument("--port", type=port, default=8765, help="loopback port for the kit's EOL images (default 8765)")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="sample-kit seed (default 0)")
    # 2,000 records give ~170 taxa: enough relatives of the held-out Rare Species for zero-shot to work.
    parser.add_argument("--scale", type=int_at_least(MIN_SCALE), default=2000,
                        help="sample-kit records (default 2000)")
    parser.add_argument("--epochs", type=int_at_least(1), default=8, help="training epochs (default 8)")
    return parser.parse_args(argv)


def ensure_port_free(number: int) -> None:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", number))
        except OSError:
            sys.exit(f"port {number} on 127.0.0.1 is busy; run 'make demo DEMO_PORT=<free port>'")


def download_eol(kit: Path, downloads: Path, port_number: int, seed: int, log_path: Path) -> None:
    """Serve the kit's EOL images with faults on and fetch them with `tol download` (resumes if run before)."""
    log_path.unlink(missing_ok=True)
    with KitServer(kit / "eol/images", port=port_number, faults=FaultSpec.parse(DEMO_FAULTS), seed=seed,
                   log_path=log_path, hang_seconds=4):
        code = download.run([str(kit / "eol/media_manifest.tgz"), str(downloads), *DOWNLOAD_FLAGS])
    if code:
        sys.exit(f"tol download failed with exit code {code}")


def front_half_counts(kit: Path, downloads: Path, out: Path) -> dict[str, dict[str, int]]:
    """Read all three sources and process every image; count kept samples and failures per source and reason."""
    counts_path = out / "front-half-counts.jsonl"
    with beam.Pipeline(runner="FnApiRunner") as p:
        outputs = p | FrontHalf(SourcePaths.from_kit(kit, downloads))
        kept = outputs["samples"] | "Kept" >> beam.Map(lambda sample: (sample[0].source, "kept"))
        dropped = outputs["failures"] | "Dropped" >> beam.Map(lambda f: (f.source, f"{f.stage}:{f.reason}"))
        _ = ((kept, dropped)
             | beam.Flatten()
             | beam.combiners.Count.PerElement()  # ((source, outcome), n)
             | beam.Map(lambda item: json.dumps([*item[0], item[1]]))
             | beam.io.WriteToText(str(counts_path), shard_name_template=""))
    counts: dict[str, dict[str, int]] = {}
    for line in counts_path.read_text().splitlines():
        source, outcome, n = json.loads(line)
        counts.setdefault(source, {})[outcome] = n
    return counts


def print_summary(out: Path, document: dict, counts: dict[str, dict[str, int]], log_path: Path) -> None:
    kit_counts = document["counts"]
    print(f"\nSample kit in {out / 'kit'} (seed {document['kit']['seed']}, {document['kit']['scale']} records):")
    for source in ("inat21", "bioscan", "eol"):
        print(f"  {source:8s} {kit_counts[source]['records']:6d} records  {kit_counts[source]['taxa']:4d} taxa")
    print(f"  {len(document['defects'])} deliberate defects and {len(document['hard_cases'])} taxonomic hard cases "
          f"listed in {out / 'kit/EXPECTED.json'}")
    print("\nRead + download + process, per source (kept, then dropped by stage:reason):")
    for source in sorted(counts):
        outcomes = counts[source]
        print(f"  {source:8s} kept {outcomes.get('kept', 0):5d}   of {sum(outcomes.values()):5d}")
        for outcome, n in sorted(outcomes.items()):
            if outcome != "kept":
                print(f"           {outcome:32s} {n}")
    print(f"\nWhere things are:\n  raw sources       {out / 'kit'}/{{inat21,bioscan,eol}}\n"
          f"  authority dumps   {out / 'kit/authorities'}, {out / 'kit/eol/dh'}\n"
          f"  EOL downloads     {out / 'downloads'}/part-*.parquet\n"
          f"  outcome counts    {out / 'front-half-counts.jsonl'}\n"
          f"  kit server log    {log_path}")


def curate_rare_species(kit: Path, downloads: Path, taxonomy: Path, out: Path) -> Path:
    """`tol rare-species` on the kit (8 species x 5 images at most); returns its exclusions.parquet for the build."""
    print()
    code = curate.run([str(out), "--kit", str(kit), "--taxonomy", str(taxonomy), "--downloads", str(downloads),
                       "--species", "8", "--images-per-species", "5"])
    if code:
        sys.exit(f"tol rare-species failed with exit code {code}")
    return out / "exclusions.parquet"


def build_and_query(kit: Path, downloads: Path, taxonomy: Path, out: Path, exclusions: Path) -> int:
    """`tol build` on the kit into OUT (Rare Species excluded), then three `tol query` views of its manifests."""
    print()
    code = build.run([str(out), "--kit", str(kit), "--downloads", str(downloads), "--taxonomy", str(taxonomy),
                      "--shard-samples", "100", "--exclude-species", str(exclusions)])
    if code:
        return code
    for title, sql in (
            ("Images per kingdom", "SELECT kingdom, count(*) AS images FROM catalog WHERE split != 'train_small' "
                                   "GROUP BY kingdom ORDER BY images DESC"),
            ("Failures by reason", "SELECT stage, reason, count(*) AS n FROM failures GROUP BY ALL "
                                   "ORDER BY n DESC, reason"),
            ("Licenses", "SELECT license, count(*) AS images FROM licenses GROUP BY license "
                         "ORDER BY images DESC, license")):
        print(f"\n{title} (tol query --out {out}):\n{query(out, sql)}", end="")
    return 0


def train_and_evaluate(out: Path, epochs: int) -> int:
    """`tol train` (tiny-cpu) on the shards, `tol eval` on the held-out Rare Species, `tol predict` on one image."""
    run_dir = out / "runs/demo"
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a fresh build has fresh shards: an earlier run's checkpoints do not belong to it
    print(f"\nTraining the tiny-cpu model on {out / 'shards'} for {epochs} epochs (tol train):")
    code = cli.main(["train", "--shards", str(out / "shards"), "--runs-dir", str(out / "runs"), "--name", "demo",
                     "--epochs", str(epochs)])
    if code:
        return code
    checkpoint, rare = run_dir / "checkpoints/latest.pt", out / "rare_species"
    print("\nEvaluating on the Rare Species set, none of whose species was trained on (tol eval):")
    code = cli.main(["eval", "--checkpoint", str(checkpoint), "--task", "rare-species", "--data-root", str(rare),
                     "--out", str(run_dir / "eval"), "--support-splits", str(run_dir / "eval/splits.json")])
    if code:
        return code
    results = json.loads((run_dir / "eval/results.json").read_text(encoding="utf-8"))
    print(f"\nZero-shot top-1 on {results['task']['classes']} held-out species: {results['zero_shot']['top1']:.1f}% "
          f"(chance {results['chance']['top1']:.1f}%); one-shot: "
          f"{results['few_shot']['1']['top1']['mean']:.1f}%")
    with open(rare / "annotation.csv", newline="", encoding="utf-8") as f:
        image = rare / next(csv.DictReader(f))["filepath"]
    print(f"\nWhat is {image.name}? (tol predict, top 3)")
    return cli.main(["predict", str(image), "--checkpoint", str(checkpoint), "--taxa",
                     str(out / "taxonomy/taxa.parquet"), "--top-k", "3"])


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    ensure_port_free(args.port)
    kit, downloads, log_path = args.out / "kit", args.out / "downloads", args.out / "serve-kit.log.jsonl"
    document = build_kit(KitConfig(kit, args.seed, args.scale, f"http://127.0.0.1:{args.port}",
                                   workers=os.cpu_count() or 1, overwrite=True))
    if downloads.exists():
        shutil.rmtree(downloads)  # a fresh kit has a fresh manifest: earlier parts do not belong to it
    download_eol(kit, downloads, args.port, args.seed, log_path)
    print_summary(args.out, document, front_half_counts(kit, downloads, args.out), log_path)
    taxonomy = args.out / "taxonomy"
    print("\n" + format_summary(build_taxonomy(TaxonomyConfig.for_raw(kit, taxonomy)), taxonomy))
    exclusions = curate_rare_species(kit, downloads, taxonomy, args.out / "rare_species")
    code = build_and_query(kit, downloads, taxonomy, args.out, exclusions) or train_and_evaluate(args.out, args.epochs)
    if code:
        return code
    print(f"\nData card of the build (tol report): {args.out / 'report/DATA_CARD.md'}")
    return cli.main(["report", str(args.out)])


if __name__ == "__main__":
    sys.exit(main())
