"""The controller through `openstack loadbalancer ...` (python-openstackclient
10.5.0 + python-octaviaclient 3.15.0), run as a subprocess.

Note: the CLI resolves --vip-subnet-id through Neutron (GET
/v2.0/subnets?id=...) before it calls Octavia; conftest points it at a fake
Neutron (OS_NETWORK_ENDPOINT_OVERRIDE). Octavia calls go to
$OCTAVIA_ENDPOINT/v2.0/... (python-octaviaclient appends /v2.0).
"""

import uuid

import pytest

from conftest import random_uuid

STATS_KEYS = {"active_connections", "bytes_in", "bytes_out",
              "request_errors", "total_connections"}


class CliLb:
    """A load balancer made with the CLI, removed when the test ends."""

    def __init__(self, cli):
        self.cli = cli
        self.ids = []

    def create(self, name, subnet=None):
        lb = self.cli("loadbalancer", "create", "--name", name,
                      "--vip-subnet-id", subnet or random_uuid(), "--wait")
        self.ids.append(lb["id"])
        return lb

    def cleanup(self):
        for lb_id in self.ids:
            show = self.cli.run("loadbalancer", "show", lb_id, "-f", "json",
                                check=False)
            if show.returncode != 0:
                continue
            res = self.cli.run("loadbalancer", "delete", "--cascade",
                               "--wait", lb_id, check=False)
            if res.returncode != 0:
                print("cleanup of %s failed: %s" % (lb_id, res.stderr))


@pytest.fixture
def cli_lb(cli):
    f = CliLb(cli)
    yield f
    f.cleanup()


def amphorae_of(cli, lb):
    rows = cli("loadbalancer", "amphora", "list", "--loadbalancer", lb)
    assert isinstance(rows, list)
    return rows


@pytest.mark.noauth
def test_cli_loadbalancer_create_list_show(cli, cli_lb, name):
    subnet = random_uuid()
    lb = cli_lb.create(name, subnet)
    assert lb["name"] == name
    assert lb["provisioning_status"] == "ACTIVE"
    assert lb["vip_subnet_id"] == subnet
    assert lb["admin_state_up"] is True
    assert uuid.UUID(lb["id"])

    rows = cli("loadbalancer", "list", "--name", name)
    assert [r["id"] for r in rows] == [lb["id"]]
    assert rows[0]["name"] == name
    assert rows[0]["provisioning_status"] == "ACTIVE"
    all_rows = cli("loadbalancer", "list")
    assert lb["id"] in [r["id"] for r in all_rows]

    for ref in (name, lb["id"]):
        shown = cli("loadbalancer", "show", ref)
        assert shown["id"] == lb["id"]
        assert shown["name"] == name
        assert shown["vip_subnet_id"] == subnet
        assert shown["provisioning_status"] == "ACTIVE"


@pytest.mark.noauth
def test_cli_amphora_list_show(cli, cli_lb, name):
    lb = cli_lb.create(name)
    rows = amphorae_of(cli, name)
    assert len(rows) == 1, rows
    row = rows[0]
    assert set(row) >= {"id", "loadbalancer_id", "status", "role",
                        "lb_network_ip", "ha_ip"}
    assert row["loadbalancer_id"] == lb["id"]
    assert row["status"] == "ALLOCATED"
    assert row["role"] == "STANDALONE"
    assert amphorae_of(cli, lb["id"]) == rows

    amp = cli("loadbalancer", "amphora", "show", row["id"])
    assert amp["id"] == row["id"]
    assert amp["loadbalancer_id"] == lb["id"]
    assert amp["status"] == "ALLOCATED"
    assert amp["role"] == "STANDALONE"
    assert "compute_id" in amp and "cert_expiration" in amp

    long_rows = cli("loadbalancer", "amphora", "list", "--loadbalancer",
                    name, "--long")
    assert [r["id"] for r in long_rows] == [row["id"]]
    assert "compute_id" in long_rows[0]
    filtered = cli("loadbalancer", "amphora", "list", "--status",
                   "ALLOCATED", "--role", "STANDALONE")
    assert row["id"] in [r["id"] for r in filtered]


@pytest.mark.noauth
def test_cli_amphora_configure(cli, cli_lb, name):
    cli_lb.create(name)
    amp_id = amphorae_of(cli, name)[0]["id"]
    res = cli.run("loadbalancer", "amphora", "configure", amp_id, "--wait")
    assert res.returncode == 0
    assert cli("loadbalancer", "show", name)["provisioning_status"] == \
        "ACTIVE"
    after = amphorae_of(cli, name)
    assert [(a["id"], a["status"]) for a in after] == [(amp_id, "ALLOCATED")]


@pytest.mark.noauth
def test_cli_amphora_failover(cli, cli_lb, name):
    lb = cli_lb.create(name)
    old = amphorae_of(cli, name)[0]
    res = cli.run("loadbalancer", "amphora", "failover", old["id"], "--wait")
    assert res.returncode == 0
    assert cli("loadbalancer", "show", name)["provisioning_status"] == \
        "ACTIVE"
    new = amphorae_of(cli, name)
    assert len(new) == 1, new
    assert new[0]["id"] != old["id"]
    assert (new[0]["loadbalancer_id"], new[0]["status"], new[0]["role"]) == (
        lb["id"], "ALLOCATED", "STANDALONE")
    shown = cli.run("loadbalancer", "amphora", "show", old["id"], "-f",
                    "json", check=False)
    if shown.returncode == 0:
        assert shown.json["status"] == "DELETED"
    else:
        assert "404" in shown.stderr


@pytest.mark.noauth
def test_cli_amphora_stats_show(cli, cli_lb, name):
    lb = cli_lb.create(name)
    listener = cli("loadbalancer", "listener", "create", "--name",
                   name + "-listener", "--protocol", "HTTP",
                   "--protocol-port", "80", "--wait", lb["id"])
    assert listener["protocol"] == "HTTP"
    assert listener["protocol_port"] == 80
    assert listener["provisioning_status"] == "ACTIVE"
    amp_id = amphorae_of(cli, name)[0]["id"]
    res = cli.run("loadbalancer", "amphora", "stats", "show", amp_id,
                  "-f", "json", check=False)
    if res.returncode == 0:
        stats = res.json
        assert set(stats) == STATS_KEYS
        assert all(isinstance(v, int) and v >= 0 for v in stats.values())
    else:
        # Upstream answers 404 until a heartbeat has brought statistics.
        assert "Amphora stats for %s not found" % amp_id in res.stderr
        assert "HTTP 404" in res.stderr
    res = cli.run("loadbalancer", "amphora", "stats", "show",
                  random_uuid(), "-f", "json", check=False)
    assert res.returncode != 0 and "HTTP 404" in res.stderr


@pytest.mark.noauth
def test_cli_amphora_delete_allocated_conflicts(cli, cli_lb, name):
    cli_lb.create(name)
    amp_id = amphorae_of(cli, name)[0]["id"]
    res = cli.run("loadbalancer", "amphora", "delete", amp_id, check=False)
    assert res.returncode != 0
    # Upstream: only an amphora in ERROR may be deleted.
    assert "HTTP 409" in res.stderr, res.stderr
    assert "amphora %s is immutable and cannot be updated." % amp_id in \
        res.stderr, res.stderr
    after = amphorae_of(cli, name)
    assert [(a["id"], a["status"]) for a in after] == [(amp_id, "ALLOCATED")]
    res = cli.run("loadbalancer", "amphora", "delete", random_uuid(),
                  check=False)
    assert res.returncode != 0 and "HTTP 404" in res.stderr


@pytest.mark.noauth
def test_cli_delete_cascade(cli, name):
    lb = cli("loadbalancer", "create", "--name", name, "--vip-subnet-id",
             random_uuid(), "--wait")
    try:
        listener = cli("loadbalancer", "listener", "create", "--name",
                       name + "-l", "--protocol", "HTTP", "--protocol-port",
                       "80", "--wait", lb["id"])
        pool = cli("loadbalancer", "pool", "create", "--name", name + "-p",
                   "--protocol", "HTTP", "--lb-algorithm", "ROUND_ROBIN",
                   "--listener", listener["id"], "--wait")
        assert pool["lb_algorithm"] == "ROUND_ROBIN"
        amp_id = amphorae_of(cli, lb["id"])[0]["id"]
    finally:
        res = cli.run("loadbalancer", "delete", "--cascade", "--wait",
                      lb["id"])
    assert res.returncode == 0
    assert res.stdout.strip() == ""
    assert lb["id"] not in [r["id"] for r in cli("loadbalancer", "list")]
    show = cli.run("loadbalancer", "show", lb["id"], check=False)
    assert show.returncode != 0
    assert "Unable to locate" in show.stderr or "404" in show.stderr
    # The load balancer no longer resolves, so list every amphora.
    assert amp_id not in [r["id"] for r in cli("loadbalancer", "amphora",
                                                "list")]
    gone = cli.run("loadbalancer", "amphora", "show", amp_id, "-f", "json",
                   check=False)
    if gone.returncode == 0:
        assert gone.json["status"] == "DELETED"


@pytest.mark.keystone
def test_cli_keystone_member_and_admin(user_cli, keystone, name):
    alice = user_cli("alice")
    lb = alice("loadbalancer", "create", "--name", name, "--vip-subnet-id",
               random_uuid(), "--wait")
    try:
        assert lb["project_id"] == keystone["projects"]["proj-a"]
        assert lb["provisioning_status"] == "ACTIVE"
        res = alice.run("loadbalancer", "amphora", "list", check=False)
        assert res.returncode != 0 and "HTTP 403" in res.stderr, res.stderr
        res = user_cli("bob").run("loadbalancer", "show", lb["id"],
                                  check=False)
        assert res.returncode != 0
        admin = user_cli("lb-admin")
        amps = admin("loadbalancer", "amphora", "list", "--loadbalancer",
                     lb["id"])
        assert [a["loadbalancer_id"] for a in amps] == [lb["id"]]
    finally:
        alice.run("loadbalancer", "delete", "--cascade", "--wait", lb["id"],
                  check=False)
