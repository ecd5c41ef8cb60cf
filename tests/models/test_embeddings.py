import os
import pickle

import numpy as np
import pytest
import torch

from mlattack.data.base import DataFormatError
from mlattack.models.embeddings import default_label_embeddings, load_label_embeddings


def test_npy_embeddings_load_as_float32(tmp_path):
    arr = np.arange(12, dtype=np.float64).reshape(3, 4)
    np.save(tmp_path / "emb.npy", arr)
    emb = load_label_embeddings(tmp_path / "emb.npy")
    assert emb.dtype == torch.float32 and emb.shape == (3, 4)
    np.testing.assert_array_equal(emb.numpy(), arr)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_pickled_numpy_array_loads(tmp_path, protocol):
    arr = np.random.default_rng(0).standard_normal((4, 300)).astype(np.float32)
    path = tmp_path / "glove.pkl"
    path.write_bytes(pickle.dumps(arr, protocol=protocol))
    np.testing.assert_array_equal(load_label_embeddings(path).numpy(), arr)


def test_reference_format_with_numpy1_module_names_loads(tmp_path):
    # The reference's voc_glove_word2vec.pkl was written by numpy 1.x: its globals are "numpy.core.multiarray".
    arr = np.random.default_rng(1).standard_normal((20, 300)).astype(np.float32)
    blob = pickle.dumps(arr, protocol=3).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray\n_reconstruct" in blob
    path = tmp_path / "voc_glove_word2vec.pkl"
    path.write_bytes(blob)
    np.testing.assert_array_equal(load_label_embeddings(path).numpy(), arr)


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(_Exploit(marker)))
    with pytest.raises(
        DataFormatError, match=r"evil\.pkl.*refusing to unpickle global (posix|nt|os)\.system"
    ):
        load_label_embeddings(path)
    assert not marker.exists()
    # sanity check of the test itself: the same bytes do run the command under plain pickle
    pickle.loads(path.read_bytes())
    assert marker.exists()


def test_pickle_of_something_else_is_refused(tmp_path):
    path = tmp_path / "dict.pkl"
    path.write_bytes(pickle.dumps({"emb": [[1.0, 2.0]]}))
    with pytest.raises(DataFormatError, match="2-D numeric"):
        load_label_embeddings(path)


@pytest.mark.parametrize(
    "content, match",
    [
        (np.zeros(5), "2-D numeric"),
        (np.array([["a", "b"]]), "2-D numeric"),
        (np.array([[1.0, np.nan]]), "finite"),
        (np.array([[{"x": 1}]], dtype=object), "unreadable .npy"),
    ],
)
def test_bad_npy_contents_are_refused(tmp_path, content, match):
    path = tmp_path / "bad.npy"
    np.save(path, content, allow_pickle=True)
    with pytest.raises(DataFormatError, match=match):
        load_label_embeddings(path)


def test_unknown_format_and_missing_file(tmp_path):
    (tmp_path / "emb.txt").write_text("0.1 0.2\n")
    with pytest.raises(DataFormatError, match=r"emb\.txt.*expected a \.npy file or a pickled numpy array"):
        load_label_embeddings(tmp_path / "emb.txt")
    with pytest.raises(FileNotFoundError, match="nope.npy"):
        load_label_embeddings(tmp_path / "nope.npy")


@pytest.mark.parametrize(
    "dataset, rows", [("voc2007", 20), ("voc2012", 20), ("coco2014", 80), ("nuswide", 81)]
)
def test_shipped_embeddings_are_used_for_known_datasets(dataset, rows):
    emb = default_label_embeddings(rows, dataset)
    assert emb.shape == (rows, 384) and emb.dtype == torch.float32
    # unit-norm sentence embeddings, all distinct
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(rows), rtol=1e-4, atol=1e-4)
    assert torch.linalg.matrix_rank(emb) == rows


def test_both_voc_years_share_one_file():
    names = ["aeroplane"] * 20
    torch.testing.assert_close(
        default_label_embeddings(names, "voc2007"), default_label_embeddings(names, "voc2012")
    )


@pytest.mark.parametrize("dataset", [None, "synthetic", "voc2007"])
def test_one_hot_fallback(dataset):
    # voc2007 with 5 classes: the shipped file's 20 rows do not match, so one-hot as well.
    torch.testing.assert_close(default_label_embeddings(["a", "b", "c", "d", "e"], dataset), torch.eye(5))
