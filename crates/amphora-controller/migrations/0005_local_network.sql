-- The local network driver's ports (src/local/network.rs): what Neutron's
-- port table is to upstream. One row per port; the UNIQUE constraints are
-- what keeps two objects from ever sharing an address or a MAC, across
-- concurrent flows and controller restarts alike. `owner` names what the
-- port is for (e.g. `vip:{load balancer}`), so a repeated allocation finds
-- the port made the first time; `device_id` is the compute instance the
-- port is attached to, if any.
CREATE TABLE local_port (
    id TEXT PRIMARY KEY,
    network_id TEXT NOT NULL,
    subnet_id TEXT NOT NULL,
    ip_address TEXT NOT NULL,
    mac_address TEXT NOT NULL,
    owner TEXT NOT NULL,
    device_id TEXT,
    created_at TEXT NOT NULL,
    CONSTRAINT local_port_address UNIQUE (subnet_id, ip_address),
    CONSTRAINT local_port_mac UNIQUE (mac_address),
    CONSTRAINT local_port_owner UNIQUE (owner)
);
CREATE INDEX local_port_device ON local_port (device_id);
