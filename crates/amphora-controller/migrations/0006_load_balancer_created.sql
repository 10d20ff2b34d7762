-- The load balancer list is ordered by (created_at, id), as the amphora
-- list is: without this index each page sorted every load balancer (at
-- 50,000 on PostgreSQL a 1000-row page took ~70 ms; with it ~15 ms).
CREATE INDEX load_balancer_created ON load_balancer (created_at, id);
