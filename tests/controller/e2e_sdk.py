"""Builds or deletes a load balancer on a controller with real amphorae,
through openstacksdk with auth type none; used by
crates/amphora-controller/tests/e2e_local.rs.

  e2e_sdk.py create ENDPOINT VIP_SUBNET MEMBER_SUBNET MEMBER_IP...
      prints {"lb": id, "vip": address} once everything is ACTIVE
  e2e_sdk.py delete ENDPOINT LB_ID
      cascade delete, waits until the load balancer is gone
"""

import json
import sys
import time

import openstack

WAIT = 300


def settle(conn, lb_id):
    deadline = time.time() + WAIT
    while True:
        lb = conn.load_balancer.get_load_balancer(lb_id)
        if lb.provisioning_status == "ACTIVE":
            return lb
        if lb.provisioning_status == "ERROR":
            raise SystemExit("load balancer %s went ERROR" % lb_id)
        if time.time() > deadline:
            raise SystemExit("load balancer %s stuck in %s" % (lb_id, lb.provisioning_status))
        time.sleep(0.5)


def create(conn, vip_subnet, member_subnet, members):
    lb = conn.load_balancer.create_load_balancer(name="sdk-e2e", vip_subnet_id=vip_subnet)
    lb = settle(conn, lb.id)
    listener = conn.load_balancer.create_listener(
        name="web", loadbalancer_id=lb.id, protocol="HTTP", protocol_port=80)
    settle(conn, lb.id)
    pool = conn.load_balancer.create_pool(
        name="web", listener_id=listener.id, protocol="HTTP", lb_algorithm="ROUND_ROBIN")
    settle(conn, lb.id)
    conn.load_balancer.create_health_monitor(
        pool_id=pool.id, type="HTTP", delay=1, timeout=1, max_retries=1, url_path="/")
    settle(conn, lb.id)
    for address in members:
        conn.load_balancer.create_member(
            pool, address=address, protocol_port=8080, subnet_id=member_subnet)
        settle(conn, lb.id)
    amphorae = list(conn.load_balancer.amphorae(loadbalancer_id=lb.id))
    print(json.dumps({"lb": lb.id, "vip": lb.vip_address,
                      "amphorae": [a.id for a in amphorae]}))


def delete(conn, lb_id):
    conn.load_balancer.delete_load_balancer(lb_id, cascade=True)
    deadline = time.time() + WAIT
    while conn.load_balancer.find_load_balancer(lb_id) is not None:
        if time.time() > deadline:
            raise SystemExit("load balancer %s not deleted" % lb_id)
        time.sleep(0.5)
    print(json.dumps({"deleted": lb_id}))


def main():
    action, endpoint = sys.argv[1], sys.argv[2]
    conn = openstack.connect(auth_type="none", auth={"endpoint": endpoint})
    if action == "create":
        create(conn, sys.argv[3], sys.argv[4], sys.argv[5:])
    elif action == "delete":
        delete(conn, sys.argv[3])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
