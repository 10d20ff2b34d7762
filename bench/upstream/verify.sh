#!/usr/bin/env bash
# Smoke test of run_upstream_agent.py: throwaway certs and config, start the
# upstream agent, drive the 1.0 API with curl over mutual TLS, SIGTERM it,
# check that no process is left, clean up haproxy and files.
# Usage: bench/upstream/verify.sh [PORT]     (root; prints a report)
set -uo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
PY="${UPSTREAM_PYTHON:-$(cd "$(dirname "$0")/../.." && scripts/upstream-venv.sh)}"
WORK="$(mktemp -d /tmp/upstream-verify.XXXXXX)"
PORT="${1:-$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}"
FE_PORT="$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
AMP="$(cat /proc/sys/kernel/random/uuid)"
LB="$(cat /proc/sys/kernel/random/uuid)"
LISTENER="$(cat /proc/sys/kernel/random/uuid)"
POOL="$(cat /proc/sys/kernel/random/uuid)"
MEMBER="$(cat /proc/sys/kernel/random/uuid)"
NS_EXISTED=0; [ -e /run/netns/amphora-haproxy ] && NS_EXISTED=1
FAILS=0
cd "$WORK"

# --- certificates -------------------------------------------------------
ossl() { openssl "$@" 2>/dev/null || { echo "openssl $1 failed"; exit 1; }; }
ossl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=server-ca" -keyout server_ca.key -out server_ca.pem
ossl req -newkey rsa:2048 -nodes -subj "/CN=$AMP" -keyout server.key -out server.csr
printf 'subjectAltName=DNS:%s,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' "$AMP" > server.ext
ossl x509 -req -in server.csr -CA server_ca.pem -CAkey server_ca.key -CAcreateserial -days 2 -extfile server.ext -out server.crt
cat server.crt server.key > server.pem          # agent_server_cert: cert + key
ossl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=client-ca" -keyout client_ca.key -out client_ca.pem
ossl req -newkey rsa:2048 -nodes -subj "/CN=controller" -keyout client.key -out client.csr
printf 'extendedKeyUsage=clientAuth\n' > client.ext
ossl x509 -req -in client.csr -CA client_ca.pem -CAkey client_ca.key -CAcreateserial -days 2 -extfile client.ext -out client.crt

# --- agent config (as upstream's amphora_agent_conf.template renders it) -
cat > amphora-agent.conf <<EOF
[DEFAULT]
debug = False
use_syslog = True
syslog_log_facility = LOG_LOCAL1

[haproxy_amphora]
base_cert_dir = /var/lib/octavia/certs
base_path = /var/lib/octavia
bind_host = 127.0.0.1
bind_port = $PORT
haproxy_cmd = /usr/sbin/haproxy
user_log_facility = 0
administrative_log_facility = 1

[health_manager]
controller_ip_port_list = 127.0.0.1:5555
heartbeat_interval = 10
heartbeat_key = insecure

[amphora_agent]
agent_server_ca = $WORK/client_ca.pem
agent_server_cert = $WORK/server.pem
agent_request_read_timeout = 180
amphora_id = $AMP
amphora_udp_driver = keepalived_lvs
agent_tls_protocol = TLSv1.2

[controller_worker]
loadbalancer_topology = SINGLE
EOF

# A config like the one the controller renders for one HTTP listener, but
# with maxconn 5000 instead of 50000: haproxy needs ~2*maxconn FDs, the unit's
# LimitNOFILE=2600000 cannot be honoured here (no CAP_SYS_RESOURCE, hard
# limit 20000), and with 50000 haproxy refuses to start.
cat > haproxy.cfg <<EOF
# Configuration for loadbalancer $LB
global
    daemon
    user nobody
    log /run/rsyslog/octavia/log local0
    log /run/rsyslog/octavia/log local1 notice
    stats socket /var/lib/octavia/$LB.sock mode 0666 level user
    maxconn 5000

defaults
    log global
    retries 3
    option redispatch
    option splice-request
    option splice-response
    option http-keep-alive

frontend $LISTENER
    maxconn 5000
    bind 127.0.0.1:$FE_PORT
    mode http
    default_backend $POOL:$LISTENER
    timeout client 50000

backend $POOL:$LISTENER
    mode http
    balance roundrobin
    timeout check 10s
    fullconn 5000
    option allbackups
    timeout connect 5000
    timeout server 50000
    server $MEMBER 127.0.0.1:1 weight 1
EOF

# --- start ----------------------------------------------------------------
U="https://$AMP:$PORT"
CURL=(curl -sS --max-time 60 --cacert "$WORK/server_ca.pem" --cert "$WORK/client.crt"
      --key "$WORK/client.key" --resolve "$AMP:$PORT:127.0.0.1")
T0=$(date +%s%N)
$PY "$HERE/run_upstream_agent.py" --config-file "$WORK/amphora-agent.conf" \
    >"$WORK/agent.out" 2>"$WORK/agent.err" &
APID=$!
code=000
for _ in $(seq 1 600); do
    code=$("${CURL[@]}" -o /dev/null -w '%{http_code}' "$U/1.0/info" 2>/dev/null)
    [ "$code" = 200 ] && break
    kill -0 $APID 2>/dev/null || break
    sleep 0.02
done
T1=$(date +%s%N)
echo "launch -> first GET /1.0/info 200: $(( (T1 - T0) / 1000000 )) ms (code $code)"
[ "$code" = 200 ] || { echo "agent did not come up; log in $WORK/agent.err"; tail -30 "$WORK/agent.err"; exit 1; }

echo "agent processes:"
MASTER=$APID
CHILDREN=$(pgrep -P $MASTER | tr '\n' ' ')
ps -o pid,ppid,rss,args -p "$(echo $MASTER $CHILDREN | tr ' ' ',')" | sed 's/^/  /'
ALL_PIDS="$MASTER $CHILDREN"

# --- API ------------------------------------------------------------------
req() {  # EXPECT METHOD PATH [curl args]
    local expect=$1 m=$2 p=$3; shift 3
    local out code body
    out=$("${CURL[@]}" -X "$m" -w '\n%{http_code} %{time_total}' "$@" "$U$p")
    code=$(tail -n1 <<<"$out" | cut -d' ' -f1)
    body=$(sed '$d' <<<"$out")
    printf '%-7s %-22s -> %s (%ss, expect %s) %s\n' "$m" "${p//$AMP/\{amp\}}" "$code" \
        "$(tail -n1 <<<"$out" | cut -d' ' -f2)" "$expect" "$(head -c 400 <<<"${body//$LB/\{lb\}}" | tr '\n' ' ')"
    [ "$code" = "$expect" ] || FAILS=$((FAILS + 1))
}
hapids() { pgrep -d' ' -f "haproxy .*-f /var/lib/octavia/$LB/haproxy.cfg" ; }
p="${LB}"
req 200 GET /
req 200 GET /1.0/info
req 200 GET /1.0/details
req 200 GET /1.0/interface/127.0.0.1
req 404 GET /1.0/interface/192.0.2.1
req 404 POST /1.0/plug/network -H 'Content-Type: application/json' \
    -d '{"mac_address":"fa:16:3e:00:00:01","fixed_ips":[],"mtu":1500}'
if [ ! -e /etc/octavia/amphora-agent.conf ] && [ ! -e /etc/octavia/octavia.conf ]; then
    # upstream writes the body to find_config_files()[0]; there is none
    req 500 PUT /1.0/config --data-binary @amphora-agent.conf
fi
req 202 PUT "/1.0/loadbalancer/$AMP/$p/haproxy" --data-binary @haproxy.cfg
req 200 PUT "/1.0/loadbalancer/$p/certificates/server.pem" --data-binary @client.crt
req 200 GET "/1.0/loadbalancer/$p/certificates/server.pem"
req 200 DELETE "/1.0/loadbalancer/$p/certificates/server.pem"
req 200 GET "/1.0/loadbalancer/$p/haproxy" -o /dev/null
req 202 PUT "/1.0/loadbalancer/$p/start"
echo "  haproxy pids after start: $(hapids)"
ip netns exec amphora-haproxy ss -ltn "sport = :$FE_PORT" | sed 1d | sed 's/^/  listening in amphora-haproxy: /'
echo "  frontend answers in amphora-haproxy (member is down, so 503): $(ip netns exec amphora-haproxy \
    curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$FE_PORT/")"
req 202 PUT "/1.0/loadbalancer/$p/reload"
sleep 0.3
echo "  haproxy pids after reload: $(hapids)"
req 200 GET /1.0/listeners
req 200 GET /1.0/details
req 202 PUT "/1.0/loadbalancer/$p/stop"
echo "  haproxy pids after stop: $(hapids)"
req 200 DELETE "/1.0/listeners/$p"
req 200 GET /1.0/listeners
req 404 PUT "/1.0/loadbalancer/$p/start"
echo "systemctl shim calls:"; tail -n 12 /run/octavia-systemctl-shim/calls.log | sed 's/^/  /'

# --- stop -----------------------------------------------------------------
T2=$(date +%s%N)
kill -TERM $APID
wait $APID; rc=$?
T3=$(date +%s%N)
sleep 0.5
LEFT=""
for pid in $ALL_PIDS; do [ -e /proc/$pid ] && LEFT="$LEFT $pid"; done
echo "SIGTERM -> launcher exited rc=$rc in $(( (T3 - T2) / 1000000 )) ms; processes left: ${LEFT:-none}"
[ -z "$LEFT" ] || FAILS=$((FAILS + 1))
grep -E 'ERROR|Traceback|AssertionError' "$WORK/agent.err" | sed 's/^/  log: /' | head -8

# --- cleanup --------------------------------------------------------------
for pid in $(hapids); do kill -TERM "$pid"; done
rm -rf "/var/lib/octavia/$LB" "/var/lib/octavia/$LB.sock" \
       "/usr/lib/systemd/system/haproxy-$LB.service"
[ $NS_EXISTED = 1 ] || ip netns del amphora-haproxy 2>/dev/null
echo "work dir (certs, config, agent.err): $WORK"
echo "verify: $FAILS failed check(s)"
[ $FAILS = 0 ]
