"""Readable tables for the terminal (rich)."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from build_assets.core.plan import PlanEntry

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
        text = escape("; ".join(why)) + (f" (+{more} more)" if more > 0 else "")
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


def print_summary(summary) -> None:
    """What a materialization built, found cached and deployed."""
    console = Console()
    table = Table(
        title=f"Run {summary.run_id or '-'} in {summary.seconds:.1f}s", title_justify="left"
    )
    table.add_column("what")
    table.add_column("assets")
    table.add_row("built", ", ".join(summary.built) or "-")
    table.add_row("cached (already in registry)", ", ".join(summary.cached) or "-")
    table.add_row("Lambda updated", ", ".join(summary.functions_updated) or "-")
    table.add_row("Lambda already current", ", ".join(summary.functions_unchanged) or "-")
    console.print(table)
    errors = Console(stderr=True, soft_wrap=True)  # a problem stays one greppable line
    for problem in summary.problems:
        errors.print(f"[red]{escape(problem)}[/]")
    console.print("[green]success[/]" if summary.success else "[red]failed[/]")


def _ago(ts: float | None) -> str:
    import time

    if not ts:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def print_status(status: dict) -> None:
    """The seed's quick verification script as tables."""
    console = Console()
    t = Table(title="Images", title_justify="left")
    published = any("ssm_parameter" in i for i in status["images"])
    for col in ("image", "tag", "built", "digest", *(["published (SSM)"] if published else [])):
        t.add_column(col)
    for i in status["images"]:
        t.add_row(
            i["name"],
            i["tag"],
            "[green]yes[/]" if i["built"] else "[yellow]no[/]",
            (i["digest"] or "-")[:19],
            *([_published(i)] if published else []),
        )
    console.print(t)
    if status["lambdas"]:
        t = Table(title="Lambda functions", title_justify="left")
        for col in ("function", "image", "current image", "up to date"):
            t.add_column(col)
        for f in status["lambdas"]:
            t.add_row(
                f["function"],
                f["image"],
                f["current_image_uri"] or "(not deployed)",
                _function_state(f),
            )
        console.print(t)
    t = Table(title="Recent builds", title_justify="left")
    for col in ("image", "tag", "build id", "status", "started", "duration"):
        t.add_column(col)
    for b in status["builds"]:
        state = "CACHED" if b["cached"] else b["status"]
        dur = f"{b['duration_s']:.1f}s" if b["duration_s"] is not None else "-"
        t.add_row(b["image"], b["tag"], b["build_id"] or "-", state, _ago(b["started_at"]), dur)
    console.print(t)
    if status.get("runs"):
        t = Table(title="Runs in flight", title_justify="left")
        for col in ("run", "status", "assets"):
            t.add_column(col)
        for r in status["runs"]:
            t.add_row(str(r.get("run_id")), str(r.get("status")), str(r.get("asset_selection")))
        console.print(t)


def _function_state(f: dict) -> str:
    """'yes' / 'no', with who deploys it, its alias and a rollback hold."""
    text = "[green]yes[/]" if f["up_to_date"] else "[yellow]no[/]"
    if f.get("held"):
        text = "[yellow]held by a rollback[/] (`rollback --release` ends it)"
    elif f.get("deploy") == "none" and not f["up_to_date"]:
        text = "[yellow]no: infrastructure deploy lags[/]"
    if f.get("alias"):
        text += f" (alias {f['alias']})"
    return text


def _published(i: dict) -> str:
    """Whether the image's SSM parameter holds its built image."""
    if i.get("published") is None:
        return "[yellow]unknown[/]" if i.get("ssm_error") else "-"
    return "[green]yes[/]" if i["published"] else "[yellow]no[/]"
