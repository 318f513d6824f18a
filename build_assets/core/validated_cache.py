"""A validated manifest kept in the git folder, so an edited tree's `plan` skips validation.

`load_validated` answers `manifest.load_manifest` with the model stored when these exact
bytes, under the same name, passed validation before with this code, and every path the
manifest names is still there (the only part of validation that depends on anything but the
bytes): a `plan` of an edited tree then imports neither pydantic nor a YAML parser. The
store holds `Manifest.to_document()`; `Manifest.from_document` gives the same model back.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
from collections.abc import Callable
from pathlib import Path

from build_assets.core import versioncache
from build_assets.core.model import MAX_MANIFEST_BYTES, Manifest
from build_assets.core.repo_paths import RepoPaths

# the modules whose code decides a verdict: a verdict of other code is never used
_VALIDATORS = (
    "model.py",
    "schema.py",
    "manifest.py",
    "repo_paths.py",
    "show.py",
    "safeyaml.py",
    "lock.py",
    "functions.py",
    "validated_cache.py",
)


def _code() -> bytes:
    """The code that validates: ours, and the releases of pydantic and PyYAML (their version
    files, found without importing them)."""
    h = hashlib.sha256()
    for name in _VALIDATORS:
        h.update(Path(__file__).with_name(name).read_bytes())
    for package, version_file in (("pydantic", "version.py"), ("yaml", "__init__.py")):
        spec = importlib.util.find_spec(package)
        origin = spec.origin if spec is not None else None
        with contextlib.suppress(OSError, TypeError):
            h.update(Path(origin).with_name(version_file).read_bytes())  # type: ignore[arg-type]
    return h.digest()


def _paths_hold(manifest: Manifest, root: Path) -> bool:
    """True when every path the manifest names passes validation's check (`RepoPaths`)."""
    exists = RepoPaths(root)
    wanted = {p.rstrip("/") for s in manifest.images.values() for p in s.context_roots()}
    return all(exists(p) is True for p in sorted(wanted | set(manifest.ignore_paths())))


def load_validated(
    path: Path, root: Path, git_dir: Path, prepare: Callable[[], object] | None = None
) -> Manifest:
    """`manifest.load_manifest(path, root)`, from the store in `git_dir` when it holds the
    validated manifest of these bytes (see the module's docstring); a manifest validated
    here is remembered there. `prepare`: called before validating (the store missed)."""
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_MANIFEST_BYTES + 1)
        key = versioncache.validated_key(str(path), data, _code())
    except OSError:
        data, key = b"", None
    doc = None if key is None else versioncache.load_validated(git_dir, key)
    if doc is not None:
        try:
            stored = Manifest.from_document(doc)
        except (KeyError, TypeError, ValueError, AttributeError):
            stored = None  # not a document this code wrote: validated again
        if stored is not None and _paths_hold(stored, root):
            return stored
    if prepare is not None:
        prepare()
    from build_assets.core.manifest import load_manifest, parse_manifest

    try:
        text = data.decode("utf-8") if key is not None and len(data) <= MAX_MANIFEST_BYTES else None
    except UnicodeDecodeError:
        text = None
    if text is None:  # unreadable, too large or not UTF-8: load_manifest says which
        return load_manifest(path, root)
    manifest = parse_manifest(text, str(path), RepoPaths(root))
    versioncache.save_validated(git_dir, key, manifest.to_document())  # type: ignore[arg-type]
    return manifest
