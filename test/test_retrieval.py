"""DescriptorIndex against brute-force numpy, on real faiss and real files."""

import numpy as np
import pytest

from structvpr_core.config import ConfigError
from structvpr_core.retrieval.index import DescriptorIndex, IndexConfig


def normalised(x):
    x = np.asarray(x, np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def random_unit(n, dim, seed):
    return normalised(np.random.default_rng(seed).standard_normal((n, dim)))


def clustered(n, dim, clusters, seed):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    return normalised(centres[rng.integers(0, clusters, n)] + 0.3 * rng.standard_normal((n, dim)))


def test_flat_top_k_equals_brute_force():
    db, queries = random_unit(500, 32, 0), random_unit(40, 32, 1)
    ids = np.random.default_rng(2).permutation(500).astype(np.int64) * 7 + 1000  # arbitrary, non-contiguous
    index = DescriptorIndex(32)
    index.add(db, ids)
    scores, found = index.search(queries, 10)

    sims = queries @ db.T
    order = np.argsort(-sims, axis=1)[:, :10]
    np.testing.assert_array_equal(found, ids[order])
    np.testing.assert_allclose(scores, np.take_along_axis(sims, order, axis=1), atol=1e-5)
    assert scores.dtype == np.float32 and found.dtype == np.int64 and len(index) == 500


def test_ivfpq_recall_close_to_flat_on_clustered_data():
    db = clustered(3000, 64, 40, 0)
    rng = np.random.default_rng(1)
    queries = normalised(db[rng.choice(3000, 200, replace=False)] + 0.05 * rng.standard_normal((200, 64)))
    ids = np.arange(3000)

    flat = DescriptorIndex(64)
    flat.add(db, ids)
    # one thread: OpenMP k-means slows down badly when the (shared) cores are busy
    ivf = DescriptorIndex(64, IndexConfig("ivfpq", nlist=32, m=16, nbits=8, nprobe=8))
    ivf.train(db)
    ivf.add(db, ids)
    _, exact = flat.search(queries, 1)
    _, approx = ivf.search(queries, 10)
    recall_at_10 = np.mean([exact[i, 0] in approx[i] for i in range(len(queries))])
    assert recall_at_10 >= 0.9, recall_at_10


@pytest.mark.parametrize("config", [IndexConfig("flat"), IndexConfig("ivfpq", nlist=16, m=8, nbits=8, nprobe=4)])
def test_save_load_round_trip(tmp_path, config):
    db, queries = clustered(600, 32, 10, 3), random_unit(20, 32, 4)
    ids = np.arange(600, dtype=np.int64) * 3 + 5
    index = DescriptorIndex(32, config)
    index.train(db)
    index.add(db, ids)
    path = index.save(tmp_path / "maps" / "index.faiss")

    loaded = DescriptorIndex.load(path)
    assert (loaded.kind, loaded.dim, len(loaded)) == (config.kind, 32, 600)
    assert loaded.config.nprobe == config.nprobe and loaded.config.nlist == config.nlist
    np.testing.assert_array_equal(np.sort(loaded.ids()), ids)
    for a, b in zip(index.search(queries, 5), loaded.search(queries, 5)):
        np.testing.assert_array_equal(a, b)
    # the loaded index keeps working: duplicate ids still rejected, new ids accepted
    with pytest.raises(ValueError, match="already in the index"):
        loaded.add(db[:1], [5])
    loaded.add(db[:1], [10**12])
    assert 10**12 in loaded and len(loaded) == 601


def test_corrupt_truncated_and_foreign_files_are_rejected(tmp_path):
    index = DescriptorIndex(16)
    index.add(random_unit(50, 16, 0), np.arange(50))
    path = index.save(tmp_path / "index.faiss")
    data = bytearray(path.read_bytes())

    flipped = tmp_path / "flipped.faiss"
    data[-100] ^= 0xFF  # inside the stored vectors: faiss alone would not notice
    flipped.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt or truncated"):
        DescriptorIndex.load(flipped)

    truncated = tmp_path / "truncated.faiss"
    truncated.write_bytes(path.read_bytes()[:-300])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        DescriptorIndex.load(truncated)

    foreign = tmp_path / "foreign.faiss"
    foreign.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="not a StructVPR descriptor index"):
        DescriptorIndex.load(foreign)
    with pytest.raises(FileNotFoundError):
        DescriptorIndex.load(tmp_path / "missing.faiss")


@pytest.mark.parametrize("kind", ["flat", "ivfpq"])
def test_remove(kind):
    db = clustered(400, 16, 8, 5)
    config = IndexConfig(kind, nlist=8, m=4, nbits=6, nprobe=8)
    index = DescriptorIndex(16, config)
    index.train(db)
    index.add(db, np.arange(400) + 100)
    index.remove([100, 101, 102])
    assert len(index) == 397 and 100 not in index and 103 in index
    _, found = index.search(db[:3], 5)
    assert not np.isin(found, [100, 101, 102]).any()
    with pytest.raises(KeyError, match="not in the index"):
        index.remove([100])


def test_k_larger_than_index_pads_with_minus_one():
    db = random_unit(3, 8, 0)
    index = DescriptorIndex(8)
    scores, ids = index.search(db[:1], 4)  # empty index
    assert (ids == -1).all() and np.isneginf(scores).all()
    index.add(db, [7, 8, 9])
    scores, ids = index.search(db, 5)
    assert (ids[:, 3:] == -1).all() and np.isneginf(scores[:, 3:]).all()
    assert sorted(ids[0, :3]) == [7, 8, 9] and ids[0, 0] == 7 and scores[0, 0] == pytest.approx(1.0)


def test_input_validation():
    index = DescriptorIndex(8)
    good = random_unit(4, 8, 0)
    with pytest.raises(ValueError, match=r"expected shape \(N, 8\)"):
        index.add(random_unit(4, 9, 0), np.arange(4))
    with pytest.raises(ValueError, match=r"expected shape \(N, 8\)"):
        index.search(random_unit(2, 16, 0), 1)
    with pytest.raises(ValueError, match="not L2-normalised"):
        index.add(good * 2, np.arange(4))
    bad = good.copy()
    bad[1, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        index.add(bad, np.arange(4))
    with pytest.raises(ValueError, match="duplicate ids"):
        index.add(good, [1, 2, 2, 3])
    with pytest.raises(ValueError, match="expected 4 ids"):
        index.add(good, [1, 2, 3])
    with pytest.raises(ValueError, match=">= 0"):
        index.add(good, [-1, 2, 3, 4])
    with pytest.raises(ValueError, match="k must be >= 1"):
        index.search(good, 0)
    assert len(index) == 0  # nothing half-added

    lenient = DescriptorIndex(8, normalize=True)
    lenient.add(good * 3, np.arange(4))
    scores, ids = lenient.search(good[:1] * 5, 1)
    assert ids[0, 0] == 0 and scores[0, 0] == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("dim, m", [(472, 118), (448, 112), (30, 6), (3, 1)])
def test_ivfpq_default_m_is_about_a_quarter_of_the_dimension(dim, m):
    # 472-d (the Lite0 student): the old fixed m = 16 does not divide it; dim / 4 kept R@1 at 1M
    assert DescriptorIndex(dim, IndexConfig("ivfpq")).config.m == m


def test_ivfpq_training_errors():
    with pytest.raises(ConfigError, match="must divide"):
        DescriptorIndex(30, IndexConfig("ivfpq", m=16))
    index = DescriptorIndex(32, IndexConfig("ivfpq", nlist=64, m=8, nbits=8))
    with pytest.raises(ValueError, match="not trained"):
        index.add(random_unit(10, 32, 0), np.arange(10))
    with pytest.raises(ValueError, match="at least 256 training vectors"):
        index.train(random_unit(100, 32, 0))
    with pytest.raises(ConfigError, match="nprobe"):
        IndexConfig("ivfpq", nlist=4, nprobe=8)
