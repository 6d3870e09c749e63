"""The tiers' hooks (tests/tiers.py) on a small suite of their own, run in this process: a test that
reaches a subprocess is marked slow, one that starts a subprocess by a path the reading misses fails,
and one over its budget of CPU or of time on the clock fails; the rest pass."""

import textwrap
import time

import pytest

from tests import tiers
from tests.tiers import BUDGET_ENV, under_mutmut

SUITE = """
import subprocess
import sys
import time


def run_true():
    subprocess.run([sys.executable, "-c", "pass"])


def test_quick():
    assert sum(range(100)) == 4950


def test_reaches_a_subprocess_through_a_helper():
    run_true()


def test_starts_a_subprocess_unseen():
    getattr(subprocess, "ru" + "n")([sys.executable, "-c", "pass"])


def test_computes_past_the_budget():
    t0 = time.thread_time()
    while time.thread_time() - t0 < 0.4:
        pass


def test_waits_past_the_budget():
    time.sleep(1.2)
"""


class Outcomes:
    def __init__(self):
        self.by_test: dict[str, tuple[str, str]] = {}
        self.slow: dict[str, str] = {}

    def pytest_collection_modifyitems(self, items):
        self.slow = {
            item.name: str(item.get_closest_marker("slow").kwargs.get("reason", ""))
            for item in items
            if item.get_closest_marker("slow")
        }

    def pytest_runtest_logreport(self, report):
        name = report.nodeid.split("::")[-1]
        if report.failed or name not in self.by_test:
            self.by_test[name] = (report.outcome, str(report.longrepr or ""))


@pytest.mark.skipif(under_mutmut(), reason="mutmut lifts the budget")
def test_the_hooks_mark_and_fail_what_they_should(tmp_path, monkeypatch):
    (tmp_path / "test_small_suite.py").write_text(textwrap.dedent(SUITE))
    monkeypatch.setattr(tiers, "TESTS", tmp_path)  # its helpers are followed as the suite's own
    monkeypatch.setenv(BUDGET_ENV, "0.25")  # 0.25 s of CPU, 1 s on the clock
    outcomes = Outcomes()
    t0 = time.perf_counter()
    pytest.main(
        [
            str(tmp_path),
            "-p",
            "tests.tiers",
            "-W",
            "ignore::pytest.PytestAssertRewriteWarning",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:xdist",
            "-q",
            "-o",
            "addopts=",
            "--rootdir",
            str(tmp_path),
            "--import-mode=importlib",
            "-m",
            "not slow",
        ],
        plugins=[outcomes],
    )
    assert time.perf_counter() - t0 < 20
    assert list(outcomes.slow) == ["test_reaches_a_subprocess_through_a_helper"]
    assert (
        outcomes.slow["test_reaches_a_subprocess_through_a_helper"]
        == "the test uses a subprocess via subprocess.run (in run_true)"
    )
    results = {name: outcome for name, (outcome, _) in outcomes.by_test.items()}
    assert results == {
        "test_quick": "passed",
        "test_starts_a_subprocess_unseen": "failed",
        "test_computes_past_the_budget": "failed",
        "test_waits_past_the_budget": "failed",
    }
    assert (
        "in the quick tier but started a subprocess" in outcomes.by_test["test_starts_a_subprocess_unseen"][1]
    )
    assert (
        "over the budget of 0.25 s of CPU or 1 s on the clock"
        in outcomes.by_test["test_computes_past_the_budget"][1]
    )
    assert "took 0.4 s of CPU" in outcomes.by_test["test_computes_past_the_budget"][1]
    assert "s of CPU (1.2 s on the clock" in outcomes.by_test["test_waits_past_the_budget"][1]


def test_the_budget_grows_with_a_slower_machine_and_a_set_budget_is_kept(monkeypatch):
    monkeypatch.delenv(BUDGET_ENV, raising=False)
    monkeypatch.delenv("MUTANT_UNDER_TEST", raising=False)
    if under_mutmut():
        pytest.skip("under mutmut the budget is off")
    for yardstick, budget in [
        (2 * tiers.YARDSTICK_S, 2 * tiers.DEFAULT_BUDGET_S),
        (tiers.YARDSTICK_S / 2, 5.0),
    ]:
        tiers.machine_factor.cache_clear()
        monkeypatch.setattr(tiers, "yardstick_s", lambda yardstick=yardstick: yardstick)
        assert tiers.budget_s() == pytest.approx(budget)
    monkeypatch.setenv(BUDGET_ENV, "3")
    assert tiers.budget_s() == 3.0
    tiers.machine_factor.cache_clear()


def test_the_yardstick_measures_work_on_one_thread():
    import torch

    threads = torch.get_num_threads()
    took = tiers.yardstick_s()
    assert torch.get_num_threads() == threads and 0.2 * tiers.YARDSTICK_S < took < 50 * tiers.YARDSTICK_S
