"""`kubetune cache ls|rm`: the sources local runs downloaded (the cache folder of `kubetune run`).

Entries are keyed by source and revision; each holds what the initializer downloaded and a
marker written last. A folder without the marker is a download that did not finish: it is
listed as such, never read, and removed by `rm --incomplete`.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import click

from ..contract.initialization import COMPLETE_MARKER, ENTRIES_SUBDIR

CACHE_DIR_ENV = "KUBETUNE_CACHE_DIR"
CACHE_DIR_OPTION = click.option(
    "--cache-dir", default=None,
    help=f"The cache folder.  [default: ${CACHE_DIR_ENV}, else ~/.cache/kubetune]")


@dataclass(frozen=True)
class Entry:
    base: Path  # <cache>/entries
    folder: Path  # <base>/<scheme>/<ref>/<revision>
    complete: bool

    @property
    def name(self) -> str:
        scheme, *ref, revision = self.folder.relative_to(self.base).parts
        return f"{scheme}://{'/'.join(ref)}@{revision}"

    @property
    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.folder.rglob("*") if f.is_file())

    @property
    def used(self) -> float:
        return max((f.stat().st_atime for f in self.folder.rglob("*") if f.is_file()), default=0.0)


def entries(root: Path) -> Iterator[Entry]:
    """Complete entries (with their marker), then folders of downloads that did not finish."""
    base = root / ENTRIES_SUBDIR
    complete = sorted(marker.parent for marker in base.rglob(COMPLETE_MARKER))
    yield from (Entry(base, folder, True) for folder in complete)
    for folder in sorted(p for p in base.rglob("*") if p.is_dir()):
        leaf = not any(child.is_dir() for child in folder.iterdir())
        if leaf and folder not in complete and not any(folder.is_relative_to(c) for c in complete):
            yield Entry(base, folder, False)


def cache_root(option: Optional[str]) -> Path:
    import os

    return Path(option or os.environ.get(CACHE_DIR_ENV) or Path.home() / ".cache" / "kubetune")


@click.group()
def cache() -> None:
    """The hf:// and s3:// sources `kubetune run` downloaded once for every run."""


@cache.command("ls")
@CACHE_DIR_OPTION
def list_entries(cache_dir: Optional[str]) -> None:
    """Each entry: source@revision, size, and when it was last read."""
    root = cache_root(cache_dir)
    found = list(entries(root))
    for entry in found:
        state = "" if entry.complete else "  (incomplete: never read; `rm --incomplete` removes it)"
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.used)) if entry.used else "-"
        click.echo(f"{entry.name}  {entry.size_bytes / 1e6:.1f} MB  last read {used}{state}")
    total = sum(entry.size_bytes for entry in found)
    click.echo(f"{len(found)} entries, {total / 1e6:.1f} MB in {root}")


@cache.command("rm")
@click.argument("sources", nargs=-1)
@click.option("--incomplete", is_flag=True, help="Remove downloads that did not finish.")
@click.option("--all", "everything", is_flag=True, help="Remove every entry.")
@CACHE_DIR_OPTION
def remove_entries(sources: tuple[str, ...], incomplete: bool, everything: bool, cache_dir: Optional[str]) -> None:
    """Remove entries by source (hf://org/name, or with @revision), --incomplete ones, or --all.
    A run that needs a removed entry downloads it again."""
    if not (sources or incomplete or everything):
        raise click.UsageError("name SOURCES, or pass --incomplete or --all")
    removed = [entry for entry in entries(cache_root(cache_dir))
               if everything or (incomplete and not entry.complete)
               or any(entry.name == s or entry.name.startswith(s + "@") for s in sources)]
    for entry in removed:
        shutil.rmtree(entry.folder)
        click.echo(f"removed {entry.name}")
    if not removed:
        click.echo("nothing matched")
