"""`make demo`: the product's stages on the bundled sample kit, on CPU, in minutes.

    python -m pipeline.demo --out demo-out --port 8765

Builds a sample kit in OUT/kit, serves its EOL images on 127.0.0.1:PORT with polite-client faults switched on
(429 with Retry-After, 503, latency), checks the server from a client's side, and prints what the kit holds and
where everything is. Each later stage of the build adds its step here.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import os
import socket
import sys
import tarfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import requests

from pipeline.argtypes import int_at_least, non_negative_int, port
from pipeline.samplekit.kit import MIN_SCALE, KitConfig, build_kit
from pipeline.serve_kit import FaultSpec, KitServer

DEMO_FAULTS = "429=0.05:1,503=0.05,latency=0.05:0.2"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipeline.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("demo-out"), help="where the demo writes (default demo-out)")
    parser.add_argument("--port", type=port, default=8765, help="loopback port for the kit's EOL images (default 8765)")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="sample-kit seed (default 0)")
    parser.add_argument("--scale", type=int_at_least(MIN_SCALE), default=600, help="sample-kit records (default 600)")
    return parser.parse_args(argv)


def ensure_port_free(number: int) -> None:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", number))
        except OSError:
            sys.exit(f"port {number} on 127.0.0.1 is busy; run 'make demo DEMO_PORT=<free port>'")


def first_manifest_urls(kit: Path, count: int) -> list[str]:
    """Full-size URLs of the first manifest rows whose image the server really holds."""
    with tarfile.open(kit / "eol/media_manifest.tgz") as tar:
        rows = list(csv.reader(io.StringIO(tar.extractfile("media_manifest_1.csv").read().decode())))
    return [row[3] for row in rows[1:] if len(row) == 6 and "/_fault/" not in row[3]][:count]


def probe_server(server: KitServer, urls: list[str]) -> Counter:
    """Fetch a few images the way a naive client would (no retries), to show the faults are live."""
    statuses: Counter = Counter()
    with requests.Session() as session:
        session.trust_env = False  # loopback only: never through a proxy
        for url in urls:
            statuses[session.get(url, timeout=5).status_code] += 1
    return statuses


def print_summary(out: Path, document: dict, statuses: Counter, log_path: Path) -> None:
    counts = document["counts"]
    print(f"\nSample kit in {out / 'kit'} (seed {document['kit']['seed']}, {document['kit']['scale']} records):")
    for source in ("inat21", "bioscan", "eol"):
        print(f"  {source:8s} {counts[source]['records']:6d} records  {counts[source]['taxa']:4d} taxa")
    print("  authorities: " + ", ".join(f"{k} {v}" for k, v in counts["authorities"].items()))
    print(f"\n{len(document['defects'])} deliberate defects, by expected fate (OUT/kit/EXPECTED.json):")
    for fate, n in document["fates_of_defects"].items():
        print(f"  {fate:32s} {n}")
    print(f"{len(document['hard_cases'])} taxonomic hard cases: " + ", ".join(c["id"] for c in document["hard_cases"]))
    print(f"\nKit server probe (no retries, faults on): HTTP statuses {dict(sorted(statuses.items()))}")
    print(f"\nWhere things are:\n  raw sources       {out / 'kit'}/{{inat21,bioscan,eol}}\n"
          f"  authority dumps   {out / 'kit/authorities'}, {out / 'kit/eol/dh'}\n"
          f"  IUCN export       {out / 'kit/iucn/assessments.csv'}\n"
          f"  expected fates    {out / 'kit/EXPECTED.json'}\n"
          f"  server log        {log_path}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ensure_port_free(args.port)
    kit = args.out / "kit"
    document = build_kit(KitConfig(kit, args.seed, args.scale, f"http://127.0.0.1:{args.port}",
                                   workers=os.cpu_count() or 1, overwrite=True))
    log_path = args.out / "serve-kit.log.jsonl"
    log_path.unlink(missing_ok=True)
    with KitServer(kit / "eol/images", port=args.port, faults=FaultSpec.parse(DEMO_FAULTS), seed=args.seed,
                   log_path=log_path) as server:
        statuses = probe_server(server, first_manifest_urls(kit, 20))
    print_summary(args.out, document, statuses, log_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
