"""Renders a load balancer with upstream Octavia's own templaters.

Reads one JSON request on stdin (written by tests/render_upstream.rs):

    {"config_file": PATH,             # the octavia.conf our controller read
     "haproxy_version": "2.6",
     "vrrp_interface": "eth1",
     "cases": [{"load_balancer": {...},   # our render::model::LoadBalancer
                "host_amphora_id": ID}]}  # the amphora haproxy's file is for

builds upstream's data models (octavia.common.data_models) from each case,
and writes a list with, for each case, {"haproxy": TEXT or null,
"keepalived": {AMP_ID: TEXT}, "agent": {AMP_ID: TEXT}, "lvs": {LISTENER_ID:
TEXT}} on stdout, calling
the templaters as upstream's amphora driver does
(octavia/amphorae/drivers/haproxy/rest_api_driver.py).
Runs with the pinned octavia package (UPSTREAM_PYTHON).
"""

import json
import sys
import warnings

warnings.simplefilter("ignore")

from octavia.common import config  # noqa: E402,F401  (registers the options)
from oslo_config import cfg  # noqa: E402
from oslo_log import log  # noqa: E402

from octavia.amphorae.backends.agent import agent_jinja_cfg  # noqa: E402
from octavia.amphorae.drivers.keepalived.jinja import (  # noqa: E402
    jinja_cfg as keepalived)
from octavia.common import constants  # noqa: E402
from octavia.common import data_models as dm  # noqa: E402
from octavia.common.jinja.haproxy.combined_listeners import (  # noqa: E402
    jinja_cfg as haproxy)
from octavia.common.jinja.lvs import jinja_cfg as lvs  # noqa: E402

CONF = cfg.CONF


def member(m):
    return dm.Member(
        id=m["id"], ip_address=m["address"], protocol_port=m["protocol_port"],
        weight=m["weight"], backup=m["backup"], enabled=m["enabled"],
        subnet_id=m["subnet_id"], monitor_address=m["monitor_address"],
        monitor_port=m["monitor_port"],
        provisioning_status=m["provisioning_status"],
        operating_status=m["operating_status"])


def health_monitor(h):
    if h is None:
        return None
    version = h["http_version"]
    return dm.HealthMonitor(
        id=h["id"], type=h["type"], delay=h["delay"], timeout=h["timeout"],
        rise_threshold=h["rise_threshold"],
        fall_threshold=h["fall_threshold"], http_method=h["http_method"],
        url_path=h["url_path"], expected_codes=h["expected_codes"],
        http_version=float(version) if version is not None else None,
        domain_name=h["domain_name"], enabled=h["enabled"],
        provisioning_status=h["provisioning_status"])


def pool(p):
    sp = p["session_persistence"]
    return dm.Pool(
        id=p["id"], protocol=p["protocol"], lb_algorithm=p["lb_algorithm"],
        enabled=p["enabled"], operating_status=p["operating_status"],
        provisioning_status=p["provisioning_status"],
        members=[member(m) for m in p["members"]],
        health_monitor=health_monitor(p["health_monitor"]),
        session_persistence=dm.SessionPersistence(
            type=sp["type"], cookie_name=sp["cookie_name"],
            persistence_timeout=sp.get("persistence_timeout"),
            persistence_granularity=sp.get("persistence_granularity"))
        if sp else None,
        tls_enabled=p["tls_enabled"], tls_ciphers=p["tls_ciphers"],
        tls_versions=p["tls_versions"], alpn_protocols=p["alpn_protocols"])


def listener(li, pools, lb):
    default_pool = pools.get(li["default_pool_id"])
    return dm.Listener(
        id=li["id"], protocol=li["protocol"],
        protocol_port=li["protocol_port"],
        connection_limit=li["connection_limit"], enabled=li["enabled"],
        provisioning_status=li["provisioning_status"],
        default_pool_id=li["default_pool_id"], default_pool=default_pool,
        pools=[default_pool] if default_pool else [],
        load_balancer=lb, insert_headers=li["insert_headers"],
        timeout_client_data=li["timeout_client_data"],
        timeout_member_connect=li["timeout_member_connect"],
        timeout_member_data=li["timeout_member_data"],
        timeout_tcp_inspect=li["timeout_tcp_inspect"],
        tls_certificate_id=li["default_tls_container_ref"],
        tls_ciphers=li["tls_ciphers"], tls_versions=li["tls_versions"],
        alpn_protocols=li["alpn_protocols"],
        hsts_max_age=li["hsts_max_age"],
        hsts_include_subdomains=li["hsts_include_subdomains"],
        hsts_preload=li["hsts_preload"], peer_port=1025)


def amphora(a, vrrp_interface):
    return dm.Amphora(
        id=a["id"], status=a["status"], role=a["role"],
        lb_network_ip=a["lb_network_ip"], vrrp_ip=a["vrrp_ip"],
        ha_ip=a["ha_ip"], vrrp_port_id=a["vrrp_port_id"],
        ha_port_id=a["ha_port_id"], vrrp_interface=vrrp_interface,
        vrrp_id=a["vrrp_id"], vrrp_priority=a["vrrp_priority"])


def render(request, case):
    src = case["load_balancer"]
    group = src["vrrp_group"]
    lb = dm.LoadBalancer(
        id=src["id"], project_id=src["project_id"], enabled=src["enabled"],
        provisioning_status=src["provisioning_status"],
        topology=src["topology"],
        vip=dm.Vip(ip_address=src["vip"]["address"],
                   subnet_id=src["vip"]["subnet_id"]),
        additional_vips=[],
        vrrp_group=dm.VRRPGroup(
            vrrp_group_name=group["name"], vrrp_auth_type=group["auth_type"],
            vrrp_auth_pass=group["auth_pass"],
            advert_int=group["advert_int"]) if group else None)
    pools = {p["id"]: pool(p) for p in src["pools"]}
    lb.pools = list(pools.values())
    lb.listeners = [listener(li, pools, lb) for li in src["listeners"]]
    lb.amphorae = [amphora(a, request["vrrp_interface"])
                   for a in src["amphorae"]]

    out = {"haproxy": None, "keepalived": {}, "agent": {}, "lvs": {}}
    host = next(a for a in lb.amphorae if a.id == case["host_amphora_id"])
    # The driver renders haproxy's file from the listeners haproxy carries;
    # UDP and SCTP ones go to LVS.
    tcp = [li for li in lb.listeners
           if li.protocol not in constants.LVS_PROTOCOLS]
    if tcp:
        templater = haproxy.JinjaTemplater(
            base_amp_path=CONF.haproxy_amphora.base_path,
            base_crt_dir=CONF.haproxy_amphora.base_cert_dir,
            haproxy_template=CONF.haproxy_amphora.haproxy_template,
            connection_logging=CONF.haproxy_amphora.connection_logging)
        out["haproxy"] = templater.build_config(
            host_amphora=host, listeners=tcp, tls_certs={},
            haproxy_versions=request["haproxy_version"].split(".")[:2],
            amp_details={})
    # Each UDP or SCTP listener gets keepalived's LVS file of its own.
    for li in lb.listeners:
        if li.protocol in constants.LVS_PROTOCOLS:
            out["lvs"][li.id] = lvs.LvsJinjaTemplater().build_config(
                listener=li)
    if lb.topology == constants.TOPOLOGY_ACTIVE_STANDBY and lb.vrrp_group:
        subnet = src["vip_subnet"]
        net_config = {
            "additional_vip_data": [],
            constants.VIP_SUBNET: {
                "cidr": subnet["cidr"], "gateway_ip": subnet["gateway_ip"],
                "host_routes": subnet["host_routes"]}}
        templater = keepalived.KeepalivedJinjaTemplater()
        for amp in lb.amphorae:
            out["keepalived"][amp.id] = templater.build_keepalived_config(
                lb, amp, net_config)
    agent = agent_jinja_cfg.AgentJinjaTemplater()
    for amp in lb.amphorae:
        out["agent"][amp.id] = agent.build_agent_config(amp.id, lb.topology)
    return out


def main():
    request = json.load(sys.stdin)
    # [DEFAULT] debug is oslo.log's, as in upstream's services.
    log.register_options(CONF)
    CONF([], project="octavia", default_config_files=[request["config_file"]])
    json.dump([render(request, case) for case in request["cases"]],
              sys.stdout)


if __name__ == "__main__":
    main()
