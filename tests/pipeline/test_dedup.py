"""Exact, near-duplicate, leakage and Rare Species stages: who survives, and the reason and detail of every drop."""

import pathlib

import apache_beam as beam
import numpy as np
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline.dedup import (
    ExactDedup,
    ExcludeSpecies,
    LeakageFilter,
    NearDedup,
    exclusion_keys,
    label_binomial,
    signed_hash,
)
from pipeline.images import Processed
from pipeline.phash_index import block_radii, blocks, centres, close_pairs, clusters, leaking
from pipeline.records import Reason, SourceRecord

UNSEEN = "bioclip/data/rarespecies/unseen_in_training.json"
FAR = 0xFFFF_FFFF_FFFF_FFFF


def sample(source: str, native_id: str, md5: str = "m", phash: int = 0, ranks: int = 7, name: str = ""):
    names = ("kingdom", "phylum", "class", "order", "family", "genus", "species")
    label = tuple((rank, "x" if i < ranks else "") for i, rank in enumerate(names))
    if name:
        label = (("species", name),)
    record = SourceRecord.create(source, native_id, image_ref="x", label_key="k", label=label)
    return record, Processed(b"", 1, 1, 1, 1, "JPEG", "RGB", md5, phash)


def ids(pcoll, label: str):
    return pcoll | label >> beam.Map(lambda s: s[0].native_id)


def drops(pcoll, label: str):
    return pcoll | label >> beam.Map(lambda f: (f.native_id, f.stage, f.reason, f.detail))


def tol_id(s) -> str:
    return s[0].treeoflife_id


def test_exact_dedup_survivor_is_most_complete_then_source_priority_then_smallest_id() -> None:
    complete = sample("eol", "e1", md5="a", ranks=7)  # most complete wins over source priority
    partial = sample("inat21", "i1", md5="a", ranks=5)
    inat, bioscan = sample("inat21", "i2", md5="b"), sample("bioscan", "b2", md5="b")  # equal ranks: source order
    first, second = sorted([sample("eol", "e3", md5="c"), sample("eol", "e4", md5="c")], key=tol_id)  # then id
    alone = sample("eol", "e5", md5="d")
    with TestPipeline(runner="FnApiRunner") as p:
        out = p | beam.Create([complete, partial, inat, bioscan, first, second, alone]) | ExactDedup()
        assert_that(ids(out.samples, "kept"), equal_to(["e1", "i2", first[0].native_id, "e5"]), label="samples")
        assert_that(drops(out.failures, "drops"), equal_to([
            ("i1", "dedup", Reason.DUPLICATE_OF, tol_id(complete)), ("b2", "dedup", Reason.DUPLICATE_OF, tol_id(inat)),
            (second[0].native_id, "dedup", Reason.DUPLICATE_OF, tol_id(first))]), label="failures")


def test_exact_dedup_takes_a_caller_supplied_completeness() -> None:
    low, high = sample("inat21", "i1", md5="a"), sample("eol", "e1", md5="a")
    with TestPipeline(runner="FnApiRunner") as p:
        out = p | beam.Create([low, high]) | ExactDedup(completeness=lambda s: 7 if s[0].source == "eol" else 3)
        assert_that(ids(out.samples, "kept"), equal_to(["e1"]), label="samples")
        assert_that(drops(out.failures, "drops"), equal_to([("i1", "dedup", Reason.DUPLICATE_OF, tol_id(high))]),
                    label="failures")


def test_near_dedup_joins_a_chain_into_one_cluster_and_keeps_far_hashes() -> None:
    a, b, c = 0, 0b1111_1111, 0b1111_1111_1111_1111  # a~b and b~c within 8 bits; a and c are 16 apart
    chain = [sample("eol", "a", md5="1", phash=a), sample("inat21", "b", md5="2", phash=b),
             sample("eol", "c", md5="3", phash=c)]
    far = [sample("eol", "far", md5="4", phash=FAR)]
    with TestPipeline(runner="FnApiRunner") as p:
        out = p | beam.Create(chain + far) | NearDedup(threshold=8)
        assert_that(ids(out.samples, "kept"), equal_to(["b", "far"]), label="samples")  # inat21 first among equals
        survivor = tol_id(chain[1])
        assert_that(drops(out.failures, "drops"), equal_to([("a", "near_dedup", Reason.NEAR_DUPLICATE_OF, survivor),
                                                            ("c", "near_dedup", Reason.NEAR_DUPLICATE_OF, survivor)]),
                    label="failures")


def test_close_pairs_and_clusters_pure() -> None:
    hashes = np.array([0, 0b111, 0b111 << 20 | 0b111, FAR], dtype=np.uint64)
    found = close_pairs(hashes, np.array([10, 11, 12, 13]), threshold=8, max_bucket=None)
    assert found.pairs.tolist() == [[10, 11], [10, 12], [11, 12]] and found.capped == 0
    assert clusters([(1, 2), (2, 3), (7, 8)]) == {1: 1, 2: 1, 3: 1, 7: 7, 8: 7}
    assert blocks(FAR, 9) == [255] + [127] * 8


def test_hot_bucket_is_capped_and_counted() -> None:
    hashes = np.zeros(10, dtype=np.uint64)  # ten identical hashes: one bucket of 10 per block
    found = close_pairs(hashes, np.arange(10), threshold=8, max_bucket=4)
    assert found.capped == 3  # every block's bucket
    assert found.pairs.tolist() == [[i, j] for i in range(10) for j in range(i + 1, min(i + 4, 10))]  # window of 3
    assert set(clusters(map(tuple, found.pairs.tolist())).values()) == {0}  # still one cluster
    with TestPipeline(runner="FnApiRunner") as p:
        inputs = [sample("eol", str(n), md5=str(n), phash=0) for n in range(6)]
        out = p | beam.Create(inputs) | NearDedup(max_bucket=3)
        assert_that(out.samples | beam.combiners.Count.Globally(), equal_to([1]), label="one kept")
    counters = p.result.metrics().query()["counters"]
    groups = len(centres(0, 8))  # every centre group of every block holds all six
    assert groups == 67 and [c.committed for c in counters if c.key.metric.name == "hot_bucket_capped"] == [groups]


def test_leakage_drops_training_samples_near_an_eval_image_with_the_eval_set() -> None:
    train = [sample("eol", "leak", phash=0b101), sample("eol", "clean", phash=FAR)]
    with TestPipeline(runner="FnApiRunner") as p:
        evals = p | "Evals" >> beam.Create([("rare_species", 0), ("nabirds", signed_hash(0xF0F0_0000_0000_0000))])
        out = p | "Train" >> beam.Create(train) | LeakageFilter(evals, threshold=8)
        assert_that(ids(out.samples, "kept"), equal_to(["clean"]), label="samples")
        assert_that(drops(out.failures, "drops"), equal_to([("leak", "leakage", Reason.LEAKS, "rare_species")]),
                    label="failures")


def test_exclusion_matches_bioclip_unseen_list_in_any_case_or_authorship(shared_data: pathlib.Path) -> None:
    keys = exclusion_keys(str(shared_data / UNSEEN))
    assert "cyclonaias tuberculata" in keys
    variants = ["Cyclonaias tuberculata", "CYCLONAIAS TUBERCULATA", "Cyclonaias tuberculata (Rafinesque, 1820)",
                "<i>Cyclonaias tuberculata</i> Raf."]
    inputs = [sample("eol", str(n), name=name) for n, name in enumerate(variants)] + [
        sample("eol", "kept", name="Pica hudsonia")]
    assert label_binomial(inputs[0]) == "Cyclonaias tuberculata"
    with TestPipeline(runner="FnApiRunner") as p:
        out = p | beam.Create(inputs) | ExcludeSpecies(keys)
        assert_that(ids(out.samples, "kept"), equal_to(["kept"]), label="samples")
        assert_that(drops(out.failures, "drops"), equal_to(
            [(str(n), "exclusion", Reason.RARE_SPECIES_EXCLUDED, "cyclonaias tuberculata") for n in range(4)]),
            label="failures")


def test_exclusion_keys_from_parquet(tmp_path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    path = tmp_path / "exclusions.parquet"
    pq.write_table(pa.table({"binomial": ["Pica hudsonia (Sabine, 1823)", None, "Pica"]}), path)
    assert exclusion_keys(str(path)) == frozenset({"pica hudsonia"})


def test_every_composite_with_empty_input() -> None:
    with TestPipeline(runner="FnApiRunner") as p:
        empty = p | "Empty" >> beam.Create([])
        evals = p | "NoEvals" >> beam.Create([])
        for name, out in [("exact", empty | "Exact" >> ExactDedup()), ("near", empty | "Near" >> NearDedup()),
                          ("leak", empty | "Leak" >> LeakageFilter(evals)),
                          ("exclude", empty | "Exclude" >> ExcludeSpecies(frozenset({"pica hudsonia"})))]:
            assert_that(out.samples, equal_to([]), label=f"{name} samples")
            assert_that(out.failures, equal_to([]), label=f"{name} failures")


def clustered_hashes(n: int, flips: int, seed: int) -> np.ndarray:
    """n hashes near 30 random centres, each with 0..flips random bits flipped: many pairs at every distance."""
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 2**64 - 1, 30, dtype=np.uint64, endpoint=True)[rng.integers(0, 30, n)]
    for row, count in enumerate(rng.integers(0, flips + 1, n)):
        for bit in rng.choice(64, count, replace=False):
            hashes[row] ^= np.uint64(1) << np.uint64(int(bit))
    return hashes


def brute_force_pairs(hashes: np.ndarray, ids: np.ndarray, threshold: int) -> list[list[int]]:
    i, j = np.nonzero(np.triu(np.bitwise_count(hashes[:, None] ^ hashes[None, :]) <= threshold, 1))
    return sorted(np.sort(np.stack([ids[i], ids[j]], axis=1), axis=1).tolist())


def test_close_pairs_and_leaking_equal_brute_force_at_every_threshold() -> None:
    hashes = clustered_hashes(600, 12, seed=3)
    ids = np.random.default_rng(4).permutation(600) * 7
    for threshold in (0, 1, 2, 3, 5, 8, 11):
        expected = brute_force_pairs(hashes, ids, threshold)
        assert close_pairs(hashes, ids, threshold, max_bucket=None).pairs.tolist() == expected, threshold
        train, evals = hashes[100:], hashes[:100]
        close = np.bitwise_count(train[:, None] ^ evals[None, :]) <= threshold
        assert leaking(train, evals, threshold).tolist() == np.where(close.any(1), close.argmax(1), -1).tolist()
    forked = close_pairs(hashes, ids, 8, max_bucket=None, workers=2).pairs.tolist()
    assert forked == brute_force_pairs(hashes, ids, 8)


def test_block_radii_follow_the_generalised_pigeonhole() -> None:
    assert block_radii(8) == [2, 2, 2] and block_radii(1) == [0, 0, -1] and block_radii(4) == [1, 1, 0]


def test_near_dedup_beam_finds_every_pair_the_numpy_search_finds() -> None:
    hashes = clustered_hashes(120, 10, seed=5)
    inputs = [sample("eol", f"{n:03d}", md5=str(n), phash=int(h)) for n, h in enumerate(hashes)]
    tol_ids = np.array([tol_id(s) for s in inputs])
    expected = clusters(map(tuple, close_pairs(hashes, tol_ids, 8, max_bucket=None).pairs.tolist()),
                        key=lambda member: (-7, 2, member))  # all eol, complete: the smallest id survives
    with TestPipeline(runner="FnApiRunner") as p:
        out = p | beam.Create(inputs) | NearDedup(threshold=8, max_bucket=None)
        assert_that(out.failures | beam.Map(lambda f: (f.treeoflife_id, f.detail)),
                    equal_to([(m, s) for m, s in expected.items() if m != s]), label="failures")


def test_leakage_beam_finds_a_training_hash_two_bits_off_in_every_block() -> None:
    far = 0b11 << 50 | 0b11 << 30 | 0b11 << 5  # 6 bits apart: no block is equal, each differs by 2 bits
    train = [sample("eol", "leak", phash=far), sample("eol", "clean", phash=far ^ 0x1FF)]  # 9 more bits: clean
    with TestPipeline(runner="FnApiRunner") as p:
        evals = p | "Evals" >> beam.Create([("rare_species", 0)])
        out = p | "Train" >> beam.Create(train) | LeakageFilter(evals, threshold=8)
        assert_that(ids(out.samples, "kept"), equal_to(["clean"]), label="samples")
