"""Near-duplicate search over 64-bit perceptual hashes, in numpy: close pairs, eval leaks, clusters.

    pairs = close_pairs(hashes, ids, threshold=8).pairs     # (k, 2) ids within 8 bits, each pair once
    leaks = leaking(train_hashes, eval_hashes, threshold=8)  # per training hash: an eval index, or -1
    survivors = clusters(pairs)                              # member -> the cluster's survivor

The search is multi-index hashing (Norouzi et al. 2012) over 3 blocks of 22, 21, 21 bits. Two hashes
within `threshold` = 8 bits differ by at most 2 bits in at least one block (generalised pigeonhole, `block_radii`),
so per block the hashes are sorted by block value and every bucket v is compared with the buckets v ^ mask for each
mask of at most 2 bits (254 or 232 masks, each unordered bucket pair once); candidates are verified with a
vectorised popcount. Work for n uniform hashes (paper estimate, written before coding):
  - 9 blocks of 7 bits, exact match (the previous banding): n^2/2 * 9/2^7 = 3.5e12 candidate pairs at 10M.
  - 4 blocks of 16 bits, radius 2 (137 masks): n^2/2 * 4*137/2^16 = 4.2e11; 12 blocks, any 4 exact (495 sorted
    tables of 21-bit keys, Manku et al.): 9.4e9 candidates but 495 sorts of 10M; 2 blocks of 32 bits, radius 4:
    5e8 candidates but 8e11 probes.
  - chosen, 3 blocks, radius 2: n^2/2 * (254/2^22 + 2*232/2^21) = 1.4e10 candidates at 10M (1.4e8 at 1M), 3 sorts,
    ~700 vectorised probe passes over n/2 hashes; memory O(n) (a few arrays of n int64, no pair matrix). Quadratic
    still, but 250x fewer candidates than banding; measured figures in benchmarks/RESULTS.md.
A bucket above `max_bucket` members is capped: its members are compared only among themselves, each with the next
`max_bucket - 1` in (phash, id) order (identical and numerically adjacent hashes, the usual cause of a hot bucket
such as blank images, still meet), and it is not probed against its neighbour buckets in that block (the other
blocks still are); counter `hot_bucket_capped`, one per capped (block, value) bucket.
"""

from __future__ import annotations

import itertools
import multiprocessing
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

import numpy as np

DEFAULT_THRESHOLD = 8
DEFAULT_MAX_BUCKET = 2000
NUM_BLOCKS = 3  # blocks of 22, 21, 21 bits: see the work estimate above
_ROW_CHUNK = 1024  # rows of a bucket compared at once: chunk x bucket uint64 stays small


class PairSearch(NamedTuple):
    """Close pairs as an (k, 2) array of ids, each row (smaller, larger), unique; and how many buckets were capped."""

    pairs: np.ndarray
    capped: int


def block_bounds(num_blocks: int) -> list[tuple[int, int]]:
    """(shift, width) of each block of a 64-bit hash, most significant first; widths differ by at most one."""
    if not 1 <= num_blocks <= 64:
        raise ValueError(f"num_blocks={num_blocks} must be in 1..64")
    widths = [64 // num_blocks + (i < 64 % num_blocks) for i in range(num_blocks)]
    shifts, top = [], 64
    for width in widths:
        top -= width
        shifts.append(top)
    return list(zip(shifts, widths))


def blocks(phash: int, num_blocks: int) -> list[int]:
    """The values of the `num_blocks` blocks of a 64-bit hash, most significant first."""
    return [(phash >> shift) & ((1 << width) - 1) for shift, width in block_bounds(num_blocks)]


def block_radii(threshold: int, num_blocks: int = NUM_BLOCKS) -> list[int]:
    """Per block, the radius a close pair must be within in at least one block (-1: the block is not searched).

    Generalised pigeonhole: with threshold = num_blocks * r + a (0 <= a < num_blocks), if the first a + 1 blocks
    each differ in more than r bits and the others in more than r - 1, the hashes differ in more than threshold.
    """
    if not 0 <= threshold <= 63:
        raise ValueError(f"threshold={threshold} must be in 0..63")
    radius, extra = divmod(threshold, num_blocks)
    return [radius if index <= extra else radius - 1 for index in range(num_blocks)]


def flip_masks(width: int, radius: int) -> list[int]:
    """Every `width`-bit value with at most `radius` bits set, by popcount then value (0 first)."""
    return [sum(1 << bit for bit in bits) for count in range(radius + 1)
            for bits in itertools.combinations(range(width), count)]


def centres(phash: int, threshold: int) -> list[tuple[int, int]]:
    """(block, value) keys such that two hashes within `threshold` bits share at least one (the Beam grouping).

    Block values within radius r of each other share a value within ceil(r / 2) of both, so each hash is keyed by
    every value within ceil(r / 2) of its own block (1 + width keys per block for r = 2).
    """
    keys = []
    for index, ((_, width), value, radius) in enumerate(zip(block_bounds(NUM_BLOCKS), blocks(phash, NUM_BLOCKS),
                                                            block_radii(threshold))):
        if radius >= 0:
            keys.extend((index, value ^ mask) for mask in flip_masks(width, (radius + 1) // 2))
    return keys


def _block_column(hashes: np.ndarray, shift: int, width: int) -> np.ndarray:
    return ((hashes >> np.uint64(shift)) & np.uint64((1 << width) - 1)).astype(np.int64)


def _within(a: np.ndarray, b: np.ndarray, threshold: int) -> np.ndarray:
    return np.bitwise_count(a ^ b) <= threshold


def bucket_pairs(hashes: np.ndarray, threshold: int, max_bucket: int | None) -> tuple[np.ndarray, np.ndarray, bool]:
    """Index pairs (i, j), i < j, of one bucket's hashes within `threshold`; and whether the bucket was capped."""
    m = len(hashes)
    if m < 2:
        return np.empty(0, np.int64), np.empty(0, np.int64), False
    if max_bucket is not None and m > max_bucket:
        i, j = _window_pairs(hashes, threshold, max_bucket - 1)
        return np.minimum(i, j), np.maximum(i, j), True
    left, right = [], []
    for start in range(0, m - 1, _ROW_CHUNK):
        rows = np.arange(start, min(start + _ROW_CHUNK, m - 1))
        close = _within(hashes[rows, None], hashes[None, :], threshold)
        close &= np.arange(m)[None, :] > rows[:, None]  # upper triangle only
        i, j = np.nonzero(close)
        left.append(rows[i])
        right.append(j)
    return np.concatenate(left), np.concatenate(right), False


def _window_pairs(hashes: np.ndarray, threshold: int, window: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(hashes, kind="stable")  # callers pass members in id order, so ties break by id
    ordered = hashes[order]
    left, right = [], []
    for offset in range(1, max(window, 1) + 1):
        close = np.nonzero(_within(ordered[:-offset], ordered[offset:], threshold))[0]
        left.append(order[close])
        right.append(order[close + offset])
    return np.concatenate(left), np.concatenate(right)


class _BlockIndex(NamedTuple):
    """Hashes sorted by one block's value, with each value's bucket as a (start, count) range of that order."""

    order: np.ndarray  # position in the sorted order -> index into the input
    values: np.ndarray  # block value at each sorted position
    hashes: np.ndarray  # hash at each sorted position
    starts: np.ndarray  # block value -> first sorted position of its bucket
    counts: np.ndarray  # block value -> bucket size


def _block_index(hashes: np.ndarray, shift: int, width: int) -> _BlockIndex:
    column = _block_column(hashes, shift, width)
    order = np.argsort(column, kind="stable")  # stable: id order inside a bucket
    counts = np.bincount(column, minlength=1 << width)
    return _BlockIndex(order, column[order], hashes[order], np.cumsum(counts) - counts, counts)


def _probe(index: _BlockIndex, queries: np.ndarray, targets: np.ndarray, counts: np.ndarray,
           threshold: int) -> Iterable[tuple[np.ndarray, np.ndarray]]:
    """(query row, sorted position) of each query hash within `threshold` of a member of its target bucket."""
    rows = np.flatnonzero(counts > 0)
    keys = -counts[rows]
    if len(rows) and counts[rows].max() < 1 << 15:
        keys = keys.astype(np.int16)  # numpy radix-sorts 16-bit keys
    rows = rows[np.argsort(keys, kind="stable")]  # largest target bucket first: each offset is a prefix
    counts = counts[rows]
    live = len(rows) - np.searchsorted(counts[::-1], np.arange(1, counts[0] + 1) if len(rows) else [], side="left")
    queries, bases = queries[rows], index.starts[targets[rows]]
    for offset, size in enumerate(live.tolist()):
        positions = bases[:size] + offset
        close = np.flatnonzero(_within(queries[:size], index.hashes[positions], threshold))
        if len(close):
            yield rows[close], positions[close]


def _same_bucket_pairs(index: _BlockIndex, cold: np.ndarray, threshold: int) -> Iterable[np.ndarray]:
    """Sorted-position pairs within `threshold` inside each cold bucket: offsets 1, 2, ... while the value holds."""
    n = len(index.values)
    positions = np.flatnonzero(cold[:-1] & (index.values[1:] == index.values[:-1]))
    offset = 1
    while len(positions):
        close = positions[_within(index.hashes[positions], index.hashes[positions + offset], threshold)]
        yield np.stack([close, close + offset], axis=1)
        offset += 1
        positions = positions[positions + offset < n]
        positions = positions[index.values[positions + offset] == index.values[positions]]


def _cross_bucket_pairs(index: _BlockIndex, cold: np.ndarray, cold_counts: np.ndarray, bit: int, masks: list[int],
                        threshold: int) -> list[np.ndarray]:
    """Pairs within `threshold` between buckets v and v ^ mask, for masks whose highest set bit is `bit`."""
    # each unordered bucket pair (v, v ^ mask) once: from the bucket whose bit `bit` is 0
    sources = np.flatnonzero(cold & ((index.values >> bit) & 1 == 0))
    values, queries = index.values[sources], index.hashes[sources]
    found = []
    for mask in masks:
        targets = values ^ mask
        for rows, positions in _probe(index, queries, targets, cold_counts[targets], threshold):
            found.append(np.stack([index.order[sources[rows]], index.order[positions]], axis=1))
    return found


_FORKED: dict = {}  # the block index, inherited by forked workers instead of pickled to them


def _forked_cross_bucket_pairs(task: tuple[int, list[int]]) -> list[np.ndarray]:
    return _cross_bucket_pairs(*_FORKED["index"], *task, _FORKED["threshold"])


def _block_pairs(index: _BlockIndex, width: int, radius: int, threshold: int, max_bucket: int | None,
                 workers: int) -> tuple[list[np.ndarray], int]:
    """Input-index pairs within `threshold` whose block values differ in at most `radius` bits; and capped count."""
    hot = index.counts > max_bucket if max_bucket is not None else np.zeros(len(index.counts), dtype=bool)
    cold = ~hot[index.values]
    found = [index.order[pairs] for pairs in _same_bucket_pairs(index, cold, threshold)]
    for value in np.flatnonzero(hot):  # a hot bucket: sliding window in (phash, id) order, no cross-bucket probes
        members = slice(index.starts[value], index.starts[value] + index.counts[value])
        i, j = _window_pairs(index.hashes[members], threshold, max_bucket - 1)
        found.append(np.stack([index.order[members][i], index.order[members][j]], axis=1))
    by_top_bit: dict[int, list[int]] = {}
    for mask in flip_masks(width, radius)[1:]:
        by_top_bit.setdefault(mask.bit_length() - 1, []).append(mask)
    tasks = sorted(by_top_bit.items(), key=lambda task: -len(task[1]))  # longest first balances the workers
    shared = (index, cold, np.where(hot, 0, index.counts))
    if workers > 1 and len(tasks) > 1:
        _FORKED.update(index=shared, threshold=threshold)
        try:
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                for task_found in pool.imap_unordered(_forked_cross_bucket_pairs, tasks):
                    found.extend(task_found)
        finally:
            _FORKED.clear()
    else:
        for bit, masks in tasks:
            found.extend(_cross_bucket_pairs(*shared, bit, masks, threshold))
    return found, int(hot.sum())


def close_pairs(hashes: np.ndarray, ids: np.ndarray | Sequence, threshold: int = DEFAULT_THRESHOLD,
                max_bucket: int | None = DEFAULT_MAX_BUCKET, workers: int = 1) -> PairSearch:
    """All pairs of `ids` whose hashes are within `threshold` bits, by multi-index hashing; numpy throughout.

    `workers` > 1 forks that many processes per block (POSIX only; not inside a Beam worker).
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    ids = np.asarray(ids)
    id_order = np.argsort(ids, kind="stable")
    hashes, ids = hashes[id_order], ids[id_order]
    found, capped = [], 0
    for (shift, width), radius in zip(block_bounds(NUM_BLOCKS), block_radii(threshold)):
        if radius < 0 or len(hashes) < 2:
            continue
        block_found, block_capped = _block_pairs(_block_index(hashes, shift, width), width, radius, threshold,
                                                 max_bucket, workers)
        found.extend(block_found)
        capped += block_capped
    if not found:
        return PairSearch(np.empty((0, 2), dtype=ids.dtype), capped)
    index_pairs = np.sort(np.concatenate(found), axis=1)  # ids are sorted, so smaller index = smaller id
    return PairSearch(ids[np.unique(index_pairs, axis=0)], capped)


def leaking(train_hashes: np.ndarray, eval_hashes: np.ndarray, threshold: int = DEFAULT_THRESHOLD) -> np.ndarray:
    """For each training hash, the smallest index of an eval hash within `threshold` bits, or -1.

    Multi-index hashing with the training hashes indexed and each eval hash probing every block value within the
    block's radius of its own.
    """
    train_hashes = np.asarray(train_hashes, dtype=np.uint64)
    eval_hashes = np.asarray(eval_hashes, dtype=np.uint64)
    first = np.full(len(train_hashes), len(eval_hashes), dtype=np.int64)
    if not len(train_hashes) or not len(eval_hashes):
        return np.full(len(train_hashes), -1, dtype=np.int64)
    for (shift, width), radius in zip(block_bounds(NUM_BLOCKS), block_radii(threshold)):
        if radius < 0:
            continue
        index = _block_index(train_hashes, shift, width)
        values = _block_column(eval_hashes, shift, width)
        for mask in flip_masks(width, radius):
            targets = values ^ mask
            for rows, positions in _probe(index, eval_hashes, targets, index.counts[targets], threshold):
                np.minimum.at(first, index.order[positions], rows)
    return np.where(first < len(eval_hashes), first, -1)


def clusters(pairs: Iterable[tuple], key: Callable = lambda member: member) -> dict:
    """Union-find over close pairs: every clustered member -> its cluster's survivor (the member of smallest key)."""
    parent: dict = {}

    def find(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        root_a, root_b = find(a), find(b)
        if root_a != root_b:
            parent[max(root_a, root_b, key=key)] = min(root_a, root_b, key=key)  # the root is the best member
    return {member: find(member) for member in parent}
