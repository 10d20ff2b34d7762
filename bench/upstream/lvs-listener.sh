#!/usr/bin/env bash
# Starts upstream's amphora agent (run_upstream_agent.py, systemd through
# shim/systemctl) and has it run one UDP listener through its own API, as
# upstream's controller would: upload the keepalived configuration, then
# start the listener. For the UDP-through-the-VIP measurement of
# crates/amphora-agent/tests/lvs.rs in the VM; the amphora-haproxy
# namespace, its ports and the masquerading are the caller's.
#
# Usage: lvs-listener.sh WORK LISTENER_ID KEEPALIVED_CONFIG
#   WORK: an empty directory (certificates, configuration, state, logs;
#         the agent's pid in WORK/agent.pid).
# Needs UPSTREAM_PYTHON (upstream's virtualenv Python), openssl and curl.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
PY="${UPSTREAM_PYTHON:?UPSTREAM_PYTHON must name upstream virtualenv Python}"
WORK="$1"
LISTENER="$2"
CONFIG="$3"
PORT=9443
AMP="$(cat /proc/sys/kernel/random/uuid)"
cd "$WORK"

ossl() { openssl "$@" 2>/dev/null || { echo "openssl $1 failed" >&2; exit 1; }; }
ossl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=server-ca" -keyout server_ca.key -out server_ca.pem
ossl req -newkey rsa:2048 -nodes -subj "/CN=$AMP" -keyout server.key -out server.csr
printf 'subjectAltName=DNS:%s,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' "$AMP" > server.ext
ossl x509 -req -in server.csr -CA server_ca.pem -CAkey server_ca.key -CAcreateserial -days 2 -extfile server.ext -out server.crt
cat server.crt server.key > server.pem
ossl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=client-ca" -keyout client_ca.key -out client_ca.pem
ossl req -newkey rsa:2048 -nodes -subj "/CN=controller" -keyout client.key -out client.csr
printf 'extendedKeyUsage=clientAuth\n' > client.ext
ossl x509 -req -in client.csr -CA client_ca.pem -CAkey client_ca.key -CAcreateserial -days 2 -extfile client.ext -out client.crt

mkdir -p "$WORK/base/certs"
cat > amphora-agent.conf <<EOF
[DEFAULT]
debug = False

[haproxy_amphora]
base_cert_dir = $WORK/base/certs
base_path = $WORK/base
bind_host = 127.0.0.1
bind_port = $PORT
haproxy_cmd = /usr/sbin/haproxy

[health_manager]
controller_ip_port_list = 127.0.0.1:5555
heartbeat_interval = 10
heartbeat_key = insecure

[amphora_agent]
agent_server_ca = $WORK/client_ca.pem
agent_server_cert = $WORK/server.pem
agent_request_read_timeout = 600
amphora_id = $AMP
amphora_udp_driver = keepalived_lvs

[controller_worker]
loadbalancer_topology = SINGLE
EOF

"$PY" "$HERE/run_upstream_agent.py" --config-file "$WORK/amphora-agent.conf" >"$WORK/agent.out" 2>"$WORK/agent.err" &
echo $! > "$WORK/agent.pid"

U="https://$AMP:$PORT"
CURL=(curl -sS --max-time 600 --cacert "$WORK/server_ca.pem" --cert "$WORK/client.crt"
      --key "$WORK/client.key" --resolve "$AMP:$PORT:127.0.0.1")
started=$(date +%s)
# Python starts slowly under an emulated CPU (minutes).
until [ "$("${CURL[@]}" -o /dev/null -w '%{http_code}' "$U/1.0/info" 2>/dev/null)" = 200 ]; do
    if ! kill -0 "$(cat "$WORK/agent.pid")" 2>/dev/null || [ $(( $(date +%s) - started )) -gt 900 ]; then
        echo "upstream's agent did not come up:" >&2
        tail -30 "$WORK/agent.err" >&2
        exit 1
    fi
    sleep 1
done
echo "upstream's agent answered after $(( $(date +%s) - started )) s"

call() {  # EXPECTED_STATUS METHOD PATH [curl args]
    local expected=$1 method=$2 path=$3
    shift 3
    local status
    status=$("${CURL[@]}" -o "$WORK/answer" -w '%{http_code}' -X "$method" "$U/1.0/$path" "$@")
    if [ "$status" != "$expected" ]; then
        echo "$method $path: $status, expected $expected: $(cat "$WORK/answer")" >&2
        tail -30 "$WORK/agent.err" >&2
        exit 1
    fi
    echo "$method $path: $status $(cat "$WORK/answer")"
}
call 200 PUT "listeners/$AMP/$LISTENER/udp_listener" --data-binary "@$CONFIG"
call 202 PUT "loadbalancer/$LISTENER/start"
