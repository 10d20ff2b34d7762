"""Builds upstream Octavia's database for the controller benchmarks.

Upstream's migrations fail on SQLite (and stop on PostgreSQL at revision
9bf4d21caaea, which drops a MySQL-named constraint), so the schema comes
from its models
(octavia.db.models, Base.metadata.create_all), with the lookup tables its
migrations would fill. Then it seeds the same rows the benchmark seeds into
our controller's database: N ACTIVE load balancers with VIPs and, per load
balancer, ALLOCATED amphorae (MASTER and BACKUP for 2).

    python controller_db.py --db FILE --lbs 5000 --amphorae-per-lb 2
    python controller_db.py --db postgresql+psycopg2://USER@HOST/DB ...

--db is a SQLite file or a SQLAlchemy URL. On a server engine the foreign
keys get the indexes MySQL (upstream's usual engine) makes implicitly.
"""

import argparse
import datetime
import time
import uuid

import sqlalchemy as sa

from octavia.common import constants
from octavia.db import base_models
from octavia.db import models  # noqa: F401  (registers the tables)

PROJECTS = 50
SUBNETS = 50
CHUNK = 5000

LOOKUPS = {
    "provisioning_status": set(constants.SUPPORTED_PROVISIONING_STATUSES)
    | {"ALLOCATED", "BOOTING", "READY", "DELETED", "ERROR", "PENDING_CREATE",
       "PENDING_UPDATE", "PENDING_DELETE", "FAILOVER_STOPPED"},
    "operating_status": set(constants.SUPPORTED_OPERATING_STATUSES),
    "protocol": set(constants.SUPPORTED_PROTOCOLS),
    "algorithm": set(constants.SUPPORTED_LB_ALGORITHMS),
    "amphora_roles": set(constants.SUPPORTED_AMPHORA_ROLES),
    "lb_topology": set(constants.SUPPORTED_LB_TOPOLOGIES),
    "session_persistence_type": set(constants.SUPPORTED_SP_TYPES),
    "health_monitor_type": set(constants.SUPPORTED_HEALTH_MONITOR_TYPES),
    "vrrp_auth_method": set(constants.SUPPORTED_VRRP_AUTH),
    "l7rule_type": set(constants.SUPPORTED_L7RULE_TYPES),
    "l7rule_compare_type": set(constants.SUPPORTED_L7RULE_COMPARE_TYPES),
    "l7policy_action": set(constants.SUPPORTED_L7POLICY_ACTIONS),
    "client_authentication_mode": set(constants.SUPPORTED_CLIENT_AUTH_MODES),
}


def index_foreign_keys(meta):
    """Adds the indexes MySQL makes for foreign keys where none leads with
    the key's columns."""
    for table in meta.sorted_tables:
        leading = [[c.name for c in table.primary_key.columns]]
        leading += [[c.name for c in i.columns] for i in table.indexes]
        leading += [[c.name for c in u.columns] for u in table.constraints
                    if isinstance(u, sa.UniqueConstraint)]
        for fk in table.foreign_key_constraints:
            cols = [c.name for c in fk.columns]
            if any(lead[:len(cols)] == cols for lead in leading):
                continue
            sa.Index(f"ix_bench_{table.name}_{'_'.join(cols)}",
                     *[table.c[c] for c in cols])
            leading.append(cols)


def uid():
    return str(uuid.uuid4())


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--lbs", type=int, default=5000)
    parser.add_argument("--amphorae-per-lb", type=int, default=2)
    args = parser.parse_args()

    started = time.monotonic()
    url = args.db if "://" in args.db else f"sqlite:///{args.db}"
    engine = sa.create_engine(url)
    meta = base_models.BASE.metadata
    if not url.startswith("sqlite"):
        index_foreign_keys(meta)
    meta.create_all(engine)
    tables = meta.tables
    with engine.begin() as conn:
        for table, names in LOOKUPS.items():
            if table in tables:
                conn.execute(tables[table].insert(),
                             [{"name": n} for n in sorted(names)])
        if "amphora_build_slots" in tables:
            conn.execute(tables["amphora_build_slots"].insert(),
                         [{"id": 1, "slots_used": 0}])

    projects = [uuid.uuid4().hex for _ in range(PROJECTS)]
    subnets = [(uid(), uid()) for _ in range(SUBNETS)]
    base = (datetime.datetime.utcnow().replace(microsecond=0)
            - datetime.timedelta(days=30))
    per_lb = args.amphorae_per_lb
    lbs, vips, amps = [], [], []
    for i in range(args.lbs):
        lb_id = uid()
        created = base + datetime.timedelta(seconds=i * 7)
        subnet, network = subnets[i % SUBNETS]
        vip = f"10.{(i // 62500) % 128}.{(i // 250) % 250}.{i % 250 + 1}"
        vip_port = uid()
        lbs.append({
            "id": lb_id, "project_id": projects[i % PROJECTS],
            "name": f"lb-{i}", "description": "benchmark load balancer",
            "provisioning_status": "ACTIVE", "operating_status": "ONLINE",
            "enabled": True,
            "topology": "ACTIVE_STANDBY" if per_lb == 2 else "SINGLE",
            "server_group_id": uid(), "provider": "amphora",
            "created_at": created,
            "updated_at": created + datetime.timedelta(seconds=40),
        })
        vips.append({
            "load_balancer_id": lb_id, "ip_address": vip, "port_id": vip_port,
            "subnet_id": subnet, "network_id": network,
            "octavia_owned": True, "vnic_type": "normal",
        })
        for a in range(per_lb):
            n = i * per_lb + a
            if per_lb == 1:
                role, priority = "STANDALONE", None
            else:
                role, priority = ("MASTER", 100) if a == 0 else ("BACKUP", 90)
            amps.append({
                "id": uid(), "load_balancer_id": lb_id, "compute_id": uid(),
                "lb_network_ip": f"192.168.{(n // 250) % 256}.{n % 250 + 2}",
                "vrrp_ip": f"10.{128 + (n // 65536) % 128}."
                           f"{(n // 256) % 256}.{n % 256}",
                "ha_ip": vip, "vrrp_port_id": uid(), "ha_port_id": vip_port,
                "cert_expiration": created + datetime.timedelta(days=730),
                "cert_busy": False, "role": role, "status": "ALLOCATED",
                "vrrp_interface": "eth1",
                "vrrp_id": 1 if priority else None, "vrrp_priority": priority,
                "cached_zone": "nova", "image_id": uid(),
                "compute_flavor": uid(),
                "created_at": created + datetime.timedelta(seconds=a),
                "updated_at": created + datetime.timedelta(seconds=35),
            })
    with engine.begin() as conn:
        for table, rows in (("load_balancer", lbs), ("vip", vips),
                            ("amphora", amps)):
            for start in range(0, len(rows), CHUNK):
                conn.execute(tables[table].insert(),
                             rows[start:start + CHUNK])
    print(f"seeded {len(lbs)} load balancers and {len(amps)} amphorae "
          f"in {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    main()
