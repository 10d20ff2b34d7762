#!/usr/bin/env bash
# Runs the whole system for real on this host: the controller (Octavia v2
# API on http://127.0.0.1:9876, worker, health and housekeeping roles in one
# process, embedded SQLite in .dev/controller/, noauth, its own CA) with the
# local compute and network drivers, so each amphora is a network namespace
# running our agent and haproxy. The host reaches the VIP network
# (203.0.113.0/24), and a demo web server on the host's VIP-network address
# serves as the member. Prints the `openstack loadbalancer ...` and `curl`
# commands that show it working. Ctrl-C stops the controller; the amphorae
# keep running and are found again at the next start;
# `scripts/dev-controller.sh --teardown` removes them and the networks.
#   scripts/dev-controller.sh [--port N] [--postgres URL] [--noop] [--teardown]
# --noop: no amphorae at all (upstream's noop drivers; no root needed).
set -euo pipefail
cd "$(dirname "$0")/.."
port=9876
db=""
noop=""
teardown=""
while [ $# -gt 0 ]; do
    case "$1" in
        --port) port=$2; shift 2 ;;
        --postgres) db=$2; shift 2 ;;
        --noop) noop=1; shift ;;
        --teardown) teardown=1; shift ;;
        *) echo "usage: $0 [--port N] [--postgres URL] [--noop] [--teardown]" >&2; exit 2 ;;
    esac
done
if [ -z "$noop" ] && [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null && exec sudo -E env "PATH=$PATH" "$0" "$@"
    echo "amphorae are network namespaces: run as root (or use --noop)" >&2
    exit 1
fi
dir="$PWD/.dev/controller"
mkdir -p "$dir"
[ -n "$db" ] || db="sqlite:///$dir/octavia.db"
if [ -n "$noop" ]; then
    drivers="[noop_drivers]
step_delay = 0.2"
else
    scripts/install-deps.sh runtime
    # The management network's controller end is on this host: take the
    # first candidate /24 this host does not already use (some machines
    # live in 192.0.2.0/24 themselves).
    management=""
    for net in 192.0.2 198.18.0 198.18.1 198.18.2; do
        if ! ip -o -4 addr show | grep -v " octdev-hm0 " | grep -q " inet $net\."; then
            management="$net.0/24"
            break
        fi
    done
    [ -n "$management" ] || { echo "no free management /24 found" >&2; exit 1; }
    drivers="[controller_worker]
compute_driver = local
network_driver = local
amphora_driver = amphora_haproxy_rest_driver
[health_manager]
heartbeat_key = dev-insecure-key
heartbeat_interval = 2
heartbeat_timeout = 10
[certificates]
ca_certificate = $dir/certs/ca_01.pem
ca_private_key = $dir/certs/private/cakey.pem
[haproxy_amphora]
client_cert = $dir/certs/client.pem
connection_retry_interval = 1
active_connection_retry_interval = 1
# Containers often cannot raise the open-files limit haproxy's default
# 50,000 connections need.
default_connection_limit = 4000
[local_network]
name_prefix = octdev
management_cidr = $management
host_vip_access = True
[local_compute]
state_dir = /run/octavia-dev/amp"
fi
cat > "$dir/octavia.conf" <<CONF
[api_settings]
bind_host = 127.0.0.1
bind_port = $port
auth_strategy = noauth
[database]
connection = $db
$drivers
CONF
echo "building the controller, the agent and the OpenStack clients (first run: a few minutes)..." >&2
cargo build --release --quiet -p amphora-controller -p amphora-agent
if [ -n "$teardown" ]; then
    exec target/release/amphora-controller --config-file "$dir/octavia.conf" local teardown
fi
python=$(scripts/clients-venv.sh)
openstack="$(dirname "$python")/openstack"
if [ -n "$noop" ]; then
    subnet=$(python3 -c 'import uuid; print(uuid.uuid4())')
    member=""
else
    subnet=6d5a0c1e-0000-4000-8000-00000000b002
    # The demo member: a web server on the host's address in the VIP
    # network (203.0.113.1, which host_vip_access gives the host).
    mkdir -p "$dir/www"
    echo "hello from the member behind the VIP" > "$dir/www/index.html"
    python3 -m http.server 8000 --bind 0.0.0.0 --directory "$dir/www" >/dev/null 2>&1 &
    web=$!
    trap 'kill $web 2>/dev/null || true' EXIT
    member="  $openstack loadbalancer member create --address 203.0.113.1 --protocol-port 8000 --subnet-id $subnet --wait pool1
  curl http://\$($openstack loadbalancer show lb1 -f value -c vip_address)/"
fi
cat >&2 <<TXT

controller: http://127.0.0.1:$port   (configuration: $dir/octavia.conf, log on this terminal)
try, in another shell:
  export OS_AUTH_TYPE=none OS_ENDPOINT=http://127.0.0.1:$port
  $openstack loadbalancer create --name lb1 --vip-subnet-id $subnet --wait
  $openstack loadbalancer listener create --name web --protocol HTTP --protocol-port 80 --wait lb1
  $openstack loadbalancer pool create --name pool1 --lb-algorithm ROUND_ROBIN --listener web --protocol HTTP --wait
$member
  $openstack loadbalancer amphora list --loadbalancer lb1
  $openstack loadbalancer amphora failover --wait \$($openstack loadbalancer amphora list --loadbalancer lb1 -f value -c id)
  $openstack loadbalancer delete --cascade --wait lb1

TXT
target/release/amphora-controller --config-file "$dir/octavia.conf" run
