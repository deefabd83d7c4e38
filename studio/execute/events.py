"""Progress events. The executor emits them; a sink shows them (rich bars on a
terminal, plain lines elsewhere, JSON lines for machines, nothing with --quiet).

Events: run_start, step_start, item_cached, item_progress, item_done, item_error,
item_skipped, batch_shrunk (a batch ran out of device memory and is run again smaller),
step_done, run_done. Each is a dict with "event" and "time"."""

from __future__ import annotations

import json
import sys
import time
from typing import IO, Any


class Sink:
    def emit(self, event: str, **data: Any) -> None:
        pass

    def close(self) -> None:
        pass


class Collect(Sink):
    """Keeps every event (tests, scripting)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def emit(self, event: str, **data: Any) -> None:
        self.events.append({"event": event, **data})


class JsonLines(Sink):
    def __init__(self, stream: IO[str] | None = None):
        self.stream = stream or sys.stdout

    def emit(self, event: str, **data: Any) -> None:
        self.stream.write(json.dumps({"event": event, "time": round(time.time(), 3), **data}, default=str) + "\n")
        self.stream.flush()


class Plain(Sink):
    """One line per finished item, for logs and pipes."""

    def __init__(self, stream: IO[str] | None = None):
        self.stream = stream or sys.stderr

    def emit(self, event: str, **data: Any) -> None:
        line = {
            "run_start": lambda: f"run {data['run_dir']}",
            "item_cached": lambda: f"  cached  {data['item']}",
            "item_done": lambda: f"  done    {data['item']} ({data['seconds']:.2f} s)",
            "item_error": lambda: f"  FAILED  {data['item']}: {data['error']}",
            "item_skipped": lambda: f"  skipped {data['item']}: {data['reason']}",
            "batch_shrunk": lambda: shrunk_message(data),
        }.get(event)
        if line:
            print(line(), file=self.stream, flush=True)


class RichProgress(Sink):
    """A bar per step (items) and one for the items being made (their own progress: the
    whole batch, named, when a step makes several at once); each with its time so far
    and an estimate of the time left."""

    def __init__(self, console=None):
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("eta"), TimeRemainingColumn(), console=self.console, transient=False,
        )
        self.steps: dict[str, Any] = {}
        self.item_task = None
        self.item_names: list[str] = []

    def emit(self, event: str, **data: Any) -> None:
        p = self.progress
        if event == "run_start":
            p.start()
        elif event == "step_start":
            self.steps[data["step"]] = p.add_task(f"{data['step']} [dim]{data['uses']}[/]", total=data["items"])
        elif event in ("item_cached", "item_done", "item_error", "item_skipped"):
            task = self.steps.get(data["step"])
            if task is not None:
                p.advance(task)
            if self.item_task is not None:
                p.remove_task(self.item_task)
                self.item_task, self.item_names = None, []
            if event == "item_cached":
                p.console.print(f"  [dim]cached[/]  {data['item']}")
            elif event == "item_error":
                p.console.print(f"  [red]failed[/]  {data['item']}: {data['error']}")
            elif event == "item_skipped":
                p.console.print(f"  [yellow]skipped[/] {data['item']}: {data['reason']}")
        elif event == "batch_shrunk":
            p.console.print(f"  [yellow]{shrunk_message(data)}[/]")
        elif event == "item_progress":
            name = data["item"]
            if self.item_task is None:
                self.item_names = [name]
                self.item_task = p.add_task(self.item_label(), total=data["total"])
            elif name not in self.item_names:  # another item of the same batch
                self.item_names.append(name)
                p.update(self.item_task, description=self.item_label())
            p.update(self.item_task, completed=data["done"], total=data["total"])
        elif event == "run_done":
            p.stop()

    def item_label(self) -> str:
        """The items being made: one name, or a batch's first two and how many more."""
        from rich.markup import escape

        names = self.item_names
        if len(names) == 1:
            return f"  {escape(names[0])}"
        more = f" and {len(names) - 2} more" if len(names) > 2 else ""
        return f"  {escape(names[0])}, {escape(names[1])}{more} [dim](one batch)[/]"

    def close(self) -> None:
        self.progress.stop()


def sink_for(*, quiet: bool, json_events: bool) -> Sink:
    if json_events:
        return JsonLines()
    if quiet:
        return Sink()
    if sys.stderr.isatty():
        return RichProgress()
    return Plain()


def shrunk_message(data: dict[str, Any]) -> str:
    return (f"  step {data['step']}: a batch of {data['tried']} ran out of memory; "
            f"running {data['now']} at a time")


class GuardedSink(Sink):
    """A sink whose output may break (`studio run --json-events | head`, a full disk
    behind stdout): the first error closes it, and the run goes on and records
    everything. `error` is what broke it."""

    def __init__(self, sink: Sink):
        self.sink = sink
        self.error: OSError | None = None

    @property
    def closed(self) -> bool:
        return self.error is not None

    def emit(self, event: str, **data: Any) -> None:
        if self.error is not None:
            return
        try:
            self.sink.emit(event, **data)
        except OSError as exc:  # BrokenPipeError, ENOSPC ...
            self.error = exc

    def close(self) -> None:
        try:
            self.sink.close()
        except OSError as exc:
            self.error = self.error or exc
