"""Run upstream Octavia's heartbeat handling on given rows and messages.

Usage: python health_update.py < cases.json

Each case is {"lb": <what AmphoraRepository.get_lb_for_health_update
returns>, "health": <a decoded heartbeat>}. For each, runs
octavia.amphorae.drivers.health.heartbeat_udp.UpdateHealthDb._update_health
with the database replaced by recorders, and prints one JSON list of
{"updates": [[entity, id, operating_status], ...], "health_refreshed": bool}.
"""
import json
import sys
import time
from unittest import mock

from octavia.amphorae.drivers.health import heartbeat_udp
from octavia.common import config  # noqa: F401 (registers the options)


def run(case):
    updates = []

    def recorder(entity):
        def update(session, id, **kwargs):
            updates.append([entity, id, kwargs['operating_status']])
        return update

    updater = heartbeat_udp.UpdateHealthDb()
    updater.amphora_repo = mock.Mock()
    updater.amphora_repo.get_lb_for_health_update.return_value = case['lb']
    updater.amphora_health_repo = mock.Mock()
    updater.listener_repo = mock.Mock(update=recorder('listener'))
    updater.pool_repo = mock.Mock(update=recorder('pool'))
    updater.member_repo = mock.Mock(update=recorder('member'))
    updater.loadbalancer_repo = mock.Mock(update=recorder('load_balancer'))
    health = dict(case['health'])
    health['recv_time'] = time.time()
    updater._update_health(health, '127.0.0.1')
    return {'updates': updates,
            'health_refreshed': updater.amphora_health_repo.replace.called}


def main():
    cases = json.load(sys.stdin)
    with mock.patch.object(heartbeat_udp.db_api, 'get_session'):
        print(json.dumps([run(case) for case in cases]))


if __name__ == '__main__':
    main()
