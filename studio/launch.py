"""The `studio` command's entry point. It imports nothing heavy itself, so Ctrl-C while
the CLI's modules load (a few hundred milliseconds of pydantic, click, pluggy) ends with
"interrupted" and exit code 130, not a Python traceback."""

from __future__ import annotations

import sys


def main() -> None:
    from studio.execute import interrupts

    interrupts.install()
    try:
        from studio.cli import main as cli_main
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    cli_main()
