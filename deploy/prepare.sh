#!/usr/bin/env bash
# Prepare a compose folder (default: the repository) before the first `docker compose up`:
# - ./data/{inbox,outbox,processed,downloads,gateway}, mode 0700, owned by the user the
#   containers run as: you (id -u), or 10001 (the image's own user) when you are root,
#   since containers never run as root;
# - .env from .env.example when there is none (mode 0600: it may hold the token and keys),
#   with GPT4BATCH_UID/GID set to that user and a random GPT4BATCH_GRAFANA_PASSWORD
#   (Grafana's admin password: no anonymous access) unless one is set;
# - ./secrets/bus-secret (mode 0600, folder 0700): the secret the services sign and verify
#   results with (docs/security.md), made once and kept.
# Run it again any time: it only rewrites the GPT4BATCH_UID/GID lines and fixes modes.
set -euo pipefail
umask 077
repo=$(cd "$(dirname "$0")/.." && pwd)
dir=$(cd "${1:-$repo}" && pwd)
uid=$(id -u) gid=$(id -g)
if [ "$uid" = 0 ]; then uid=10001 gid=10001; fi
mkdir -p "$dir"/data/inbox "$dir"/data/outbox "$dir"/data/processed "$dir"/data/downloads \
  "$dir"/data/gateway "$dir"/secrets
chmod 0700 "$dir"/data "$dir"/data/inbox "$dir"/data/outbox "$dir"/data/processed \
  "$dir"/data/downloads "$dir"/data/gateway "$dir"/secrets
[ -f "$dir/.env" ] || cp "$repo/.env.example" "$dir/.env"
chmod 0600 "$dir/.env"
sed -i '/^GPT4BATCH_UID=/d;/^GPT4BATCH_GID=/d' "$dir/.env"
printf 'GPT4BATCH_UID=%s\nGPT4BATCH_GID=%s\n' "$uid" "$gid" >>"$dir/.env"
random() { od -An -N32 -tx1 /dev/urandom | tr -d ' \n'; }
if ! grep -q '^GPT4BATCH_GRAFANA_PASSWORD=.' "$dir/.env"; then
  sed -i '/^GPT4BATCH_GRAFANA_PASSWORD=/d' "$dir/.env"
  printf 'GPT4BATCH_GRAFANA_PASSWORD=%s\n' "$(random)" >>"$dir/.env"
fi
secret="$dir/secrets/bus-secret"
[ -s "$secret" ] || random >"$secret"
chmod 0600 "$secret"
if [ "$(id -u)" = 0 ]; then chown -R "$uid:$gid" "$dir/data" "$dir/secrets"; fi
echo "prepared $dir: containers run as $uid:$gid; settings in $dir/.env (0600);" \
  "bus secret in $secret; Grafana user admin, password GPT4BATCH_GRAFANA_PASSWORD in .env"
