"""Dedup stages: exact (md5), near-duplicate (pHash), eval leakage and Rare Species exclusion.

    samples | ExactDedup() | ...              # each composite -> outputs .samples and .failures
    samples | NearDedup(threshold=8)
    samples | LeakageFilter(eval_hashes, threshold=8)          # eval_hashes: PCollection[(eval_set, phash)]
    samples | ExcludeSpecies(exclusion_keys("unseen_in_training.json"))

Elements are `Sample = (SourceRecord, Processed)`. One survivor rule everywhere (`survivor_key`): the most complete
taxon first (count of non-empty ranks, from a caller-supplied `completeness(sample)` so that this module does not
depend on the taxonomy join; the default counts the source's own label), then source priority (inat21 < bioscan <
eol, configurable), then the smallest treeoflife_id.

Near-duplicate and leakage search use the exact multi-index hashing of `pipeline.phash_index` (its docstring has
the method and its cost). The Beam composites group instead of probing: each hash is keyed by every value within
1 bit of each of its block values (`centres`: 1 + width keys per block, 67 in all), since two block values within
2 bits share such a centre; each group is compared all-pairs (`bucket_pairs`, same cap), so the Beam path is exact
too, at 67 shuffled elements a hash and groups of ~22 * n / 2^21 hashes.

Clustering: close pairs are joined into connected components (single linkage: a chain a~b~c is one cluster even
when a and c are far apart) by a union-find over *all close pairs in one worker* (`CombineGlobally(ToList)`). The
memory of that step is proportional to the number of close pairs, not of samples (about 100 bytes a pair: 10M pairs
~ 1 GB); beyond that, label propagation rounds in Beam would be the next step.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from pipeline.images import Processed
from pipeline.phash_index import DEFAULT_MAX_BUCKET, DEFAULT_THRESHOLD, bucket_pairs, centres, clusters, leaking
from pipeline.records import Failure, Reason, SourceRecord
from taxonomy.names import canonicalise

Sample = tuple[SourceRecord, Processed]
SurvivorKey = tuple[int, int, str]  # (-completeness, source rank, treeoflife_id): the smallest survives
FAILURES = "failures"
SOURCE_PRIORITY = ("inat21", "bioscan", "eol")
LABEL_RANKS = ("kingdom", "phylum", "class", "order", "family", "genus", "species", "specific_epithet")


# --- pure functions ---------------------------------------------------------------------------------------------

def label_completeness(sample: Sample) -> int:
    """Non-empty ranks in the source's own label (a stand-in until the resolved taxon is joined)."""
    return sum(1 for name, value in sample[0].label if name in LABEL_RANKS and value.strip())


def survivor_key(sample: Sample, completeness: int, priority: Sequence[str] = SOURCE_PRIORITY) -> SurvivorKey:
    """Sort key of the survivor rule: most complete taxon, then source priority, then smallest treeoflife_id."""
    record = sample[0]
    rank = priority.index(record.source) if record.source in priority else len(priority)
    return -completeness, rank, record.treeoflife_id


def label_binomial(sample: Sample) -> str:
    """`Genus epithet` from the source's own label (iNat21 genus + specific_epithet; BIOSCAN species)."""
    label = sample[0].label_dict()
    genus, epithet, species = label.get("genus", ""), label.get("specific_epithet", ""), label.get("species", "")
    if epithet:
        return f"{genus} {epithet}"
    return species if " " in species.strip() else f"{genus} {species}".strip()


def normalised_binomial(name: str) -> str:
    """The key exclusions are compared by: canonical `genus epithet`, lower case; "" without an epithet."""
    canonical = canonicalise(name)
    return canonical.canonical.lower() if canonical.epithet else ""


def exclusion_keys(path: str) -> frozenset[str]:
    """Normalised binomials from an exclusions parquet (column `binomial`) or BioCLIP's unseen_in_training.json.

    The JSON's keys are `Kingdom-Phylum-...-Genus-species`; the last two parts are the genus and the epithet.
    """
    if path.endswith(".json"):
        with open(path, encoding="utf-8") as handle:
            names = [" ".join(key.split("-")[-2:]) for key in json.load(handle)]
    else:
        import pyarrow.parquet as pq
        names = [str(name) for name in pq.read_table(path, columns=["binomial"]).column("binomial").to_pylist() if name]
    return frozenset(key for key in map(normalised_binomial, names) if key)


def signed_hash(phash: int) -> int:
    """The hash as a signed 64-bit int: Beam's integer coder refuses values >= 2**63 in shuffled elements."""
    return phash - (1 << 64) if phash >= 1 << 63 else phash


def _unsigned(signed: Sequence[int]) -> np.ndarray:
    return np.array(signed, dtype=np.int64).view(np.uint64)


def _md5_key(sample: Sample) -> str:
    return sample[1].md5 or hashlib.md5(sample[0].treeoflife_id.encode()).hexdigest()


# --- DoFns ------------------------------------------------------------------------------------------------------

class PickSurvivorFn(beam.DoFn):
    """(md5, [(key, sample)]) -> the best sample; the others tagged DUPLICATE_OF the survivor."""

    def __init__(self) -> None:
        self._kept = Metrics.counter("dedup", "kept")
        self._dropped = Metrics.counter("dedup", str(Reason.DUPLICATE_OF))

    def process(self, element):
        _, keyed = element
        ranked = sorted(keyed, key=lambda pair: pair[0])
        survivor = ranked[0][1]
        self._kept.inc()
        yield survivor
        for _, sample in ranked[1:]:
            self._dropped.inc()
            yield beam.pvalue.TaggedOutput(FAILURES, Failure.of(Reason.DUPLICATE_OF, survivor[0].treeoflife_id,
                                                                record=sample[0]))


class BucketPairsFn(beam.DoFn):
    """((block, centre), [(key, phash)]) -> close pairs (key_a, key_b) with key_a < key_b; counts capped buckets."""

    def __init__(self, threshold: int, max_bucket: int | None) -> None:
        self._threshold, self._max_bucket = threshold, max_bucket
        self._capped = Metrics.counter("near_dedup", "hot_bucket_capped")

    def process(self, element):
        _, members = element
        members = sorted(members)
        hashes = _unsigned([phash for _, phash in members])
        i, j, capped = bucket_pairs(hashes, self._threshold, self._max_bucket)
        if capped:
            self._capped.inc()
        for a, b in zip(i.tolist(), j.tolist()):
            yield (members[a][0], members[b][0]) if members[a][0] < members[b][0] else (members[b][0], members[a][0])


class BucketLeaksFn(beam.DoFn):
    """((block, centre), [(is_eval, name, phash)]) -> (treeoflife_id, eval_set) for each training hash that leaks."""

    def __init__(self, threshold: int) -> None:
        self._threshold = threshold

    def process(self, element):
        _, members = element
        evals = sorted((name, phash) for is_eval, name, phash in members if is_eval)
        trains = [(name, phash) for is_eval, name, phash in members if not is_eval]
        if not evals or not trains:
            return
        hit = leaking(_unsigned([p for _, p in trains]), _unsigned([p for _, p in evals]), self._threshold)
        for (train_id, _), index in zip(trains, hit.tolist()):
            if index >= 0:
                yield train_id, evals[index][0]


class RouteFn(beam.DoFn):
    """(id, {samples: [sample], verdicts: [detail]}) -> the sample, or a failure with `reason` and the first detail."""

    def __init__(self, reason: Reason) -> None:
        self._reason = reason
        self._dropped = Metrics.counter(str(reason.stage), str(reason))

    def process(self, element):
        _, joined = element
        details = sorted(joined["verdicts"])
        for sample in joined["samples"]:
            if details:
                self._dropped.inc()
                yield beam.pvalue.TaggedOutput(FAILURES, Failure.of(self._reason, details[0], record=sample[0]))
            else:
                yield sample


class ExcludeSpeciesFn(beam.DoFn):
    def __init__(self, keys: frozenset[str], binomial_of: Callable[[Sample], str]) -> None:
        self._keys, self._binomial_of = keys, binomial_of
        self._dropped = Metrics.counter("exclusion", str(Reason.RARE_SPECIES_EXCLUDED))

    def process(self, sample: Sample):
        key = normalised_binomial(self._binomial_of(sample))
        if key and key in self._keys:
            self._dropped.inc()
            yield beam.pvalue.TaggedOutput(FAILURES, Failure.of(Reason.RARE_SPECIES_EXCLUDED, key, record=sample[0]))
        else:
            yield sample


# --- composites -------------------------------------------------------------------------------------------------

def _route(samples, verdicts, reason: Reason, label: str):
    """Join samples with (id, detail) verdicts by treeoflife_id; a sample with a verdict becomes a failure."""
    keyed = samples | f"{label}KeyById" >> beam.Map(lambda s: (s[0].treeoflife_id, s))  # (id, sample)
    return ({"samples": keyed, "verdicts": verdicts}
            | f"{label}Join" >> beam.CoGroupByKey()  # (id, {samples, verdicts})
            | f"{label}Route" >> beam.ParDo(RouteFn(reason)).with_outputs(FAILURES, main="samples"))


class ExactDedup(beam.PTransform):
    """Samples -> `samples` (one per md5 of the original) and `failures` (DUPLICATE_OF, detail = survivor id)."""

    def __init__(self, completeness: Callable[[Sample], int] = label_completeness,
                 priority: Sequence[str] = SOURCE_PRIORITY) -> None:
        super().__init__()
        self._completeness, self._priority = completeness, tuple(priority)

    def expand(self, samples):
        completeness, priority = self._completeness, self._priority
        return (samples
                | "KeyByMd5" >> beam.Map(lambda s: (_md5_key(s), (survivor_key(s, completeness(s), priority), s)))
                | "GroupByMd5" >> beam.GroupByKey()  # (md5, [(key, sample)])
                | "PickSurvivor" >> beam.ParDo(PickSurvivorFn()).with_outputs(FAILURES, main="samples"))


class NearDedup(beam.PTransform):
    """Samples -> `samples` (one per near-duplicate cluster) and `failures` (NEAR_DUPLICATE_OF, detail = survivor)."""

    def __init__(self, threshold: int = DEFAULT_THRESHOLD, max_bucket: int | None = DEFAULT_MAX_BUCKET,
                 completeness: Callable[[Sample], int] = label_completeness,
                 priority: Sequence[str] = SOURCE_PRIORITY) -> None:
        super().__init__()
        if not 0 <= threshold <= 63:
            raise ValueError(f"NearDedup threshold={threshold} must be in 0..63")
        if max_bucket is not None and max_bucket < 2:
            raise ValueError(f"NearDedup max_bucket={max_bucket} must be >= 2 or None (no cap)")
        self._threshold, self._max_bucket = threshold, max_bucket
        self._completeness, self._priority = completeness, tuple(priority)

    def expand(self, samples):
        completeness, priority, threshold = self._completeness, self._priority, self._threshold

        def bucket_keys(sample):
            key = survivor_key(sample, completeness(sample), priority)
            for centre in centres(sample[1].phash, threshold):
                yield centre, (key, signed_hash(sample[1].phash))

        verdicts = (samples
                    | "ToBuckets" >> beam.FlatMap(bucket_keys)  # ((block, centre), (key, phash))
                    | "BreakFusion" >> beam.Reshuffle()
                    | "GroupBuckets" >> beam.GroupByKey()  # ((block, centre), [(key, phash)])
                    | "ClosePairs" >> beam.ParDo(BucketPairsFn(self._threshold, self._max_bucket))  # (key_a, key_b)
                    | "UniquePairs" >> beam.Distinct()
                    | "AllPairs" >> beam.combiners.ToList()  # [(key_a, key_b)]: the global step, see module doc
                    | "Cluster" >> beam.FlatMap(lambda pairs: [(member[2], survivor[2]) for member, survivor
                                                               in clusters(pairs).items() if member != survivor]))
        return _route(samples, verdicts, Reason.NEAR_DUPLICATE_OF, "Near")  # verdicts: (id, survivor id)


class LeakageFilter(beam.PTransform):
    """Samples -> `samples` and `failures` (LEAKS, detail = eval set) for those within `threshold` of an eval image.

    `eval_hashes` is a PCollection of (eval_set, signed_hash(phash)): Beam's integer coder is signed 64-bit and
    refuses an unsigned hash >= 2**63 (unsigned values below that, and signed ones, are both accepted).
    """

    def __init__(self, eval_hashes, threshold: int = DEFAULT_THRESHOLD) -> None:
        super().__init__()
        if not 0 <= threshold <= 63:
            raise ValueError(f"LeakageFilter threshold={threshold} must be in 0..63")
        self._eval_hashes, self._threshold = eval_hashes, threshold

    def expand(self, samples):
        threshold = self._threshold

        def train_keys(sample):
            for centre in centres(sample[1].phash, threshold):
                yield centre, (False, sample[0].treeoflife_id, signed_hash(sample[1].phash))

        def eval_keys(pair):
            eval_set, phash = pair[0], pair[1] % (1 << 64)
            for centre in centres(phash, threshold):
                yield centre, (True, eval_set, signed_hash(phash))

        train = samples | "TrainBuckets" >> beam.FlatMap(train_keys)  # ((block, centre), (False, id, phash))
        evals = self._eval_hashes | "EvalBuckets" >> beam.FlatMap(eval_keys)  # ((block, centre), (True, set, phash))
        verdicts = ((train, evals)
                    | "Flatten" >> beam.Flatten()
                    | "BreakFusion" >> beam.Reshuffle()
                    | "GroupBuckets" >> beam.GroupByKey()  # ((block, centre), [(is_eval, name, phash)])
                    | "Leaks" >> beam.ParDo(BucketLeaksFn(self._threshold))  # (id, eval_set)
                    | "UniqueLeaks" >> beam.Distinct())
        return _route(samples, verdicts, Reason.LEAKS, "Leak")


class ExcludeSpecies(beam.PTransform):
    """Samples -> `samples` and `failures` (RARE_SPECIES_EXCLUDED, detail = the matched binomial)."""

    def __init__(self, keys: Iterable[str], binomial_of: Callable[[Sample], str] = label_binomial) -> None:
        super().__init__()
        self._keys, self._binomial_of = frozenset(keys), binomial_of

    def expand(self, samples):
        return samples | "Exclude" >> beam.ParDo(ExcludeSpeciesFn(self._keys, self._binomial_of)).with_outputs(
            FAILURES, main="samples")
