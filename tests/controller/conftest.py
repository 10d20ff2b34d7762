"""Fixtures for the controller tests through the real OpenStack clients.

Environment:
  OCTAVIA_ENDPOINT   the controller in noauth mode, e.g. http://127.0.0.1:9876
                     (tests marked `noauth` skip without it)
  KEYSTONE_JSON      a file holding the JSON line printed by
                     keystone_server.py (tests marked `keystone` skip without
                     it); they reach the controller through the catalog's
                     load-balancer endpoint, or OCTAVIA_KEYSTONE_ENDPOINT
  NEUTRON_ENDPOINT   optional: where the CLI resolves --vip-subnet-id
                     (GET /v2.0/subnets?id=...). Without it a fake Neutron
                     runs in the test process and answers for any UUID.
  CLI_TIMEOUT        seconds for one `openstack` command (default 180)
"""

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

WAIT = 120  # seconds for a load balancer to settle
INTERVAL = 0.5  # seconds between status polls of the SDK


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "noauth: needs OCTAVIA_ENDPOINT (controller, noauth)")
    config.addinivalue_line(
        "markers", "keystone: needs KEYSTONE_JSON (keystone_server.py)")
    # openstacksdk and webob deprecations say nothing about the controller.
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning")
    config.addinivalue_line("filterwarnings",
                            "ignore::PendingDeprecationWarning")


def pytest_collection_modifyitems(config, items):
    skip_noauth = pytest.mark.skip(reason="OCTAVIA_ENDPOINT is not set")
    skip_ks = pytest.mark.skip(reason="KEYSTONE_JSON is not set")
    for item in items:
        if "noauth" in item.keywords and not os.environ.get(
                "OCTAVIA_ENDPOINT"):
            item.add_marker(skip_noauth)
        if "keystone" in item.keywords and not os.environ.get(
                "KEYSTONE_JSON"):
            item.add_marker(skip_ks)


# ---------------------------------------------------------------- helpers

def unique(prefix="pytest"):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:10])


@pytest.fixture
def name(request):
    """A name no other test (or run) uses."""
    base = request.node.name.replace("test_", "").replace("_", "-")[:24]
    return unique("t-" + base)


def random_uuid():
    return str(uuid.uuid4())


# ------------------------------------------------------------ fake Neutron

class _FakeNeutron(BaseHTTPRequestHandler):
    """Answers the look-ups python-octaviaclient makes before it calls
    Octavia (`--vip-subnet-id` → GET /v2.0/subnets?id=...): any UUID is an
    existing subnet/network/port, as with the controller's noop network."""

    protocol_version = "HTTP/1.1"
    requests = []

    def log_message(self, *args):
        pass

    def _send(self, status, body):
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self):
        _FakeNeutron.requests.append(self.path)
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        host = "http://%s:%d" % self.server.server_address[:2]
        path = url.path.rstrip("/")
        if path in ("", "/v2.0"):
            return self._send(200, {"versions": [{
                "id": "v2.0", "status": "CURRENT",
                "links": [{"href": host + "/v2.0/", "rel": "self"}]}]})
        kind = path.rsplit("/", 1)[-1]
        if kind not in ("subnets", "networks", "ports", "policies",
                        "security-groups"):
            return self._send(404, {"NeutronError": {
                "type": "HTTPNotFound", "message": self.path, "detail": ""}})
        ids = [i for i in query.get("id", []) if _is_uuid(i)]
        items = []
        for i in ids:
            item = {"id": i, "name": "fake-" + i[:8],
                    "project_id": "fake", "tenant_id": "fake"}
            if kind == "subnets":
                item.update(network_id=str(uuid.uuid5(uuid.NAMESPACE_URL, i)),
                            cidr="10.0.0.0/24", ip_version=4,
                            gateway_ip="10.0.0.1")
            items.append(item)
        key = kind.replace("-", "_")
        return self._send(200, {key: items})


def _is_uuid(s):
    try:
        uuid.UUID(s)
        return True
    except ValueError:
        return False


@pytest.fixture(scope="session")
def neutron_endpoint():
    ep = os.environ.get("NEUTRON_ENDPOINT")
    if ep:
        yield ep
        return
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _FakeNeutron)
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield "http://127.0.0.1:%d/" % srv.server_address[1]
    srv.shutdown()
    srv.server_close()


# ---------------------------------------------------------------- noauth

@pytest.fixture(scope="session")
def octavia_endpoint():
    ep = os.environ.get("OCTAVIA_ENDPOINT")
    if not ep:
        pytest.skip("OCTAVIA_ENDPOINT is not set")
    return ep.rstrip("/")


@pytest.fixture(scope="session")
def conn(octavia_endpoint):
    """openstacksdk Connection to the controller, without Keystone."""
    import openstack
    return openstack.connect(auth_type="none",
                             auth={"endpoint": octavia_endpoint})


def _openstack_exe():
    exe = os.path.join(os.path.dirname(sys.executable), "openstack")
    if os.path.exists(exe):
        return exe
    found = shutil.which("openstack")
    if not found:
        pytest.skip("no `openstack` CLI beside %s" % sys.executable)
    return found


class CliResult:
    def __init__(self, args, proc, elapsed):
        self.args = args
        self.returncode = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.elapsed = elapsed

    @property
    def json(self):
        try:
            return json.loads(self.stdout)
        except ValueError:
            raise AssertionError("not JSON from %s:\n%s\nstderr:\n%s" % (
                " ".join(self.args), self.stdout, self.stderr))

    def __repr__(self):
        return "<openstack %s: rc=%s>" % (" ".join(self.args[1:]),
                                          self.returncode)


class Cli:
    """Runs `openstack ...` with a timeout.

    cli("loadbalancer", "list")           -> parsed JSON (adds -f json)
    cli.run("amphora", "delete", id, check=False) -> CliResult
    """

    def __init__(self, base_args, env, timeout):
        self.base_args = base_args
        self.env = env
        self.timeout = timeout

    def run(self, *args, check=True, json_output=False, timeout=None):
        args = [str(a) for a in args]
        if json_output:
            args += ["-f", "json"]
        cmd = self.base_args + args
        t0 = time.monotonic()
        try:
            proc = subprocess.run(cmd, env=self.env, capture_output=True,
                                  text=True, stdin=subprocess.DEVNULL,
                                  timeout=timeout or self.timeout)
        except subprocess.TimeoutExpired as e:
            raise AssertionError("timed out after %ss: %s\n%s" % (
                e.timeout, " ".join(cmd), e.stderr)) from None
        res = CliResult(cmd, proc, time.monotonic() - t0)
        if check and proc.returncode != 0:
            raise AssertionError("exit %s: %s\nstdout:\n%s\nstderr:\n%s" % (
                proc.returncode, " ".join(args), proc.stdout, proc.stderr))
        return res

    def __call__(self, *args, timeout=None):
        return self.run(*args, json_output=True, timeout=timeout).json


def _cli_env(neutron_endpoint):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env["OS_NETWORK_ENDPOINT_OVERRIDE"] = neutron_endpoint
    env.setdefault("HOME", "/tmp")
    env["PYTHONWARNINGS"] = "ignore"
    return env


@pytest.fixture(scope="session")
def cli(octavia_endpoint, neutron_endpoint):
    """The `openstack` CLI against the controller, noauth."""
    base = [_openstack_exe(), "--os-auth-type", "none",
            "--os-endpoint", octavia_endpoint]
    return Cli(base, _cli_env(neutron_endpoint),
               int(os.environ.get("CLI_TIMEOUT", "180")))


# ------------------------------------------------------- load balancers

def wait_lb(c, lb_id, status="ACTIVE"):
    return c.load_balancer.wait_for_load_balancer(
        lb_id, status=status, failures=["ERROR"], interval=INTERVAL,
        wait=WAIT)


def wait_lb_gone(c, lb_id):
    from openstack import exceptions
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        try:
            lb = c.load_balancer.get_load_balancer(lb_id)
        except exceptions.NotFoundException:
            return
        # Upstream keeps DELETED rows visible for a while.
        if lb.provisioning_status == "DELETED":
            return
        time.sleep(INTERVAL)
    raise AssertionError("load balancer %s not deleted in %ss" % (lb_id, WAIT))


def cleanup_lb(c, lb_id):
    """Best-effort cascade delete; never raises."""
    from openstack import exceptions
    try:
        lb = c.load_balancer.get_load_balancer(lb_id)
        if lb.provisioning_status in ("DELETED", "PENDING_DELETE"):
            return
        if lb.provisioning_status.startswith("PENDING"):
            try:
                wait_lb(c, lb_id)
            except exceptions.SDKException:
                pass
        c.load_balancer.delete_load_balancer(lb_id, cascade=True)
        wait_lb_gone(c, lb_id)
    except exceptions.NotFoundException:
        pass
    except Exception as e:  # cleanup must not hide the test's own failure
        print("cleanup of load balancer %s failed: %r" % (lb_id, e),
              file=sys.stderr)


class LbFactory:
    def __init__(self, c):
        self.conn = c
        self.ids = []

    def __call__(self, name, wait=True, **attrs):
        attrs.setdefault("vip_subnet_id", random_uuid())
        lb = self.conn.load_balancer.create_load_balancer(name=name, **attrs)
        self.ids.append(lb.id)
        if wait:
            lb = wait_lb(self.conn, lb.id)
        return lb

    def track(self, lb_id):
        self.ids.append(lb_id)

    def cleanup(self):
        for lb_id in reversed(self.ids):
            cleanup_lb(self.conn, lb_id)


@pytest.fixture
def make_lb(conn):
    """make_lb(name, **attrs): a load balancer, ACTIVE, deleted after."""
    f = LbFactory(conn)
    yield f
    f.cleanup()


# -------------------------------------------------------------- keystone

@pytest.fixture(scope="session")
def keystone():
    path = os.environ.get("KEYSTONE_JSON")
    if not path:
        pytest.skip("KEYSTONE_JSON is not set")
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                return json.loads(line)
    pytest.fail("no JSON line in %s" % path)


@pytest.fixture(scope="session")
def keystone_octavia_endpoint(keystone):
    return (os.environ.get("OCTAVIA_KEYSTONE_ENDPOINT")
            or keystone["octavia_url"]).rstrip("/")


@pytest.fixture(scope="session")
def user_conn(keystone, keystone_octavia_endpoint):
    """user_conn("alice"): an openstacksdk Connection with that user's
    password, scoped to its project (token from the real Keystone)."""
    import openstack
    cache = {}

    def connect(user):
        if user not in cache:
            c = keystone["users"][user]
            kwargs = {}
            if keystone_octavia_endpoint != keystone["octavia_url"].rstrip(
                    "/"):
                kwargs["load_balancer_endpoint_override"] = \
                    keystone_octavia_endpoint
            cache[user] = openstack.connect(
                auth_type="password",
                auth={
                    "auth_url": keystone["auth_url"],
                    "username": c["username"],
                    "password": c["password"],
                    "project_name": c["project_name"],
                    "user_domain_name": c["user_domain_name"],
                    "project_domain_name": c["project_domain_name"],
                },
                region_name=keystone["region"], **kwargs)
        return cache[user]

    return connect


@pytest.fixture(scope="session")
def user_cli(keystone, keystone_octavia_endpoint, neutron_endpoint):
    """user_cli("alice"): the `openstack` CLI with that user's password."""
    def make(user):
        c = keystone["users"][user]
        base = [_openstack_exe(),
                "--os-auth-type", "password",
                "--os-auth-url", keystone["auth_url"],
                "--os-username", c["username"],
                "--os-password", c["password"],
                "--os-project-name", c["project_name"],
                "--os-user-domain-name", c["user_domain_name"],
                "--os-project-domain-name", c["project_domain_name"],
                "--os-region-name", keystone["region"],
                "--os-interface", "public"]
        env = _cli_env(neutron_endpoint)
        if keystone_octavia_endpoint != keystone["octavia_url"].rstrip("/"):
            env["OS_LOAD_BALANCER_ENDPOINT_OVERRIDE"] = \
                keystone_octavia_endpoint
        return Cli(base, env, int(os.environ.get("CLI_TIMEOUT", "180")))
    return make
