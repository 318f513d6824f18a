"""Readable tables for the terminal (rich)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from build_assets.plan import PlanEntry

MAX_REASONS = 3


def print_plan(entries: list[PlanEntry], *, against: str, note: str | None = None) -> None:
    """A `pulumi preview`-like table: name, tag, change, first reasons."""
    console = Console()
    table = Table(title=f"Plan against {against}", title_justify="left")
    table.add_column("", width=1)
    table.add_column("image")
    table.add_column("tag")
    table.add_column("change")
    table.add_column("why")
    for e in entries:
        why = e.reasons[:MAX_REASONS]
        more = len(e.reasons) - len(why)
        text = "; ".join(why) + (f" (+{more} more)" if more > 0 else "")
        table.add_row(
            "~" if e.changed else " ",
            e.name,
            e.tag,
            "[yellow]rebuild[/]" if e.changed else "[dim]up to date[/]",
            text,
        )
    console.print(table)
    changed = sum(e.changed for e in entries)
    if note:
        console.print(note)
    console.print(f"{changed} to build, {len(entries) - changed} unchanged")
