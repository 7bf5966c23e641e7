"""Accuracy vs throughput, one point per decoder and metric (the paper's Figure 4); a dashed line joins the
Pareto front of each metric (the decoders no other decoder beats on both accuracy and speed)."""

from __future__ import annotations

from pathlib import Path

METRICS = (("syntax_ok", "syntax ok", "o", 90), ("pass_at_1", "pass@1", "s", 35))  # key, label, marker, size


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points no other point beats on both axes (higher is better on both), sorted by x."""
    front = [p for p in points if not any(q != p and q[0] >= p[0] and q[1] >= p[1] for q in points)]
    return sorted(set(front))


def pareto_plot(results: list[dict], path: str | Path, title: str) -> None:
    """Write a PNG: x = generated tokens per second, y = % of tasks (syntax ok; pass@1 when present).
    Colour = decoder, marker = metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    fig, ax = plt.subplots(figsize=(8, 5), dpi=150)
    colors = plt.get_cmap("tab10").colors
    color_of = {r["decoder"]: colors[i % len(colors)] for i, r in enumerate(results)}
    shown = []
    for key, label, marker, size in METRICS:
        points = [(r["tokens_per_second"], 100 * r[key], r["decoder"]) for r in results
                  if r.get(key) is not None and r.get("tokens_per_second") is not None]
        if not points:
            continue
        shown.append((label, marker))
        for x, y, name in points:
            ax.scatter(x, y, marker=marker, s=size, color=color_of[name], edgecolor="black", linewidth=0.5,
                       zorder=3)
        front = pareto_front([(x, y) for x, y, _ in points])
        ax.plot([p[0] for p in front], [p[1] for p in front], color="gray", alpha=0.6, linestyle="--", zorder=2)
    handles = [Line2D([], [], marker="o", linestyle="", color=color_of[r["decoder"]], label=r["decoder"])
               for r in results]
    handles += [Line2D([], [], marker=marker, linestyle="", color="white", markeredgecolor="black", label=label)
                for label, marker in shown]
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    ax.set_xlabel("throughput (generated tokens / s)")
    ax.set_ylabel("% of tasks")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.margins(x=0.1, y=0.1)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
