"""Mostly-zero feature rows kept as their non-zero entries, and their product with per-row module
weights.

Craft's observation (Andreas et al. 2017, §5.1: one-hot windows, inventory counts, facing) has
~29 non-zero features of 1,076. A batch of such rows is :class:`SparseRows` (the entries in
row-major order, as ``nonzero`` lists them), and :func:`sparse_rows_matmul` computes each row's
``x[i] @ W[m_i]`` for a module inventory's stacked first-layer weight ``W [M, in, out]`` from
the entries alone:

- forward: one ``embedding_bag`` over the rows of ``W`` viewed as ``[M · in, out]`` (entry
  (i, c, v) adds ``v · W[m_i, c]`` to output row i);
- backward: ``∂W[m, c] = Σ v · g_i`` over the entries (i, c, v) of the rows i of module m, i.e.
  ``S g`` for the ``[M · in, B]`` sparse matrix S of the entries keyed by (module, column): one
  CSR matmul (the entries sorted by key with a stable int32 sort); for a linear head (one output)
  a weighted ``bincount`` of the keys. On one update's rows of the five-run reproduction
  (64,000 Craft observations, 40 modules of 1076 → 128, 2 CPU threads; ``benchmarks/sparse_rows.py``)
  the first layer's forward and backward take 56 ms, against 140 ms through ``embedding_bag``'s own
  backward and 125 ms for the dense weight gradient alone.

Only the weight takes a gradient (the rows are observations). The product equals the dense one up
to float rounding (another summation order).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class SparseRows:
    """``num_rows`` rows of width ``num_cols`` as their non-zero entries: entry k is
    ``(row[k], col[k], val[k])``, rows non-decreasing (row-major), int32 indices (half the memory
    traffic of int64 in the update's gathers and sorts)."""

    row: torch.Tensor
    col: torch.Tensor
    val: torch.Tensor
    num_rows: int
    num_cols: int

    @classmethod
    def of(cls, x: torch.Tensor) -> SparseRows:
        """The non-zero entries of a dense ``[B, D]`` tensor (reads their count on the host)."""
        if x.dim() != 2:
            raise ValueError(f"SparseRows.of needs a [B, D] tensor, got shape {tuple(x.shape)}")
        if x.numel() >= 2**31:
            raise ValueError(f"SparseRows.of: {tuple(x.shape)} has too many entries for int32 indices")
        flat = torch.nonzero(x.reshape(-1)).squeeze(-1)  # row-major
        D, f = x.shape[1], flat.to(torch.int32)
        return cls(torch.div(f, D, rounding_mode="floor"), f % D, x.reshape(-1).index_select(0, flat), x.shape[0], D)

    @classmethod
    def cat(cls, parts: list[SparseRows]) -> SparseRows:
        """The rows of ``parts`` one block after the other (e.g. a rollout's ticks)."""
        if not parts or len({p.num_cols for p in parts}) != 1:
            raise ValueError("SparseRows.cat needs at least one part, all of the same width")
        starts = [0]
        for p in parts[:-1]:
            starts.append(starts[-1] + p.num_rows)
        return cls(torch.cat([p.row + s for p, s in zip(parts, starts)]), torch.cat([p.col for p in parts]),
                   torch.cat([p.val for p in parts]), starts[-1] + parts[-1].num_rows, parts[0].num_cols)

    @property
    def shape(self) -> tuple[int, int]:
        return self.num_rows, self.num_cols

    @property
    def device(self) -> torch.device:
        return self.val.device

    def _counts_and_offsets(self) -> tuple[torch.Tensor, torch.Tensor]:
        counts = torch.bincount(self.row, minlength=self.num_rows).to(torch.int32)
        return counts, torch.cumsum(counts, 0, dtype=torch.int32) - counts

    def offsets(self) -> torch.Tensor:
        """The position of each row's first entry ([num_rows], int32; a row without entries: the next's)."""
        return self._counts_and_offsets()[1]

    def select(self, rows: torch.Tensor) -> SparseRows:
        """The rows ``rows`` (any order, repeats allowed), renumbered 0 … len(rows) − 1."""
        dev = self.row.device
        counts, starts = self._counts_and_offsets()
        count, start = counts.index_select(0, rows), starts.index_select(0, rows)
        new_row = torch.repeat_interleave(torch.arange(rows.numel(), dtype=torch.int32, device=dev), count)
        shift = start - (torch.cumsum(count, 0, dtype=torch.int32) - count)  # old − new position of a row's entries
        entry = shift.index_select(0, new_row) + torch.arange(new_row.numel(), dtype=torch.int32, device=dev)
        return SparseRows(new_row, self.col.index_select(0, entry), self.val.index_select(0, entry), rows.numel(),
                          self.num_cols)

    def to_dense(self) -> torch.Tensor:
        out = torch.zeros(self.num_rows, self.num_cols, dtype=self.val.dtype, device=self.device)
        return out.index_put_((self.row.long(), self.col.long()), self.val)


def sparse_rows_matmul(x: SparseRows, index: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x[i] @ weight[index[i]]`` for every row i ([B, out]), from ``x``'s non-zero entries;
    differentiable in ``weight`` ([M, in, out]), see the module docstring."""
    M, D, H = weight.shape
    if D != x.num_cols or index.shape != (x.num_rows,):
        raise ValueError(f"sparse_rows_matmul: rows of width {x.num_cols} with {tuple(index.shape)} module indices "
                         f"do not fit {x.num_rows} rows and a weight of shape {tuple(weight.shape)}")
    dtype = torch.int32 if M * D < 2**31 else torch.long
    key = index.to(dtype).index_select(0, x.row) * D + x.col  # the entry's row in weight viewed as [M · D, H]
    return _SparseRowsMatmul.apply(weight, key, x.row, x.val, x.offsets().to(dtype), x.num_rows)


class _SparseRowsMatmul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weight, key, row, val, offsets, num_rows):
        M, D, H = weight.shape
        ctx.save_for_backward(key, row, val)
        ctx.shape, ctx.num_rows = (M, D, H), num_rows
        if key.numel() == 0:
            return weight.new_zeros(num_rows, H)  # (embedding_bag wants at least one entry)
        return F.embedding_bag(key, weight.reshape(M * D, H), offsets, mode="sum", per_sample_weights=val)

    @staticmethod
    def backward(ctx, grad):
        key, row, val = ctx.saved_tensors
        M, D, H = ctx.shape
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None, None
        if H == 1:  # a linear head: one weighted count per weight entry, no sort
            g = grad.reshape(-1).index_select(0, row) * val
            return torch.bincount(key, weights=g, minlength=M * D).to(grad.dtype).view(M, D, H), None, None, None, None, None
        # S [M·D, B] with the entries sorted by key (stable: rows ascending within a key), then S g
        order = torch.argsort(key, stable=True)
        crow = torch.zeros(M * D + 1, dtype=key.dtype, device=key.device)
        crow[1:] = torch.cumsum(torch.bincount(key, minlength=M * D), 0, dtype=key.dtype)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled")  # torch 2.11
            S = torch.sparse_csr_tensor(crow, row.index_select(0, order).to(key.dtype), val.index_select(0, order),
                                        size=(M * D, ctx.num_rows), dtype=grad.dtype, check_invariants=False)
        return (S @ grad.contiguous()).view(M, D, H), None, None, None, None, None
