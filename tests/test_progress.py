"""The progress display: a batched step names its items, and the bars keep moving."""

from io import StringIO

from rich.console import Console

from studio.execute.events import RichProgress


def test_a_batch_is_named_as_one_with_its_step_bar_advancing_per_item():
    sink = RichProgress(Console(file=StringIO(), width=200))
    sink.emit("run_start", pipeline="p", run_dir="r", items=3)
    sink.emit("step_start", step="img", uses="image.diffusion", items=3, precision="fp32")
    for done in (1, 2):
        for name in ("img@seed=1", "img@seed=2", "img@seed=3"):
            sink.emit("item_progress", step="img", item=name, done=done, total=4)
    item = sink.progress.tasks[sink.item_task]
    assert item.description == "  img@seed=1, img@seed=2 and 1 more [dim](one batch)[/]"
    assert (item.completed, item.total) == (2, 4)
    step = sink.progress.tasks[sink.steps["img"]]
    for n, name in enumerate(("img@seed=1", "img@seed=2", "img@seed=3"), start=1):
        sink.emit("item_done", step="img", item=name)
        assert step.completed == n
    assert sink.item_task is None and sink.item_names == []
    columns = [type(c).__name__ for c in sink.progress.columns]
    assert "TimeRemainingColumn" in columns and "TimeElapsedColumn" in columns
    sink.emit("run_done", status="done", run_dir="r")
