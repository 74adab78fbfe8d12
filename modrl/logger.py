"""TensorBoard logging (CleanRL tag names, env steps on the x-axis) and console progress."""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm


def markdown_table(flat: dict[str, Any]) -> str:
    rows = "\n".join(f"|{k}|{v}|" for k, v in flat.items())
    return f"|param|value|\n|-|-|\n{rows}"


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


@dataclass
class Heatmap:
    """A ``[rows, cols]`` table of values in [0, 1] with its labels (e.g. the task × module usage
    matrix): logged as an image and, under ``<tag>/table``, as a Markdown table of the values."""

    values: torch.Tensor
    rows: list[str]
    cols: list[str]
    corner: str = ""

    def markdown(self) -> str:
        head = f"|{self.corner}|" + "|".join(self.cols) + "|\n|-|" + "-|" * len(self.cols)
        body = "\n".join(f"|{name}|" + "|".join(f"{v:.2f}" for v in row) + "|"
                         for name, row in zip(self.rows, self.values.tolist()))
        return f"{head}\n{body}"


def heatmap_image(values: torch.Tensor, cell: int = 16, longest: int = 512) -> torch.Tensor:
    """A ``[H, W]`` table in [0, 1] as an image with each entry a block of ``cell`` pixels (fewer
    for big tables, so the longer side stays within ``longest``); TensorBoard would otherwise show a
    10 × 8 table as 80 blurred pixels."""
    values = values.detach().float().clamp(0, 1).cpu()
    k = max(1, min(cell, longest // max(1, *values.shape)))
    return values.repeat_interleave(k, 0).repeat_interleave(k, 1)


def write_heatmap(writer: SummaryWriter, tag: str, value: torch.Tensor | Heatmap, step: int) -> None:
    """A 2-D table as an image; a :class:`Heatmap` also as its labelled Markdown table."""
    if isinstance(value, Heatmap):
        writer.add_text(f"{tag}/table", value.markdown(), step)
        value = value.values
    writer.add_image(tag, heatmap_image(value), step, dataformats="HW")


class RunLogger:
    """Scalars to TensorBoard under ``run_dir``; ``purge_step`` drops events past a resumed checkpoint."""

    def __init__(self, run_dir: str | Path, purge_step: int | None = None):
        self.writer = SummaryWriter(str(run_dir), purge_step=purge_step)

    def hyperparameters(self, config: dict[str, Any]) -> None:
        self.writer.add_text("hyperparameters", markdown_table(flatten(config)))

    def scalars(self, metrics: dict[str, Any], step: int) -> None:
        """Floats as scalars; :class:`Heatmap` and 2-D tensors in [0, 1] as heatmap images; 1-D
        tensors as histograms."""
        for tag, value in metrics.items():
            if isinstance(value, Heatmap) or (isinstance(value, torch.Tensor) and value.dim() == 2):
                write_heatmap(self.writer, tag, value, step)
            elif isinstance(value, torch.Tensor):
                if value.dim() == 1 and value.numel() > 0:
                    self.writer.add_histogram(tag, value.float(), step)
            elif value is not None and math.isfinite(value):
                self.writer.add_scalar(tag, value, step)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


class Progress:
    """A progress bar over the run's budget (env steps, or episodes where that is the budget)
    showing env steps/s and the latest return and success rate. With ``every`` > 0 (seconds) it
    prints one plain line per interval instead, prefixed by ``name``: readable in the log of a
    background job or of several runs at once, where a bar's carriage returns interleave."""

    def __init__(self, total: int, initial: int = 0, enabled: bool = True, unit: str = "step",
                 every: float = 0.0, name: str = ""):
        self.every, self.name, self.total, self.unit = (every if enabled else 0.0), name, total, unit
        self.done, self.start, self.last_line = initial, time.perf_counter(), time.perf_counter()
        self.bar = tqdm(
            total=total,
            initial=initial,
            unit=unit,
            unit_scale=True,
            dynamic_ncols=True,
            disable=not enabled or every > 0,
            mininterval=0.5 if sys.stderr.isatty() else 10.0,
            file=sys.stderr,
        )
        self.summary: dict[str, str] = {}

    def update(self, steps: int, metrics: dict[str, float]) -> None:
        if "charts/episodic_return" in metrics:
            self.summary["return"] = f"{metrics['charts/episodic_return']:.3f}"
            self.summary["success"] = f"{metrics['charts/success_rate']:.2f}"
        if "charts/SPS" in metrics:
            self.summary["SPS"] = f"{metrics['charts/SPS']:,.0f}"
        if "curriculum/max_length" in metrics:
            self.summary["max_length"] = f"{metrics['curriculum/max_length']:.0f}"
        self.done += steps
        if self.every > 0:
            now = time.perf_counter()
            if now - self.last_line >= self.every or self.done >= self.total:
                self.last_line = now
                print(self.line(now - self.start), file=sys.stderr, flush=True)
            return
        self.bar.set_postfix(self.summary, refresh=False)
        self.bar.update(steps)

    def line(self, elapsed: float) -> str:
        """``NAME: 1,234,567 / 3,000,000 episodes (41.2%), 12.3 min, return=…, success=…``"""
        share = 100.0 * self.done / max(self.total, 1)
        stats = ", ".join(f"{k}={v}" for k, v in self.summary.items())
        head = f"{self.name}: " if self.name else ""
        return f"{head}{self.done:,} / {self.total:,} {self.unit}s ({share:.1f}%), {elapsed / 60:.1f} min" + (f", {stats}" if stats else "")

    def write(self, text: str) -> None:
        self.bar.write(text, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()
