"""The Dockerfile reader: the instructions the context check and the base arg depend on."""

from __future__ import annotations

from build_assets.core.dockerfile import expand, parse


def sources(text: str, build_args: dict[str, str] | None = None) -> list[tuple[int, str]]:
    return [(line, src) for line, _, _, src in parse(text).context_sources(build_args)]


def test_base_arg_from_the_first_from_in_every_spelling() -> None:
    for text, arg, default in [
        ("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n", "BASE_IMAGE", None),
        ("ARG X\nFROM $X AS build\nFROM scratch\n", "X", None),
        (
            "ARG BASE_IMAGE_URI\nFROM ${BASE_IMAGE_URI:-public.ecr.aws/lambda/python:3.12}\n",
            "BASE_IMAGE_URI",
            "public.ecr.aws/lambda/python:3.12",
        ),
        ("FROM --platform=linux/arm64 ${B}\n", "B", None),
        ("FROM public.ecr.aws/lambda/python:3.12\n", None, None),
    ]:
        df = parse(text)
        assert df.base_arg == arg, text
        assert df.froms[0].default == default, text
    staged = parse("ARG X\nFROM $X AS build\nFROM scratch\nCOPY --from=build /a /a\n")
    assert staged.froms[0].stage == "build" and staged.base_line == 2
    assert parse("ARG A=1 B\nFROM scratch\nARG C\n").global_args == {"A": "1", "B": None}


def test_copy_and_add_sources_with_lines_flags_json_and_continuations() -> None:
    text = (
        "# syntax=docker/dockerfile:1\n"  # 1
        "FROM scratch AS base\n"  # 2
        "COPY --chmod=755 --chown=1:1 --link a.py b/ /dst/\n"  # 3
        'COPY ["with space.txt", "/dst/"]\n'  # 4
        "COPY pkg_a \\\n"  # 5
        "  # a comment inside the continuation\n"  # 6
        "     pkg_b \\\n"  # 7
        "     /opt/\n"  # 8
        "ADD https://example.com/x.tgz /x\n"  # 9
        "COPY --from=base /etc /etc\n"  # 10
        "COPY --from=alpine:3 /bin/sh /sh\n"  # 11
        "ADD *.txt src/[ab]?.py /g/\n"  # 12
    )
    assert sources(text) == [
        (3, "a.py"),
        (3, "b/"),
        (4, "with space.txt"),
        (5, "pkg_a"),
        (5, "pkg_b"),
        (12, "*.txt"),
        (12, "src/[ab]?.py"),
    ]
    flags = parse(text).copies[0].flags
    assert flags == {"chmod": "755", "chown": "1:1", "link": ""}


def test_heredocs_are_skipped_and_their_bodies_are_not_instructions() -> None:
    text = (
        "FROM scratch\n"
        "COPY <<EOF /etc/conf\n"
        "COPY not/an/instruction /x\n"
        "EOF\n"
        "RUN <<-SCRIPT\n"
        "\techo hi\n"
        "\tSCRIPT\n"
        "COPY real.py /r\n"
    )
    df = parse(text)
    assert sources(text) == [(8, "real.py")]
    assert df.instructions[1].heredocs == ("COPY not/an/instruction /x",)
    assert [i.keyword for i in df.instructions] == ["FROM", "COPY", "RUN", "COPY"]


def test_variables_expand_with_arg_defaults_and_build_args() -> None:
    text = "ARG PKG=pkg_a\nARG SUB\nFROM scratch\nCOPY ${PKG}/x $SUB/y ${NONE:-z} /d/\n"
    assert sources(text) == [(4, "pkg_a/x"), (4, "z")]  # $SUB unknown: skipped
    assert sources(text, {"SUB": "s", "PKG": "other"}) == [(4, "other/x"), (4, "s/y"), (4, "z")]
    assert expand("${A:+yes}", {"A": "1"}) == "yes"
    assert expand("$A", {}) is None


def test_escape_directive_backtick() -> None:
    text = "# escape=`\nFROM scratch\nCOPY a `\n  b /d/\n"
    assert sources(text) == [(3, "a"), (3, "b")]
