"""Builds upstream Octavia's database for the heartbeat ingest benchmark.

The fleet comes as JSON on stdin, with the ids the benchmark's generator
puts in its heartbeats (the same ids it seeded into our controller's
database):

    {"project": "...", "amphorae": [{"amphora": "...", "compute": "...",
      "lb": "...", "listener": "...", "pool": "...", "vip": "10.0.0.1",
      "lb_network_ip": "172.16.0.2",
      "members": [{"id": "...", "address": "192.168.0.1"}]}]}

Each amphora is STANDALONE and ALLOCATED in a SINGLE, ACTIVE/ONLINE load
balancer with one enabled HTTP listener (port 80) whose default pool has
the members, all ONLINE, so upstream's UpdateHealthDb runs its whole path
(listener count matches, every status compared) and, in steady state,
changes no status: it writes amphora_health and the stats updater upserts
listener_statistics.

The schema comes from upstream's models (Base.metadata.create_all), with
the lookup tables its migrations fill, as controller_db.py does: upstream's
migrations stop on PostgreSQL (revision 9bf4d21caaea drops a MySQL-named
"PRIMARY" constraint). MySQL, upstream's usual engine, indexes every
foreign key column implicitly; PostgreSQL does not, so those indexes are
created here, or upstream's health query would scan whole tables.

    python ingest_db.py --db postgresql+psycopg2://USER@HOST:PORT/DB <FLEET
"""

import argparse
import datetime
import json
import sys
import time

import sqlalchemy as sa

from octavia.db import base_models
from octavia.db import models  # noqa: F401  (registers the tables)

from controller_db import LOOKUPS, index_foreign_keys

CHUNK = 5000
BATCH = 1000


def insert(conn, table, rows):
    for start in range(0, len(rows), CHUNK):
        conn.execute(table.insert(), rows[start:start + CHUNK])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True,
                        help="SQLAlchemy URL of an empty database")
    args = parser.parse_args()

    fleet = json.load(sys.stdin)
    started = time.monotonic()
    engine = sa.create_engine(args.db)
    meta = base_models.BASE.metadata
    index_foreign_keys(meta)
    meta.create_all(engine)
    tables = meta.tables
    now = datetime.datetime.utcnow().replace(microsecond=0)
    project = fleet["project"]
    with engine.begin() as conn:
        for table, names in LOOKUPS.items():
            if table in tables:
                conn.execute(tables[table].insert(),
                             [{"name": n} for n in sorted(names)])
        if "amphora_build_slots" in tables:
            conn.execute(tables["amphora_build_slots"].insert(),
                         [{"id": 1, "slots_used": 0}])

    # Rows go in per table, in the order foreign keys need, a batch of
    # amphorae at a time, so a large fleet is never all in memory as rows.
    order = ("load_balancer", "vip", "pool", "listener", "member", "amphora")
    rows = {table: [] for table in order}
    amphorae = members = 0
    with engine.begin() as conn:
        for i, a in enumerate(fleet["amphorae"]):
            common = {"project_id": project, "provisioning_status": "ACTIVE",
                      "operating_status": "ONLINE", "enabled": True,
                      "created_at": now, "updated_at": now}
            rows["load_balancer"].append(dict(
                common, id=a["lb"], name=f"lb-{i}", topology="SINGLE",
                provider="amphora"))
            rows["vip"].append({
                "load_balancer_id": a["lb"], "ip_address": a["vip"],
                "port_id": a["vip_port"], "subnet_id": a["subnet"],
                "network_id": a["network"], "octavia_owned": True,
                "vnic_type": "normal"})
            rows["pool"].append(dict(
                common, id=a["pool"], load_balancer_id=a["lb"],
                protocol="HTTP", lb_algorithm="ROUND_ROBIN"))
            rows["listener"].append(dict(
                common, id=a["listener"], load_balancer_id=a["lb"],
                protocol="HTTP", protocol_port=80, connection_limit=-1,
                default_pool_id=a["pool"]))
            for m in a["members"]:
                rows["member"].append(dict(
                    common, id=m["id"], pool_id=a["pool"],
                    ip_address=m["address"], protocol_port=8080, weight=1,
                    backup=False))
            rows["amphora"].append({
                "id": a["amphora"], "load_balancer_id": a["lb"],
                "compute_id": a["compute"],
                "lb_network_ip": a["lb_network_ip"], "ha_ip": a["vip"],
                "cert_busy": False, "role": "STANDALONE",
                "status": "ALLOCATED", "created_at": now, "updated_at": now})
            last = i + 1 == len(fleet["amphorae"])
            if len(rows["amphora"]) == BATCH or last:
                amphorae += len(rows["amphora"])
                members += len(rows["member"])
                for table in order:
                    insert(conn, tables[table], rows[table])
                    rows[table] = []
    print(f"seeded {amphorae} amphorae and {members} members "
          f"in {time.monotonic() - started:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
