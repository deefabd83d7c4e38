"""`studio plugins list | new | show`: the installed plugins, a new one, a generator's
parameters."""

from __future__ import annotations

import json
from pathlib import Path

import click

from studio.cli.common import echo, host


@click.group()
def plugins() -> None:
    """Installed plugins and their generators."""


@plugins.command("list")
@click.option("--json", "as_json", is_flag=True)
def plugins_list(as_json) -> None:
    """Every plugin, its version, its generators, and whether it loaded."""
    plugin_host = host()
    rows = [
        {"name": p.name, "module": p.module, "distribution": p.distribution, "version": p.version,
         "generators": p.generators, "ok": p.ok, "errors": p.errors}
        for p in plugin_host.registry.plugins.values()
    ]
    if as_json:
        echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for col in ("plugin", "version", "generators", "status"):
        table.add_column(col, overflow="fold")
    for r in rows:
        status = "ok" if r["ok"] else "[red]error:[/] " + "; ".join(r["errors"])
        table.add_row(r["name"], r["version"] or "", "\n".join(r["generators"]), status)
    Console().print(table)


@plugins.command("new")
@click.argument("name")
@click.option("--dir", "where", default=".", show_default=True, type=click.Path(path_type=Path, file_okay=False),
              help="Where to write studio-NAME/.")
def plugins_new(name, where) -> None:
    """Write a ready plugin package: pyproject with the entry point, a generator
    (image.NAME), tests using studio.testing, a README. NAME: lower-case words joined
    by - or _ (acme-grain: the package studio-acme-grain, the generator image.acme_grain)."""
    from studio.host.scaffold import new_plugin, plugin_names

    root = new_plugin(name, where)
    echo(f"wrote {root}: its generator is {plugin_names(name)['generator']}")
    echo(f"next: cd {root} && pip install -e '.[test]' && pytest")


@plugins.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
def plugins_show(name, as_json) -> None:
    """Parameters (types, defaults, bounds, descriptions) and ports of generator NAME."""
    from studio import params as P

    plugin_host = host()
    gen = plugin_host.registry.generator(name)
    fields = []
    for key, field in gen.Params.model_fields.items():
        default = P.default_of(gen.Params, key)
        fields.append({"name": key, "allowed": P.describe(gen.Params, key),
                       "default": None if default is P.REQUIRED else default,
                       "required": default is P.REQUIRED, "description": field.description or ""})
    info = {"name": gen.name, "plugin": plugin_host.registry.plugin_of(name), "description": gen.description,
            "outputs": gen.outputs, "precisions": list(gen.precisions), "batchable": gen.batchable,
            "params": fields, "schema": gen.Params.model_json_schema()}
    if as_json:
        echo(json.dumps(info, indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]{gen.name}[/]  (plugin {info['plugin']})\n{gen.description}\n")
    console.print("outputs: " + ", ".join(f"{p} ({m})" for p, m in gen.outputs.items()))
    console.print(f"precisions: {', '.join(gen.precisions)}   batchable: {'yes' if gen.batchable else 'no'}\n")
    table = Table(title="parameters", title_justify="left")
    for col in ("name", "allowed", "default", "description"):
        table.add_column(col, overflow="fold")
    for f in fields:
        table.add_row(f["name"], f["allowed"], "(required)" if f["required"] else repr(f["default"]), f["description"])
    console.print(table)

