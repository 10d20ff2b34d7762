"""Feed one heartbeat datagram through upstream Octavia's receiving code.

Usage: python heartbeat_receive.py DATAGRAM_FILE HEARTBEAT_KEY

Decodes with octavia.amphorae.backends.health_daemon.status_message
.unwrap_envelope (what the health manager's UDP receiver calls), then runs
octavia.amphorae.drivers.health.heartbeat_udp.update_stats on the message
with the statistics driver replaced by a recorder, and prints JSON:
{"message": <decoded>, "deltas": <bool>, "stats": [<ListenerStatistics>]}.
"""
import json
import sys
import time

from octavia.amphorae.backends.health_daemon import status_message
from octavia.amphorae.drivers.health import heartbeat_udp
from octavia.statistics import stats_base


def main():
    with open(sys.argv[1], 'rb') as f:
        datagram = f.read()
    message = status_message.unwrap_envelope(datagram, sys.argv[2])
    decoded = dict(message)
    message['recv_time'] = time.time()

    recorded = {}

    def record(listener_stats, deltas=False):
        recorded['deltas'] = deltas
        recorded['stats'] = [
            {'listener_id': s.listener_id, 'amphora_id': s.amphora_id,
             'bytes_in': s.bytes_in, 'bytes_out': s.bytes_out,
             'active_connections': s.active_connections,
             'total_connections': s.total_connections,
             'request_errors': s.request_errors}
            for s in listener_stats]

    stats_base.update_stats_via_driver = record
    heartbeat_udp.stats_base.update_stats_via_driver = record
    heartbeat_udp.update_stats(message)
    print(json.dumps({'message': decoded, 'deltas': recorded['deltas'],
                      'stats': recorded['stats']}))


if __name__ == '__main__':
    main()
