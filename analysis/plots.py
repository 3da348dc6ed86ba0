"""PNG plots (matplotlib, no display needed): labelled axes, readable at a glance."""
from __future__ import annotations

import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)


def _save(fig, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def plot_curve(curve, path: str, title: str, label_a: str = "A", label_b: str = "B") -> str:
    """Train and test error along the interpolation path (γ = 0: B, γ = 1: A)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.plot(curve.gammas, curve.test_error, "o-", label=f"test (barrier "
            f"{curve.test_barrier:.2f})")
    ax.plot(curve.gammas, curve.train_error, "s--", label=f"train (barrier "
            f"{curve.train_barrier:.2f})")
    ax.set_xlabel(f"γ   (0 = {label_b},  1 = {label_a})")
    ax.set_ylabel("error (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_matrix(matrix: list[list[float]], labels: list[str], path: str, title: str,
                colorbar: str = "test error barrier (%)") -> str:
    """A heatmap of a square matrix (e.g. barriers between all pairs of levels)."""
    n = len(labels)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * n, 0.8 + 0.5 * n))
    image = ax.imshow(matrix, cmap="viridis", origin="upper")
    ax.set_xticks(range(n), labels, rotation=90)
    ax.set_yticks(range(n), labels)
    for i in range(n):
        for j in range(n):
            value = matrix[i][j]
            if not (isinstance(value, float) and math.isnan(value)):
                ax.text(j, i, f"{value:.1f}", ha="center", va="center", fontsize=7,
                        color="white")
    fig.colorbar(image, ax=ax, label=colorbar)
    ax.set_title(title)
    return _save(fig, path)


def plot_slice(xs: list, ys: list, values: list[list[float]], points: dict, path: str,
               title: str) -> str:
    """Contours of test error over a 2-D plane, with the defining weight sets marked."""
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    contour = ax.contourf(xs, ys, values, levels=20, cmap="magma_r")
    ax.contour(xs, ys, values, levels=10, colors="k", linewidths=0.4)
    fig.colorbar(contour, ax=ax, label="test error (%)")
    for label, (x, y) in points.items():
        ax.plot(x, y, "o", color="cyan", markeredgecolor="k")
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set_xlabel("direction 1 (weight-space distance)")
    ax.set_ylabel("direction 2 (weight-space distance)")
    ax.set_title(title)
    return _save(fig, path)


DENSITY_TICKS = (100, 50, 20, 10, 5, 2, 1, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01)


def _density_axis(ax, label: str = "density (%, log scale)") -> None:
    """Log density axis, high densities on the left, ticks as plain percentages."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    ax.set_xscale("log")
    low, high = sorted(ax.get_xlim())
    ticks = [t for t in DENSITY_TICKS if low <= t <= high]
    if len(ticks) >= 2:
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    ax.invert_xaxis()
    ax.set_xlabel(label)
    ax.grid(alpha=0.3, which="both")


def plot_accuracy_vs_density(series: dict, path: str, title: str) -> str:
    """Test accuracy (mean ± std over seeds) against density on a log axis, per algorithm."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for label, points in sorted(series.items()):
        points = sorted(points)
        xs = [p[0] for p in points]
        means = [p[1] for p in points]
        stds = [p[2] for p in points]
        ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=label)
    _density_axis(ax, "density (% of weights kept, log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_levels(rows: list[dict], path: str, title: str) -> str:
    """IMP levels: test accuracy vs density, with the successive barrier and the top Hessian
    eigenvalue when recorded."""
    extra = [key for key in ("barrier_test", "hessian_top1")
             if any(_num(r.get(key)) is not None for r in rows)]
    fig, axes = plt.subplots(1, 1 + len(extra), figsize=(5.0 * (1 + len(extra)), 3.8))
    axes = axes if len(extra) else [axes]
    density = [_num(r["density_pct"]) for r in rows]
    axes[0].plot(density, [_num(r["test_acc"]) for r in rows], "o-", label="test")
    axes[0].plot(density, [_num(r["val_acc"]) for r in rows], "s--", label="validation")
    axes[0].set_ylabel("accuracy (%)")
    axes[0].legend()
    names = {"barrier_test": "test error barrier to previous level (%)",
             "hessian_top1": "top Hessian eigenvalue"}
    for ax, key in zip(axes[1:], extra):
        pts = [(d, _num(r.get(key))) for d, r in zip(density, rows)
               if _num(r.get(key)) is not None]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color="tab:red")
        ax.set_ylabel(names[key])
    for ax in axes:
        _density_axis(ax)
    fig.suptitle(title)
    return _save(fig, path)


def plot_layer_density(rows: list[dict], path: str, title: str) -> str:
    """Per-layer density (%) as bars."""
    rows = [r for r in rows if r["layer"] != "total"]
    fig, ax = plt.subplots(figsize=(max(5.0, 0.35 * len(rows) + 2), 3.8))
    ax.bar(range(len(rows)), [_num(r["density_pct"]) for r in rows])
    ax.set_xticks(range(len(rows)), [r["layer"] for r in rows], rotation=90, fontsize=7)
    ax.set_ylabel("density (%)")
    ax.set_title(title)
    return _save(fig, path)


def _num(value):
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value
