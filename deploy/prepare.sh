#!/usr/bin/env bash
# Prepare a compose folder (default: the repository) before the first `docker compose up`:
# - ./data/{inbox,outbox,processed,downloads,gateway}, owned by the user the containers run as;
# - .env from .env.example when there is none, with GPT4BATCH_UID/GID set to that user:
#   you (id -u), or 10001 (the image's own user) when you are root, since containers never
#   run as root. Run it again any time; it only rewrites the two GPT4BATCH_UID/GID lines.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
dir=$(cd "${1:-$repo}" && pwd)
uid=$(id -u) gid=$(id -g)
if [ "$uid" = 0 ]; then uid=10001 gid=10001; fi
mkdir -p "$dir"/data/inbox "$dir"/data/outbox "$dir"/data/processed "$dir"/data/downloads \
  "$dir"/data/gateway
if [ "$(id -u)" = 0 ]; then chown -R "$uid:$gid" "$dir/data"; fi
[ -f "$dir/.env" ] || cp "$repo/.env.example" "$dir/.env"
sed -i '/^GPT4BATCH_UID=/d;/^GPT4BATCH_GID=/d' "$dir/.env"
printf 'GPT4BATCH_UID=%s\nGPT4BATCH_GID=%s\n' "$uid" "$gid" >>"$dir/.env"
echo "prepared $dir: containers run as $uid:$gid; settings in $dir/.env"
