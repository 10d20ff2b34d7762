"""Upstream Octavia's own controller client against our agent.

Run by crates/amphora-agent/tests/upstream_client.rs, which starts the real
agent in a VM-like network namespace with ports ready to plug, then runs
this file inside that namespace with upstream's virtualenv python:

    python -m unittest -v tests/compat/test_upstream_client.py

Every call goes through octavia.amphorae.drivers.haproxy.rest_api_driver
.AmphoraAPIClient1_0 (or the driver HaproxyAmphoraLoadBalancerDriver),
configured as a controller configures it: client certificate, server CA,
the agent's port, hostname checked against the amphora id. Tests run in
name order; later ones build on earlier ones (plugging before keepalived).
"""
import hashlib
import json
import os
import types
import unittest

from oslo_config import cfg

from octavia.amphorae.drivers.haproxy import exceptions as driver_exceptions
from octavia.amphorae.drivers.haproxy import rest_api_driver
from octavia.common import config  # noqa: F401  (registers the options)
from octavia.common import constants
from octavia.common.jinja.lvs import jinja_cfg as lvs_jinja_cfg
from octavia.tests.unit.common.sample_configs import sample_configs_combined

ENV = os.environ


def setUpModule():
    conf = cfg.CONF
    conf([], project='octavia')
    conf.set_override('client_cert', ENV['CLIENT_CERT'], group='haproxy_amphora')
    conf.set_override('server_ca', ENV['SERVER_CA'], group='haproxy_amphora')
    conf.set_override('bind_port', int(ENV['AGENT_PORT']), group='haproxy_amphora')
    conf.set_override('connection_max_retries', 2, group='haproxy_amphora')
    conf.set_override('connection_retry_interval', 1, group='haproxy_amphora')
    conf.set_override('agent_tls_protocol', 'TLSv1.2', group='amphora_agent')


def amphora():
    return types.SimpleNamespace(id=ENV['AMPHORA_ID'], lb_network_ip='127.0.0.1', api_version='1.0',
                                 status='ALLOCATED')


def read(path):
    with open(path, encoding='utf-8') as f:
        return f.read()


LB = ENV.get('LB_ID', '')


class UpstreamClient(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.client = rest_api_driver.AmphoraAPIClient1_0()
        cls.base = rest_api_driver.AmphoraAPIClientBase()
        cls.amp = amphora()

    def test_01_api_version(self):
        # get_api_version resets the amphora's api_version: use a fresh one.
        # The driver reads only 'api_version'; 'versions' is ours (see
        # docs/compatibility.md).
        discovered = self.base.get_api_version(amphora())
        self.assertEqual(discovered['api_version'], '1.0')
        self.assertEqual(discovered['versions'], ['0.1', '1.0', 'appliance'])

    def test_02_info_and_driver_version_checks(self):
        info = self.client.get_info(self.amp)
        self.assertEqual(info['uuid'], ENV['AMPHORA_ID'])
        self.assertEqual(info['api_version'], '1.0')
        major, minor = info['haproxy_version'].split('.')[:2]
        self.assertTrue(major.isdigit() and minor.isdigit(), info['haproxy_version'])
        driver = rest_api_driver.HaproxyAmphoraLoadBalancerDriver.__new__(
            rest_api_driver.HaproxyAmphoraLoadBalancerDriver)
        driver.clients = {'base': self.base, '1.0': self.client}
        fresh = amphora()
        fresh.api_version = None
        self.assertEqual(driver._populate_amphora_api_version(fresh), [1, 0])
        self.assertEqual(driver._get_haproxy_versions(fresh), [major, minor])

    def test_03_details(self):
        details = self.client.get_details(self.amp)
        self.assertEqual(details['uuid'], ENV['AMPHORA_ID'])
        # What the controller's haproxy template reads.
        for key in ('memory', 'cpu_count', 'active_tuned_profiles'):
            self.assertIn(key, details)
        for key in ('free', 'buffers', 'cached'):
            self.assertIsInstance(details['memory'][key], int)

    def test_10_plug_vip(self):
        net_info = {'subnet_cidr': '10.0.0.0/24', 'gateway': '10.0.0.1', 'mac_address': ENV['VIP_MAC'],
                    'vrrp_ip': '10.0.0.11', 'mtu': 1450, 'host_routes': [], 'additional_vips': [],
                    'is_sriov': False}
        response = self.client.plug_vip(self.amp, '10.0.0.10', net_info)
        self.assertEqual(response.status_code, 202)
        self.assertEqual(response.json()['details'], 'VIP 10.0.0.10 plugged on interface eth1')
        # Plugging again is a Conflict, which the driver tolerates.
        with self.assertRaises(driver_exceptions.Conflict):
            self.client.plug_vip(self.amp, '10.0.0.10', net_info)

    def test_11_plug_network(self):
        port = {'mac_address': ENV['MEMBER_MAC'], 'mtu': 1500, 'is_sriov': False,
                'fixed_ips': [{'ip_address': '10.1.0.5', 'subnet_cidr': '10.1.0.0/24', 'gateway': None,
                               'host_routes': []}]}
        response = self.client.plug_network(self.amp, port)
        self.assertEqual(response.status_code, 202)
        self.assertEqual(response.json()['details'], 'Plugged interface eth2')

    def test_12_interface_lookup(self):
        self.assertEqual(self.client.get_interface(self.amp, '10.0.0.10'),
                         {'message': 'OK', 'interface': 'eth1'})
        with self.assertRaises(driver_exceptions.NotFound):
            self.client.get_interface(self.amp, '203.0.113.77')
        with self.assertRaises(driver_exceptions.InvalidRequest):
            self.client.get_interface(self.amp, 'not-an-ip')

    def test_13_interface_rules(self):
        rules = [{'protocol': 'TCP', 'cidr': '0.0.0.0/0', 'port': 8080},
                 {'protocol': 'VRRP', 'cidr': None, 'port': 112}]
        response = self.client.set_interface_rules(self.amp, '10.0.0.10', rules)
        self.assertEqual(response.status_code, 200)
        with self.assertRaises(driver_exceptions.InvalidRequest):
            self.client.set_interface_rules(self.amp, '10.0.0.10', [{'protocol': 'ICMP', 'cidr': None, 'port': 1}])

    def test_20_upload_and_read_back_config(self):
        config = read(ENV['HAPROXY_CONFIG'])
        response = self.client.upload_config(self.amp, LB, config)
        self.assertEqual(response.status_code, 202)
        self.assertEqual(response.headers['ETag'], hashlib.md5(config.encode()).hexdigest())
        with self.assertRaises(driver_exceptions.InvalidRequest):
            self.client.upload_config(self.amp, LB, config + '\nBAD_LINE\n')

    def test_21_start_reload_listeners(self):
        self.assertEqual(self.client.start_listener(self.amp, LB).status_code, 202)
        self.assertEqual(self.client.reload_listener(self.amp, LB).status_code, 202)
        listeners = self.client.get_all_listeners(self.amp)
        self.assertEqual(listeners, [{'status': 'ACTIVE', 'uuid': ENV['LISTENER_ID'], 'type': 'HTTP'}])
        status = self.client.get_listener_status(self.amp, ENV['LISTENER_ID'])
        self.assertEqual((status['uuid'], status['status'], status['type']), (ENV['LISTENER_ID'], 'ACTIVE', 'HTTP'))
        self.assertEqual([p['uuid'] for p in status['pools']], ['pool'])
        with self.assertRaises(driver_exceptions.NotFound):
            self.client.start_listener(self.amp, '00000000-0000-4000-8000-000000000000')

    def test_22_udp_listener_config(self):
        # Rendered by upstream's own template, as its controller does, with
        # the check script in the agent's base path (the controller assumes
        # the amphora's is its own base_path).
        cfg.CONF.set_override('base_path', ENV['AGENT_BASE_PATH'], group='haproxy_amphora')
        listener = sample_configs_combined.sample_listener_tuple(
            proto=constants.PROTOCOL_UDP,
            persistence_type=constants.SESSION_PERSISTENCE_SOURCE_IP,
            persistence_timeout=33,
            persistence_granularity='255.255.0.0',
            monitor_proto=constants.HEALTH_MONITOR_UDP_CONNECT,
            connection_limit=98)
        config = lvs_jinja_cfg.LvsJinjaTemplater().build_config(listener=listener)
        self.assertIn(ENV['AGENT_BASE_PATH'] + '/lvs/check/udp_check.sh', config)
        response = self.client.upload_udp_config(self.amp, listener.id, config)
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.headers['ETag'], hashlib.md5(config.encode()).hexdigest())
        stored = self.client.get(self.amp, f'listeners/{listener.id}/udp_listener')
        self.assertEqual(stored.text, config)
        listeners = self.client.get_all_listeners(self.amp)
        self.assertIn({'status': 'STOPPED', 'uuid': listener.id, 'type': 'UDP'}, listeners)
        # keepalived would run this as root: refused, the stored one stays.
        with self.assertRaises(driver_exceptions.InvalidRequest):
            self.client.upload_udp_config(
                self.amp, listener.id,
                config.replace(ENV['AGENT_BASE_PATH'] + '/lvs/check/udp_check.sh', '/bin/sh'))
        self.assertEqual(self.client.get(self.amp, f'listeners/{listener.id}/udp_listener').text, config)
        self.assertEqual(self.client.delete_listener(self.amp, listener.id).status_code, 200)
        self.assertNotIn(listener.id, [entry['uuid'] for entry in self.client.get_all_listeners(self.amp)])

    def test_30_certificates(self):
        pem = read(ENV['LB_PEM'])
        response = self.client.upload_cert_pem(self.amp, LB, 'www.example.com.pem', pem)
        self.assertEqual(response.status_code, 200)
        self.assertEqual(self.client.get_cert_md5sum(self.amp, LB, 'www.example.com.pem'),
                         hashlib.md5(pem.encode()).hexdigest())
        # The driver asks with ignore=(404,) for certificates it may lack.
        self.assertIsNone(self.client.get_cert_md5sum(self.amp, LB, 'missing.pem', ignore=(404,)))
        self.assertEqual(self.client.delete_cert_pem(self.amp, LB, 'www.example.com.pem').status_code, 200)
        # Deleting what is gone is fine for the driver too.
        self.client.delete_cert_pem(self.amp, LB, 'www.example.com.pem')
        with self.assertRaises(driver_exceptions.InvalidRequest):
            self.client.upload_cert_pem(self.amp, LB, 'www.example.com.pem', 'no certificate here')

    def test_40_vrrp(self):
        config = read(ENV['KEEPALIVED_CONFIG'])
        response = self.client.upload_vrrp_config(self.amp, config)
        self.assertEqual(response.status_code, 200)
        self.assertEqual(self.client.start_vrrp(self.amp).json(), {'message': 'OK', 'details': 'keepalived started'})
        self.assertEqual(self.client.reload_vrrp(self.amp).status_code, 202)
        self.assertEqual(self.client.stop_vrrp(self.amp).json(), {'message': 'OK', 'details': 'keepalived stopped'})
        with self.assertRaises(driver_exceptions.InternalServerError):
            self.client.upload_vrrp_config(self.amp, 'vrrp_instance broken {\n nonsense 1\n')

    def test_50_agent_config_update(self):
        text = read(ENV['AGENT_CONFIG']).replace('heartbeat_key = insecure', 'heartbeat_key = rotated')
        response = self.client.update_agent_config(self.amp, text)
        self.assertEqual(response.status_code, 202)
        with self.assertRaises(driver_exceptions.InternalServerError):
            self.client.update_agent_config(self.amp, '[amphora_agent\nbroken')

    def test_60_delete_listener(self):
        self.assertEqual(self.client.delete_listener(self.amp, LB).status_code, 200)
        self.assertEqual(self.client.get_all_listeners(self.amp), [])
        # Again: the driver ignores 404 here, and we answer 200 anyway.
        self.assertEqual(self.client.delete_listener(self.amp, LB).status_code, 200)

    def test_70_certificate_rotation(self):
        # Last: new connections present the new certificate, which the
        # client still accepts (same CA, same amphora id).
        response = self.client.update_cert_for_rotation(self.amp, read(ENV['NEW_SERVER_PEM']))
        self.assertEqual(response.status_code, 202)
        self.assertEqual(self.client.get_info(self.amp)['uuid'], ENV['AMPHORA_ID'])
        with self.assertRaises(driver_exceptions.InvalidRequest):
            self.client.update_cert_for_rotation(self.amp, 'not a certificate')

    def test_80_unknown_routes_are_json(self):
        # A JSON 404 is "not found", not "agent not ready" (no retries).
        response = self.client.get(self.amp, 'no/such/route', retry_404=True)
        self.assertEqual(response.status_code, 404)
        self.assertIn('application/json', response.headers['Content-Type'])
        self.assertEqual(json.loads(response.text)['message'], 'Not Found')


if __name__ == '__main__':
    unittest.main()
