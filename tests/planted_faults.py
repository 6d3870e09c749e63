"""Plant the method's five core faults, one at a time, in a copy of the tree, and run the quick tier
(`pytest -m "not slow"`) on each: every fault must make it fail. Not collected by pytest (it runs
the suite itself); docs/testing.md records its last output.

    .venv/bin/python -m tests.planted_faults            # all five, a few minutes
    .venv/bin/python -m tests.planted_faults climbing   # one of them
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Fault:
    name: str
    what: str
    file: str
    old: str
    new: str


FAULTS = [
    Fault(
        "climbing",
        "the training step climbs the loss",
        "nada_train/trainer.py",
        "            loss.backward()\n",
        "            (-loss).backward()\n",
    ),
    Fault(
        "no-step",
        "the optimizer does not step",
        "nada_train/trainer.py",
        "            self.optimizer.step()\n",
        "            pass  # planted: no optimizer step\n",
    ),
    Fault(
        "layer-offset",
        "a generator layer off by a constant (each ToRGB's output + 0.01)",
        "nada_train/generator/layers.py",
        "out = self.conv(x, w).to(self.bias.dtype) + self.bias",
        "out = self.conv(x, w).to(self.bias.dtype) + self.bias + 0.01",
    ),
    Fault(
        "directional-loss",
        "a broken directional loss (1 + cos instead of 1 - cos)",
        "nada_train/losses.py",
        "    return (1 - step @ direction).mean()",
        "    return (1 + step @ direction).mean()",
    ),
    Fault(
        "parity-accepts-anything",
        "a parity check that accepts anything",
        "nada_export/parity.py",
        "    return parity\n\n\ndef parity_limit",
        "    parity.passed = True\n    return parity\n\n\ndef parity_limit",
    ),
]


def copy_tree(into: Path) -> Path:
    """The tracked files and the untracked ones git does not ignore (the tree as it is now)."""
    files = (
        subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=True
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            (into / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, into / name)
    return into


def plant(tree: Path, fault: Fault) -> None:
    path = tree / fault.file
    text = path.read_text()
    if text.count(fault.old) != 1:
        raise SystemExit(
            f"{fault.name}: the line to change is not in {fault.file} exactly once; update FAULTS"
        )
    path.write_text(text.replace(fault.old, fault.new))


def quick_tier(tree: Path) -> tuple[int, list[str], float]:
    """Exit status, the failing tests, seconds. Run with the tree first on the path (not the install)."""
    env = dict(os.environ, PYTHONPATH=str(tree), PYTHONDONTWRITEBYTECODE="1")
    t0 = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-m", "not slow", "-q", "-p", "no:cacheprovider", "-rf"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
    )
    failed = sorted(set(re.findall(r"^FAILED (\S+?)(?: - |$)", r.stdout, flags=re.M)))
    return r.returncode, failed, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "names", nargs="*", help=f"faults to plant (default all): {', '.join(f.name for f in FAULTS)}"
    )
    args = ap.parse_args(argv)
    chosen = [f for f in FAULTS if not args.names or f.name in args.names]
    missed = []
    for fault in chosen:
        with tempfile.TemporaryDirectory(prefix="nada-planted-") as tmp:
            tree = copy_tree(Path(tmp))
            plant(tree, fault)
            code, failed, seconds = quick_tier(tree)
        caught = code != 0 and failed
        print(
            f"{fault.name}: {fault.what}: {'caught' if caught else 'MISSED'} by {len(failed)} tests in "
            f"{seconds:.0f} s",
            flush=True,
        )
        for test in failed:
            print(f"    {test}")
        if not caught:
            missed.append(fault.name)
    print("every planted fault was caught" if not missed else f"missed: {', '.join(missed)}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
