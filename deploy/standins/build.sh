#!/usr/bin/env bash
# Local stand-ins, under the public tags compose.yaml names, for an engine that cannot pull
# from Docker Hub (this project's CI). Each is built from what the machine has:
#   python:3.11-slim        Debian bookworm (debootstrap) with its python3 3.11 in /usr/local/bin
#   nsqio/nsq:v1.3.0        our Go-built NSQ binaries (.venv/bin, `make setup`)
#   prom/prometheus:v2.42.0 Debian's prometheus 2.42.0 (/usr/bin/prometheus, `make prometheus`)
# A tag that already exists without our label is a real image and is left alone; one of our
# stand-ins is rebuilt only when these files change. Needs root (debootstrap) and dockerd.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
nsq_bin=${NSQ_BIN:-$root/.venv/bin}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
label=org.gpt4batch.standin
stamp=$(cat "$here"/build.sh "$here"/*.Dockerfile | sha256sum | cut -c1-12)
base=gpt4batch-standin/bookworm:$stamp
export DOCKER_BUILDKIT=0   # the classic builder: dockerd 20.10 without buildx

# 0: build it (absent, or an older stand-in); 1: keep it (current stand-in, or a real image).
wanted() {
  local have
  have=$(docker image inspect -f "{{ index .Config.Labels \"$label\" }}" "$1" 2>/dev/null) ||
    return 0
  [ "$have" != "$stamp" ] && [ "$have" != "<no value>" ] && [ -n "$have" ]
}

build_base() {
  docker image inspect "$base" >/dev/null 2>&1 && return
  local fs
  fs=$(mktemp -d /tmp/gpt4batch-rootfs.XXXXXX)
  trap 'rm -rf "$fs"' RETURN
  echo "stand-ins: debootstrap bookworm (python3, python3-venv, wget) from $mirror"
  debootstrap --variant=minbase --include=python3,python3-venv,wget,ca-certificates \
    bookworm "$fs" "$mirror" >"$fs.log" 2>&1 || { tail -20 "$fs.log"; exit 1; }
  rm -f "$fs.log"
  rm -rf "$fs"/var/cache/apt/archives/*.deb "$fs"/var/lib/apt/lists/* "$fs"/tmp/*
  tar -C "$fs" -c . | docker import --change "LABEL $label=$stamp" \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    - "$base" >/dev/null
}

build() {  # tag dockerfile context-dir
  echo "stand-ins: $1"
  docker build -q --network none --build-arg "BASE=$base" --label "$label=$stamp" \
    -f "$here/$2" -t "$1" "$3" >/dev/null
}

need=()
for tag in python:3.11-slim nsqio/nsq:v1.3.0 prom/prometheus:v2.42.0; do
  if wanted "$tag"; then need+=("$tag"); fi
done
[ ${#need[@]} -eq 0 ] && { echo "stand-ins: up to date"; exit 0; }
build_base
ctx=$(mktemp -d /tmp/gpt4batch-standin.XXXXXX)
trap 'rm -rf "$ctx"' EXIT
for tag in "${need[@]}"; do
  rm -rf "${ctx:?}"/*
  case $tag in
    python:*) build "$tag" python.Dockerfile "$ctx" ;;
    nsqio/*)
      for app in nsqd nsqlookupd nsqadmin nsq_tail nsq_to_file; do cp "$nsq_bin/$app" "$ctx/"; done
      build "$tag" nsq.Dockerfile "$ctx" ;;
    prom/*)
      cp /usr/bin/prometheus /usr/bin/promtool "$ctx/"
      cp "$root/deploy/prometheus/prometheus.yml" "$ctx/"
      build "$tag" prometheus.Dockerfile "$ctx" ;;
  esac
done
