"""Just enough of a Dockerfile to check it against its build context, find its base arg and
the images its stages start from (`image_froms`, the one reading of its FROMs).

Reads the instructions that matter for that: `ARG`, `FROM` (`FROM ${X}`, `${X:-default}`,
`$X`, `AS name`, `--platform=`), `COPY` / `ADD` (flags such as `--from=`, `--chmod=`,
`--chown=`, `--link`; JSON form; heredocs; URLs), with line continuations, comments, the
`# escape=` directive and heredoc bodies skipped. Every other instruction is kept only as a
line number. Line numbers are 1-based lines of the file where the instruction starts.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field

_DIRECTIVE_RE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
_HEREDOC_RE = re.compile(r"<<(-?)(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\2")
_VAR_RE = re.compile(
    r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-+])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))"
)
_URL_RE = re.compile(r"^(https?://|git@|git://|ssh://)")


@dataclass(frozen=True)
class Instruction:
    """One instruction: keyword (upper case), its text after the keyword, its first line."""

    keyword: str
    text: str
    line: int
    heredocs: tuple[str, ...] = ()  # bodies of `<<EOF` documents, in order


@dataclass(frozen=True)
class From:
    """A `FROM` line: the image as written, the build arg it names (if any), its stage name."""

    image: str
    line: int
    arg: str | None  # `X` of FROM ${X} / ${X:-default} / $X
    default: str | None  # `default` of ${X:-default}
    stage: str | None  # `AS name`


@dataclass(frozen=True)
class Copy:
    """A `COPY` or `ADD`: its sources (as written), destination and flags."""

    keyword: str
    line: int
    sources: tuple[str, ...]
    dest: str
    flags: dict[str, str] = field(default_factory=dict)

    @property
    def from_stage(self) -> str | None:
        return self.flags.get("from")


@dataclass(frozen=True)
class Dockerfile:
    """The parsed instructions of a Dockerfile."""

    instructions: tuple[Instruction, ...]
    global_args: dict[str, str | None]  # ARGs before the first FROM: name -> default
    global_arg_lines: dict[str, int]
    froms: tuple[From, ...]
    copies: tuple[Copy, ...]

    @property
    def base_arg(self) -> str | None:
        """The build arg the first `FROM` takes its image from, when it names one."""
        return self.froms[0].arg if self.froms else None

    @property
    def base_line(self) -> int | None:
        return self.froms[0].line if self.froms else None

    def context_sources(self, build_args: dict[str, str] | None = None):
        """(line, keyword, source) of every COPY/ADD source read from the build context:
        not a stage or image (`--from=`), not a URL, not a heredoc. Variables are expanded
        with the global ARG defaults and `build_args`; a source left with an unknown
        variable is skipped (its value is only known at build time)."""
        values = {k: v for k, v in self.global_args.items() if v is not None}
        values.update(build_args or {})
        for cp in self.copies:
            if cp.from_stage is not None:
                continue
            for src in cp.sources:
                if src.startswith("<<"):
                    continue
                expanded = expand(src, values)
                if expanded is None or (cp.keyword == "ADD" and _URL_RE.match(expanded)):
                    continue
                yield cp.line, cp.keyword, src, expanded


@dataclass(frozen=True)
class ImageFrom:
    """A `FROM` (of any stage) that starts from an image other than the manifest base."""

    reference: str  # after ARG-default and build-arg expansion, without `@digest`
    digest: str | None  # its `@sha256:…`, on the FROM line or in the arg's value
    arg: str | None  # X of `FROM ${X}` / `$X`: the build arg that can receive a pinned reference
    line: int


def variables(text: str) -> set[str]:
    """The names of the variables `text` refers to ($X, ${X}, ${X:-d}, …)."""
    return {m.group(1) or m.group(4) for m in _VAR_RE.finditer(text)}


def image_froms(
    dockerfile: Dockerfile, build_args: dict[str, str], base_arg: str | None
) -> list[ImageFrom]:
    """The images the stages of `dockerfile` start from, in order, once per (reference, arg).

    `base_arg`: the build arg that receives the manifest base (None when the image has no
    `base:`); every FROM naming it, in any stage, is the manifest base and never listed.
    Not listed either: a FROM naming an earlier stage (`FROM builder`), `scratch`, and one
    whose image keeps a variable with no value (known only at build time). The other
    variables are expanded with the global ARG defaults and `build_args`.

    This is the one reading of a Dockerfile's bases: the lock, the upstream assets, `init`
    and the build args passed to a build all start from it (`core.lock.image_bases`)."""
    values = {k: v for k, v in dockerfile.global_args.items() if v is not None}
    values.update(build_args)
    stages: set[str] = set()
    seen: set[tuple[str, str | None, str | None]] = set()
    out: list[ImageFrom] = []
    for frm in dockerfile.froms:
        earlier, stages = stages, stages | ({frm.stage.lower()} if frm.stage else set())
        if base_arg is not None and base_arg in variables(frm.image):
            continue  # the manifest base, passed in its arg to every stage that names it
        ref = expand(frm.image, values)
        if not ref or "$" in ref or ref.lower() in earlier or ref.lower() == "scratch":
            continue
        plain, _, digest = ref.partition("@")
        key = (plain, digest or None, frm.arg)
        if key not in seen:
            seen.add(key)
            out.append(ImageFrom(plain, digest or None, frm.arg, frm.line))
    return out


def expand(text: str, values: dict[str, str]) -> str | None:
    """`text` with $X / ${X} / ${X:-d} / ${X:+d} expanded; None when a variable is unknown."""
    unknown = False

    def sub(m: re.Match) -> str:
        nonlocal unknown
        name = m.group(1) or m.group(4)
        op, word = m.group(2), m.group(3)
        value = values.get(name)
        if op in (":-", "-"):
            return value if value else (word or "")
        if op in (":+", "+"):
            return (word or "") if value else ""
        if value is None:
            unknown = True
            return ""
        return value

    out = _VAR_RE.sub(sub, text)
    return None if unknown else out


def _logical_lines(text: str) -> list[tuple[int, str, tuple[str, ...]]]:
    """(first line number, joined text, heredoc bodies) per instruction."""
    lines = text.splitlines()
    escape = "\\"
    out: list[tuple[int, str, tuple[str, ...]]] = []
    i = 0
    in_directives = True
    while i < len(lines):
        raw = lines[i]
        stripped = raw.strip()
        if in_directives:
            m = _DIRECTIVE_RE.match(stripped)
            if m and m.group(1).lower() == "escape" and m.group(2) in ("\\", "`"):
                escape = m.group(2)
                i += 1
                continue
            if not (m and m.group(1).lower() in ("syntax", "check")):
                in_directives = False
        if not stripped or stripped.startswith("#"):
            i += 1
            continue
        start = i + 1
        parts: list[str] = []
        while True:
            part = lines[i].rstrip()
            i += 1
            if part.endswith(escape):
                parts.append(part[: -len(escape)])
                while i < len(lines) and (
                    not lines[i].strip() or lines[i].lstrip().startswith("#")
                ):
                    i += 1  # comments and blank lines inside a continuation
                if i < len(lines):
                    continue
            else:
                parts.append(part)
            break
        joined = " ".join(p.strip() for p in parts)
        bodies = []
        for m in _HEREDOC_RE.finditer(joined):
            body = []
            strip_tabs = m.group(1) == "-"
            while i < len(lines):
                line = lines[i]
                i += 1
                if (line.lstrip("\t") if strip_tabs else line) == m.group(3):
                    break
                body.append(line.lstrip("\t") if strip_tabs else line)
            bodies.append("\n".join(body))
        out.append((start, joined, tuple(bodies)))
    return out


def _split_flags(words: list[str]) -> tuple[dict[str, str], list[str]]:
    flags: dict[str, str] = {}
    rest = list(words)
    while rest and rest[0].startswith("--"):
        name, _, value = rest.pop(0)[2:].partition("=")
        flags[name.lower()] = value
    return flags, rest


def _words(text: str) -> list[str]:
    """Shell-form words (quotes honoured, as Docker does); JSON form when it is a JSON array."""
    text = text.strip()
    if text.startswith("["):
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
    if '"' not in text and "'" not in text and "\\" not in text:
        return text.split()
    try:
        return shlex.split(text, posix=True)
    except ValueError:
        return text.split()


def _copy(keyword: str, text: str, line: int) -> Copy:
    flags, rest = _split_flags(text.split())
    body = text.strip()
    for _ in flags:  # drop the flags from the text, keep the JSON/shell form of the rest
        body = body.split(None, 1)[1] if len(body.split(None, 1)) > 1 else ""
    words = _words(body)
    if len(words) < 2:
        return Copy(keyword, line, tuple(words), "", flags)
    return Copy(keyword, line, tuple(words[:-1]), words[-1], flags)


def _from(text: str, line: int) -> From:
    _flags, words = _split_flags(text.split())
    image = words[0] if words else ""
    stage = words[2] if len(words) >= 3 and words[1].lower() == "as" else None
    arg = default = None
    m = _VAR_RE.fullmatch(image)
    if m:
        arg = m.group(1) or m.group(4)
        if m.group(2) in (":-", "-"):
            default = m.group(3)
    return From(image, line, arg, default, stage)


def parse(text: str) -> Dockerfile:
    """Parse Dockerfile text (never raises: unknown or malformed lines are kept as-is)."""
    instructions = []
    global_args: dict[str, str | None] = {}
    arg_lines: dict[str, int] = {}
    froms: list[From] = []
    copies: list[Copy] = []
    for line, joined, bodies in _logical_lines(text):
        keyword, _, rest = joined.partition(" ")
        keyword = keyword.upper()
        instructions.append(Instruction(keyword, rest.strip(), line, bodies))
        if keyword == "ARG" and not froms:
            for word in _words(rest):
                name, eq, default = word.partition("=")
                global_args[name] = default if eq else None
                arg_lines[name] = line
        elif keyword == "FROM":
            froms.append(_from(rest, line))
        elif keyword in ("COPY", "ADD"):
            copies.append(_copy(keyword, rest, line))
    return Dockerfile(tuple(instructions), global_args, arg_lines, tuple(froms), tuple(copies))
