-- Columns the load-balancer API answers with that 0001 does not hold.
-- JSON lists stay TEXT (NULL where upstream answers null).

ALTER TABLE load_balancer ADD COLUMN vip_vnic_type TEXT NOT NULL DEFAULT 'normal';
ALTER TABLE load_balancer ADD COLUMN vip_sg_ids TEXT;

ALTER TABLE listener ADD COLUMN client_ca_tls_container_ref TEXT;
ALTER TABLE listener ADD COLUMN client_authentication TEXT NOT NULL DEFAULT 'NONE';
ALTER TABLE listener ADD COLUMN client_crl_container_ref TEXT;
ALTER TABLE listener ADD COLUMN tls_ciphers TEXT;
ALTER TABLE listener ADD COLUMN tls_versions TEXT;
ALTER TABLE listener ADD COLUMN alpn_protocols TEXT;
ALTER TABLE listener ADD COLUMN hsts_max_age BIGINT;
ALTER TABLE listener ADD COLUMN hsts_include_subdomains BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE listener ADD COLUMN hsts_preload BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX listener_default_pool ON listener (default_pool_id);

ALTER TABLE pool ADD COLUMN tls_container_ref TEXT;
ALTER TABLE pool ADD COLUMN ca_tls_container_ref TEXT;
ALTER TABLE pool ADD COLUMN crl_container_ref TEXT;
ALTER TABLE pool ADD COLUMN tls_ciphers TEXT;
ALTER TABLE pool ADD COLUMN tls_versions TEXT;
ALTER TABLE pool ADD COLUMN alpn_protocols TEXT;

ALTER TABLE member ADD COLUMN vnic_type TEXT NOT NULL DEFAULT 'normal';
