"""The controller through openstacksdk's load_balancer proxy (4.22.0).

noauth tests need OCTAVIA_ENDPOINT; keystone tests need KEYSTONE_JSON
(see conftest.py and README.md).
"""

import uuid

import pytest
from openstack import exceptions

from conftest import INTERVAL, WAIT, random_uuid, wait_lb, wait_lb_gone


def only_amphora(c, lb_id):
    amps = list(c.load_balancer.amphorae(loadbalancer_id=lb_id))
    assert len(amps) == 1, [a.to_dict() for a in amps]
    return amps[0]


def assert_gone_or_deleted(get, *args):
    try:
        obj = get(*args)
    except exceptions.NotFoundException:
        return
    status = getattr(obj, "provisioning_status", None) or getattr(
        obj, "status", None)
    assert status == "DELETED", obj.to_dict()


# ------------------------------------------------------------------ noauth

@pytest.mark.noauth
def test_load_balancer_create_get_list(conn, make_lb, name):
    subnet = random_uuid()
    lb = conn.load_balancer.create_load_balancer(
        name=name, description="sdk test", vip_subnet_id=subnet)
    make_lb.track(lb.id)
    assert lb.name == name
    assert lb.description == "sdk test"
    assert lb.vip_subnet_id == subnet
    assert lb.provisioning_status in ("PENDING_CREATE", "ACTIVE")
    assert uuid.UUID(lb.id)

    lb = wait_lb(conn, lb.id)
    assert lb.provisioning_status == "ACTIVE"
    assert lb.is_admin_state_up is True
    assert lb.listeners == [] and lb.pools == []

    got = conn.load_balancer.get_load_balancer(lb.id)
    assert (got.id, got.name, got.vip_subnet_id) == (lb.id, name, subnet)
    assert got.provider in ("amphora", "octavia")

    listed = list(conn.load_balancer.load_balancers(name=name))
    assert [x.id for x in listed] == [lb.id]
    assert conn.load_balancer.find_load_balancer(name).id == lb.id


@pytest.mark.noauth
def test_full_tree_then_cascade_delete(conn, make_lb, name):
    lb = make_lb(name)
    lbc = conn.load_balancer

    listener = lbc.create_listener(name=name + "-listener", protocol="HTTP",
                                   protocol_port=80, load_balancer_id=lb.id)
    assert listener.protocol == "HTTP"
    assert listener.protocol_port == 80
    assert [x["id"] for x in listener.load_balancers] == [lb.id]
    wait_lb(conn, lb.id)
    listener = lbc.get_listener(listener.id)
    assert listener.provisioning_status == "ACTIVE"

    pool = lbc.create_pool(name=name + "-pool", protocol="HTTP",
                           lb_algorithm="ROUND_ROBIN",
                           listener_id=listener.id)
    assert pool.lb_algorithm == "ROUND_ROBIN"
    assert pool.protocol == "HTTP"
    wait_lb(conn, lb.id)
    pool = lbc.get_pool(pool.id)
    assert pool.provisioning_status == "ACTIVE"
    assert [x["id"] for x in pool.listeners] == [listener.id]
    assert lbc.get_listener(listener.id).default_pool_id == pool.id

    member = lbc.create_member(pool, name=name + "-member",
                               address="192.0.2.10", protocol_port=8080,
                               weight=5)
    assert (member.address, member.protocol_port, member.weight) == (
        "192.0.2.10", 8080, 5)
    wait_lb(conn, lb.id)
    member = lbc.get_member(member.id, pool)
    assert member.provisioning_status == "ACTIVE"
    assert [m.id for m in lbc.members(pool)] == [member.id]

    hm = lbc.create_health_monitor(pool_id=pool.id, name=name + "-hm",
                                   type="HTTP", delay=5, timeout=3,
                                   max_retries=3, http_method="GET",
                                   url_path="/healthz", expected_codes="200")
    assert (hm.type, hm.delay, hm.timeout, hm.max_retries) == (
        "HTTP", 5, 3, 3)
    assert hm.url_path == "/healthz"
    wait_lb(conn, lb.id)
    hm = lbc.get_health_monitor(hm.id)
    assert hm.provisioning_status == "ACTIVE"
    assert [x["id"] for x in hm.pools] == [pool.id]
    assert lbc.get_pool(pool.id).health_monitor_id == hm.id

    lb = lbc.get_load_balancer(lb.id)
    assert lb.provisioning_status == "ACTIVE"
    assert [x["id"] for x in lb.listeners] == [listener.id]
    assert [x["id"] for x in lb.pools] == [pool.id]

    amp = only_amphora(conn, lb.id)
    lbc.delete_load_balancer(lb.id, cascade=True)
    wait_lb_gone(conn, lb.id)
    assert_gone_or_deleted(lbc.get_load_balancer, lb.id)
    assert_gone_or_deleted(lbc.get_listener, listener.id)
    assert_gone_or_deleted(lbc.get_pool, pool.id)
    assert_gone_or_deleted(lbc.get_health_monitor, hm.id)
    assert list(lbc.amphorae(loadbalancer_id=lb.id)) == []
    assert_gone_or_deleted(lbc.get_amphora, amp.id)
    assert lb.id not in [x.id for x in lbc.load_balancers(name=name)]


@pytest.mark.noauth
def test_amphorae_list_and_get(conn, make_lb, name):
    lb = make_lb(name)
    other = make_lb(name + "-other")
    amp = only_amphora(conn, lb.id)
    assert amp.loadbalancer_id == lb.id
    assert amp.role == "STANDALONE"
    assert amp.status == "ALLOCATED"
    assert uuid.UUID(amp.id)

    other_amp = only_amphora(conn, other.id)
    assert other_amp.id != amp.id

    got = conn.load_balancer.get_amphora(amp.id)
    assert (got.id, got.loadbalancer_id, got.role, got.status) == (
        amp.id, lb.id, "STANDALONE", "ALLOCATED")
    assert got.compute_id == amp.compute_id
    assert conn.load_balancer.find_amphora(amp.id).id == amp.id

    all_ids = {a.id for a in conn.load_balancer.amphorae()}
    assert {amp.id, other_amp.id} <= all_ids
    assert list(conn.load_balancer.amphorae(
        loadbalancer_id=random_uuid())) == []
    by_status = {a.id for a in conn.load_balancer.amphorae(
        loadbalancer_id=lb.id, status="ALLOCATED", role="STANDALONE")}
    assert by_status == {amp.id}


@pytest.mark.noauth
def test_configure_amphora(conn, make_lb, name):
    lb = make_lb(name)
    amp = only_amphora(conn, lb.id)
    assert conn.load_balancer.configure_amphora(amp.id) is None
    lb = wait_lb(conn, lb.id)
    assert lb.provisioning_status == "ACTIVE"
    again = only_amphora(conn, lb.id)
    assert (again.id, again.status) == (amp.id, "ALLOCATED")


@pytest.mark.noauth
def test_failover_amphora(conn, make_lb, name):
    lb = make_lb(name)
    old = only_amphora(conn, lb.id)
    assert conn.load_balancer.failover_amphora(old.id) is None
    # The API marks the load balancer PENDING_UPDATE before answering.
    status = conn.load_balancer.get_load_balancer(lb.id).provisioning_status
    assert status in ("PENDING_UPDATE", "ACTIVE")
    lb = wait_lb(conn, lb.id)
    assert lb.provisioning_status == "ACTIVE"
    new = only_amphora(conn, lb.id)
    assert new.id != old.id
    assert (new.loadbalancer_id, new.role, new.status) == (
        lb.id, "STANDALONE", "ALLOCATED")
    assert_gone_or_deleted(conn.load_balancer.get_amphora, old.id)


@pytest.mark.noauth
def test_missing_objects_are_404(conn):
    with pytest.raises(exceptions.NotFoundException):
        conn.load_balancer.get_load_balancer(random_uuid())
    with pytest.raises(exceptions.NotFoundException):
        conn.load_balancer.get_amphora(random_uuid())
    with pytest.raises(exceptions.NotFoundException):
        conn.load_balancer.failover_amphora(random_uuid())
    with pytest.raises(exceptions.NotFoundException):
        conn.load_balancer.delete_load_balancer(random_uuid(),
                                                ignore_missing=False)


@pytest.mark.noauth
def test_delete_waits_for_gone(conn, make_lb, name):
    lb = make_lb(name)
    conn.load_balancer.delete_load_balancer(lb.id, cascade=True)
    res = conn.load_balancer.wait_for_delete(lb, interval=INTERVAL,
                                             wait=WAIT)
    assert res.id == lb.id
    with pytest.raises(exceptions.NotFoundException):
        conn.load_balancer.get_load_balancer(lb.id)


# ---------------------------------------------------------------- keystone

@pytest.fixture
def alice_lb(user_conn, name):
    alice = user_conn("alice")
    lb = alice.load_balancer.create_load_balancer(
        name=name, vip_subnet_id=random_uuid())
    try:
        yield wait_lb(alice, lb.id)
    finally:
        from conftest import cleanup_lb
        cleanup_lb(alice, lb.id)


@pytest.mark.keystone
def test_keystone_member_owns_its_load_balancer(keystone, user_conn,
                                                 alice_lb, name):
    alice = user_conn("alice")
    assert alice_lb.project_id == keystone["projects"]["proj-a"]
    assert alice_lb.name == name
    assert alice.load_balancer.get_load_balancer(alice_lb.id).id == \
        alice_lb.id
    assert alice_lb.id in [x.id for x in alice.load_balancer.load_balancers()]


@pytest.mark.keystone
def test_keystone_other_project_is_kept_out(user_conn, alice_lb):
    bob = user_conn("bob")
    # Upstream: 403 on another project's object, 404 on a missing one.
    with pytest.raises(exceptions.ForbiddenException):
        bob.load_balancer.get_load_balancer(alice_lb.id)
    with pytest.raises(exceptions.NotFoundException):
        bob.load_balancer.get_load_balancer(random_uuid())
    assert alice_lb.id not in [x.id for x in bob.load_balancer.load_balancers()]
    with pytest.raises(exceptions.ForbiddenException):
        bob.load_balancer.delete_load_balancer(alice_lb.id, cascade=True)
    assert user_conn("alice").load_balancer.get_load_balancer(
        alice_lb.id).provisioning_status == "ACTIVE"


@pytest.mark.keystone
def test_keystone_amphora_api_is_admin_only(user_conn, alice_lb):
    alice = user_conn("alice")
    with pytest.raises(exceptions.ForbiddenException):
        list(alice.load_balancer.amphorae(loadbalancer_id=alice_lb.id))
    admin = user_conn("lb-admin")
    amps = list(admin.load_balancer.amphorae(loadbalancer_id=alice_lb.id))
    assert len(amps) == 1
    assert (amps[0].loadbalancer_id, amps[0].status) == (alice_lb.id,
                                                         "ALLOCATED")
    with pytest.raises(exceptions.ForbiddenException):
        alice.load_balancer.get_amphora(amps[0].id)
    assert admin.load_balancer.get_amphora(amps[0].id).id == amps[0].id


@pytest.mark.keystone
def test_keystone_admin_sees_every_project(user_conn, alice_lb):
    admin = user_conn("lb-admin")
    got = admin.load_balancer.get_load_balancer(alice_lb.id)
    assert got.id == alice_lb.id
