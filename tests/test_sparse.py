"""Sparse feature rows: the representation round-trips, and their product with per-row module
weights equals the dense one, forward and weight gradient."""

from __future__ import annotations

import pytest
import torch

from modrl.sparse import SparseRows, sparse_rows_matmul


def _rows(n=50, d=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, d, generator=g) < 0.15) * torch.randint(1, 5, (n, d), generator=g).float()
    x[[0, n // 2, n - 1]] = 0  # rows without entries, first, middle and last
    return x


def test_of_cat_select_round_trip():
    a, b = _rows(seed=1), _rows(20, seed=2)
    sa, sb = SparseRows.of(a), SparseRows.of(b)
    assert sa.shape == (50, 30) and torch.equal(sa.to_dense(), a)
    assert bool((sa.row[1:] >= sa.row[:-1]).all())  # row-major
    both = SparseRows.cat([sa, sb])
    assert torch.equal(both.to_dense(), torch.cat([a, b]))
    pick = torch.tensor([69, 3, 0, 3, 25, 51])  # any order, repeats, rows without entries
    assert torch.equal(both.select(pick).to_dense(), torch.cat([a, b])[pick])
    assert torch.equal(both.offsets(), torch.searchsorted(both.row, torch.arange(70)))


@pytest.mark.parametrize("width", [1, 7])  # 1: a linear head's backward (a weighted count), 7: a CSR matmul
def test_matmul_equals_the_dense_product_and_its_weight_gradient(width):
    x = _rows()
    index = torch.randint(0, 4, (50,), generator=torch.Generator().manual_seed(3))
    w = torch.randn(4, 30, width, requires_grad=True)
    g = torch.randn(50, width)
    dense = torch.einsum("bd,bdh->bh", x, w[index])
    (dense_grad,) = torch.autograd.grad(dense, w, g)
    sparse = sparse_rows_matmul(SparseRows.of(x), index, w)
    (sparse_grad,) = torch.autograd.grad(sparse, w, g)
    torch.testing.assert_close(sparse, dense, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sparse_grad, dense_grad, rtol=1e-5, atol=1e-5)
    assert (sparse_grad != 0).float().mean() > 0.5  # most weights take some gradient


def test_rows_without_any_entry():
    w = torch.randn(2, 5, 3, requires_grad=True)
    out = sparse_rows_matmul(SparseRows.of(torch.zeros(4, 5)), torch.zeros(4, dtype=torch.long), w)
    assert torch.equal(out, torch.zeros(4, 3))
    out.sum().backward()
    assert torch.equal(w.grad, torch.zeros_like(w))


def test_shapes_are_checked():
    x = SparseRows.of(_rows())
    with pytest.raises(ValueError, match="do not fit"):
        sparse_rows_matmul(x, torch.zeros(50, dtype=torch.long), torch.randn(2, 31, 3))
    with pytest.raises(ValueError, match="do not fit"):
        sparse_rows_matmul(x, torch.zeros(49, dtype=torch.long), torch.randn(2, 30, 3))
    with pytest.raises(ValueError, match=r"\[B, D\]"):
        SparseRows.of(torch.zeros(3))
