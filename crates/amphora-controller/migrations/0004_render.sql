-- keepalived's VRRP settings of an ACTIVE_STANDBY load balancer, as
-- upstream's vrrp_group table: the instance name, the authentication keepalived
-- peers share, and the advertisement interval. Written when the load balancer's
-- amphorae are built; read when keepalived's configuration is rendered. It
-- goes with its load balancer (the purge of deleted load balancers).
CREATE TABLE vrrp_group (
    load_balancer_id TEXT PRIMARY KEY REFERENCES load_balancer (id) ON DELETE CASCADE,
    vrrp_group_name TEXT NOT NULL,
    vrrp_auth_type TEXT NOT NULL,
    vrrp_auth_pass TEXT NOT NULL,
    advert_int BIGINT NOT NULL
);
