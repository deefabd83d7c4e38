"""experiments/digits_augmentation.py at a small size: every condition is measured on the
same draw, the generator draws the class it is asked for, and the report is written."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def experiment():
    path = ROOT / "experiments" / "digits_augmentation.py"
    spec = importlib.util.spec_from_file_location("digits_augmentation", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up while the class is made
    spec.loader.exec_module(module)
    return module


def test_the_draws_are_stratified_and_disjoint_from_the_test_half():
    e = experiment()
    pool_x, pool_y, test_x, test_y = e.load()
    assert len(test_y) in (898, 899)
    both = np.bincount(test_y) + np.bincount(pool_y)
    assert np.all(np.abs(np.bincount(test_y) - both / 2) <= 1)  # a stratified half: every class split in two
    labelled, rest = e.draw(pool_y, 10, 3)
    assert np.array_equal(np.bincount(pool_y[labelled]), [10] * 10)
    assert not set(labelled) & set(rest) and len(labelled) + len(rest) == len(pool_y)
    again, _ = e.draw(pool_y, 10, 3)
    assert np.array_equal(labelled, again)  # a draw is reproducible


def test_the_generator_learns_the_classes_it_is_trained_on(monkeypatch):
    e = experiment()
    monkeypatch.setattr(e, "GEN_STEPS", 400)
    pool_x, pool_y, _, _ = e.load()
    model = e.train_generator(pool_x, pool_y, seed=0)
    images, labels = e.generated(model, 20, seed=1)
    judge = e.logistic(pool_x, pool_y)
    assert (judge.predict(images.reshape(len(images), 64)) == labels).mean() > 0.8
    kept, kept_labels = e.generated(model, 20, seed=1, judge=judge)
    assert np.array_equal(np.bincount(kept_labels), [20] * 10)  # filtering keeps every class whole


def test_one_small_run_measures_every_condition_and_writes_the_report(monkeypatch, tmp_path):
    e = experiment()
    # what is checked here is that every condition is measured and reported, not how well
    # the CNN learns: ten steps do (fewer generator steps would not save time: logistic
    # regression then takes longer to fit the worse images)
    monkeypatch.setattr(e, "GEN_STEPS", 200)
    monkeypatch.setattr(e, "CNN_STEPS", 10)
    monkeypatch.setattr(e, "KS", (5,))
    rows = [e.one_draw((5, d)) for d in range(2)]
    conditions = set(rows[0]["results"])
    assert {"A", "B r1", "B r10", "C1 r3", "C2 r10 filtered", "D1 r1 filtered", "D2 r3", "CAS C1",
            "CAS C2"} <= conditions
    assert len(conditions) == 1 + 3 + 2 + 4 * 6
    assert all(0 <= v <= 1 for row in rows for r in row["results"].values() for v in r.values())
    assert all(row["results"]["A"]["logreg"] > 0.5 for row in rows)  # 5 digits a class already teach a lot
    e.report(rows, tmp_path, seconds=1.0, workers=1)
    table = (tmp_path / "augmentation-table.md").read_text()
    assert "| D2 r3 filtered |" in table and "vs B, p=" in table
    assert json.loads((tmp_path / "augmentation-results.json").read_text())["rows"][0]["k"] == 5
    assert (tmp_path / "augmentation.png").stat().st_size > 10_000
