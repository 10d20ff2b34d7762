"""CPU time of upstream's heartbeat construction on a given `show stat`.

Usage: python heartbeat_bench.py SHOW_STAT_CSV ROUNDS
Prints the median thread CPU seconds of one build_stats_message() plus
wrap_envelope(), with haproxy's stats socket replaced by the file's text
(upstream's own parsing, delta and persistence code runs unchanged).
"""
import sys
import tempfile
import time

from oslo_config import cfg

from octavia.amphorae.backends.agent.api_server import util
from octavia.amphorae.backends.health_daemon import health_daemon
from octavia.amphorae.backends.health_daemon import status_message
from octavia.amphorae.backends.utils import haproxy_query
from octavia.common import config  # noqa: F401  (registers the options)


def main():
    with open(sys.argv[1], encoding='utf-8') as f:
        show_stat = f.read().rstrip()
    rounds = int(sys.argv[2])
    cfg.CONF([], project='octavia')
    cfg.CONF.set_override('amphora_id', 'amphora', group='amphora_agent')
    cfg.CONF.set_override('base_path', tempfile.mkdtemp(),
                          group='haproxy_amphora')
    header, *rows = show_stat.split('\n')
    # `show stat -1 6 -1` (pools and members): what haproxy answers to it.
    without_frontends = '\n'.join(
        [header] + [r for r in rows if r.split(',')[1] != 'FRONTEND'])

    def query(self, command):
        if command.startswith('show stat -1 6 '):
            return without_frontends
        return show_stat

    haproxy_query.HAProxyQuery._query = query
    util.get_loadbalancers = lambda: ['lb']
    util.is_lb_running = lambda lb_id: True
    util.get_lvs_listeners = lambda: []

    times = []
    for _ in range(rounds):
        started = time.thread_time()
        message = health_daemon.build_stats_message()
        status_message.wrap_envelope(message, 'insecure')
        times.append(time.thread_time() - started)
    times.sort()
    print(times[len(times) // 2])


if __name__ == '__main__':
    main()
