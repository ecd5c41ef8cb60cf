import math

import numpy as np
import pytest
import torch

from mlattack.models.graph import GraphConvolution, correlation_matrix, normalized_adjacency

# Four labels, hand-made training statistics.
# Label counts N = [4, 2, 5, 10]; co-occurrence (symmetric, diagonal ignored):
#   M01 = 2, M02 = 1, M03 = 4, M12 = 0, M13 = 2, M23 = 1
COUNTS = np.array([4, 2, 5, 10])
COOC = np.array(
    [
        [0, 2, 1, 4],
        [2, 0, 0, 2],
        [1, 0, 0, 1],
        [4, 2, 1, 0],
    ]
)


def test_correlation_matrix_hand_example():
    # P = M / N row-wise:
    #   row 0: [0, 2/4=.5, 1/4=.25, 4/4=1]   -> binarised at 0.4: [0, 1, 0, 1]
    #   row 1: [2/2=1, 0, 0, 2/2=1]          -> [1, 0, 0, 1]
    #   row 2: [1/5=.2, 0, 0, 1/5=.2]        -> [0, 0, 0, 0]
    #   row 3: [4/10=.4, .2, .1, 0]          -> [1, 0, 0, 0]  (P == tau counts as 1, like the reference)
    # column sums of the binary matrix: [2, 1, 0, 2]
    # re-weighted: entry * 0.25 / (colsum + 1e-6), then + identity.
    half = 0.25 / (2 + 1e-6)  # ~0.125
    one = 0.25 / (1 + 1e-6)  # ~0.25
    expected = np.array(
        [
            [1, one, 0, half],
            [half, 1, 0, half],
            [0, 0, 1, 0],
            [half, 0, 0, 1],
        ]
    )
    a = correlation_matrix(COOC, COUNTS, tau=0.4, p=0.25)
    assert a.dtype == torch.float32 and a.shape == (4, 4)
    np.testing.assert_allclose(a.numpy(), expected, rtol=1e-6, atol=1e-7)


def test_correlation_matrix_ignores_diagonal_and_accepts_tensors():
    with_diag = COOC.copy()
    np.fill_diagonal(with_diag, COUNTS)  # the data statistics put the class counts on the diagonal
    a = correlation_matrix(torch.as_tensor(with_diag), torch.as_tensor(COUNTS))
    np.testing.assert_allclose(a.numpy(), correlation_matrix(COOC, COUNTS).numpy())


def test_correlation_matrix_tau_and_p_change_result():
    # tau = 0.5 drops row 3's 0.4 entry; p = 0.5 doubles the surviving off-diagonal weights.
    a = correlation_matrix(COOC, COUNTS, tau=0.5, p=0.5).numpy()
    assert a[3, 0] == 0.0
    # column 0 now has a single 1 (row 1): 0.5 / (1 + 1e-6)
    assert a[1, 0] == pytest.approx(0.5 / (1 + 1e-6))


def test_correlation_matrix_absent_label_gets_identity_row():
    counts = np.array([3, 0, 3])
    cooc = np.array([[0, 0, 3], [0, 0, 0], [3, 0, 0]])
    a = correlation_matrix(cooc, counts).numpy()
    assert np.isfinite(a).all()
    np.testing.assert_array_equal(a[1], [0, 1, 0])


@pytest.mark.parametrize(
    "kwargs, match",
    [({"tau": 1.5}, "tau"), ({"tau": -0.1}, "tau"), ({"p": 0.0}, "p must"), ({"p": float("nan")}, "p must")],
)
def test_correlation_matrix_rejects_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        correlation_matrix(COOC, COUNTS, **kwargs)


def test_correlation_matrix_rejects_bad_shapes_and_counts():
    with pytest.raises(ValueError, match="label_counts"):
        correlation_matrix(COOC, COUNTS[:3])
    with pytest.raises(ValueError, match="non-negative"):
        correlation_matrix(-COOC, COUNTS)


def test_normalized_adjacency_matches_direct_formula():
    # Non-symmetric input, so the reference's transpose matters: Â[i, j] = A[j, i] / sqrt(r_i r_j), r = row sums.
    a = torch.tensor([[1.0, 2.0, 0.0], [0.5, 1.0, 0.0], [3.0, 0.0, 1.0]])
    r = a.sum(1)
    direct = torch.empty(3, 3)
    for i in range(3):
        for j in range(3):
            direct[i, j] = a[j, i] / math.sqrt(r[i] * r[j])
    torch.testing.assert_close(normalized_adjacency(a), direct)
    assert not torch.allclose(normalized_adjacency(a), normalized_adjacency(a.t()))


def test_normalized_adjacency_of_identity_is_identity():
    torch.testing.assert_close(normalized_adjacency(torch.eye(4)), torch.eye(4))
    with pytest.raises(ValueError, match="square"):
        normalized_adjacency(torch.ones(2, 3))


def test_graph_convolution_is_adjacency_times_projected_features():
    torch.manual_seed(0)
    gc = GraphConvolution(5, 7, bias=True)
    h, adj = torch.randn(3, 5), torch.rand(3, 3)
    torch.testing.assert_close(gc(h, adj), adj @ (h @ gc.weight) + gc.bias)
    bound = 1 / math.sqrt(7)
    assert gc.weight.abs().max() <= bound and gc.weight.abs().max() > 0.5 * bound
    assert GraphConvolution(5, 7).bias is None
