#!/usr/bin/env python3
"""Runs a real Keystone (SQLite, fernet tokens) under gunicorn for tests.

Run it with the clients venv's python (scripts/clients-venv.sh):

    PY=$(scripts/clients-venv.sh)
    $PY tests/controller/keystone_server.py --dir /tmp/ks \
        --octavia-url http://127.0.0.1:9876 > /tmp/ks.json &

It prepares the directory (config, database, fernet and credential keys),
bootstraps Keystone, starts gunicorn on 127.0.0.1 (--port, or a free port),
creates the projects, users, roles and the load-balancer catalog entry the
controller tests use, then prints ONE JSON line on stdout and stays in the
foreground until SIGTERM/SIGINT, when it stops gunicorn (which also gets
SIGTERM should this process die). Logs go to stderr and to DIR/keystone.log
(gunicorn's own output). Exit status: 0 when stopped by a signal, 1 when
setup failed or gunicorn died.

Start time: keystone-manage (db_sync, then bootstrap while gunicorn starts)
dominates a fresh start; the fernet and credential key repositories are
written directly, as fernet_setup and credential_setup would. With --template DIR (or
$KEYSTONE_TEMPLATE_DIR) the prepared database and keys are saved there after
the first successful start and copied into later fresh --dirs, which then skip
keystone-manage; a --dir that was set up before is reused as it is. Either way
the identity endpoint is moved to the new port and the load-balancer endpoint
to --octavia-url.

The JSON line:
    {"auth_url": "http://127.0.0.1:P/v3", "region": "RegionOne",
     "octavia_url": ..., "pid": ..., "gunicorn_pid": ..., "dir": ...,
     "startup_seconds": ...,
     "projects": {"admin": ID, "service": ID, "proj-a": ID, "proj-b": ID},
     "roles": {NAME: ID, ...},
     "users": {"admin": CRED, "octavia": CRED, "lb-admin": CRED,
               "alice": CRED, "bob": CRED, "reader-a": CRED},
     "admin": CRED, "service": CRED}
where CRED = {"username", "password", "user_id", "project_name",
"project_id", "user_domain_name": "Default",
"project_domain_name": "Default", "roles": [...]}, i.e. what
openstack.connect(auth_url=..., **{k: CRED[k] for the auth keys}) takes.
"""

import argparse
import json
import os
import signal
import socket
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

DOMAIN = "default"
REGION = "RegionOne"
PASSWORD = "secret"  # every test user's password

LB_ROLES = [
    "load-balancer_admin",
    "load-balancer_member",
    "load-balancer_observer",
    "load-balancer_global_observer",
]
# user -> (project, [roles])
USERS = {
    "octavia": ("service", ["admin", "service"]),
    "lb-admin": ("proj-a", ["load-balancer_admin"]),
    "alice": ("proj-a", ["member", "load-balancer_member"]),
    "bob": ("proj-b", ["member", "load-balancer_member"]),
    "reader-a": ("proj-a", ["reader"]),
}

WSGI_WRAPPER = '''\
# Written by keystone_server.py. oslo.config would parse gunicorn's argv:
# clear it before keystone is imported.
import sys
sys.argv = sys.argv[:1]
from keystone.server.wsgi import initialize_public_application
application = initialize_public_application()
'''


def log(msg):
    print("keystone_server: %s" % msg, file=sys.stderr, flush=True)


def die_with_parent():
    """preexec_fn: the child gets SIGTERM when this process dies, even by
    SIGKILL (Linux prctl PR_SET_PDEATHSIG), so no gunicorn outlives us."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def make_key_repository(path):
    """A fernet key repository as keystone-manage fernet_setup leaves it:
    0 the staged key, 1 the primary one (owner-only)."""
    from cryptography.fernet import Fernet
    os.makedirs(path, mode=0o700)
    for name in ("0", "1"):
        fd = os.open(os.path.join(path, name),
                     os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(Fernet.generate_key())


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(d, debug, cache):
    conf = os.path.join(d, "keystone.conf")
    with open(conf, "w") as f:
        f.write(
            "[DEFAULT]\n"
            "debug = %s\n"
            "use_stderr = true\n"
            "[database]\n"
            "connection = sqlite:///%s\n"
            "[token]\n"
            "provider = fernet\n"
            "expiration = 14400\n"
            "[fernet_tokens]\n"
            "key_repository = %s\n"
            "[fernet_receipts]\n"
            "key_repository = %s\n"
            "[credential]\n"
            "key_repository = %s\n"
            "[identity]\n"
            "password_hash_algorithm = bcrypt\n"
            "password_hash_rounds = 4\n"
            "[cache]\n"
            "enabled = %s\n"
            "backend = dogpile.cache.memory\n"
            "[oslo_policy]\n"
            "enforce_new_defaults = true\n"
            "enforce_scope = true\n"
            % (
                "true" if debug else "false",
                os.path.join(d, "keystone.db"),
                os.path.join(d, "fernet-keys"),
                os.path.join(d, "fernet-keys"),
                os.path.join(d, "credential-keys"),
                # A per-process memory cache: coherent with one process only.
                "true" if cache else "false",
            )
        )
    return conf


def manage(conf, *args):
    """Starts keystone-manage; returns a handle for finish()."""
    exe = os.path.join(os.path.dirname(sys.executable), "keystone-manage")
    cmd = [exe, "--config-file", conf] + list(args)
    return cmd, subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True,
                                 preexec_fn=die_with_parent)


def finish(*handles):
    for cmd, p in handles:
        out, _ = p.communicate()
        if p.returncode != 0:
            log("FAILED: %s\n%s" % (" ".join(cmd), out))
            raise SystemExit(1)


class Api:
    """Minimal Keystone v3 client on urllib (no extra import cost)."""

    def __init__(self, base):
        self.base = base.rstrip("/")
        self.token = None

    def call(self, method, path, body=None, headers=None, ok=(200, 201, 204)):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data,
                                     method=method)
        req.add_header("Content-Type", "application/json")
        req.add_header("Accept", "application/json")
        if self.token:
            req.add_header("X-Auth-Token", self.token)
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                raw = resp.read()
                status, hdrs = resp.status, resp.headers
        except urllib.error.HTTPError as e:
            raw, status, hdrs = e.read(), e.code, e.headers
        if status not in ok:
            raise RuntimeError("%s %s -> %s: %s" % (method, path, status,
                                                    raw[:500]))
        return status, hdrs, (json.loads(raw) if raw else None)

    def password_token(self, user, password, project):
        body = {"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": user, "domain": {"id": DOMAIN},
                "password": password}}},
            "scope": {"project": {"name": project,
                                  "domain": {"id": DOMAIN}}}}}
        _, hdrs, resp = self.call("POST", "/v3/auth/tokens", body)
        return hdrs["X-Subject-Token"], resp["token"]

    def find(self, collection, name):
        _, _, resp = self.call("GET", "/v3/%s?name=%s" % (collection, name))
        items = resp[collection]
        return items[0]["id"] if items else None

    def ensure(self, collection, singular, body):
        found = self.find(collection, body["name"])
        if found:
            return found
        _, _, resp = self.call("POST", "/v3/" + collection, {singular: body})
        return resp[singular]["id"]


def wait_http(url, proc, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("gunicorn exited with %s" % proc.returncode)
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError("keystone did not answer on %s" % url)


def provision(api, octavia_url, admin_password):
    api.token, _ = api.password_token("admin", admin_password, "admin")
    # A database copied from a template (or reused) names an older port.
    _, _, resp = api.call("GET", "/v3/services?type=identity")
    for svc in resp["services"]:
        _, _, eps = api.call("GET", "/v3/endpoints?service_id=%s" % svc["id"])
        for ep in eps["endpoints"]:
            if ep["url"] != api.base + "/v3":
                api.call("PATCH", "/v3/endpoints/%s" % ep["id"],
                         {"endpoint": {"url": api.base + "/v3"}})
    roles = {}
    for name in ["admin", "member", "reader", "service", "manager"] + LB_ROLES:
        roles[name] = api.ensure("roles", "role", {"name": name})
    projects = {"admin": api.find("projects", "admin")}
    for name in ["service", "proj-a", "proj-b"]:
        projects[name] = api.ensure("projects", "project", {
            "name": name, "domain_id": DOMAIN,
            "description": "amphora-rs test project %s" % name})
    users = {}
    for name, (project, user_roles) in USERS.items():
        uid = api.ensure("users", "user", {
            "name": name, "domain_id": DOMAIN, "password": PASSWORD,
            "default_project_id": projects[project], "enabled": True})
        for role in user_roles:
            api.call("PUT", "/v3/projects/%s/users/%s/roles/%s"
                     % (projects[project], uid, roles[role]))
        users[name] = cred(name, PASSWORD, uid, project, projects[project],
                           user_roles)
    admin_id = api.find("users", "admin")
    users = dict(admin=cred("admin", admin_password, admin_id, "admin",
                            projects["admin"], ["admin"]), **users)

    svc = api.find("services", "octavia")
    if not svc:
        _, _, resp = api.call("POST", "/v3/services", {"service": {
            "name": "octavia", "type": "load-balancer",
            "description": "amphora-rs controller", "enabled": True}})
        svc = resp["service"]["id"]
    _, _, resp = api.call("GET", "/v3/endpoints?service_id=%s" % svc)
    for ep in resp["endpoints"]:
        api.call("DELETE", "/v3/endpoints/%s" % ep["id"])
    api.call("POST", "/v3/endpoints", {"endpoint": {
        "service_id": svc, "interface": "public", "url": octavia_url,
        "region_id": REGION, "enabled": True}})
    return roles, projects, users


def cred(name, password, uid, project, project_id, roles):
    return {"username": name, "password": password, "user_id": uid,
            "project_name": project, "project_id": project_id,
            "user_domain_name": "Default", "project_domain_name": "Default",
            "roles": roles}


def self_check(api, users):
    """Every user can log in; the octavia service token validates others."""
    service_token, _ = api.password_token("octavia", PASSWORD, "service")
    for name, c in users.items():
        tok, body = api.password_token(name, c["password"], c["project_name"])
        check = Api(api.base)
        check.token = service_token
        _, _, v = check.call("GET", "/v3/auth/tokens",
                             headers={"X-Subject-Token": tok})
        got = {r["name"] for r in v["token"]["roles"]}
        missing = set(c["roles"]) - got
        if missing or v["token"]["project"]["id"] != c["project_id"]:
            raise RuntimeError("token of %s: roles %s, project %s" % (
                name, sorted(got), v["token"]["project"]))


SETUP_VERSION = 1  # bump when what provision() creates changes


def template_tag(admin_password):
    from importlib.metadata import version
    return {"keystone": version("keystone"), "setup": SETUP_VERSION,
            "admin_password": admin_password}


def template_ok(tdir, tag):
    try:
        with open(os.path.join(tdir, "template.json")) as f:
            return json.load(f) == tag and os.path.exists(
                os.path.join(tdir, "keystone.db"))
    except (OSError, ValueError):
        return False


def copy_state(src, dst):
    """keystone.db (through sqlite's backup API: the source may be in use)
    and the fernet and credential key repositories."""
    import sqlite3
    os.makedirs(dst, exist_ok=True)
    s = sqlite3.connect(os.path.join(src, "keystone.db"))
    t = sqlite3.connect(os.path.join(dst, "keystone.db"))
    with t:
        s.backup(t)
    s.close()
    t.close()
    for keys in ("fernet-keys", "credential-keys"):
        shutil.rmtree(os.path.join(dst, keys), ignore_errors=True)
        shutil.copytree(os.path.join(src, keys), os.path.join(dst, keys))


def save_template(d, tdir, tag):
    parent = os.path.dirname(os.path.abspath(tdir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".keystone-template-", dir=parent)
    try:
        copy_state(d, tmp)
        with open(os.path.join(tmp, "template.json"), "w") as f:
            json.dump(tag, f)
        shutil.rmtree(tdir, ignore_errors=True)
        os.rename(tmp, tdir)
        log("saved template %s" % tdir)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        log("could not save template %s: %s" % (tdir, e))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", required=True,
                    help="state directory (created; reused if present)")
    ap.add_argument("--port", type=int, default=0, help="0: a free port")
    ap.add_argument("--octavia-url", default="http://127.0.0.1:9876",
                    help="public endpoint of the load-balancer service")
    ap.add_argument("--admin-password", default="admin-secret")
    ap.add_argument("--workers", type=int, default=1,
                    help="gunicorn processes; with more than one, keystone's "
                    "(per-process) cache is off so that they agree")
    ap.add_argument("--threads", type=int, default=4,
                    help="threads per gunicorn process")
    ap.add_argument("--debug", action="store_true")
    ap.add_argument("--no-check", action="store_true",
                    help="skip logging every user in once after setup")
    ap.add_argument("--template",
                    default=os.environ.get("KEYSTONE_TEMPLATE_DIR"),
                    help="cache of a prepared database and keys: copied "
                    "into a fresh --dir instead of running keystone-manage; "
                    "written after the first successful setup "
                    "(default: $KEYSTONE_TEMPLATE_DIR, else none)")
    args = ap.parse_args()

    t0 = time.monotonic()
    d = os.path.abspath(args.dir)
    os.makedirs(d, exist_ok=True)
    port = args.port or free_port()
    base = "http://127.0.0.1:%d" % port
    conf = write_config(d, args.debug, cache=args.workers == 1)
    with open(os.path.join(d, "keystone_test_wsgi.py"), "w") as f:
        f.write(WSGI_WRAPPER)

    tag = template_tag(args.admin_password)
    state_file = os.path.join(d, "setup.json")
    reused = False
    try:
        with open(state_file) as f:
            reused = json.load(f) == tag
    except (OSError, ValueError):
        pass
    from_template = False
    if not reused and args.template and template_ok(args.template, tag):
        copy_state(args.template, d)
        from_template = True
    bootstrap = None
    if not reused and not from_template:
        for stale in ("keystone.db", "fernet-keys", "credential-keys"):
            path = os.path.join(d, stale)
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.unlink(path)
        db_sync = manage(conf, "db_sync")
        # What `keystone-manage fernet_setup` / `credential_setup` leave,
        # without two more processes importing keystone.
        make_key_repository(os.path.join(d, "fernet-keys"))
        make_key_repository(os.path.join(d, "credential-keys"))
        finish(db_sync)
        # gunicorn imports keystone while bootstrap fills the database.
        bootstrap = manage(
            conf, "bootstrap",
            "--bootstrap-password", args.admin_password,
            "--bootstrap-username", "admin",
            "--bootstrap-project-name", "admin",
            "--bootstrap-role-name", "admin",
            "--bootstrap-service-name", "keystone",
            "--bootstrap-region-id", REGION,
            "--bootstrap-admin-url", base + "/v3",
            "--bootstrap-public-url", base + "/v3",
            "--bootstrap-internal-url", base + "/v3")
    how = ("reused " + d if reused else "template " + args.template
           if from_template else "fresh")
    env = dict(os.environ)
    env.update(OS_KEYSTONE_CONFIG_DIR=d, OS_KEYSTONE_CONFIG_FILES="keystone.conf",
               HOME=d, PYTHONPATH=d + os.pathsep + env.get("PYTHONPATH", ""))
    env.pop("XDG_RUNTIME_DIR", None)
    logf = open(os.path.join(d, "keystone.log"), "ab")
    cmd = [sys.executable, "-m", "gunicorn",
           "--bind", "127.0.0.1:%d" % port,
           "--workers", str(args.workers),
           "--threads", str(args.threads),
           "--timeout", "120",
           "--graceful-timeout", "5",
           "--chdir", d,
           "--no-control-socket",
           "--preload",
           "--pid", os.path.join(d, "gunicorn.pid"),
           "--access-logfile", "-",
           "keystone_test_wsgi:application"]
    proc = subprocess.Popen(cmd, cwd=d, env=env, stdout=logf,
                            stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=die_with_parent)

    state = {"serving": False, "stop_at": None}

    def stop(*_):
        # No Popen.wait() here: the main thread may be inside one, and a
        # nested wait would deadlock on its lock.
        if state["stop_at"] is None:
            state["stop_at"] = time.monotonic()
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        if not state["serving"]:
            raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        if bootstrap:
            finish(bootstrap)
        t_manage = time.monotonic()
        wait_http(base + "/v3", proc, 60)
        t_up = time.monotonic()
        api = Api(base)
        roles, projects, users = provision(api, args.octavia_url,
                                           args.admin_password)
        if not args.no_check:
            self_check(api, users)
        with open(state_file, "w") as f:
            json.dump(tag, f)
        if args.template and not template_ok(args.template, tag):
            save_template(d, args.template, tag)
    except BaseException as e:
        if not isinstance(e, SystemExit):
            log("setup failed: %s (see %s/keystone.log)" % (e, d))
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        raise SystemExit(0 if state["stop_at"] else 1)
    t_done = time.monotonic()
    log("ready on %s in %.1fs (keystone-manage %.1fs, gunicorn up %.1fs "
        "later, provisioning and checks %.1fs; state: %s)" % (
            base, t_done - t0, t_manage - t0, t_up - t_manage,
            t_done - t_up, how))
    out = {
        "auth_url": base + "/v3",
        "region": REGION,
        "octavia_url": args.octavia_url,
        "pid": os.getpid(),
        "gunicorn_pid": proc.pid,
        "dir": d,
        "startup_seconds": round(t_done - t0, 2),
        "projects": projects,
        "roles": roles,
        "users": users,
        "admin": users["admin"],
        "service": users["octavia"],
    }
    state["serving"] = True
    print(json.dumps(out), flush=True)
    while True:
        try:
            rc = proc.wait(timeout=0.5)
            break
        except subprocess.TimeoutExpired:
            if state["stop_at"] and time.monotonic() - state["stop_at"] > 5:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    if state["stop_at"]:
        log("stopped")
        raise SystemExit(0)
    log("gunicorn exited with %s" % rc)
    raise SystemExit(1)


if __name__ == "__main__":
    main()
