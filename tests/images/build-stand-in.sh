#!/usr/bin/env bash
# Build a local stand-in for AWS's Lambda Python image, for tests on machines that reach no
# container registry. Debian bookworm ships CPython 3.11, so the stand-in answers for python3.11.
# Like the real image it has its interpreter under /var/lang/bin, WORKDIR /var/task and a
# /lambda-entrypoint.sh that execs its arguments.
#
#   tests/images/build-stand-in.sh [x86_64|arm64]   -> prints the image tag it built
#
# Like AWS's SAM build image it has binutils (strip), and like every Lambda Python image the AWS
# SDK for Python and what it needs under /var/runtime (on the runtime's sys.path after /var/task
# and /opt/python, never in /var/task): the distributions poetry_lambda_zip.target.RUNTIME_PROVIDED
# names, at the versions pinned below (AWS updates its own with the runtime). Their wheels are
# downloaded on this machine with its pip (its index and CA settings), then installed in a build
# stage: nothing of this machine's TLS setup goes into the image. The tag is stable and the image
# carries a version label: a second call with the current image present does nothing.
#   STAND_IN_TAG=name:tag overrides the tag (to try a change without replacing the shared image).
set -euo pipefail

arch=${1:-x86_64}
case "$arch" in
  x86_64) deb_arch=amd64; platform=linux/amd64; machine=x86_64 ;;
  arm64) deb_arch=arm64; platform=linux/arm64; machine=aarch64 ;;
  *) echo "unknown arch: $arch (x86_64 or arm64)" >&2; exit 2 ;;
esac
tag=${STAND_IN_TAG:-"poetry-lambda-zip/stand-in:python3.11-$arch"}
version=3
sdk=(boto3==1.34.145 botocore==1.34.145 s3transfer==0.10.2 jmespath==1.0.1
     python-dateutil==2.9.0.post0 six==1.16.0 urllib3==1.26.19)

if [ "$(docker image inspect --format '{{ index .Config.Labels "stand-in-version" }}' "$tag" 2>/dev/null)" = "$version" ]; then
  echo "$tag"
  exit 0
fi

command -v debootstrap >/dev/null || { echo "debootstrap is missing: apt-get install -y debootstrap" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "pip download the AWS SDK for Python ..." >&2
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 \
  --implementation cp --platform "manylinux2014_$machine" \
  -d "$work/sdk" "${sdk[@]}" >&2
[ "$(ls "$work/sdk"/*.whl | wc -l)" -eq "${#sdk[@]}" ] || { echo "expected ${#sdk[@]} SDK wheels" >&2; exit 1; }

echo "debootstrap bookworm ($deb_arch) ..." >&2
# Its progress, a line per stage (a first run takes minutes; the full log is kept on failure).
set +e
debootstrap --variant=minbase --arch="$deb_arch" --include=python3,python3-venv,ca-certificates,binutils \
  bookworm "$work/rootfs" 2>&1 | tee "$work/debootstrap.log" \
  | grep --line-buffered -E '^I: (Retrieving Release|Validating Packages|Resolving|Found|Checking|Extracting|Installing|Unpacking the base|Configuring the base|Base system)' >&2
status=${PIPESTATUS[0]}
set -e
[ "$status" -eq 0 ] || { tail -30 "$work/debootstrap.log" >&2; exit 1; }
rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*
tar -C "$work/rootfs" -cf "$work/rootfs.tar" .
rm -rf "$work/rootfs"

cat >"$work/lambda-entrypoint.sh" <<'SH'
#!/bin/sh
exec "$@"
SH
cat >"$work/Dockerfile" <<'DOCKERFILE'
FROM scratch AS base
ADD rootfs.tar /
RUN python3 -m venv /var/lang && /var/lang/bin/python3 -m pip --version

FROM base AS sdk
COPY sdk /tmp/sdk
RUN /var/lang/bin/python3 -m pip install -q --no-index --no-deps --no-compile \
      --target /var/runtime /tmp/sdk/*.whl \
 && /var/lang/bin/python3 -m compileall -q /var/runtime

FROM base
LABEL stand-in-version=VERSION
COPY --from=sdk /var/runtime /var/runtime
COPY lambda-entrypoint.sh /lambda-entrypoint.sh
RUN chmod 0755 /lambda-entrypoint.sh && mkdir -p /var/task
ENV PATH=/var/lang/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
ENV LAMBDA_TASK_ROOT=/var/task LAMBDA_RUNTIME_DIR=/var/runtime
WORKDIR /var/task
ENTRYPOINT ["/lambda-entrypoint.sh"]
DOCKERFILE
sed -i "s/VERSION/$version/" "$work/Dockerfile"
echo "docker build $tag ..." >&2
docker build -q --platform "$platform" -t "$tag" "$work" >&2
echo "$tag"
