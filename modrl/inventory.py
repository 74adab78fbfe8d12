"""Module inventories: M modules of one architecture with stacked parameters, each sample run
through its own module in one batched operation (the *computation function* of Pfeiffer et al.
2023, "Modular Deep Learning", §3; the shared module inventory of §4.2.2 and §8.1).

``forward(x, index)`` sorts the batch by module, runs one ``torch.nn.functional.grouped_mm`` per
layer over the sorted rows, and scatters the rows back. No Python loop over samples, and no
weight matrix gathered per sample (that materialises B matrices and was measured ≈150× slower
than a single module at batch 4096, width 128, M = 8). Where ``grouped_mm`` is unavailable for
the device or dtype (CUDA in float32), a CUDA device runs every module on every row and keeps each
row's own output (``dense``: M× the arithmetic, but static shapes and no host read, so it can be
captured in a CUDA graph; M ≤ 16), and otherwise a loop over the M contiguous segments of the
sorted batch (it reads the segment ends on the host) is the fallback.

Mostly-zero inputs (Craft's observation) can come as their non-zero entries
(:class:`modrl.sparse.SparseRows`): the first layer is then computed from those alone, forward and
backward.

An on-policy update that runs the modules on the very rows they acted on, with the same
parameters, can reuse the acting pass's first-layer product (:meth:`StackedMLP.forward_keeping_product`,
then ``forward(..., product=)``): the update skips its widest matmul, and its gradients are those
of recomputing it.

Modules can be appended after training has started (:meth:`StackedMLP.add_modules`, continual
setting) and frozen one by one (:meth:`StackedMLP.freeze`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from modrl.networks import ACTIVATIONS
from modrl.sparse import SparseRows, sparse_rows_matmul


MODES = ("grouped", "segments", "dense")
DENSE_MAX_MODULES = 16
"""Up to this many modules a CUDA device runs them all on every row (``dense``) where
``grouped_mm`` is unavailable; beyond, the per-segment loop — but only with gradients on (an
update): without them (acting, evaluation) it is always ``dense``, since the per-segment loop reads
the segment ends on the host, which a CUDA graph's captured acting pass cannot do (e.g. Craft's
50 critic heads a run, or the 40 modules of five runs side by side, ``agent.num_runs``)."""


def default_mode(device_type: str, grouped_mm: bool, num_modules: int, grad: bool) -> str:
    """The inventory's mode where none is set: see ``MODES`` and ``DENSE_MAX_MODULES``."""
    if grouped_mm:
        return "grouped"
    if device_type == "cuda" and (num_modules <= DENSE_MAX_MODULES or not grad):
        return "dense"
    return "segments"


@dataclass
class Grouping:
    """A batch sorted by module: ``order`` (sorted position → sample), ``inverse`` (sample →
    sorted position), ``offsets`` (int32 ends of the M segments), ``sorted_index`` (module of each
    sorted row). Reusable across layers and across inventories sharing the per-sample index.
    (``index_select`` is used throughout: on CPU it is ~4× faster than advanced indexing.)"""

    order: torch.Tensor | None
    inverse: torch.Tensor | None
    offsets: torch.Tensor
    sorted_index: torch.Tensor

    @classmethod
    def of(cls, index: torch.Tensor, num_modules: int) -> Grouping:
        index = index.long()
        order = torch.argsort(index, stable=True)
        inverse = torch.empty_like(order).scatter_(0, order, torch.arange(order.numel(), device=order.device))
        return cls(order, inverse, _segment_ends(index, num_modules), index.index_select(0, order))

    @classmethod
    def presorted(cls, sorted_index: torch.Tensor, num_modules: int) -> Grouping:
        """A batch whose rows are already in module order (``sorted_index`` non-decreasing), e.g.
        gathered that way from a rollout buffer with :func:`rows_by_module`: sort and unsort are
        the identity, so the wide input is not copied a second time."""
        sorted_index = sorted_index.long()
        return cls(None, None, _segment_ends(sorted_index, num_modules), sorted_index)

    def sort(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.order is None else _Permute.apply(x, self.order, self.inverse)

    def unsort(self, y: torch.Tensor) -> torch.Tensor:
        return y if self.order is None else _Permute.apply(y, self.inverse, self.order)


def _segment_ends(index: torch.Tensor, num_modules: int) -> torch.Tensor:
    """int32 end offsets of the M module segments of a batch sorted by ``index``."""
    return torch.cumsum(torch.bincount(index, minlength=num_modules), 0).to(torch.int32)


def rows_by_module(rows: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``rows`` (positions in a batch whose module is ``index[row]``) reordered by module, stably:
    gathering a buffer's rows in this order yields a batch for :meth:`Grouping.presorted`."""
    return rows.index_select(0, torch.argsort(index.index_select(0, rows), stable=True))


class _Permute(torch.autograd.Function):
    """Rows gathered by a permutation; the backward is the inverse permutation, a gather too
    (autograd's generic ``index_select`` backward would scatter-add, ~2× the memory traffic)."""

    @staticmethod
    def forward(ctx, x, perm, inverse):
        ctx.save_for_backward(inverse)
        return x.index_select(0, perm)

    @staticmethod
    def backward(ctx, grad):
        (inverse,) = ctx.saved_tensors
        return grad.index_select(0, inverse), None, None


class _ContiguousGrad(torch.autograd.Function):
    """Identity whose backward makes the incoming gradient contiguous (``grouped_mm``'s CPU
    backward rejects the expanded zero-stride gradients that e.g. ``y.sum()`` produces)."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad.contiguous()


def _grouped_mm_supported(device: torch.device, dtype: torch.dtype) -> bool:
    if not hasattr(F, "grouped_mm"):
        return False
    if device.type == "cpu":
        return dtype == torch.float32
    if device.type == "cuda":
        return dtype == torch.bfloat16 and torch.cuda.get_device_capability(device)[0] >= 8
    return False


class _KnownProduct(torch.autograd.Function):
    """``x[i] @ weight[m_i]`` for rows sorted by module, when that product is already known —
    computed with these very weights while acting: the forward returns it, the backward is
    ``grouped_mm``'s own weight gradient, ``x[seg]ᵀ · grad[seg]`` per module segment. ``x`` (an
    observation) takes no gradient. Saves the update's widest matmul (1076 → 128 in Craft)."""

    @staticmethod
    def forward(ctx, x, weight, product, offsets):
        ctx.save_for_backward(x, offsets)
        return product.view_as(product)

    @staticmethod
    def backward(ctx, grad):
        x, offsets = ctx.saved_tensors
        grad_weight = F.grouped_mm(x.t(), grad.contiguous(), offs=offsets) if ctx.needs_input_grad[1] else None
        return None, grad_weight, None, None


def _padding(fan_in: int, fan_out: int, dtype: torch.dtype) -> tuple[int, int]:
    """The zero columns ``grouped_mm`` needs on a layer's input and output for 16-byte-aligned
    row strides (e.g. 5 actions + STOP in float32: 2)."""
    align = max(1, 16 // dtype.itemsize)
    return -fan_in % align, -fan_out % align


def grouped_linear(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, g: Grouping, use_grouped: bool,
                   product: torch.Tensor | None = None):
    """``h[i] @ weight[m_i] + bias[m_i]`` for rows of ``h`` already sorted by module (``product``:
    ``h[i] @ weight[m_i]`` if already known, see :class:`_KnownProduct`)."""
    if product is not None:
        y = _KnownProduct.apply(h, weight, product, g.offsets)
    elif use_grouped:
        fan_in, fan_out = weight.shape[1], weight.shape[2]
        pad_in, pad_out = _padding(fan_in, fan_out, h.dtype)
        if pad_in:
            h = F.pad(h, (0, pad_in))
        if pad_in or pad_out:
            weight = F.pad(weight, (0, pad_out, 0, pad_in))
        y = _ContiguousGrad.apply(F.grouped_mm(h.contiguous(), weight, offs=g.offsets))
        if pad_out:
            y = y[:, :fan_out]
    else:  # fallback: one matmul per module segment (reads the offsets on the host)
        ends = g.offsets.tolist()
        starts = [0] + ends[:-1]
        y = torch.cat([h[s:e] @ weight[m] for m, (s, e) in enumerate(zip(starts, ends))])
    if bias is not None:
        y = y + bias.index_select(0, g.sorted_index)
    return y


class StackedMLP(nn.Module):
    """M MLPs of identical shape ``in_dim → hidden × num_layers → out_dim`` with stacked weights
    ``[M, fan_in, fan_out]``; ``forward(x, index)`` runs row i through module ``index[i]``."""

    def __init__(
        self,
        num_modules: int,
        in_dim: int,
        out_dim: int,
        hidden: int = 128,
        num_layers: int = 1,
        activation: str = "relu",
        final_activation: bool = False,
        mode: str | None = None,
    ):
        super().__init__()
        if num_modules < 1:
            raise ValueError(f"an inventory needs at least one module, got {num_modules}")
        dims = [in_dim] + [hidden] * (num_layers - 1) + [out_dim] if num_layers > 0 else [in_dim, out_dim]
        self.dims = dims
        self.num_modules = num_modules
        self.activation = ACTIVATIONS[activation]()
        self.final_activation = final_activation
        if mode not in (None, *MODES):
            raise ValueError(f"unknown inventory mode {mode!r}; modes: {', '.join(MODES)} (None: by device)")
        self.mode = mode
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(dims[:-1], dims[1:]):
            self.weights.append(nn.Parameter(torch.empty(num_modules, fan_in, fan_out)))
            self.biases.append(nn.Parameter(torch.zeros(num_modules, fan_out)))
        self.register_buffer("frozen", torch.zeros(num_modules, dtype=torch.bool))
        self._snapshots: list[torch.Tensor] | None = None
        self.reset_parameters()

    def reset_parameters(self, modules: slice | None = None, unit_scaling: float | None = None) -> None:
        """Zero biases and uniform weights for ``modules`` (default all): ±1/√fan_in (as
        ``nn.Linear``), or with ``unit_scaling=f`` ±f·√(3 / fan_in) — TF 1's
        ``uniform_unit_scaling_initializer(f)``, which the policy-sketch original uses for all its
        layers with f = 1.43 (``models/net.py``, ``RELU_SCALE``; ≈ 2.5× torch's bound)."""
        sl = modules or slice(None)
        with torch.no_grad():
            for w, b in zip(self.weights, self.biases):
                fan_in = w.shape[1]
                bound = 1.0 / math.sqrt(fan_in) if unit_scaling is None else unit_scaling * math.sqrt(3.0 / fan_in)
                w[sl].uniform_(-bound, bound)
                b[sl].zero_()

    # ------------------------------------------------------------------ forward
    def _mode(self, x: torch.Tensor) -> str:
        if self.mode is not None:
            return self.mode
        return default_mode(x.device.type, _grouped_mm_supported(x.device, x.dtype), self.num_modules,
                            torch.is_grad_enabled())

    def _effective(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        w, b = self.weights[layer], self.biases[layer]
        if self._snapshots is not None:  # frozen modules read their snapshot, which takes no gradient
            mask = self.frozen
            w = torch.where(mask.view(-1, 1, 1), self._snapshots[2 * layer], w)
            b = torch.where(mask.view(-1, 1), self._snapshots[2 * layer + 1], b)
        return w, b

    def forward(
        self,
        x: torch.Tensor,
        index: torch.Tensor,
        grouping: Grouping | None = None,
        params: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
        product: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``x``: [B, in_dim], or such rows as their non-zero entries (:class:`modrl.sparse.SparseRows`:
        the first layer from those alone); ``index``: [B] module of each row in [0, M); returns [B, out_dim].

        ``params`` replaces the stored parameters by another stack of the same layer shapes
        (e.g. per-task averages of module parameters, with ``index`` the task; see
        ``modrl.routing.SkillAllocation``). ``product``: each row's first-layer product
        ``x[i] @ W₀[index[i]]`` (no bias), as :meth:`forward_keeping_product` returned it with the
        same parameters: the forward skips that matmul and the gradients are unchanged.
        """
        return self._forward(x, index, grouping, params, product)[0]

    def forward_keeping_product(self, x: torch.Tensor, index: torch.Tensor, grouping: Grouping | None = None):
        """``(forward(x, index), product)``: also each row's first-layer product (``[B, hidden]``,
        rows in ``x``'s order) for a later ``forward(..., product=)`` with the same parameters —
        the acting pass's product reused by the update. ``product`` is None where the layer does
        not run as one unpadded ``grouped_mm`` (then the later forward computes it)."""
        return self._forward(x, index, grouping, None, None, keep=True)

    def keeps_product(self, x: torch.Tensor) -> bool:
        """Whether :meth:`forward_keeping_product` returns a product for inputs like ``x``."""
        return self._keeps_product(self._mode(x), x.dtype)

    def _keeps_product(self, mode: str, dtype: torch.dtype) -> bool:
        """A first-layer product exists only as one unpadded ``grouped_mm``."""
        return mode == "grouped" and _padding(self.dims[0], self.dims[1], dtype) == (0, 0)

    def _forward(self, x, index, grouping, params, product, keep: bool = False):
        if isinstance(x, SparseRows):
            return self._forward_sparse(x, index, grouping, params, product, keep), None
        if x.dim() != 2 or x.shape[1] != self.dims[0]:
            raise ValueError(f"inventory input must have shape [B, {self.dims[0]}], got {tuple(x.shape)}")
        if index.shape != x.shape[:1]:
            raise ValueError(f"index must have shape [{x.shape[0]}], got {tuple(index.shape)}")
        return self._layers(x, index, grouping, params, product, keep, start=0)

    def _forward_sparse(self, x: SparseRows, index, grouping, params, product, keep):
        """The first layer from the rows' non-zero entries (:func:`modrl.sparse.sparse_rows_matmul`),
        the others as for dense rows."""
        if x.num_cols != self.dims[0] or index.shape != (x.num_rows,):
            raise ValueError(f"inventory input must be {x.num_rows} rows of width {self.dims[0]} with an index of "
                             f"shape [{x.num_rows}]; got width {x.num_cols} and index {tuple(index.shape)}")
        if params is not None or product is not None or keep:
            raise ValueError("sparse rows take neither params nor product")
        index = index.long()
        w, b = self._effective(0)
        h = sparse_rows_matmul(x, index, w) + b.index_select(0, index)
        if len(self.weights) > 1 or self.final_activation:
            h = self.activation(h)
        return h if len(self.weights) == 1 else self._layers(h, index, grouping, None, None, False, start=1)[0]

    def _layers(self, x, index, grouping, params, product, keep, start: int):
        """Layers ``start`` … of the forward on dense rows ``x``; returns (output, kept product)."""
        groups = params[0][0].shape[0] if params is not None else self.num_modules
        last = len(self.weights) - 1
        mode = self._mode(x)
        if mode == "dense":  # every module on every row, each row keeps its own module's output
            if product is not None:
                raise ValueError("product needs the grouped mode (keeps_product(x) is False here)")
            h, index = x, index.long()
            for layer in range(start, len(self.weights)):
                w, b = params[layer] if params is not None else self._effective(layer)
                fan_in, fan_out = w.shape[1], w.shape[2]
                every = (h @ w.permute(1, 0, 2).reshape(fan_in, groups * fan_out)).view(-1, groups, fan_out)
                h = every.gather(1, index.view(-1, 1, 1).expand(-1, 1, fan_out)).squeeze(1) + b.index_select(0, index)
                if layer < last or self.final_activation:
                    h = self.activation(h)
            return h, None
        g = grouping or Grouping.of(index, groups)
        use_grouped, keepable = mode == "grouped", self._keeps_product(mode, x.dtype)
        keep = keep and keepable and start == 0
        if product is not None:
            if params is not None:
                raise ValueError("product was computed with the stored parameters; it cannot be used with params")
            if not keepable or product.shape != (x.shape[0], self.dims[1]):
                raise ValueError(f"product must be [{x.shape[0]}, {self.dims[1]}] from forward_keeping_product "
                                 f"(got {tuple(product.shape)}, mode {mode})")
            product = g.sort(product)
        h, kept = g.sort(x), None
        for layer in range(start, len(self.weights)):
            w, b = params[layer] if params is not None else self._effective(layer)
            if layer == 0 and keep:  # the first layer's product, kept in x's row order
                first = grouped_linear(h, w, None, g, use_grouped)
                kept = g.unsort(first)
                h = first + b.index_select(0, g.sorted_index)
            else:
                h = grouped_linear(h, w, b, g, use_grouped, product if layer == 0 else None)
            if layer < last or self.final_activation:
                h = self.activation(h)
        return g.unsort(h), kept

    def parameters_by_layer(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The (weight [M, in, out], bias [M, out]) of each layer, frozen modules resolved."""
        return [self._effective(layer) for layer in range(len(self.weights))]

    def forward_all(self, x: torch.Tensor) -> torch.Tensor:
        """Every module on every row: [M, B, out_dim] (dense; for soft mixtures and tests)."""
        h = x.unsqueeze(0).expand(self.num_modules, *x.shape)
        last = len(self.weights) - 1
        for layer in range(len(self.weights)):
            w, b = self._effective(layer)
            h = torch.baddbmm(b.unsqueeze(1), h, w)
            if layer < last or self.final_activation:
                h = self.activation(h)
        return h

    def reference_forward(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """A per-sample loop over modules — slow; the definition the batched forward must equal."""
        rows = []
        for i in range(x.shape[0]):
            h = x[i : i + 1]
            m = int(index[i])
            for layer in range(len(self.weights)):
                w, b = self._effective(layer)
                h = h @ w[m] + b[m]
                if layer < len(self.weights) - 1 or self.final_activation:
                    h = self.activation(h)
            rows.append(h)
        return torch.cat(rows)

    # ------------------------------------------------------------------ continual learning
    def add_modules(self, count: int, copy_from: int | None = None) -> list[int]:
        """Append ``count`` modules (fresh, or copies of module ``copy_from``); return their indices.

        The parameters are replaced by larger ones: rebuild the optimiser (or add the new
        parameters to it) after calling this.
        """
        old = self.num_modules
        new_weights, new_biases = nn.ParameterList(), nn.ParameterList()
        with torch.no_grad():
            for w, b in zip(self.weights, self.biases):
                extra_w = w.new_empty(count, *w.shape[1:])
                extra_b = b.new_zeros(count, *b.shape[1:])
                if copy_from is not None:
                    extra_w.copy_(w[copy_from].expand_as(extra_w))
                    extra_b.copy_(b[copy_from].expand_as(extra_b))
                new_weights.append(nn.Parameter(torch.cat([w, extra_w])))
                new_biases.append(nn.Parameter(torch.cat([b, extra_b])))
        self.weights, self.biases = new_weights, new_biases
        self.num_modules = old + count
        self.frozen = torch.cat([self.frozen, self.frozen.new_zeros(count)])
        if copy_from is None:
            self.reset_parameters(slice(old, None))
        self._refresh_snapshots()
        return list(range(old, old + count))

    def freeze(self, modules, frozen: bool = True) -> None:
        """Freeze (or unfreeze) modules: their outputs stay exactly as now, whatever the optimiser
        does (frozen modules read a snapshot that takes no gradient)."""
        idx = torch.as_tensor(modules, dtype=torch.long, device=self.frozen.device).flatten()
        if frozen:
            self._refresh_snapshots()  # snapshot current values of the modules to freeze
            self.frozen[idx] = True
        else:
            with torch.no_grad():  # unfreezing continues from the frozen values
                for layer, (w, b) in enumerate(zip(self.weights, self.biases)):
                    w[idx] = self._snapshots[2 * layer][idx]
                    b[idx] = self._snapshots[2 * layer + 1][idx]
            self.frozen[idx] = False
        self._refresh_snapshots()

    def _refresh_snapshots(self) -> None:
        if not bool(self.frozen.any()) and self._snapshots is None:
            return
        with torch.no_grad():
            snaps = []
            for layer, (w, b) in enumerate(zip(self.weights, self.biases)):
                for k, p in enumerate((w, b)):
                    old = self._snapshots[2 * layer + k] if self._snapshots is not None else None
                    snap = p.detach().clone()
                    if old is not None and old.shape[0] <= snap.shape[0]:
                        keep = self.frozen[: old.shape[0]].view(-1, *([1] * (p.dim() - 1)))
                        snap[: old.shape[0]] = torch.where(keep, old, snap[: old.shape[0]])
                    snaps.append(snap)
        self._snapshots = snaps if bool(self.frozen.any()) else None

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        if self._snapshots is not None:
            self._snapshots = [fn(s) for s in self._snapshots]
        return self

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self._snapshots is not None:
            for i, snap in enumerate(self._snapshots):
                destination[f"{prefix}snapshot_{i}"] = snap

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        snaps = [state_dict.pop(k) for k in sorted((k for k in list(state_dict) if k.startswith(f"{prefix}snapshot_")),
                                                   key=lambda k: int(k.rsplit("_", 1)[1]))]
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)
        self._snapshots = snaps or None


class PolicyInventory(nn.Module):
    """Option / sub-policy heads: module m maps features to action logits and a halting logit.

    - Policy sketches (Andreas et al. 2017): STOP is an extra action of the module's softmax
      (``halting="action"``; the halting logit is the STOP logit, its bias initialised low).
    - Options (Bacon et al. 2017): termination β_ω(s) is a separate sigmoid (``halting="sigmoid"``).
    """

    def __init__(
        self,
        num_modules: int,
        in_dim: int,
        num_actions: int,
        hidden: int = 128,
        num_layers: int = 2,
        activation: str = "relu",
        halting: str = "action",
        halt_bias: float = -3.0,
    ):
        super().__init__()
        if halting not in ("action", "sigmoid"):
            raise ValueError(f"halting must be 'action' or 'sigmoid', got {halting!r}")
        self.num_actions = num_actions
        self.halting = halting
        self.halt_bias = halt_bias
        self.net = StackedMLP(num_modules, in_dim, num_actions + 1, hidden, num_layers, activation)
        self._set_halt_bias()

    def _set_halt_bias(self) -> None:
        with torch.no_grad():
            self.net.biases[-1][:, self.num_actions] = self.halt_bias

    def reset_parameters(self, unit_scaling: float | None = None) -> None:
        """Re-draw the weights (``StackedMLP.reset_parameters``), keeping the halting bias."""
        self.net.reset_parameters(unit_scaling=unit_scaling)
        self._set_halt_bias()

    @property
    def num_modules(self) -> int:
        return self.net.num_modules

    def forward(self, x: torch.Tensor, index: torch.Tensor, grouping: Grouping | None = None,
                product: torch.Tensor | None = None):
        """Return ``(action_logits [B, A], halt_logit [B])`` of each row's module (``product``: see
        :meth:`StackedMLP.forward`)."""
        out = self.net(x, index, grouping, product=product)
        return out[:, : self.num_actions], out[:, self.num_actions]

    def forward_keeping_product(self, x: torch.Tensor, index: torch.Tensor):
        """``(action_logits, halt_logit, product)``: :meth:`StackedMLP.forward_keeping_product`."""
        out, product = self.net.forward_keeping_product(x, index)
        return out[:, : self.num_actions], out[:, self.num_actions], product


class ValueHeads(nn.Module):
    """Linear (or MLP) value heads, one per module or per task, selected per sample."""

    def __init__(self, num_heads: int, in_dim: int, hidden: int = 0, activation: str = "relu"):
        super().__init__()
        self.net = StackedMLP(num_heads, in_dim, 1, hidden or in_dim, 2 if hidden else 1, activation)

    @property
    def num_heads(self) -> int:
        return self.net.num_modules

    def forward(self, x: torch.Tensor, index: torch.Tensor, grouping: Grouping | None = None) -> torch.Tensor:
        return self.net(x, index, grouping).squeeze(-1)
