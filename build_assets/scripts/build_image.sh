#!/usr/bin/env bash
# Build one image from the current folder (the build context) and push it.
#
# Run identically by the local builder and by AWS CodeBuild's buildspec.
#
# Inputs (environment):
#   IMAGE_REPO      registry/name to push to (required)
#   IMAGE_TAG       tag to push (required)
#   DOCKERFILE      Dockerfile path relative to the context (default: Dockerfile)
#   BASE_IMAGE      base image pinned by digest, passed as --build-arg BASE_IMAGE=... (optional)
#   BUILD_ARGS      newline-separated KEY=VALUE build args (optional)
#   CACHE_FROM      a previous image ref, pulled best-effort and used as --cache-from (optional)
#   ECR_REGISTRY    if set, log in to it with `aws ecr get-login-password` first (optional)
#   DOCKER_NETWORK  network for RUN steps, e.g. host or none (optional; engine default otherwise)
#   DOCKER_BUILDKIT 1/0 to force BuildKit on/off (default: on only if buildx is installed)
#
# Output: progress on stdout/stderr, "BUILD_ASSETS_PHASE=<PHASE>" markers, and as the last line
#   BUILD_ASSETS_DIGEST=sha256:...
set -euo pipefail

phase() { echo "BUILD_ASSETS_PHASE=$1"; }
die() { echo "build_image: $*" >&2; exit 2; }

[ -n "${IMAGE_REPO:-}" ] || die "IMAGE_REPO is required"
[ -n "${IMAGE_TAG:-}" ] || die "IMAGE_TAG is required"
DOCKERFILE="${DOCKERFILE:-Dockerfile}"
[ -f "$DOCKERFILE" ] || die "Dockerfile not found in the context: $DOCKERFILE"
command -v docker >/dev/null || die "docker not found: apt-get install docker.io"
IMAGE_REF="$IMAGE_REPO:$IMAGE_TAG"

if [ -n "${ECR_REGISTRY:-}" ]; then
  phase LOGIN
  aws ecr get-login-password | docker login --username AWS --password-stdin "$ECR_REGISTRY"
fi

# The legacy builder when buildx (BuildKit's CLI plugin) is missing, as with Debian's docker.io.
if [ -z "${DOCKER_BUILDKIT:-}" ]; then
  if docker buildx version >/dev/null 2>&1; then
    export DOCKER_BUILDKIT=1
  else
    export DOCKER_BUILDKIT=0
  fi
fi
echo "build_image: $IMAGE_REF from $DOCKERFILE (DOCKER_BUILDKIT=$DOCKER_BUILDKIT)"

args=(build --file "$DOCKERFILE" --tag "$IMAGE_REF")
if [ -n "${BASE_IMAGE:-}" ]; then
  args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
fi
while IFS= read -r line || [ -n "$line" ]; do
  [ -n "$line" ] || continue
  case "$line" in
    *=*) args+=(--build-arg "$line") ;;
    *) die "BUILD_ARGS line is not KEY=VALUE: $line" ;;
  esac
done <<<"${BUILD_ARGS:-}"
if [ -n "${DOCKER_NETWORK:-}" ]; then
  args+=(--network "$DOCKER_NETWORK")
fi

if [ -n "${CACHE_FROM:-}" ]; then
  phase PULL_CACHE
  if docker pull "$CACHE_FROM"; then
    args+=(--cache-from "$CACHE_FROM")
    if [ "$DOCKER_BUILDKIT" = 1 ]; then
      args+=(--build-arg BUILDKIT_INLINE_CACHE=1)
    fi
  else
    echo "build_image: cache image $CACHE_FROM not available; building without it"
  fi
fi

phase BUILD
docker "${args[@]}" .

phase PUSH
push_log="$(mktemp)"
trap 'rm -f "$push_log"' EXIT
docker push "$IMAGE_REF" 2>&1 | tee "$push_log"

# "<tag>: digest: sha256:... size: N" from the push; else the RepoDigest of this repository.
digest="$(sed -n 's/.*digest: \(sha256:[0-9a-f]\{64\}\).*/\1/p' "$push_log" | tail -n 1)"
if [ -z "$digest" ]; then
  digest="$(docker image inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' "$IMAGE_REF" \
    | sed -n "s|^$IMAGE_REPO@\(sha256:[0-9a-f]\{64\}\)$|\1|p" | head -n 1)"
fi
[ -n "$digest" ] || die "pushed $IMAGE_REF but could not read its digest"
phase DONE
echo "BUILD_ASSETS_DIGEST=$digest"
