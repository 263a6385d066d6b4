"""Heat maps in the style of the paper's Fig. 2: the dataset's visitation, then V*, one-step V and IQL V."""

import pathlib
from typing import Dict

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import patheffects  # noqa: E402
import numpy as np  # noqa: E402

from iql_tf import files  # noqa: E402
from tools.toy_maze.experiment import MethodResult, Results  # noqa: E402
from tools.toy_maze.maze import MOVES, Maze  # noqa: E402

TITLES = {"optimal": "(b) optimal V*", "one-step": "(c) one-step V", "iql": "(d) IQL V"}


def _draw_grid(ax: plt.Axes, maze: Maze, values: np.ndarray, title: str, **imshow_kwargs) -> None:
    """A heat map of per-state values with walls in grey and the start and goal marked."""
    cmap = plt.get_cmap(imshow_kwargs.pop("cmap", "viridis")).with_extremes(bad="0.35")
    image = ax.imshow(np.ma.masked_invalid(maze.to_grid(values)), cmap=cmap, **imshow_kwargs)
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    for state, label in ((maze.start, "S"), (maze.goal, "G")):
        row, col = maze.cells[state]
        ax.text(col - 0.42, row - 0.42, label, ha="left", va="top", color="white", fontweight="bold", fontsize=9,
                path_effects=[patheffects.withStroke(linewidth=2, foreground="black")])
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])


def draw_dataset(ax: plt.Axes, results: Results) -> None:
    """(a): log visitation counts of the dataset's states, and the optimal trajectory as a line."""
    maze, data = results.maze, results.dataset
    counts = np.bincount(data.states, minlength=maze.num_states).astype(float)
    _draw_grid(ax, maze, np.log10(counts + 1), "(a) maze, log10(visits + 1)", cmap="magma")
    optimal = data.trajectory_ids == 0
    path = maze.cells[np.append(data.states[optimal], data.next_states[optimal][-1])]
    ax.plot(path[:, 1], path[:, 0], color="cyan", linewidth=2, label="optimal trajectory")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, -0.16), fontsize=8, frameon=False)


def draw_method(ax: plt.Axes, maze: Maze, method: MethodResult, vmax: float) -> None:
    """A value map on the common scale [0, vmax], with the greedy policy's arrows."""
    title = f"{TITLES[method.name]}\nr = {method.correlation:.2f}, MAE = {method.mae:.2f}, success = {method.success:.0%}"
    _draw_grid(ax, maze, method.values, title, vmin=0.0, vmax=vmax)
    moving = np.arange(maze.num_states) != maze.goal
    rows, cols = maze.cells[moving].T
    steps = MOVES[method.actions[moving]]
    ax.quiver(cols, rows, steps[:, 1], -steps[:, 0], color="white", pivot="middle", scale=14, width=0.012)


def write_figures(results: Results, output_dir: pathlib.Path) -> Dict[str, pathlib.Path]:
    """Writes one PNG per panel and `overview.png` with all four side by side; returns the paths."""
    vmax = float(results.method("optimal").values.max())
    panels = {"maze": lambda ax: draw_dataset(ax, results)}
    for method in results.methods:
        panels[f"value_{method.name.replace('-', '_')}"] = lambda ax, m=method: draw_method(ax, results.maze, m, vmax)
    paths = {}
    for name, draw in panels.items():
        fig, ax = plt.subplots(figsize=(4.2, 4.2))
        draw(ax)
        paths[name] = _save(fig, output_dir / f"{name}.png")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.4))
    for ax, draw in zip(axes, panels.values()):
        draw(ax)
    paths["overview"] = _save(fig, output_dir / "overview.png")
    return paths


def _save(fig: plt.Figure, path: pathlib.Path) -> pathlib.Path:
    fig.tight_layout()
    files.write_png(fig, path)
    return path
