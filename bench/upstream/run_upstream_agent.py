#!/usr/bin/env python3
"""Run upstream OpenStack Octavia's amphora agent in the foreground here.

Usage:
    "$(scripts/upstream-venv.sh)" bench/upstream/run_upstream_agent.py --config-file PATH

This calls upstream's own entry point, octavia.cmd.agent.main(), unchanged:
prepare_service(), the guru-meditation report hook, the multiprocessing
Manager queue, the HM_sender process (health_daemon.run_sender), the Flask
app built by api_server.server.Server, and gunicorn through
octavia.cmd.agent.AmphoraAgent with upstream's options (1 sync worker,
certfile = agent_server_cert, ca_certs = agent_server_ca, CERT_REQUIRED,
preload_app, timeout = agent_request_read_timeout, loglevel debug).

Only process set-up is adapted, for a machine without systemd or syslog:

* oslo.log: use_syslog/use_journal forced off, log to stderr (the config
  written by the controller says use_syslog = True; there is no /dev/log).
* gunicorn: errorlog '-' (stderr) and accesslog '-' (stdout) instead of
  /var/log/amphora-agent.log, and syslog off (upstream sends to
  unix:///run/rsyslog/octavia/log, which does not exist here).
* sys.argv[0] is set to the venv's bin/amphora-agent, the console
  script an amphora runs, so oslo.config's `prog` is the same as there.
* PATH gets this directory's shim/ prepended, so the `systemctl` that
  upstream runs for enable/start/reload/stop is shim/systemctl.
* The directories upstream hard-codes are created, the
  haproxy user/group include file is created if missing, and the
  amphora-haproxy network namespace is created with lo up (on an amphora
  the amphora-netns unit and amphora-interface do that at boot).
* Every process forked by this one (gunicorn worker, HM_sender, the
  multiprocessing manager) gets PR_SET_PDEATHSIG=SIGTERM, so nothing is left
  behind even if the launcher is SIGKILLed. A SIGTERM to the launcher (the
  gunicorn master) is the normal way to stop everything.
* The launcher is a child subreaper (PR_SET_CHILD_SUBREAPER), so the haproxy
  daemons the shim starts are reaped as soon as they exit, as systemd would
  (see _set_process_flags).  They are not stopped with the agent, as on an
  amphora.

Request handling code is not touched.
"""

import ctypes
import os
import signal
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SHIM_DIR = os.path.join(HERE, 'shim')

USER_GROUP_CFG_DEFAULT = "global\n    group nogroup\n"
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


def _log(msg):
    sys.stderr.write(f"run_upstream_agent: {msg}\n")
    sys.stderr.flush()


def _set_process_flags():
    """Reap orphaned daemons; children forked with os.fork() die with us.

    haproxy -D started by shim/systemctl is orphaned by design.  Here PID 1
    reaps orphans only every few seconds, so a stopped haproxy master stays
    a zombie and upstream (which tests os.path.exists('/proc/<pid>')) keeps
    seeing it as running.  On an amphora systemd is its parent and reaps it
    at once; making this process (the gunicorn master, whose arbiter reaps
    any child with waitpid(-1)) a child subreaper gives the same result.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    forking = [0]

    def _before_fork():
        forking[0] = os.getpid()

    def _after_fork_in_child():
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        # The parent may have died between fork() and prctl().
        if os.getppid() != forking[0]:
            os._exit(1)

    os.register_at_fork(before=_before_fork,
                        after_in_child=_after_fork_in_child)


def _ensure_netns(nsname):
    if not os.path.exists(os.path.join('/run/netns', nsname)):
        subprocess.run(['ip', 'netns', 'add', nsname], check=False)
    subprocess.run(['ip', 'netns', 'exec', nsname, 'ip', 'link', 'set',
                    'lo', 'up'], check=False)


def _prepare_host(conf):
    """Create what an amphora image ships and this machine lacks."""
    from octavia.common import constants as consts

    dirs = ['/etc/octavia', consts.AMP_NET_DIR_TEMPLATE,
            os.path.dirname(consts.HAPROXY_USER_GROUP_CFG),
            consts.SYSTEMD_DIR, '/etc/systemd/system', '/etc/netns',
            conf.haproxy_amphora.base_path,
            conf.haproxy_amphora.base_cert_dir]
    if conf.amphora_agent.agent_server_network_dir:
        dirs.append(conf.amphora_agent.agent_server_network_dir)
    for d in dirs:
        if d:
            os.makedirs(d, exist_ok=True)
    if not os.path.exists(consts.HAPROXY_USER_GROUP_CFG):
        with open(consts.HAPROXY_USER_GROUP_CFG, 'w', encoding='utf-8') as f:
            f.write(USER_GROUP_CFG_DEFAULT)
    _ensure_netns(consts.AMPHORA_NAMESPACE)


def _patch_upstream():
    from oslo_config import cfg

    from octavia.cmd import agent
    from octavia.common import config
    from octavia.common import service

    conf = cfg.CONF

    # 1. Logging: called by service.prepare_service() right after the
    #    config files are parsed.
    orig_setup_logging = config.setup_logging

    def setup_logging(c):
        c.set_override('use_syslog', False)
        c.set_override('use_journal', False)
        c.set_override('log_file', None)
        c.set_override('log_dir', None)
        c.set_override('use_stderr', True)
        orig_setup_logging(c)

    config.setup_logging = setup_logging

    # 2. Host preparation once the configuration is known.
    orig_prepare_service = service.prepare_service

    def prepare_service(argv=None):
        orig_prepare_service(argv)
        _prepare_host(conf)

    service.prepare_service = prepare_service

    # 3. gunicorn: stderr logging, no syslog socket.
    orig_load_config = agent.AmphoraAgent.load_config

    def load_config(self):
        self.options['accesslog'] = '-'
        self.options['errorlog'] = '-'
        self.options['syslog'] = False
        self.options.pop('syslog_addr', None)
        self.options.pop('syslog_facility', None)
        orig_load_config(self)

    agent.AmphoraAgent.load_config = load_config
    return agent


def main():
    if os.geteuid() != 0:
        _log("must run as root (upstream writes /var/lib/octavia, "
             "/usr/lib/systemd/system, runs ip netns)")
        return 1
    try:
        import pyroute2  # noqa: F401  (upstream imports it; not a dep)
    except ImportError:
        _log("pyroute2 is missing from the venv; run "
             "pip install pyroute2 (scripts/upstream-venv.sh does)")
        return 1

    os.environ['PATH'] = SHIM_DIR + os.pathsep + os.environ.get(
        'PATH', '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin')

    # Present ourselves as the console script, as on an amphora: oslo.config
    # derives `prog` from argv[0], and PUT /1.0/config writes to
    # find_config_files(project='octavia', prog=prog)[0], i.e.
    # /etc/octavia/amphora-agent.conf.
    sys.argv[0] = os.path.join(os.path.dirname(sys.executable),
                               'amphora-agent')
    agent = _patch_upstream()
    _set_process_flags()
    # upstream main() reads sys.argv itself (prepare_service(sys.argv)).
    return agent.main()


if __name__ == '__main__':
    sys.exit(main())
