#!/usr/bin/env bash
# Build one image from the current folder (the build context) and push it.
#
# Run identically by the local builder and by AWS CodeBuild's buildspec.
#
# Inputs (environment):
#   IMAGE_REPO      registry/name to push to (required)
#   IMAGE_TAG       tag to push (required)
#   DOCKERFILE      Dockerfile path relative to the context (default: Dockerfile), used
#                   when the context carries none at .build-assets/Dockerfile
#   BASE_IMAGE      base image pinned by digest, passed as --build-arg $BASE_ARG=... (optional)
#   BASE_WAIT_REF   early start: the base's repo:tag, maybe not pushed yet; when BASE_IMAGE is
#                   empty, the first step pulls it until it exists (every BASE_WAIT_INTERVAL s,
#                   default 2, at most BASE_WAIT_TIMEOUT s, default 3600) and pins BASE_IMAGE
#                   to the digest it resolved, exactly what a base-first build is given
#   BASE_ARG        the build arg the Dockerfile's first FROM names (default: BASE_IMAGE)
#   PLATFORM        target platform, e.g. linux/arm64, passed as --platform (optional)
#   BUILD_ARGS      newline-separated KEY=VALUE build args (optional)
#   IMAGE_LABELS    newline-separated KEY=VALUE OCI labels: the image's provenance (optional);
#                   the pinned base is added as org.build-assets.base-image
#   CACHE_FROM      previous image refs of this repository, whitespace-separated (optional)
#   ECR_REGISTRY    if set, log in to it with `aws ecr get-login-password` first (optional)
#   DOCKER_NETWORK  network for RUN steps, e.g. host or none (optional; engine default otherwise)
#   DOCKER_BUILDKIT 1/0 to force BuildKit on/off (default: on when a docker CLI can use it)
#   DOCKER_CLI      the docker client to run (default: chosen as below)
#   BUILD_CACHE     off: no cache import/export at all (optional)
#
# Layer cache through the registry (an optimisation only: it never fails a build):
#   buildx present  registry cache, mode=max, at <repo>:buildcache-<tag>, read back from the
#                   previous tag's; needs a docker-container builder (made here); else inline
#   docker < 23     (e.g. Debian's docker.io) BuildKit of the engine, inline cache in the image
#   neither         the legacy builder, with the previous image pulled for --cache-from
#   Every BuildKit mode also reads the inline cache of the previous image and of BASE_IMAGE, so
#   a base's layers and the last build's dependency layers are reused by an empty builder. A
#   build that fails with the cache and not in a RUN step is retried once without it.
#
# Lambda runs a single-platform image manifest only, never an image index: buildx >= 0.10 pushes
#   an index (the image + an attestation manifest) once provenance/SBOM attestations are on, so
#   the buildx path passes --provenance=false --sbom=false whenever `docker buildx build --help`
#   lists them (older buildx makes no attestations). The docker-driver/legacy paths never make one.
#
# Output: progress on stdout/stderr, "BUILD_ASSETS_PHASE=<PHASE> at=<unix time>" markers, and
#   as the last line BUILD_ASSETS_DIGEST=sha256:...
set -euo pipefail

phase() { echo "BUILD_ASSETS_PHASE=$1 at=$(date +%s.%N)"; }
die() { echo "build_image: $*" >&2; exit 2; }

[ -n "${IMAGE_REPO:-}" ] || die "IMAGE_REPO is required"
[ -n "${IMAGE_TAG:-}" ] || die "IMAGE_TAG is required"
DOCKERFILE="${DOCKERFILE:-Dockerfile}"
# The Dockerfile to build travels at .build-assets/Dockerfile (core.context.DOCKERFILE_SLOT).
# It is moved out of the context, so COPY sees the repository's Dockerfile only where Docker
# would ship it (an ignore file may exclude it), beside an empty Dockerfile.dockerignore:
# BuildKit reads that in place of the context's .dockerignore, so the context, filtered once
# already, is shipped as it is. (The legacy builder knows no such file and filters again;
# the result is the same, as a filtered context holds nothing its rules exclude.)
dockerfile_dir=""
if [ -f .build-assets/Dockerfile ]; then
  dockerfile_dir="$(mktemp -d)"
  mv .build-assets/Dockerfile "$dockerfile_dir/Dockerfile"
  rmdir .build-assets 2>/dev/null || die "the context holds files under .build-assets/"
  : >"$dockerfile_dir/Dockerfile.dockerignore"
  DOCKERFILE="$dockerfile_dir/Dockerfile"
fi
[ -f "$DOCKERFILE" ] || die "Dockerfile not found in the context: $DOCKERFILE"
IMAGE_REF="$IMAGE_REPO:$IMAGE_TAG"

# -- which docker client, which builder ---------------------------------------------------
client_major() { "$1" --version 2>/dev/null | sed -n 's/^Docker version \([0-9]*\)\..*/\1/p'; }
has_buildx() { "$1" buildx version >/dev/null 2>&1; }

mode=legacy
DOCKER="${DOCKER_CLI:-}"
if [ -z "$DOCKER" ]; then
  candidates=()
  while IFS= read -r c; do candidates+=("$c"); done < <(type -ap docker; echo /usr/bin/docker)
  for c in "${candidates[@]}"; do
    [ -x "$c" ] || continue
    [ -n "$DOCKER" ] || DOCKER="$c"
    [ "${DOCKER_BUILDKIT:-}" = 0 ] && break
    if has_buildx "$c"; then DOCKER="$c"; mode=buildx; break; fi
    major="$(client_major "$c")"
    if [ -n "$major" ] && [ "$major" -lt 23 ]; then DOCKER="$c"; mode=classic; break; fi
  done
  [ -n "$DOCKER" ] || die "docker not found: apt-get install docker.io"
elif [ "${DOCKER_BUILDKIT:-}" != 0 ]; then
  command -v "$DOCKER" >/dev/null || die "DOCKER_CLI not found: $DOCKER"
  if has_buildx "$DOCKER"; then
    mode=buildx
  elif major="$(client_major "$DOCKER")" && [ -n "$major" ] && [ "$major" -lt 23 ]; then
    mode=classic
  fi
fi
if [ "${DOCKER_BUILDKIT:-}" = 1 ] && [ "$mode" = legacy ]; then
  die "DOCKER_BUILDKIT=1 but no docker client here can use BuildKit (install docker-buildx)"
fi
if [ "$mode" = legacy ]; then export DOCKER_BUILDKIT=0; else export DOCKER_BUILDKIT=1; fi
cache=on
[ "${BUILD_CACHE:-on}" = off ] && cache=off

if [ -n "${ECR_REGISTRY:-}" ]; then
  phase LOGIN
  aws ecr get-login-password | "$DOCKER" login --username AWS --password-stdin "$ECR_REGISTRY"
fi

# Early start: the base may still be building; wait for its tag, then pin its digest.
if [ -n "${BASE_WAIT_REF:-}" ] && [ -z "${BASE_IMAGE:-}" ]; then
  phase WAIT_BASE
  wait_max="${BASE_WAIT_TIMEOUT:-3600}"
  wait_every="${BASE_WAIT_INTERVAL:-2}"
  wait_from="$(date +%s)"
  pull_platform=()
  [ -n "${PLATFORM:-}" ] && pull_platform=(--platform "$PLATFORM")
  tries=1
  until "$DOCKER" pull --quiet "${pull_platform[@]}" "$BASE_WAIT_REF" >/dev/null 2>&1; do
    waited=$(($(date +%s) - wait_from))
    [ "$waited" -lt "$wait_max" ] || die "base $BASE_WAIT_REF not in the registry after ${waited}s"
    echo "build_image: waiting for base $BASE_WAIT_REF (${waited}s)"
    sleep "$wait_every"
    tries=$((tries + 1))
  done
  base_repo="${BASE_WAIT_REF%:*}"
  BASE_IMAGE="$("$DOCKER" image inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' \
    "$BASE_WAIT_REF" | grep -m 1 "^$base_repo@sha256:" || true)"
  [ -n "$BASE_IMAGE" ] || die "pulled $BASE_WAIT_REF but could not read its digest"
  echo "build_image: base $BASE_WAIT_REF is $BASE_IMAGE (after $(($(date +%s) - wait_from))s, $tries pulls)"
fi

# Cache sources: the previous image(s) of this repository, then the base.
sources=()
for ref in ${CACHE_FROM:-}; do sources+=("$ref"); done
[ -n "${BASE_IMAGE:-}" ] && sources+=("$BASE_IMAGE")

# "<repo>:buildcache-<tag>" for an image ref "<repo>:<tag>" (nothing for digests/no tag).
cache_ref() {
  local ref="$1" name="${1%:*}"
  case "$ref" in *@*) return ;; esac
  [ "$name" != "$ref" ] && [ "${ref##*:}" != "${ref##*/}" ] || return
  echo "$name:buildcache-${ref##*:}"
}

# buildx: a docker-container builder can export a registry cache; the docker driver cannot.
builder=()
if [ "$mode" = buildx ] && [ "$cache" = on ]; then
  name="${BUILDX_BUILDER:-build-assets}"
  if "$DOCKER" buildx inspect "$name" >/dev/null 2>&1 \
    || "$DOCKER" buildx create --name "$name" --driver docker-container \
      --driver-opt network=host --bootstrap >/dev/null 2>&1; then
    builder=(--builder "$name")
  else
    echo "build_image: no docker-container buildx builder; inline cache only"
  fi
fi

echo "build_image: $IMAGE_REF from $DOCKERFILE ($DOCKER, $mode, cache $cache)"

args=(--file "$DOCKERFILE" --tag "$IMAGE_REF")
if [ -n "${BASE_IMAGE:-}" ]; then
  args+=(--build-arg "${BASE_ARG:-BASE_IMAGE}=$BASE_IMAGE")
fi
if [ -n "${PLATFORM:-}" ]; then
  args+=(--platform "$PLATFORM")
fi
while IFS= read -r line || [ -n "$line" ]; do
  [ -n "$line" ] || continue
  case "$line" in
    *=*) args+=(--build-arg "$line") ;;
    *) die "BUILD_ARGS line is not KEY=VALUE: $line" ;;
  esac
done <<<"${BUILD_ARGS:-}"
while IFS= read -r line || [ -n "$line" ]; do
  [ -n "$line" ] || continue
  case "$line" in
    *=*) args+=(--label "$line") ;;
    *) die "IMAGE_LABELS line is not KEY=VALUE: $line" ;;
  esac
done <<<"${IMAGE_LABELS:-}"
[ -n "${BASE_IMAGE:-}" ] && args+=(--label "org.build-assets.base-image=$BASE_IMAGE")
if [ -n "${DOCKER_NETWORK:-}" ]; then
  args+=(--network "$DOCKER_NETWORK")
elif [ "$mode" != legacy ] && ! "$DOCKER" network inspect bridge >/dev/null 2>&1; then
  # BuildKit's default network is the bridge; an engine without one (dockerd --bridge=none)
  # gives the legacy builder's RUN steps no network, so give BuildKit's none as well.
  args+=(--network none)
fi

cache_args=()
if [ "$cache" = on ]; then
  case "$mode" in
    buildx)
      for ref in "${sources[@]}"; do
        cache_args+=(--cache-from "type=registry,ref=$ref")
        if [ ${#builder[@]} -gt 0 ] && reg="$(cache_ref "$ref")" && [ -n "$reg" ]; then
          cache_args+=(--cache-from "type=registry,ref=$reg")
        fi
      done
      if [ ${#builder[@]} -gt 0 ]; then
        cache_args+=(--cache-to "type=registry,ref=$(cache_ref "$IMAGE_REF"),mode=max,image-manifest=true,oci-mediatypes=true,ignore-error=true")
      else
        cache_args+=(--cache-to type=inline)
      fi
      ;;
    classic)
      cache_args+=(--build-arg BUILDKIT_INLINE_CACHE=1)
      for ref in "${sources[@]}"; do cache_args+=(--cache-from "$ref"); done
      ;;
    legacy)
      if [ -n "${CACHE_FROM:-}" ]; then
        phase PULL_CACHE
        for ref in ${CACHE_FROM}; do
          if "$DOCKER" pull "$ref"; then
            cache_args+=(--cache-from "$ref")
          else
            echo "build_image: cache image $ref not available; building without it"
          fi
        done
      fi
      ;;
  esac
fi

build_log="$(mktemp)"
push_log="$(mktemp)"
trap 'rm -f "$build_log" "$push_log"; [ -z "$dockerfile_dir" ] || rm -rf "$dockerfile_dir"' EXIT

# buildx >= 0.10 adds attestations (an image index, which Lambda refuses) unless told not to.
# (The help is read whole: `| grep -q` would end the pipe early and, under pipefail, fail it.)
no_attestations=()
if [ "$mode" = buildx ]; then
  buildx_help="$("$DOCKER" buildx build --help 2>/dev/null || true)"
  case "$buildx_help" in *--provenance*) no_attestations=(--provenance=false --sbom=false) ;; esac
fi

# One build: `docker build` or `docker buildx build`, output kept for the retry decision.
run_build() {
  local cmd=(build)
  case "$mode" in
    buildx) cmd=(buildx build "${builder[@]}" "${no_attestations[@]}" --load --progress=plain) ;;
    classic) cmd=(build --progress=plain) ;;
  esac
  set +e
  "$DOCKER" "${cmd[@]}" "$@" "$PWD" 2>&1 | tee "$build_log"
  local status="${PIPESTATUS[0]}"
  set -e
  return "$status"
}

phase BUILD
if ! run_build "${args[@]}" "${cache_args[@]}"; then
  failed_in_run='did not complete successfully|returned a non-zero code|executor failed running'
  if [ ${#cache_args[@]} -eq 0 ] || grep -Eq "$failed_in_run" "$build_log"; then
    die "docker build failed"
  fi
  echo "build_image: build with the layer cache failed; retrying without it"
  builder=()
  [ "$mode" = buildx ] && builder=(--builder default)
  run_build "${args[@]}" || die "docker build failed"
fi

phase PUSH
"$DOCKER" push "$IMAGE_REF" 2>&1 | tee "$push_log"

# "<tag>: digest: sha256:... size: N" from the push; else the RepoDigest of this repository.
digest="$(sed -n 's/.*digest: \(sha256:[0-9a-f]\{64\}\).*/\1/p' "$push_log" | tail -n 1)"
if [ -z "$digest" ]; then
  digest="$("$DOCKER" image inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' "$IMAGE_REF" \
    | sed -n "s|^$IMAGE_REPO@\(sha256:[0-9a-f]\{64\}\)$|\1|p" | head -n 1)"
fi
[ -n "$digest" ] || die "pushed $IMAGE_REF but could not read its digest"
phase DONE
echo "BUILD_ASSETS_DIGEST=$digest"
