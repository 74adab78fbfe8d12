"""Capture a region of tensor code once, replay it many times: CUDA graphs for the rollout's ticks.

A batched rollout tick launches a few hundred small kernels (Craft at 512 envs: ~300); on a GPU the
launches, not the arithmetic, set its speed. ``torch.cuda.CUDAGraph`` records the kernels of a
region once and replays them with one launch. :class:`CapturedRegion` wraps a function of no
arguments whose state lives in tensor attributes of some objects (``holders``: the env, the router,
the controller, the metrics, the agent) and returns its outputs; its first calls run the function
(warm-up), then it is captured and every later call replays it.

What a region may do (what a graph can replay):

- no host reads and no data-dependent shapes (``modrl.host_sync``'s list: ``bool(t)``, ``.item()``,
  ``.tolist()``, ``nonzero``, boolean-mask indexing, ...) — a :class:`CaptureError` names the line;
- no tensors made from Python data (``torch.tensor(...)``, ``t.new_tensor(x)``): on CUDA a
  host→device copy; use ``torch.full`` / ``torch.zeros``;
- Python runs once, at capture: a Python counter, ``time.perf_counter()`` or any value computed on
  the host inside the region is a constant of the graph (the envs' wall-clock episode time ``t``
  is frozen under a graph);
- state lives in the holders' tensor attributes (and ``nn.Module`` buffers). Inside the region
  they may be rebound, functional style (``self.x = f(self.x)``): the region ends by copying
  each new value into the tensor the attribute held at capture, and rebinds the attribute to it,
  so every replay starts where the last one ended. Outside the region, update state in place
  (``copy_``); an attribute replaced outside is noticed at the next call, which captures again
  (counted in ``captures``). Parameters are read in place (optimisers update them in place).

``emulate=True`` records the aten ops of the region at capture and replays them on the same
tensors — a graph's semantics on any device, without a GPU (slow; for tests): a region that
emulates bit for bit like eager code can be captured on CUDA.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from modrl.host_sync import HostReadMode


class CaptureError(RuntimeError):
    """The region does something a graph cannot replay (see the module docstring)."""


def _state_tensors(holders) -> dict[tuple[int, str], torch.Tensor]:
    """The tensor attributes of each holder (an object, or ``(object, names)`` for some of them)."""
    state = {}
    for i, holder in enumerate(holders):
        holder, names = holder if isinstance(holder, tuple) else (holder, None)
        attrs = dict(vars(holder))
        if isinstance(holder, torch.nn.Module):
            attrs.update(holder._buffers)
        for name, value in attrs.items():
            if isinstance(value, torch.Tensor) and (names is None or name in names):
                state[(i, name)] = value
    return state


def _holder(entry):
    return entry[0] if isinstance(entry, tuple) else entry


def _mutates(func) -> bool:
    return any(a.alias_info is not None and a.alias_info.is_write for a in func._schema.arguments)


_UNINITIALISED = frozenset({"aten::empty", "aten::empty_like", "aten::empty_strided", "aten::new_empty"})


class _Recorder(HostReadMode):
    """Runs and records every aten op (the emulated capture); refuses what a graph cannot replay."""

    def __init__(self):
        super().__init__()
        self.ops: list[tuple[Any, tuple, dict, Any]] = []

    def host_read(self, name: str) -> None:
        raise CaptureError(f"{name} at {self._caller()} reads the host inside a captured region")

    def run(self, func, args, kwargs):
        name = func._schema.name
        if name in ("aten::lift_fresh", "aten::lift_fresh_copy"):
            raise CaptureError(f"a tensor made from Python data at {self._caller()} inside a captured region "
                               "(a host-to-device copy on CUDA): use torch.full / torch.zeros")
        if func.is_view and _mutates(func):  # t_(), squeeze_(), ...: redoing it would change the shape again
            raise CaptureError(f"{name} at {self._caller()} changes a tensor's shape in place inside a captured region")
        out = func(*args, **kwargs)
        # a view aliases its input, so the recorded output already sees every replayed write; an
        # uninitialised tensor has nothing to redo; every other op runs again on the recorded tensors
        # (in place: on them; otherwise its result is copied into the recorded output)
        if not func.is_view and name not in _UNINITIALISED:
            self.ops.append((func, args, kwargs, out))
        return out

    @torch.no_grad()  # aten ops, below autograd (a graph has no autograd either)
    def replay(self) -> None:
        for func, args, kwargs, out in self.ops:
            _copy_into(out, func(*args, **kwargs), func)


def _copy_into(out, fresh, func) -> None:
    if fresh is out:  # an in-place op returns the tensor it wrote
        return
    if isinstance(out, torch.Tensor):
        if fresh.shape != out.shape:
            raise CaptureError(f"{func} made shape {tuple(fresh.shape)} at replay, {tuple(out.shape)} at capture "
                               "(a data-dependent shape)")
        out.copy_(fresh)
    elif isinstance(out, (tuple, list)):
        for o, f in zip(out, fresh):
            _copy_into(o, f, func)
    elif out is not None:
        raise CaptureError(f"{func} returned a Python {type(out).__name__} inside a captured region (a host read)")


class CapturedRegion:
    """``region = CapturedRegion(fn, holders, generators)``; ``out = region()`` runs, captures or
    replays ``fn`` (see the module docstring). ``holders``: objects whose tensor attributes are the
    region's state, or ``(object, names)`` to track only some attributes. ``generators``: the
    private ``torch.Generator`` s the region draws from (registered with the graph, so each replay
    advances them; torch registers its default generator itself). ``warmup``: eager calls before
    the capture (CUDA only)."""

    def __init__(self, fn: Callable[[], Any], holders, generators=(), *, emulate: bool = False, warmup: int = 1):
        self.fn, self.holders, self.generators = fn, list(holders), list(generators)
        self.emulate = emulate
        if not emulate:
            devices = {t.device.type for t in _state_tensors(self.holders).values()}
            if "cuda" not in devices or not torch.cuda.is_available():
                raise CaptureError(f"a CUDA graph needs its state on a CUDA device, found {sorted(devices)} "
                                   "(emulate=True replays on any device)")
        self._warmup_left = 0 if emulate else warmup
        self.captures = 0
        self._state: dict | None = None
        self._out: Any = None
        self._graph = None
        self._recorder: _Recorder | None = None

    def __call__(self) -> Any:
        if self._state is not None and not self._replaced():
            if self._recorder is not None:
                self._recorder.replay()
            else:
                self._graph.replay()
            return self._out
        if self._warmup_left > 0:  # lazy initialisation (cuBLAS handles, ...) happens outside the graph
            self._warmup_left -= 1
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                out = self.fn()
            torch.cuda.current_stream().wait_stream(side)
            return out
        return self._capture()

    def _replaced(self) -> bool:
        """Whether a state attribute was replaced (or added) since the capture: capture again."""
        now = _state_tensors(self.holders)
        return now.keys() != self._state.keys() or any(now[k] is not t for k, t in self._state.items())

    def _capture(self) -> Any:
        self._graph = self._recorder = None
        state = _state_tensors(self.holders)
        if self.emulate:
            with _Recorder() as recorder:  # the capture runs the ops: this call's result is real
                out = self.fn()
                self._copy_back(state)
            self._recorder = recorder
        else:
            graph = torch.cuda.CUDAGraph()
            for generator in self.generators:
                graph.register_generator_state(generator)
            with torch.cuda.graph(graph):  # recorded, not run
                out = self.fn()
                self._copy_back(state)
            graph.replay()
            self._graph = graph
        self._state, self._out = state, out
        self.captures += 1
        return out

    def _copy_back(self, state: dict[tuple[int, str], torch.Tensor]) -> None:
        """End of the region: each rebound attribute's value goes into the tensor it held at capture."""
        now = _state_tensors(self.holders)
        added = [f"{type(_holder(self.holders[i])).__name__}.{name}" for i, name in now.keys() - state.keys()]
        if added:
            raise CaptureError(f"tensor attributes created inside a captured region: {added} (create them before)")
        targets: dict[int, torch.Tensor] = {}
        moves = []
        for (i, name), old in state.items():
            new = now.get((i, name))
            if new is old:
                continue
            where = f"{type(_holder(self.holders[i])).__name__}.{name}"
            if not isinstance(new, torch.Tensor) or new.shape != old.shape or new.dtype != old.dtype or new.device != old.device:
                raise CaptureError(f"{where} changed from {tuple(old.shape)} {old.dtype} to "
                                   f"{tuple(new.shape) if isinstance(new, torch.Tensor) else type(new).__name__} "
                                   "inside a captured region")
            if id(old) in targets and targets[id(old)] is not new:
                raise CaptureError(f"{where} shares its tensor with another attribute that got another value")
            targets[id(old)] = new
            moves.append((i, name, old, new))
        # a new value that is another attribute's old tensor is read before that tensor is overwritten
        sources = [new.clone() if id(new) in targets else new for _, _, _, new in moves]
        for (i, name, old, _), source in zip(moves, sources):
            old.copy_(source)
            setattr(_holder(self.holders[i]), name, old)
