"""Host-sync audit: which ops of a piece of code read device data on the host.

A CUDA graph (``torch.cuda.CUDAGraph``) replays recorded kernels without the host, so a step that
reads a tensor's value on the host (``bool(t)``, ``t.item()``, ``t.tolist()``) or makes an output
whose shape depends on the data (``nonzero``, boolean-mask indexing, ``masked_select``) cannot be
captured, and on a GPU each such read stalls the launch queue. On a CPU these reads are cheap and
invisible; :class:`HostSyncAudit` (a ``TorchDispatchMode``) finds them on any device, with the
line of the project's code that issued each one::

    with HostSyncAudit() as audit:
        env.step(actions)
    audit.sites   # {("aten::nonzero", "envs/craft.py:212"): 1, ...}; empty: nothing reads the host

``t.tolist()`` reads the data without going through the dispatcher, so the audit wraps it while
active. Not flagged: explicit copies to the host (``t.cpu()``, ``t.numpy()``), which on a CPU are
not copies at all.
"""

from __future__ import annotations

import traceback
from collections import Counter
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

#: ops that read device data on the host or whose output shape depends on it
HOST_READS = frozenset({
    "aten::_local_scalar_dense",  # bool(t), t.item(), int(t), float(t)
    "aten::nonzero",
    "aten::masked_select",
    "aten::_unique2",
    "aten::unique_dim",
    "aten::unique_consecutive",
    "aten::repeat_interleave",
})
_ROOT = Path(__file__).resolve().parents[1]
#: where the project's code lives (a repository checkout, or modrl/ alone in site-packages)
_PROJECT = tuple(_ROOT / d for d in ("modrl", "envs", "agents", "tests", "benchmarks"))


class HostReadMode(TorchDispatchMode):
    """A dispatch mode that calls :meth:`host_read` with the op's name before every host-reading op
    (and ``Tensor.tolist``, which bypasses the dispatcher: it is wrapped while the mode is active),
    then :meth:`run` for every op. Subclasses decide what a host read means (count it, refuse it)."""

    def host_read(self, name: str) -> None:
        raise NotImplementedError

    def run(self, func, args, kwargs):
        return func(*args, **kwargs)

    def __enter__(self):
        self._tolist = tolist = torch.Tensor.tolist

        def watched(t):
            self.host_read("Tensor.tolist")
            return tolist(t)

        torch.Tensor.tolist = watched
        return super().__enter__()

    def __exit__(self, *exc):
        torch.Tensor.tolist = self._tolist
        return super().__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name
        if name == "aten::index" and any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8)
                                         for i in args[1]):
            self.host_read("aten::index (boolean mask)")
        elif name in HOST_READS:
            self.host_read(name)
        return self.run(func, args, kwargs or {})

    @staticmethod
    def _caller() -> str:
        for frame in reversed(traceback.extract_stack()):
            path = Path(frame.filename).resolve()
            if any(path.is_relative_to(d) for d in _PROJECT) and path.name not in ("host_sync.py", "graphs.py"):
                return f"{path.relative_to(_ROOT)}:{frame.lineno}"
        return "?"


class HostSyncAudit(HostReadMode):
    """Counts host-reading ops by (op, innermost project ``file:line``) while active."""

    def __init__(self):
        super().__init__()
        self.sites: Counter[tuple[str, str]] = Counter()

    def host_read(self, name: str) -> None:
        self.sites[(name, self._caller())] += 1

    @property
    def count(self) -> int:
        return sum(self.sites.values())
