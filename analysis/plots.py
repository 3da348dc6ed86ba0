"""Figures at paper quality (matplotlib, no display needed): one style for all of them (set
when this module is imported), labelled axes, titles that fit, density axes with plain
percentages, and each figure saved as PNG (200 dpi) and, where asked, as vector PDF / SVG."""
from __future__ import annotations

import math
import os
import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

STYLE = {
    "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8,
    "xtick.labelsize": 8, "ytick.labelsize": 8, "axes.spines.top": False,
    "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3, "grid.linewidth": 0.6,
    "lines.linewidth": 1.5, "lines.markersize": 4.5, "legend.frameon": False,
    "figure.dpi": 100, "savefig.bbox": "tight", "savefig.pad_inches": 0.05,
    "pdf.fonttype": 42, "svg.fonttype": "none",
}
PNG_DPI = 200
FORMATS = ("png", "pdf", "svg")
matplotlib.rcParams.update(STYLE)     # the house style for every figure of this project


def figure(width: float = 5.5, height: float = 3.6, ncols: int = 1, **kw):
    """A figure with constrained layout (titles and colour bars never overlap)."""
    return plt.subplots(1, ncols, figsize=(width, height), layout="constrained", **kw)


def title(text: str, width: int = 70) -> str:
    """A title wrapped onto lines of at most `width` characters."""
    return "\n".join(textwrap.wrap(text, width)) or text


def save(fig, stem: str, formats=("png",)) -> list[str]:
    """Write `fig` as `<stem>.<format>` for each format (atomically); returns the paths."""
    os.makedirs(os.path.dirname(os.path.abspath(stem)) or ".", exist_ok=True)
    written = []
    for fmt in formats:
        target = f"{stem}.{fmt}"
        tmp = f"{stem}.tmp.{fmt}"
        fig.savefig(tmp, dpi=PNG_DPI if fmt == "png" else "figure", format=fmt)
        os.replace(tmp, target)
        written.append(target)
    plt.close(fig)
    return written


def _save(fig, path: str) -> str:
    """`path` (a .png; the per-run analysis figures written during a run)."""
    return save(fig, path[:-len(".png")] if path.endswith(".png") else path)[0]


def plot_curve(curve, path: str, title_text: str, label_a: str = "A",
               label_b: str = "B") -> str:
    """Train and test error along the interpolation path (γ = 0: B, γ = 1: A)."""
    fig, ax = figure(5.0, 3.4)
    ax.plot(curve.gammas, curve.test_error, "o-", label=f"test (barrier "
            f"{curve.test_barrier:.2f})")
    ax.plot(curve.gammas, curve.train_error, "s--", label=f"train (barrier "
            f"{curve.train_barrier:.2f})")
    ax.set_xlabel(f"γ   (0 = {label_b},  1 = {label_a})")
    ax.set_ylabel("error (%)")
    ax.set_title(title(title_text))
    ax.legend()
    return _save(fig, path)


def draw_matrix(ax, fig, matrix: list[list[float]], labels: list[str],
                colorbar: str = "test error barrier (%)") -> None:
    """A heatmap with each cell's value written in a colour readable on that cell."""
    n = len(labels)
    finite = [v for row in matrix for v in row if v is not None and not math.isnan(v)]
    image = ax.imshow(matrix, cmap="viridis", origin="upper", vmin=0.0,
                      vmax=max(finite + [0.0]) or 1.0)   # barriers are >= 0
    ax.set_xticks(range(n), labels, rotation=90)
    ax.set_yticks(range(n), labels)
    ax.grid(False)
    for i in range(n):
        for j in range(n):
            value = matrix[i][j]
            if value is None or (isinstance(value, float) and math.isnan(value)):
                continue
            red, green, blue, _ = image.cmap(image.norm(value))
            light = 0.299 * red + 0.587 * green + 0.114 * blue > 0.5
            ax.text(j, i, f"{value:.1f}", ha="center", va="center",
                    fontsize=7 if n <= 12 else 5, color="black" if light else "white")
    fig.colorbar(image, ax=ax, label=colorbar, shrink=0.85)


def plot_matrix(matrix: list[list[float]], labels: list[str], path: str, title_text: str,
                colorbar: str = "test error barrier (%)", formats=("png",)) -> str:
    """A heatmap of a square matrix (e.g. barriers between all pairs of levels)."""
    n = len(labels)
    side = max(3.6, 1.6 + 0.42 * n)
    fig, ax = figure(side + 1.2, side)
    draw_matrix(ax, fig, matrix, labels, colorbar)
    ax.set_title(title(title_text, 50))
    return save(fig, path[:-len(".png")] if path.endswith(".png") else path, formats)[0]


def plot_slice(xs: list, ys: list, values: list[list[float]], points: dict, path: str,
               title_text: str) -> str:
    """Contours of test error over a 2-D plane, with the defining weight sets marked."""
    fig, ax = figure(5.2, 4.2)
    contour = ax.contourf(xs, ys, values, levels=20, cmap="magma_r")
    ax.contour(xs, ys, values, levels=10, colors="k", linewidths=0.4)
    fig.colorbar(contour, ax=ax, label="test error (%)")
    for label, (x, y) in points.items():
        ax.plot(x, y, "o", color="cyan", markeredgecolor="k")
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set_xlabel("direction 1 (weight-space distance)")
    ax.set_ylabel("direction 2 (weight-space distance)")
    ax.set_title(title(title_text))
    ax.grid(False)
    return _save(fig, path)


DENSITY_TICKS = (100, 50, 20, 10, 5, 2, 1, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01)


def density_axis(ax, densities: list[float], label: str = "density (%, log scale)") -> None:
    """Log density axis over `densities`, high densities on the left, every tick a plain
    percentage (100, 50, 20, ...; the data's own values when fewer than two of those fall
    in range) and no minor tick labels."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

    values = [d for d in densities if d is not None and d > 0]
    if not values:
        ax.set_xlabel(label)
        return
    low, high = min(values), max(values)
    ax.set_xscale("log")
    ax.set_xlim(high * 1.25, low / 1.25)          # inverted: dense on the left
    ticks = [t for t in DENSITY_TICKS if low / 1.25 <= t <= high * 1.25]
    if len(ticks) < 2:
        ticks = sorted(set(ticks) | {round(v, 3) for v in values})
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(label)


def _num(value):
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value
