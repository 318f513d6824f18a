"""Files of a build context that look like credentials (warned about, never refused).

Pure: given the paths of one context (and, optionally, a way to read a few of them) it
returns the likely secrets; `plan` and the builders decide how to say so. A path is
silenced by a gitignore-style glob of the image's `allow_secrets` list.
"""

from __future__ import annotations

import itertools
import operator
import re
from collections.abc import Callable, Iterable, Sequence

# exact file names (any folder)
_NAMES = {
    "id_rsa",
    "id_dsa",
    "id_ecdsa",
    "id_ed25519",
    ".netrc",
    "_netrc",
    ".git-credentials",
    ".htpasswd",
    ".pgpass",
    "credentials.json",
    "application_default_credentials.json",
}
_SUFFIXES = (".pem", ".key", ".p12", ".pfx", ".jks", ".keystore", ".ppk")
# name -> folder it must sit in (cloud CLI credential files)
_IN_FOLDER = {"credentials": ".aws", "config.json": ".docker", "config": ".kube"}
# files that hold a secret only when they carry a token or password
_TOKEN_FILES = {".npmrc", ".pypirc", ".yarnrc.yml"}
_TOKEN_RE = re.compile(rb"(_authToken|_auth\s*=|password\s*[=:]|npmAuthToken)", re.I)
# templates committed on purpose
_TEMPLATE_SUFFIXES = (".example", ".sample", ".template", ".dist", ".tmpl")


def looks_like_secret(path: str, read: Callable[[str], bytes] | None = None) -> bool:
    """True when a repo-relative file path looks like a credentials file."""
    folder, _, name = path.rpartition("/")
    if name.endswith(_TEMPLATE_SUFFIXES):
        return False
    if name in _NAMES or name.endswith(_SUFFIXES):
        return True
    if name == ".env" or name.startswith(".env."):
        return True
    if _IN_FOLDER.get(name) and folder.rpartition("/")[2] == _IN_FOLDER[name]:
        return True
    if name in _TOKEN_FILES:
        if read is None:
            return True
        try:
            return bool(_TOKEN_RE.search(read(path)))
        except OSError:
            return True
    return False


def likely_secrets(
    paths: Iterable[str],
    allow: Sequence[str] = (),
    read: Callable[[str], bytes] | None = None,
) -> list[str]:
    """The paths that look like credentials, minus those matching an `allow` glob."""
    spec = None
    if allow:
        import pathspec  # only for images that allow some: most plans never import it

        spec = pathspec.GitIgnoreSpec.from_lines(allow)
    return [
        p for p in paths if looks_like_secret(p, read) and (spec is None or not spec.match_file(p))
    ]


def rules_digest() -> str:
    """A digest of the path rules above: a cache of candidate paths is keyed on it."""
    import hashlib

    rules = [sorted(_NAMES), _SUFFIXES, sorted(_IN_FOLDER.items()), sorted(_TOKEN_FILES)]
    return hashlib.sha256(repr([*rules, _TEMPLATE_SUFFIXES]).encode()).hexdigest()


_ANY_NAME = frozenset({*_NAMES, *_TOKEN_FILES, *_IN_FOLDER, ".env"})


def could_be_secret(path: str) -> bool:
    """A quick test on the path alone: every likely secret passes it (token files included,
    before their content is read). Most names fail the first screen (one set lookup, one
    suffix test), which every rule of `looks_like_secret` passes."""
    name = path[path.rfind("/") + 1 :]
    if name in _ANY_NAME or name.endswith(_SUFFIXES) or name.startswith(".env."):
        return looks_like_secret(path, None)
    return False


# every name above ends with one of these (each at least 3 characters long)
_TAILS = frozenset(ending[-3:] for ending in {*_ANY_NAME, *_SUFFIXES})
_LAST3 = operator.itemgetter(slice(-3, None))


def candidates(paths: Sequence[str]) -> list[int]:
    """Indices of the `paths` that pass `could_be_secret`, in order: a superset screen
    iterated in C (last three characters in a set, `.env.` in the path) first, so 100,000s
    of paths cost milliseconds."""
    ends = map(_TAILS.__contains__, map(_LAST3, paths))
    env = map(operator.contains, paths, itertools.repeat(".env."))
    screened = itertools.compress(itertools.count(), map(operator.or_, ends, env))
    return [i for i in screened if could_be_secret(paths[i])]


def image_secrets(image) -> list[str]:
    """The likely secrets of one image's context (an `ImageVersion`): paths are tested first
    (each path of a snapshot once, however many contexts share it), only the few candidates
    are read (token files)."""
    found = {f.path: f for f in image.files_screened(candidates)}
    if not found:
        return []
    reader = image.reader
    return likely_secrets(found, image.spec.allow_secrets, lambda p: reader.read(found[p]))


def printable(path: str) -> str:
    """A path for output: bytes that are not UTF-8 (surrogate-escaped) shown as \\xNN."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def warning(image: str, found: Sequence[str]) -> str:
    """One line naming the files and how to leave them out (or keep them)."""
    shown = ", ".join(printable(p) for p in found[:5])
    more = f" and {len(found) - 5} more" if len(found) > 5 else ""
    return (
        f"image '{image}': the build context holds files that look like credentials: {shown}"
        f"{more} (exclude them in .dockerignore, or list them under 'allow_secrets' of the"
        " image to ship them)"
    )
