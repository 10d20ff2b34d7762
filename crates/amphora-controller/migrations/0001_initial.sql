-- The controller's whole schema, written once for SQLite and PostgreSQL:
-- identifiers are UUID text, times are naive ISO-8601 UTC text (upstream's
-- rendering, and they sort as text), integers are BIGINT, JSON is TEXT.

CREATE TABLE load_balancer (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    name TEXT,
    description TEXT,
    provisioning_status TEXT NOT NULL,
    operating_status TEXT NOT NULL,
    enabled BOOLEAN NOT NULL,
    topology TEXT,
    server_group_id TEXT,
    provider TEXT NOT NULL,
    flavor_id TEXT,
    availability_zone TEXT,
    vip_address TEXT,
    vip_port_id TEXT,
    vip_subnet_id TEXT,
    vip_network_id TEXT,
    vip_qos_policy_id TEXT,
    tags TEXT NOT NULL DEFAULT '[]',
    created_at TEXT NOT NULL,
    updated_at TEXT
);
CREATE INDEX load_balancer_project ON load_balancer (project_id);

CREATE TABLE listener (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    load_balancer_id TEXT NOT NULL REFERENCES load_balancer (id),
    name TEXT,
    description TEXT,
    protocol TEXT NOT NULL,
    protocol_port BIGINT NOT NULL,
    connection_limit BIGINT NOT NULL,
    default_pool_id TEXT,
    enabled BOOLEAN NOT NULL,
    provisioning_status TEXT NOT NULL,
    operating_status TEXT NOT NULL,
    timeout_client_data BIGINT,
    timeout_member_connect BIGINT,
    timeout_member_data BIGINT,
    timeout_tcp_inspect BIGINT,
    insert_headers TEXT NOT NULL DEFAULT '{}',
    allowed_cidrs TEXT,
    default_tls_container_ref TEXT,
    sni_container_refs TEXT NOT NULL DEFAULT '[]',
    tags TEXT NOT NULL DEFAULT '[]',
    created_at TEXT NOT NULL,
    updated_at TEXT,
    UNIQUE (load_balancer_id, protocol_port, protocol)
);
CREATE INDEX listener_load_balancer ON listener (load_balancer_id);

CREATE TABLE pool (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    load_balancer_id TEXT NOT NULL REFERENCES load_balancer (id),
    name TEXT,
    description TEXT,
    protocol TEXT NOT NULL,
    lb_algorithm TEXT NOT NULL,
    session_persistence TEXT,
    enabled BOOLEAN NOT NULL,
    provisioning_status TEXT NOT NULL,
    operating_status TEXT NOT NULL,
    tls_enabled BOOLEAN NOT NULL DEFAULT FALSE,
    tags TEXT NOT NULL DEFAULT '[]',
    created_at TEXT NOT NULL,
    updated_at TEXT
);
CREATE INDEX pool_load_balancer ON pool (load_balancer_id);

CREATE TABLE member (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    pool_id TEXT NOT NULL REFERENCES pool (id),
    name TEXT,
    address TEXT NOT NULL,
    protocol_port BIGINT NOT NULL,
    weight BIGINT NOT NULL,
    backup BOOLEAN NOT NULL,
    subnet_id TEXT,
    monitor_address TEXT,
    monitor_port BIGINT,
    enabled BOOLEAN NOT NULL,
    provisioning_status TEXT NOT NULL,
    operating_status TEXT NOT NULL,
    tags TEXT NOT NULL DEFAULT '[]',
    created_at TEXT NOT NULL,
    updated_at TEXT,
    UNIQUE (pool_id, address, protocol_port)
);
CREATE INDEX member_pool ON member (pool_id);

CREATE TABLE health_monitor (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    pool_id TEXT NOT NULL UNIQUE REFERENCES pool (id),
    name TEXT,
    type TEXT NOT NULL,
    delay BIGINT NOT NULL,
    timeout BIGINT NOT NULL,
    max_retries BIGINT NOT NULL,
    max_retries_down BIGINT NOT NULL,
    http_method TEXT,
    url_path TEXT,
    expected_codes TEXT,
    http_version TEXT,
    domain_name TEXT,
    enabled BOOLEAN NOT NULL,
    provisioning_status TEXT NOT NULL,
    operating_status TEXT NOT NULL,
    tags TEXT NOT NULL DEFAULT '[]',
    created_at TEXT NOT NULL,
    updated_at TEXT
);

CREATE TABLE amphora (
    id TEXT PRIMARY KEY,
    load_balancer_id TEXT REFERENCES load_balancer (id),
    compute_id TEXT,
    lb_network_ip TEXT,
    vrrp_ip TEXT,
    ha_ip TEXT,
    vrrp_port_id TEXT,
    ha_port_id TEXT,
    cert_expiration TEXT,
    cert_busy BOOLEAN NOT NULL DEFAULT FALSE,
    role TEXT,
    status TEXT NOT NULL,
    vrrp_interface TEXT,
    vrrp_id BIGINT,
    vrrp_priority BIGINT,
    cached_zone TEXT,
    image_id TEXT,
    compute_flavor TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT
);
CREATE INDEX amphora_load_balancer ON amphora (load_balancer_id);
CREATE INDEX amphora_status ON amphora (status);
CREATE INDEX amphora_created ON amphora (created_at, id);

-- last_update is milliseconds since the epoch, indexed: the stale scan is a
-- range read, never a full count.
CREATE TABLE amphora_health (
    amphora_id TEXT PRIMARY KEY,
    last_update BIGINT NOT NULL,
    busy BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX amphora_health_last_update ON amphora_health (last_update);

CREATE TABLE listener_statistics (
    listener_id TEXT NOT NULL,
    amphora_id TEXT NOT NULL,
    bytes_in BIGINT NOT NULL DEFAULT 0,
    bytes_out BIGINT NOT NULL DEFAULT 0,
    active_connections BIGINT NOT NULL DEFAULT 0,
    total_connections BIGINT NOT NULL DEFAULT 0,
    request_errors BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (listener_id, amphora_id)
);
CREATE INDEX listener_statistics_amphora ON listener_statistics (amphora_id);

-- Work for the worker role. A job runs a flow: an ordered list of steps;
-- `step` is the index of the next step to execute (or, when reverting, the
-- number of steps still to revert). A worker owns a job while its lease is
-- in the future; after that any worker may take it over.
CREATE TABLE job (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    target_id TEXT NOT NULL,
    payload TEXT NOT NULL DEFAULT '{}',
    state TEXT NOT NULL,
    step BIGINT NOT NULL DEFAULT 0,
    reverting BOOLEAN NOT NULL DEFAULT FALSE,
    owner TEXT,
    lease_until BIGINT NOT NULL DEFAULT 0,
    attempts BIGINT NOT NULL DEFAULT 0,
    error TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT
);
CREATE INDEX job_runnable ON job (state, lease_until);
