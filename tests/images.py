"""Test images made here (nothing can be pulled from public registries on this machine)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from build_assets.engine import registry


def shell_image(registry_prefix: str, tmp_path: Path, name: str = "shell") -> str:
    """A tiny image with the host's sh and sleep (and their libraries), imported into the
    engine, pushed to `registry_prefix/name:1`; its reference pinned by digest."""
    root = tmp_path / f"rootfs-{name}"
    paths: set[str] = set()
    binaries = [shutil.which("sh"), shutil.which("sleep")]
    for b in binaries:
        assert b
        paths.add(str(Path(b).resolve()))
        ldd = subprocess.run(["ldd", b], capture_output=True, text=True, check=True).stdout
        paths.update(tok for tok in ldd.split() if tok.startswith("/"))
    for p in paths:
        dest = root / p.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, dest)
    for tool, b in zip(("sh", "sleep"), binaries, strict=True):
        link = root / "bin" / tool
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            shutil.copy2(Path(b).resolve(), link)  # type: ignore[arg-type]
    ref = f"{registry_prefix}/{name}:1"
    tar = subprocess.run(["tar", "-C", str(root), "-c", "."], capture_output=True, check=True)
    subprocess.run(
        ["docker", "import", "-", ref], input=tar.stdout, check=True, capture_output=True
    )
    subprocess.run(["docker", "push", ref], check=True, capture_output=True)
    digest = registry.manifest_digest(f"{registry_prefix}/{name}", "1")
    assert digest
    return f"{registry_prefix}/{name}@{digest}"
