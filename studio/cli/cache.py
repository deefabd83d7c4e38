"""`studio cache info | gc`: the step cache (OUT/.cache/steps), its size and its upkeep."""

from __future__ import annotations

import json

import click

from studio.cli.common import OUT_OPTION, FloatRange, echo, print_notes, size_text
from studio.errors import UserError


@click.group()
def cache() -> None:
    """Look after the step cache (OUT/.cache/steps)."""


@cache.command("info")
@OUT_OPTION
@click.option("--json", "as_json", is_flag=True)
def cache_info(out, as_json) -> None:
    """How many entries the cache holds, its size, and what only it holds."""
    import time

    from studio.runs.cache_admin import cache_root, entries, keys_in_runs

    notes: list[str] = []
    found = entries(out)
    listed = keys_in_runs(out, notes) if out.is_dir() else set()
    print_notes(notes)
    info = {"cache": str(cache_root(out)), "entries": len(found), "bytes": sum(e.bytes for e in found),
            "bytes_alone": sum(e.alone for e in found), "entries_runs_recorded": sum(e.key in listed for e in found),
            "oldest_use": found[0].last_used if found else None, "newest_use": found[-1].last_used if found else None}
    if as_json:
        echo(json.dumps(info, indent=2))
        return
    def when(t):
        try:
            return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else "-"
        except (OverflowError, OSError, ValueError):  # a folder time far outside the calendar
            return "?"
    echo(f"{info['cache']}: {info['entries']} entries, {size_text(info['bytes'])} "
         f"({size_text(info['bytes_alone'])} not shared with any run); {info['entries_runs_recorded']} recorded by "
         f"runs in {out}; last used {when(info['oldest_use'])} to {when(info['newest_use'])}")


@cache.command("gc")
@OUT_OPTION
@click.option("--older-than", "days", type=FloatRange(0, 36_500), metavar="DAYS",
              help="Remove entries last used more than DAYS ago.")
@click.option("--max-gb", type=FloatRange(0, 1_000_000), help="Then remove the least recently used until the cache "
              "alone holds at most this much.")
@click.option("--include-listed", is_flag=True, help="Also remove entries that runs in OUT recorded.")
@click.option("--dry-run", is_flag=True, help="Say what would go; remove nothing.")
def cache_gc(out, days, max_gb, include_listed, dry_run) -> None:
    """Remove cache entries, least recently used first; never one a run in OUT recorded
    unless --include-listed."""
    from studio.runs.cache_admin import check_limits, collect

    if days is None and max_gb is None:
        raise UserError("give --older-than DAYS, --max-gb N or both (studio cache info shows the cache's size)")
    check_limits(days, max_gb)
    notes: list[str] = []
    removed, protected = collect(out, older_than_days=days, max_bytes=None if max_gb is None else int(max_gb * 2**30),
                                 include_listed=include_listed, dry_run=dry_run, notes=notes)
    print_notes(notes)
    verb = "would remove" if dry_run else "removed"
    echo(f"{verb} {len(removed)} entries, freeing {size_text(sum(e.alone for e in removed))}"
         + (f"; kept {len(protected)} that runs in {out} recorded (--include-listed removes them)"
            if protected else ""))

