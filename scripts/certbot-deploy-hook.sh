#!/usr/bin/env bash
# certbot deploy hook: install a renewed certificate into HAProxy on this host.
#
# certbot runs deploy hooks once per renewed lineage, with RENEWED_LINEAGE
# (its live folder) and RENEWED_DOMAINS (its names) set. certs.combine reads
# both: it skips a lineage that does not cover SSO_DOMAIN, and otherwise checks
# the certificate, writes HAPROXY_CERT_DIR/SSO_DOMAIN.pem, validates HAProxy
# and reloads it. Only this host is changed (--hosts local).
#
# The env name is the first argument, else $OPS_ENV. Register the hook with
#   certbot certonly ... --deploy-hook "/opt/authops/scripts/certbot-deploy-hook.sh prod"
# (certbot keeps it in the lineage's renewal configuration), or put a
# two-line wrapper that passes the env name into
# /etc/letsencrypt/renewal-hooks/deploy/.
set -euo pipefail

env_name=${1:-${OPS_ENV:-}}
if [[ -z $env_name ]]; then
  echo "certbot-deploy-hook: no env name: pass it as the first argument or set OPS_ENV" >&2
  exit 2
fi
if [[ -z ${RENEWED_LINEAGE:-} ]]; then
  echo "certbot-deploy-hook: RENEWED_LINEAGE is not set: certbot sets it for deploy hooks" >&2
  exit 2
fi

cd "$(dirname "$(readlink -f "$0")")/.."
exec .venv/bin/invoke certs.combine --env "$env_name" --hosts local
