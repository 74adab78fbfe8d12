"""Atomic checkpoints: state dicts and primitives only, loadable with ``weights_only=True``.

A checkpoint is written to a temporary file in the same folder and renamed over its final name,
so a crash or Ctrl-C during the write never leaves a truncated checkpoint behind.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, BinaryIO, Callable

import torch

_STEP_FILE = re.compile(r"^step_(\d+)\.pt$")


class CheckpointError(FileNotFoundError):
    """A missing or unreadable checkpoint or run directory."""


def load_fitting(load, state, path) -> None:
    """``load(state)`` (a ``load_state_dict``), a :class:`CheckpointError` naming ``path`` if the saved
    tensors do not fit what the run's config builds (e.g. a checkpoint from an older version)."""
    try:
        load(state)
    except (RuntimeError, KeyError) as e:
        lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
        first = (lines[1] if len(lines) > 1 and lines[0].startswith("Error(s) in loading") else
                 lines[0] if lines else type(e).__name__)  # torch's header, then the first mismatch
        raise CheckpointError(f"{path}: the checkpoint does not fit the agent its run's config builds ({first}); "
                              "was it written by an older modrl?") from None


def _write_atomic(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """Write ``path`` through a synced temporary file and a rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def save_atomic(obj: Any, path: str | Path) -> Path:
    """``torch.save`` ``obj`` to ``path`` atomically."""
    return _write_atomic(path, lambda f: torch.save(obj, f))


def save_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return _write_atomic(path, lambda f: f.write(text.encode()))


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """The run's checkpoints, oldest first (by env step)."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _STEP_FILE.match(p.name))]
    return [p for _, p in sorted(found)]


def save_checkpoint(run_dir: str | Path, global_step: int, state: dict[str, Any], keep: int = 3) -> Path:
    """Write ``checkpoints/step_<global_step>.pt`` atomically and keep only the newest ``keep``."""
    path = save_atomic(state, checkpoint_dir(run_dir) / f"step_{global_step}.pt")
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return path


def latest_checkpoint(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory not found: {run_dir}")
    found = list_checkpoints(run_dir)
    if not found:
        raise CheckpointError(f"no checkpoint in {checkpoint_dir(run_dir)} (was the run stopped before its first save?)")
    return found[-1]


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001  (torch raises many kinds for a corrupt file)
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from None
