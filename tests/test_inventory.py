"""Module inventories: the batched forward and its gradients equal a per-sample loop over modules."""

from __future__ import annotations

import pytest
import torch

from modrl.inventory import DENSE_MAX_MODULES, Grouping, PolicyInventory, StackedMLP, ValueHeads, default_mode, rows_by_module
from modrl.sparse import SparseRows


def _grads(out, inputs, seed=0):
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))
    return torch.autograd.grad((out * g).sum(), inputs)


@pytest.mark.parametrize("mode", ["grouped", "segments", "dense"])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_batched_forward_and_gradients_equal_the_per_sample_loop(mode, num_layers):
    torch.manual_seed(num_layers)
    inv = StackedMLP(6, 12, 5, hidden=16, num_layers=num_layers, mode=mode)
    x = torch.randn(70, 12, requires_grad=True)
    index = torch.randint(0, 6, (70,))
    index[index == 4] = 1  # one module gets no rows
    params = [x, *inv.parameters()]
    out, ref = inv(x, index), inv.reference_forward(x, index)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(_grads(out, params), _grads(ref, params)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_sum_backward_works():
    # grouped_mm's CPU backward rejects expanded gradients; the inventory makes them contiguous.
    inv = StackedMLP(3, 4, 2)
    x = torch.randn(10, 4, requires_grad=True)
    inv(x, torch.randint(0, 3, (10,))).sum().backward()
    assert x.grad is not None and inv.weights[0].grad is not None


def test_forward_all_matches_per_module_forward():
    inv = StackedMLP(4, 8, 3, hidden=8, num_layers=2)
    x = torch.randn(9, 8)
    dense = inv.forward_all(x)
    for m in range(4):
        torch.testing.assert_close(dense[m], inv(x, torch.full((9,), m)), rtol=1e-5, atol=1e-5)


def test_grouping_round_trip():
    index = torch.tensor([2, 0, 2, 1, 0])
    g = Grouping.of(index, 3)
    x = torch.arange(5.0).unsqueeze(1)
    assert g.sorted_index.tolist() == [0, 0, 1, 2, 2]
    assert g.offsets.tolist() == [2, 3, 5]
    assert torch.equal(g.unsort(g.sort(x)), x)


def test_rows_gathered_in_module_order_need_no_second_sort():
    # a rollout buffer's trainable rows gathered in module order (rows_by_module) run through
    # Grouping.presorted exactly as the same rows through the generic sort
    torch.manual_seed(0)
    inv = StackedMLP(4, 6, 3, hidden=8, num_layers=2)
    buffer, module = torch.randn(40, 6), torch.randint(0, 4, (40,))
    rows = rows_by_module(torch.nonzero(torch.rand(40) < 0.6).squeeze(-1), module)
    assert torch.all(module[rows][1:] >= module[rows][:-1])
    x, m = buffer[rows], module[rows]
    fast, generic = inv(x, m, Grouping.presorted(m, 4)), inv(x, m)
    torch.testing.assert_close(fast, generic)
    for a, b in zip(_grads(fast, list(inv.parameters())), _grads(generic, list(inv.parameters()))):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("frozen", [False, True])
def test_a_kept_first_layer_product_gives_the_same_outputs_and_gradients(frozen):
    # the acting pass keeps each row's x @ W0[m]; the update's forward reuses it (no first matmul)
    # and must give the outputs and parameter gradients of recomputing it
    torch.manual_seed(0)
    inv = StackedMLP(4, 12, 6, hidden=8, num_layers=2, mode="grouped")
    if frozen:
        inv.freeze([2])
    buffer, module = torch.randn(50, 12), torch.randint(0, 4, (50,))
    with torch.no_grad():  # the acting pass, in the buffer's order
        acted, product = inv.forward_keeping_product(buffer, module)
    torch.testing.assert_close(acted, inv(buffer, module), rtol=0, atol=0)
    rows = rows_by_module(torch.arange(50)[torch.rand(50) < 0.7], module)
    g = Grouping.presorted(module[rows], 4)
    reused, recomputed = inv(buffer[rows], module[rows], g, product=product[rows]), inv(buffer[rows], module[rows], g)
    torch.testing.assert_close(reused, recomputed, rtol=1e-6, atol=1e-6)
    grads = _grads(reused, list(inv.parameters()))  # weights[0] first
    for a, b in zip(grads, _grads(recomputed, list(inv.parameters()))):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    if frozen:  # a frozen module's first layer takes no gradient through the kept product either
        assert float(grads[0][2].abs().max()) == 0.0


@pytest.mark.parametrize("frozen", [False, True])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_sparse_rows_give_the_dense_forward_and_gradients(frozen, num_layers):
    # rows as their non-zero entries (modrl.sparse): the first layer from those alone, forward and
    # backward; rows with no non-zero entry (first, middle, last) give the bias alone
    torch.manual_seed(0)
    inv = StackedMLP(5, 40, 6, hidden=16, num_layers=num_layers, mode="grouped")
    if frozen:
        inv.freeze([1])
        with torch.no_grad():
            inv.weights[0][1].add_(1.0)  # moved by an optimiser: frozen modules still read their snapshot
    x = (torch.rand(60, 40) < 0.1) * torch.randint(1, 4, (60, 40)).float()
    x[[0, 30, 59]] = 0
    module = torch.randint(0, 5, (60,))
    g = torch.randn(60, 6)
    grads = []
    for rows in (x, SparseRows.of(x)):
        inv.zero_grad(set_to_none=True)
        out = inv(rows, module)
        out.backward(g)
        grads.append([out.detach()] + [p.grad.clone() for p in inv.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    if frozen:
        assert grads[1][1][1].abs().max() == 0  # a frozen module's weight takes no gradient
    assert not torch.equal(grads[1][0], inv(x, (module + 1) % 5).detach())  # each row's own module


def test_a_product_is_kept_only_where_the_first_layer_is_one_grouped_mm():
    x, m = torch.randn(5, 12), torch.randint(0, 3, (5,))
    grouped = StackedMLP(3, 12, 2, hidden=8, num_layers=2, mode="grouped")
    product = grouped.forward_keeping_product(x, m)[1]
    assert product is not None
    with pytest.raises(ValueError, match="params"):  # the product belongs to the stored parameters
        grouped(x, m, params=grouped.parameters_by_layer(), product=product)
    for inv in (StackedMLP(3, 12, 2, hidden=8, num_layers=2, mode="segments"),
                StackedMLP(3, 10, 2, hidden=8, num_layers=2, mode="grouped")):  # 10 floats: padded
        assert inv.forward_keeping_product(torch.randn(5, inv.dims[0]), m)[1] is None
        with pytest.raises(ValueError, match="product"):
            inv(torch.randn(5, inv.dims[0]), m, product=torch.zeros(5, 8))


def test_the_default_mode_reads_nothing_on_the_host_without_gradients_on_cuda():
    # grouped_mm wherever it runs; on CUDA without it, every module on every row — always when acting
    # (no gradients: a captured CUDA graph holds no host read, and the per-segment loop reads its ends),
    # and for updates up to DENSE_MAX_MODULES modules; beyond that (e.g. 5 runs x 10 modules) segments
    many = DENSE_MAX_MODULES + 1
    assert default_mode("cpu", True, many, True) == default_mode("cuda", True, many, False) == "grouped"
    assert default_mode("cuda", False, DENSE_MAX_MODULES, True) == "dense"
    assert default_mode("cuda", False, many, False) == "dense"
    assert default_mode("cuda", False, many, True) == "segments"
    assert default_mode("cpu", False, 2, False) == "segments"


def test_freeze_keeps_modules_exact_under_adam():
    torch.manual_seed(0)
    inv = StackedMLP(3, 4, 4, hidden=8, num_layers=2)
    opt = torch.optim.Adam(inv.parameters(), lr=0.1)
    x = torch.randn(30, 4)
    index = torch.arange(30) % 3

    def train(steps):
        for _ in range(steps):
            opt.zero_grad()
            (inv(x, index) - 1).pow(2).mean().backward()
            opt.step()

    train(3)  # momentum builds up for every module
    inv.freeze([1])
    before = inv(x, torch.full((30,), 1)).detach()
    other_before = inv(x, torch.full((30,), 0)).detach()
    train(5)
    torch.testing.assert_close(inv(x, torch.full((30,), 1)), before, rtol=0, atol=0)
    assert not torch.allclose(inv(x, torch.full((30,), 0)), other_before)
    inv.freeze([1], frozen=False)  # unfreezing resumes from the frozen values
    torch.testing.assert_close(inv(x, torch.full((30,), 1)), before, rtol=0, atol=0)
    train(2)
    assert not torch.allclose(inv(x, torch.full((30,), 1)), before)


def test_frozen_state_survives_a_state_dict_round_trip():
    inv = StackedMLP(2, 3, 3)
    inv.freeze([0])
    copy = StackedMLP(2, 3, 3)
    copy.load_state_dict(inv.state_dict())
    x = torch.randn(5, 3)
    assert copy.frozen.tolist() == [True, False]
    torch.testing.assert_close(copy(x, torch.zeros(5, dtype=torch.long)), inv(x, torch.zeros(5, dtype=torch.long)))


def test_add_modules_in_the_continual_setting():
    inv = StackedMLP(2, 4, 3)
    x = torch.randn(6, 4)
    old = inv(x, torch.tensor([0, 1, 0, 1, 0, 1])).detach()
    new = inv.add_modules(2, copy_from=1)
    assert new == [2, 3] and inv.num_modules == 4 and inv.frozen.shape == (4,)
    torch.testing.assert_close(inv(x, torch.tensor([0, 1, 0, 1, 0, 1])), old)  # old modules unchanged
    torch.testing.assert_close(inv(x, torch.full((6,), 3)), inv(x, torch.full((6,), 1)))  # a copy of module 1
    fresh = inv.add_modules(1)
    assert fresh == [4]
    out = inv(x, torch.full((6,), 4))
    assert out.shape == (6, 3)
    opt = torch.optim.SGD(inv.parameters(), lr=0.1)  # the new parameters train
    out.sum().backward()
    opt.step()


def test_policy_inventory_and_value_heads():
    pol = PolicyInventory(3, 10, num_actions=5, hidden=16, halt_bias=-4.0)
    x = torch.zeros(7, 10)
    logits, halt = pol(x, torch.randint(0, 3, (7,)))
    assert logits.shape == (7, 5) and halt.shape == (7,)
    torch.testing.assert_close(halt, torch.full((7,), -4.0))  # zero input: only the STOP bias
    values = ValueHeads(4, 10)(torch.randn(7, 10), torch.randint(0, 4, (7,)))
    assert values.shape == (7,)


def test_bad_inputs_are_named():
    inv = StackedMLP(2, 4, 3)
    with pytest.raises(ValueError, match=r"shape \[B, 4\]"):
        inv(torch.randn(5, 3), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"index must have shape \[5\]"):
        inv(torch.randn(5, 4), torch.zeros(4, dtype=torch.long))
