//! The noop network driver's VIP allocation: unique among live load
//! balancers of 203.0.113.0/24, whatever else the table holds.

mod common;

use amphora_controller::db::Db;
use amphora_controller::worker::drivers::{Drivers, VipRequest};

fn request() -> VipRequest {
    VipRequest {
        load_balancer_id: uuid::Uuid::new_v4().to_string(),
        address: None,
        port_id: None,
        subnet_id: None,
        network_id: None,
    }
}

async fn insert_lb(db: &Db, vip: &str, status: &str) {
    sqlx::query(
        "INSERT INTO load_balancer (id, project_id, provisioning_status, operating_status, enabled, provider, \
         vip_address, created_at) VALUES ($1, 'p', $2, 'ONLINE', TRUE, 'amphora', $3, '2026-01-01T00:00:00')",
    )
    .bind(uuid::Uuid::new_v4().to_string())
    .bind(status)
    .bind(vip)
    .execute(&db.pool)
    .await
    .expect("insert load balancer");
}

#[tokio::test]
async fn noop_vip_is_the_one_free_address_of_its_subnet_among_live_load_balancers() {
    for tdb in common::databases().await {
        let db = Db::open(&tdb.url).await.expect("open");
        let config = common::config(&tdb.url);
        // Every host address of 203.0.113.0/24 but .77 is live; .77 is
        // held only by a DELETED one; other networks (with the same last
        // octets, and a look-alike prefix) are full.
        for h in 2..=254u8 {
            if h != 77 {
                insert_lb(&db, &format!("203.0.113.{h}"), "ACTIVE").await;
            }
            insert_lb(&db, &format!("10.203.0.{h}"), "ACTIVE").await;
        }
        insert_lb(&db, "203.0.113.77", "DELETED").await;
        insert_lb(&db, "203.0.1130.77", "ACTIVE").await;
        let drivers = Drivers::noop(&db, &config);
        let vip = drivers.network.allocate_vip(&request()).await.expect("the free address");
        assert_eq!(vip.address, "203.0.113.77", "{}", tdb.name);
        // Reserved in the driver until the database shows it.
        let err = drivers.network.allocate_vip(&request()).await.expect_err("subnet full");
        assert!(format!("{err:#}").contains("no free address left in 203.0.113.0/24"), "{}: {err:#}", tdb.name);
        db.pool.close().await;
    }
}
