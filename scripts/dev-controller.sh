#!/usr/bin/env bash
# Runs the controller for real on http://127.0.0.1:9876: the Octavia v2 API,
# the worker, health and housekeeping roles in one process, on an embedded
# SQLite database in .dev/controller/ (created on first start), noauth.
# Amphorae come from the noop drivers until the local compute driver lands.
# Prints `openstack loadbalancer ...` commands that work against it (the
# CLI comes from scripts/clients-venv.sh, built on first use).
#   scripts/dev-controller.sh [--port N] [--postgres URL]
set -euo pipefail
cd "$(dirname "$0")/.."
port=9876
db=""
while [ $# -gt 0 ]; do
    case "$1" in
        --port) port=$2; shift 2 ;;
        --postgres) db=$2; shift 2 ;;
        *) echo "usage: $0 [--port N] [--postgres URL]" >&2; exit 2 ;;
    esac
done
dir="$PWD/.dev/controller"
mkdir -p "$dir"
[ -n "$db" ] || db="sqlite:///$dir/octavia.db"
cat > "$dir/octavia.conf" <<CONF
[api_settings]
bind_host = 127.0.0.1
bind_port = $port
auth_strategy = noauth
[database]
connection = $db
[noop_drivers]
step_delay = 0.2
CONF
echo "building the controller and the OpenStack clients (first run: a few minutes)..." >&2
cargo build --release --quiet -p amphora-controller
python=$(scripts/clients-venv.sh)
openstack="$(dirname "$python")/openstack"
cat >&2 <<TXT

controller: http://127.0.0.1:$port   (configuration: $dir/octavia.conf)
try, in another shell:
  export OS_AUTH_TYPE=none OS_ENDPOINT=http://127.0.0.1:$port
  $openstack loadbalancer create --name lb1 --vip-subnet-id $(python3 -c 'import uuid; print(uuid.uuid4())') --wait
  $openstack loadbalancer listener create --name web --protocol HTTP --protocol-port 80 --wait lb1
  $openstack loadbalancer pool create --name pool1 --lb-algorithm ROUND_ROBIN --listener web --protocol HTTP --wait
  $openstack loadbalancer amphora list --loadbalancer lb1
  $openstack loadbalancer amphora failover --wait \$($openstack loadbalancer amphora list --loadbalancer lb1 -f value -c id)
  $openstack loadbalancer delete --cascade --wait lb1

TXT
exec target/release/amphora-controller --config-file "$dir/octavia.conf" run
