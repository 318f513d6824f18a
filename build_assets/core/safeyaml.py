"""Bounded YAML loading: size, nesting depth and alias expansion are limited while parsing.

A manifest is read in two passes over libyaml (PyYAML's C parser when present):

1. the event stream, which libyaml produces without recursion, is checked against the limits:
   bytes, nesting depth, and the size of the document *as if every alias were expanded*
   (each anchor's expanded size is known when its node ends, so a "billion laughs" bomb is
   caught after reading a few hundred bytes, never expanded);
2. only then is the document constructed, with mapping keys that must be unique strings.

Every problem is a `ManifestError` of one line naming the file, line and column.
"""

from __future__ import annotations

from typing import Any

import yaml

from build_assets.core.model import MAX_MANIFEST_BYTES
from build_assets.errors import ManifestError

MAX_DEPTH = 32  # a manifest needs 5 levels (images > name > build_args > key > value)
MAX_NODES = 100_000  # expanded nodes (aliases counted as often as they are used); 200
# images take about 2,000
MAX_SCALAR_CHARS = 2 * MAX_MANIFEST_BYTES  # expanded characters of all scalars

_BaseLoader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present
_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"


class UniqueKeyLoader(_BaseLoader):  # type: ignore[misc, valid-type]
    """A safe YAML loader whose mapping keys must be unique strings (no silent overwrite,
    no `true:` key turning into the boolean True)."""


def _construct_mapping(loader: UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False):
    seen: set[str] = set()
    for key_node, _ in node.value:
        if key_node.tag == _MERGE_TAG:
            continue  # `<<: *anchor` merges; explicit keys may override merged ones
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != _STR_TAG:
            shown = key_node.value if isinstance(key_node, yaml.ScalarNode) else "a collection"
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f'key {_short(shown)} is not a string (quote it: "{_short(shown, 40)}")'
                if isinstance(key_node, yaml.ScalarNode)
                else "a key must be a string, not a list or map",
                key_node.start_mark,
            )
        key = key_node.value
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key '{_short(key)}'", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _short(text: str, limit: int = 60) -> str:
    """`text` shortened for a one-line message (control characters escaped)."""
    text = text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _where(source: str, mark: Any) -> str:
    return f"{source}: line {mark.line + 1}, column {mark.column + 1}:" if mark else f"{source}:"


def check_events(text: str, source: str) -> None:
    """Raise ManifestError when `text` exceeds the nesting or expanded-size limits."""
    anchors: dict[str, tuple[int, int]] = {}  # anchor -> expanded (nodes, scalar chars)
    stack: list[list[Any]] = [[0, 0, None]]  # per open collection: nodes, chars, anchor
    for event in yaml.parse(text, Loader=_BaseLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            if len(stack) > MAX_DEPTH:
                raise ManifestError(
                    f"{_where(source, event.start_mark)} nested more than {MAX_DEPTH} levels deep"
                )
            stack.append([1, 0, event.anchor])
            continue
        if isinstance(event, yaml.CollectionEndEvent):
            nodes, chars, anchor = stack.pop()
        elif isinstance(event, yaml.ScalarEvent):
            nodes, chars, anchor = 1, len(event.value), event.anchor
        elif isinstance(event, yaml.AliasEvent):
            if event.anchor not in anchors:
                raise ManifestError(
                    f"{_where(source, event.start_mark)} invalid YAML: unknown alias"
                    f" '*{_short(event.anchor)}'"
                )
            (nodes, chars), anchor = anchors[event.anchor], None
        else:
            continue
        if anchor is not None:
            anchors[anchor] = (nodes, chars)
        top = stack[-1]
        top[0] += nodes
        top[1] += chars
        if top[0] > MAX_NODES or top[1] > MAX_SCALAR_CHARS:
            raise ManifestError(
                f"{_where(source, event.start_mark)} more than {MAX_NODES:,} values or"
                f" {MAX_SCALAR_CHARS // 2**20} MB of text once aliases are expanded"
                " (an alias bomb?)"
            )


_last: tuple[str, str, Any] | None = None  # (text, source, document or ManifestError)


def remember(text: str, source: str, document: Any) -> None:
    """Take `document` as the answer of `load(text, source)`: an earlier parse of these exact
    bytes kept elsewhere (plan's cache), so validation parses nothing again."""
    global _last
    _last = (text, source, document)


def load(text: str, source: str) -> Any:
    """The YAML document of `text`, within the limits; ManifestError (one line) otherwise.

    The last answer is remembered: `plan` reads the manifest twice (its paths, to start git
    early, then to validate it), and a large document then costs one parse."""
    global _last
    if _last is not None and _last[0] == text and _last[1] == source:
        if isinstance(_last[2], ManifestError):
            raise ManifestError(str(_last[2]), lines=_last[2].lines)
        return _last[2]
    try:
        data = _load(text, source)
    except ManifestError as exc:
        _last = (text, source, exc)
        raise
    _last = (text, source, data)
    return data


def _load(text: str, source: str) -> Any:
    cap = MAX_MANIFEST_BYTES
    size = len(text.encode("utf-8", "surrogatepass")) if len(text) * 4 > cap else len(text)
    if size > cap:
        raise ManifestError(
            f"{source}: {size / 2**20:.1f} MB; a manifest may be at most {cap // 2**20} MB"
        )
    try:
        check_events(text, source)
        return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - safe loader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f" line {mark.line + 1}, column {mark.column + 1}:" if mark else ""
        raise ManifestError(
            f"{source}:{line} invalid YAML: {_short(str(exc.problem or exc), 200)}"
        ) from None
    except yaml.YAMLError as exc:
        raise ManifestError(f"{source}: invalid YAML: {_short(str(exc), 200)}") from None
    except RecursionError:  # pragma: no cover - the depth limit comes first
        raise ManifestError(f"{source}: nested too deeply") from None
