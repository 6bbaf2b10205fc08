"""Near-duplicate and leakage search at scale, with the pure numpy functions of `pipeline.phash_index` (not Beam).

    python benchmarks/bench_dedup.py --sizes 1000000,3000000,10000000 --workers 2 --eval 100000 --leak-train 10000000

Synthetic corpus: uniform random 64-bit hashes, plus 1% planted near-duplicates, each a copy of a random hash with
1..threshold random bits flipped. Recall over the planted pairs must be 100% (asserted). Leakage: `--eval` eval
hashes, half planted near copies of training hashes, against `--leak-train` training hashes. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from pipeline.phash_index import DEFAULT_THRESHOLD, close_pairs, leaking


def flip_bits(hashes: np.ndarray, threshold: int, rng: np.random.Generator) -> np.ndarray:
    """Each hash with a random 1..threshold distinct bits flipped."""
    out = hashes.copy()
    counts = rng.integers(1, threshold + 1, len(hashes))
    for row, count in enumerate(counts):
        mask = 0
        for bit in rng.choice(64, count, replace=False):
            mask |= 1 << int(bit)
        out[row] ^= np.uint64(mask)
    return out


def corpus(n: int, threshold: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n hashes, the last 1% planted copies of the first 1%; and the planted (original, copy) index pairs."""
    rng = np.random.default_rng(seed)
    planted = max(n // 100, 1)
    hashes = rng.integers(0, np.iinfo(np.uint64).max, n, dtype=np.uint64, endpoint=True)
    hashes[n - planted:] = flip_bits(hashes[:planted], threshold, rng)
    return hashes, np.stack([np.arange(planted), np.arange(n - planted, n)], axis=1)


def rss_gb() -> float:
    """Peak resident memory of this process or of its largest forked worker, in GiB."""
    return max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 2**20


def near_row(n: int, threshold: int, max_bucket: int | None, workers: int) -> str:
    hashes, planted = corpus(n, threshold, seed=n)
    start = time.perf_counter()
    found = close_pairs(hashes, np.arange(n), threshold, max_bucket, workers)
    seconds = time.perf_counter() - start
    found_set = set(map(tuple, found.pairs.tolist()))
    recall = sum(tuple(pair) in found_set for pair in planted.tolist()) / len(planted)
    assert recall == 1.0, f"recall {recall:.4%} on planted pairs at n={n}"
    return f"| near-dup | {n:,} | - | {seconds:.1f} | {len(found.pairs):,} | {recall:.0%} | {found.capped} | {rss_gb():.2f} |"


def leak_row(n_train: int, n_eval: int, threshold: int) -> str:
    rng = np.random.default_rng(7)
    train = rng.integers(0, np.iinfo(np.uint64).max, n_train, dtype=np.uint64, endpoint=True)
    evals = rng.integers(0, np.iinfo(np.uint64).max, n_eval, dtype=np.uint64, endpoint=True)
    leaked = rng.choice(n_train, n_eval // 2, replace=False)
    evals[: n_eval // 2] = flip_bits(train[leaked], threshold, rng)
    start = time.perf_counter()
    hit = leaking(train, evals, threshold)
    seconds = time.perf_counter() - start
    recall = float(np.mean(hit[leaked] >= 0))
    assert recall == 1.0, f"leak recall {recall:.4%}"
    return f"| leakage | {n_train:,} | {n_eval:,} | {seconds:.1f} | {int((hit >= 0).sum()):,} | {recall:.0%} | - | " \
           f"{rss_gb():.2f} |"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,300000,1000000")
    parser.add_argument("--threshold", type=int, default=DEFAULT_THRESHOLD)
    parser.add_argument("--max-bucket", type=int, default=0, help="0: no cap (exact; the recall assertion needs it)")
    parser.add_argument("--workers", type=int, default=2, help="processes forked by close_pairs")
    parser.add_argument("--eval", type=int, default=100_000)
    parser.add_argument("--leak-train", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    print("| search | train hashes | eval hashes | seconds | pairs / hits | planted recall | capped | max RSS GB |")
    print("|---|---|---|---|---|---|---|---|")
    for n in map(int, args.sizes.split(",")):
        print(near_row(n, args.threshold, args.max_bucket or None, args.workers), flush=True)
    if args.eval:
        print(leak_row(args.leak_train, args.eval, args.threshold), flush=True)


if __name__ == "__main__":
    main()
