"""The CodeBuild buildspec: runs the shared `scripts/build_image.sh` inside the extracted context.

The script travels inside the buildspec, not the context zip, so the zip stays exactly the files
that were hashed. It is embedded base64-encoded and decoded to a temporary file at build time:
one line of plain shell, immune to YAML quoting and to heredoc handling in CodeBuild's command
runner. The local builder runs the same script, so local end-to-end tests cover what runs here.

The script's contract (env vars IMAGE_REPO, IMAGE_TAG, DOCKERFILE, BASE_IMAGE, BUILD_ARGS,
CACHE_FROM, ECR_REGISTRY; prints `BUILD_ASSETS_DIGEST=sha256:...`) is fed by the CodeBuild
builder (`engine.builders.codebuild`). CodeBuild's images ship buildx, so there the script
exports a registry layer cache (mode=max, `<repo>:buildcache-<tag>`) and reads back the
previous tag's and the base's: a fresh CodeBuild host reuses the dependency layers of the last
build. A missing or broken cache falls back to a plain build. The printed digest is also
exported as a CodeBuild variable so it shows in `batch_get_builds`
(`exportedEnvironmentVariables`).
"""

from __future__ import annotations

import base64
import hashlib
from importlib import resources

import yaml

SCRIPT_RESOURCE = "scripts/build_image.sh"
# $TMPDIR when the build host sets one (the local CodeBuild gives each build its own), so two
# builds on one host never share build.log; /tmp on AWS CodeBuild (one build per container)
WORK_DIR = "${TMPDIR:-/tmp}/build-assets"
DIGEST_VARIABLE = "BUILD_ASSETS_DIGEST"


def load_script() -> str:
    """The text of build_assets/scripts/build_image.sh (packaged with the code)."""
    path = resources.files("build_assets").joinpath(SCRIPT_RESOURCE)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RuntimeError(f"build_assets/{SCRIPT_RESOURCE} is missing from the package") from None


def script_sha256(script: str) -> str:
    """sha256 hex of the script text (shown in the build log to tie a build to a script)."""
    return hashlib.sha256(script.encode("utf-8")).hexdigest()


def build_commands(script: str, work_dir: str = WORK_DIR) -> list[str]:
    """The shell commands of the build phase (bash; cwd = the extracted context)."""
    encoded = base64.b64encode(script.encode("utf-8")).decode("ascii")
    return [
        f'mkdir -p "{work_dir}" && echo "{encoded}" | base64 -d > "{work_dir}/build_image.sh"',
        f"echo 'build_image.sh sha256 {script_sha256(script)}'",
        f'bash "{work_dir}/build_image.sh" 2>&1 | tee "{work_dir}/build.log";'
        ' test "${PIPESTATUS[0]}" -eq 0',
        f'export {DIGEST_VARIABLE}="$(sed -n \'s/^{DIGEST_VARIABLE}=//p\' "{work_dir}/build.log"'
        ' | tail -n 1)"',
    ]


def render_buildspec(script: str | None = None, work_dir: str = WORK_DIR) -> str:
    """The buildspec YAML (version 0.2) running `script` (default: the packaged build script)."""
    script = load_script() if script is None else script
    spec = {
        "version": 0.2,
        "env": {"shell": "bash", "exported-variables": [DIGEST_VARIABLE]},
        "phases": {"build": {"on-failure": "ABORT", "commands": build_commands(script, work_dir)}},
    }
    return yaml.safe_dump(spec, sort_keys=False, width=1 << 20)
