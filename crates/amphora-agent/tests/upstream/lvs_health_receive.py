"""Feed heartbeat datagrams of an amphora with a UDP (LVS) listener through
upstream Octavia's health manager code.

Usage: python lvs_health_receive.py HEARTBEAT_KEY DB_JSON DATAGRAM_FILE...

Each datagram is decoded with
octavia.amphorae.backends.health_daemon.status_message.unwrap_envelope and
its statistics read by octavia.amphorae.drivers.health.heartbeat_udp
.update_stats (the statistics driver replaced by a recorder). The last one
then goes through heartbeat_udp.UpdateHealthDb.update_health, with the
repositories replaced by recorders: DB_JSON is what
AmphoraRepository.get_lb_for_health_update would return for the amphora.
Prints JSON: {"messages": [...], "stats": [[<ListenerStatistics>...] per
datagram], "deltas": [bool per datagram], "updates": [[repository, id,
operating_status]...], "health_recorded": <amphora id or null>}.
"""
import json
import sys
import time

from octavia.amphorae.backends.health_daemon import status_message
from octavia.amphorae.drivers.health import heartbeat_udp
from octavia.common import config  # noqa: F401 (registers the options)
from octavia.statistics import stats_base


class Session:
    """What update_health does with a database session."""

    def begin(self):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *args):
        return False

    def commit(self):
        pass

    def rollback(self):
        pass


class Repository:
    def __init__(self, name, updates, db_lb=None):
        self.name = name
        self.updates = updates
        self.db_lb = db_lb
        self.replaced = None

    def update(self, session, entity_id, **fields):
        self.updates.append([self.name, entity_id,
                             fields.get('operating_status')])

    def get_lb_for_health_update(self, session, amphora_id):
        return self.db_lb

    def replace(self, session, amphora_id, **fields):
        self.replaced = amphora_id


def main():
    key = sys.argv[1]
    with open(sys.argv[2]) as f:
        db_lb = json.load(f)
    messages, stats, deltas = [], [], []

    def record(listener_stats, deltas_=False, **kwargs):
        deltas.append(kwargs.get('deltas', deltas_))
        stats.append([
            {'listener_id': s.listener_id, 'amphora_id': s.amphora_id,
             'bytes_in': s.bytes_in, 'bytes_out': s.bytes_out,
             'active_connections': s.active_connections,
             'total_connections': s.total_connections,
             'request_errors': s.request_errors}
            for s in listener_stats])

    stats_base.update_stats_via_driver = record
    heartbeat_udp.stats_base.update_stats_via_driver = record
    for path in sys.argv[3:]:
        with open(path, 'rb') as f:
            message = status_message.unwrap_envelope(f.read(), key)
        messages.append(dict(message))
        message['recv_time'] = time.time()
        heartbeat_udp.update_stats(message)

    updates = []
    heartbeat_udp.db_api.get_session = Session
    health = heartbeat_udp.UpdateHealthDb()
    health.amphora_repo = Repository('amphora', updates, db_lb)
    health.amphora_health_repo = Repository('amphora_health', updates)
    health.listener_repo = Repository('listener', updates)
    health.loadbalancer_repo = Repository('loadbalancer', updates)
    health.member_repo = Repository('member', updates)
    health.pool_repo = Repository('pool', updates)
    last = dict(messages[-1])
    last['recv_time'] = time.time()
    # update_health logs and swallows errors; _update_health raises them.
    health._update_health(last, ('127.0.0.1', 0))
    print(json.dumps({'messages': messages, 'stats': stats, 'deltas': deltas,
                      'updates': updates,
                      'health_recorded': health.amphora_health_repo.replaced}))


if __name__ == '__main__':
    main()
