"""Wall time and peak memory of `tol sample-kit` at a given scale.

    python benchmarks/bench_sample_kit.py --scale 100000 --out /tmp/kit-100k

Runs the real command as a subprocess and samples the resident memory of its whole process tree (the parent and
its drawing workers) every 0.2 s; prints one markdown row for benchmarks/RESULTS.md.
"""

import argparse
import datetime
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
from measure import tree_rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=Path("/tmp/treeoflife-bench-kit"))
    parser.add_argument("--workers", type=int, default=None, help="default: all cores")
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    command = [sys.executable, "-m", "pipeline.cli", "sample-kit", str(args.out), "--scale", str(args.scale)]
    if args.workers:
        command += ["--workers", str(args.workers)]
    start = time.perf_counter()
    process = psutil.Popen(command, stderr=subprocess.DEVNULL)
    peak = 0
    while process.poll() is None:
        peak = max(peak, tree_rss(process))
        time.sleep(0.2)
    elapsed = time.perf_counter() - start
    if process.returncode:
        sys.exit(f"sample-kit failed with exit code {process.returncode}")
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"| {datetime.date.today()} | `{' '.join(['tol', *command[3:]])}` | {psutil.cpu_count()} cores | "
          f"{elapsed:.0f} s | {args.scale / elapsed:.0f} records/s | {peak / 2**20:.0f} MiB peak RSS (all processes) | "
          f"{size / 2**30:.2f} GiB written |")


if __name__ == "__main__":
    main()
