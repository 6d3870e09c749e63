"""A markdown table of world runs' metrics.json, one row per run directory, for README tables and
the GPU recipes in docs/recipes/

    python -m nada_world.table runs/*
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

COLUMNS = (
    "target_style_rate",
    "content_kept_rate",
    "frozen_target_style_rate",
    "clip_target_rate",
    "directional_clip_similarity",
)


def settings(manifest: dict) -> str:
    """The settings that the world's runs vary, from a run's manifest."""
    a = manifest["arguments"]
    glob = a.get("global_weight", 0)
    return f"{a['target']}, {a['iterations']} it, lr {a['lr']:g}, {a['layers']} layers, global {glob:g}"


def metrics_table(run_dirs: list[Path]) -> str:
    """Rows in the order given (paths that are not directories, such as logs beside the runs, are
    left out); a run without metrics.json is listed as such."""
    lines = ["| run | settings | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 2) + "|"]
    for run in filter(Path.is_dir, run_dirs):
        cells = ["(no manifest.json)"] + [""] * len(COLUMNS)
        if (run / "manifest.json").exists():
            cells[0] = settings(json.loads((run / "manifest.json").read_text()))
        if (run / "metrics.json").exists():
            m = json.loads((run / "metrics.json").read_text())
            cells[1:] = [f"{m[c]:.3f}" if c.startswith("directional") else f"{m[c]:.2f}" for c in COLUMNS]
        else:
            cells[1] = "(no metrics.json)"
        lines.append(f"| {run.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="nada-train run directories on the built-in world")
    print(metrics_table(ap.parse_args().runs))


if __name__ == "__main__":
    main()
