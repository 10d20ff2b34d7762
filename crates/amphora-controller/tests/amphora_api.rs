//! The amphora admin API against upstream's behaviour (octavia's
//! tests/functional/api/v2/test_amphora.py, in spirit), on every database.

mod common;

use std::sync::Arc;

use amphora_controller::api::error::ApiResult;
use amphora_controller::api::{self, Authenticate};
use amphora_controller::auth::Context;
use axum::http::{HeaderMap, StatusCode};
use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use sqlx::Row;

const LB: &str = "11111111-0000-4000-8000-000000000001";
const LB_PENDING: &str = "11111111-0000-4000-8000-000000000002";
const AMP1: &str = "22222222-0000-4000-8000-000000000001";
const AMP2: &str = "22222222-0000-4000-8000-000000000002";
const AMP3: &str = "22222222-0000-4000-8000-000000000003";
const SPARE: &str = "22222222-0000-4000-8000-000000000004";
const GONE: &str = "22222222-0000-4000-8000-000000000005";
const MISSING: &str = "22222222-0000-4000-8000-0000000000ff";

/// Two load balancers (one ACTIVE in project p1, one PENDING_UPDATE in p2),
/// their amphorae, a READY spare and a DELETED one.
async fn seed(api: &common::TestApi) {
    api.sql(&format!(
        "INSERT INTO load_balancer (id, project_id, provisioning_status, operating_status, enabled, provider, created_at) VALUES \
         ('{LB}', 'p1', 'ACTIVE', 'ONLINE', TRUE, 'amphora', '2026-01-01T00:00:00'), \
         ('{LB_PENDING}', 'p2', 'PENDING_UPDATE', 'ONLINE', TRUE, 'amphora', '2026-01-01T00:00:00')"
    ))
    .await;
    api.sql(&format!(
        "INSERT INTO amphora (id, load_balancer_id, compute_id, lb_network_ip, vrrp_ip, ha_ip, role, status, \
         vrrp_priority, cert_expiration, cert_busy, created_at) VALUES \
         ('{AMP1}', '{LB}', 'c1', '192.0.2.10', '198.51.100.10', '203.0.113.5', 'MASTER', 'ALLOCATED', 100, '2028-01-01T00:00:00', FALSE, '2026-01-01T00:00:01'), \
         ('{AMP2}', '{LB}', 'c2', '192.0.2.11', '198.51.100.11', '203.0.113.5', 'BACKUP', 'ALLOCATED', 90, '2028-01-01T00:00:00', TRUE, '2026-01-01T00:00:02'), \
         ('{AMP3}', '{LB_PENDING}', 'c3', '192.0.2.12', NULL, NULL, 'STANDALONE', 'ALLOCATED', NULL, NULL, FALSE, '2026-01-01T00:00:03'), \
         ('{SPARE}', NULL, 'c4', '192.0.2.13', NULL, NULL, NULL, 'READY', NULL, NULL, FALSE, '2026-01-01T00:00:04'), \
         ('{GONE}', NULL, 'c5', NULL, NULL, NULL, NULL, 'DELETED', NULL, NULL, FALSE, '2026-01-01T00:00:05')"
    ))
    .await;
}

fn ids(body: &Value) -> Vec<String> {
    body["amphorae"].as_array().expect("amphorae").iter().map(|a| a["id"].as_str().expect("id").to_owned()).collect()
}

async fn jobs(api: &common::TestApi) -> Vec<(String, String)> {
    sqlx::query("SELECT kind, target_id FROM job ORDER BY created_at")
        .fetch_all(&api.state.db.pool)
        .await
        .expect("jobs")
        .iter()
        .map(|r| (r.get::<String, _>(0), r.get::<String, _>(1)))
        .collect()
}

#[tokio::test]
async fn list_shows_the_twenty_fields_as_upstream_renders_them_and_hides_deleted() {
    for db in common::databases().await {
        let api = common::api(&db).await;
        seed(&api).await;
        let (status, body) = api.call("GET", "/v2/octavia/amphorae", None).await;
        assert_eq!(status, StatusCode::OK, "{}", db.name);
        assert_eq!(ids(&body), vec![AMP1, AMP2, AMP3, SPARE]);
        assert_eq!(body["amphorae_links"], json!([]));
        let amp = &body["amphorae"][1];
        let mut keys: Vec<&str> = amp.as_object().expect("object").keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            vec![
                "cached_zone",
                "cert_busy",
                "cert_expiration",
                "compute_flavor",
                "compute_id",
                "created_at",
                "ha_ip",
                "ha_port_id",
                "id",
                "image_id",
                "lb_network_ip",
                "loadbalancer_id",
                "role",
                "status",
                "updated_at",
                "vrrp_id",
                "vrrp_interface",
                "vrrp_ip",
                "vrrp_port_id",
                "vrrp_priority",
            ]
        );
        assert_eq!(amp["cert_busy"], json!(true));
        assert_eq!(amp["loadbalancer_id"], LB);
        assert_eq!(amp["vrrp_priority"], json!(90));
        assert_eq!(amp["created_at"], "2026-01-01T00:00:02");
        assert_eq!(amp["cert_expiration"], "2028-01-01T00:00:00");
        assert_eq!(amp["updated_at"], Value::Null);
    }
}

#[tokio::test]
async fn each_listed_row_is_the_shown_amphora_with_and_without_fields() {
    // The engine renders list rows while show decodes them in the
    // controller: every value (nulls, booleans, numbers, times) agrees.
    for db in common::databases().await {
        let api = common::api(&db).await;
        seed(&api).await;
        for fields in ["", "?fields=id&fields=cert_busy&fields=vrrp_priority&fields=updated_at"] {
            let (_, list) = api.call("GET", &format!("/v2/octavia/amphorae{fields}"), None).await;
            let rows = list["amphorae"].as_array().expect("amphorae");
            assert_eq!(rows.len(), 4, "{}", db.name);
            for row in rows {
                let id = row["id"].as_str().expect("id");
                let (status, shown) = api.call("GET", &format!("/v2/octavia/amphorae/{id}{fields}"), None).await;
                assert_eq!(status, StatusCode::OK);
                assert_eq!(row, &shown["amphora"], "{}: {id}{fields}", db.name);
            }
        }
    }
}

#[tokio::test]
async fn filters_translate_names_and_reach_the_project_through_the_load_balancer() {
    for db in common::databases().await {
        let api = common::api(&db).await;
        seed(&api).await;
        let get = |q: String| {
            let api = &api;
            async move { api.call("GET", &format!("/v2/octavia/amphorae?{q}"), None).await }
        };
        assert_eq!(ids(&get(format!("loadbalancer_id={LB}")).await.1), vec![AMP1, AMP2]);
        assert_eq!(ids(&get(format!("load_balancer_id={LB_PENDING}")).await.1), vec![AMP3]);
        assert_eq!(ids(&get("project_id=p2".into()).await.1), vec![AMP3]);
        assert_eq!(ids(&get("role=BACKUP".into()).await.1), vec![AMP2]);
        assert_eq!(ids(&get("status=READY".into()).await.1), vec![SPARE]);
        assert_eq!(ids(&get("cert_busy=true".into()).await.1), vec![AMP2]);
        assert_eq!(ids(&get("cert_busy=0".into()).await.1), vec![AMP1, AMP3, SPARE]);
        assert_eq!(ids(&get("vrrp_priority=100".into()).await.1), vec![AMP1]);
        assert_eq!(ids(&get("compute_id=c3%27%20OR%20%271%27%3D%271".into()).await.1), Vec::<String>::new());
        let (status, body) = get("colour=blue".into()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["faultstring"], "One or more arguments are either duplicate or invalid");
        let (status, _) = get("vrrp_priority=high".into()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
}

#[tokio::test]
async fn sorting_and_its_errors() {
    for db in common::databases().await {
        let api = common::api(&db).await;
        seed(&api).await;
        let (_, body) = api.call("GET", "/v2/octavia/amphorae?sort=created_at:desc", None).await;
        assert_eq!(ids(&body), vec![SPARE, AMP3, AMP2, AMP1]);
        let (_, body) = api.call("GET", "/v2/octavia/amphorae?sort_key=role,id&sort_dir=desc,asc", None).await;
        // NULL sorts as '' (upstream coalesces), so the spare comes last.
        assert_eq!(ids(&body), vec![AMP3, AMP1, AMP2, SPARE]);
        let (status, body) = api.call("GET", "/v2/octavia/amphorae?sort=nothing", None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["faultstring"], "Supplied sort key 'nothing' is not valid.");
        let (status, body) = api.call("GET", "/v2/octavia/amphorae?sort=id:sideways", None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["faultstring"], "Supplied sort direction 'sideways' is not valid.");
    }
}

#[tokio::test]
async fn pages_link_both_ways_keep_filters_and_page_reverse_returns_the_previous_page() {
    for db in common::databases().await {
        let api = common::api(&db).await;
        seed(&api).await;
        let (_, first) = api.call("GET", "/v2/octavia/amphorae?limit=2&role=MASTER&role=BACKUP", None).await;
        // Repeated filter keys: both apply (AND), so nothing matches.
        assert_eq!(ids(&first), Vec::<String>::new());

        let (_, first) = api.call("GET", "/v2/octavia/amphorae?limit=1&sort=created_at:asc", None).await;
        assert_eq!(ids(&first), vec![AMP1]);
        let links = first["amphorae_links"].as_array().expect("links");
        assert_eq!(links.len(), 1);
        assert_eq!(links[0]["rel"], "next");
        let next = links[0]["href"].as_str().expect("href");
        assert_eq!(next, format!("http://ctl.example/v2/octavia/amphorae?limit=1&sort=created_at%3Aasc&marker={AMP1}"));

        let (_, middle) =
            api.call("GET", &format!("/v2/octavia/amphorae?limit=1&sort=created_at:asc&marker={AMP1}"), None).await;
        assert_eq!(ids(&middle), vec![AMP2]);
        let rels: Vec<&str> = middle["amphorae_links"]
            .as_array()
            .expect("links")
            .iter()
            .map(|l| l["rel"].as_str().expect("rel"))
            .collect();
        assert_eq!(rels, vec!["previous", "next"]);

        let (_, last) =
            api.call("GET", &format!("/v2/octavia/amphorae?limit=5&marker={AMP2}&status=ALLOCATED"), None).await;
        assert_eq!(ids(&last), vec![AMP3]);
        let links = last["amphorae_links"].as_array().expect("links");
        assert_eq!(links.len(), 1);
        assert_eq!(links[0]["rel"], "previous");
        assert!(links[0]["href"].as_str().expect("href").contains("status=ALLOCATED"), "{links:?}");

        // The page before SPARE holds the two nearest rows, in order.
        let (_, prev) =
            api.call("GET", &format!("/v2/octavia/amphorae?limit=2&marker={SPARE}&page_reverse=True"), None).await;
        assert_eq!(ids(&prev), vec![AMP2, AMP3]);
    }
}

#[tokio::test]
async fn limits_and_markers_are_checked() {
    for db in common::databases().await {
        let mut config = common::config(&db.url);
        config.api.pagination_max_limit = 2;
        let api = common::api_with(&db, config).await;
        seed(&api).await;
        let (_, body) = api.call("GET", "/v2/octavia/amphorae?limit=100", None).await;
        assert_eq!(ids(&body).len(), 2, "clipped at pagination_max_limit");
        let (_, body) = api.call("GET", "/v2/octavia/amphorae", None).await;
        assert_eq!(ids(&body).len(), 2, "default page is pagination_max_limit");
        let (_, body) = api.call("GET", "/v2/octavia/amphorae?limit=-1", None).await;
        assert_eq!(ids(&body).len(), 4, "a limit below 1 means none");
        let (status, body) = api.call("GET", "/v2/octavia/amphorae?limit=lots", None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["faultstring"], "Supplied pagination limit 'lots' is not valid.");
        let (status, _) = api.call("GET", "/v2/octavia/amphorae?limit=99999999999999999999999", None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, body) = api.call("GET", &format!("/v2/octavia/amphorae?marker={MISSING}"), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["faultstring"], format!("Supplied pagination marker '{MISSING}' is not valid."));
        // A deleted row is still a valid marker, as upstream.
        let (status, _) = api.call("GET", &format!("/v2/octavia/amphorae?marker={GONE}"), None).await;
        assert_eq!(status, StatusCode::OK);
    }
}

#[tokio::test]
async fn fields_selects_attributes_on_list_and_show() {
    for db in common::databases().await {
        let api = common::api(&db).await;
        seed(&api).await;
        let (_, body) = api.call("GET", "/v2/octavia/amphorae?fields=id&fields=role&status=READY", None).await;
        assert_eq!(body["amphorae"], json!([{"id": SPARE, "role": null}]));
        let (_, body) = api.call("GET", &format!("/v2/octavia/amphorae/{AMP1}?fields=status"), None).await;
        assert_eq!(body, json!({"amphora": {"status": "ALLOCATED"}}));
    }
}

#[tokio::test]
async fn show_answers_404_with_upstreams_text_for_missing_deleted_and_malformed_ids() {
    for db in common::databases().await {
        let api = common::api(&db).await;
        seed(&api).await;
        let (status, body) = api.call("GET", &format!("/v2/octavia/amphorae/{AMP1}"), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["amphora"]["id"], AMP1);
        for id in [MISSING, GONE, "not-a-uuid", "..%2F..%2Fetc"] {
            let (status, body) = api.call("GET", &format!("/v2/octavia/amphorae/{id}"), None).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{id}");
            assert_eq!(body["faultcode"], "Client");
        }
        let (_, body) = api.call("GET", &format!("/v2/octavia/amphorae/{MISSING}"), None).await;
        assert_eq!(body["faultstring"], format!("Amphora {MISSING} not found."));
        let (status, _) = api.call("PUT", &format!("/v2/octavia/amphorae/{AMP1}/bogus"), None).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    }
}

#[tokio::test]
async fn failover_needs_an_active_load_balancer_and_queues_the_job_with_it() {
    for db in common::databases().await {
        let api = common::api(&db).await;
        seed(&api).await;
        let (status, body) = api.call("PUT", &format!("/v2/octavia/amphorae/{AMP3}/failover"), None).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(body["faultstring"], format!("Load Balancer {LB_PENDING} is immutable and cannot be updated."));
        let (status, _) = api.call("PUT", &format!("/v2/octavia/amphorae/{MISSING}/failover"), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = api.call("PUT", &format!("/v2/octavia/amphorae/{GONE}/failover"), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(jobs(&api).await.is_empty(), "refused requests queue nothing");

        let (status, body) = api.call("PUT", &format!("/v2/octavia/amphorae/{AMP1}/failover"), None).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        assert_eq!(body, Value::Null);
        let lb: String = sqlx::query(&format!("SELECT provisioning_status FROM load_balancer WHERE id = '{LB}'"))
            .fetch_one(&api.state.db.pool)
            .await
            .expect("lb")
            .get(0);
        assert_eq!(lb, "PENDING_UPDATE");
        // The load balancer is now PENDING: a second failover is refused.
        let (status, _) = api.call("PUT", &format!("/v2/octavia/amphorae/{AMP2}/failover"), None).await;
        assert_eq!(status, StatusCode::CONFLICT);
        // A spare has no load balancer: failing it over is accepted, not a 500.
        let (status, _) = api.call("PUT", &format!("/v2/octavia/amphorae/{SPARE}/failover"), None).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        assert_eq!(
            jobs(&api).await,
            vec![("failover_amphora".to_owned(), AMP1.to_owned()), ("failover_amphora".to_owned(), SPARE.to_owned())]
        );
    }
}

#[tokio::test]
async fn delete_takes_only_ready_or_error_amphorae() {
    for db in common::databases().await {
        let api = common::api(&db).await;
        seed(&api).await;
        let (status, body) = api.call("DELETE", &format!("/v2/octavia/amphorae/{AMP1}"), None).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(body["faultstring"], format!("amphora {AMP1} is immutable and cannot be updated."));
        let (status, _) = api.call("DELETE", &format!("/v2/octavia/amphorae/{GONE}"), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, body) = api.call("DELETE", &format!("/v2/octavia/amphorae/{SPARE}"), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(body, Value::Null);
        let (_, body) = api.call("GET", &format!("/v2/octavia/amphorae/{SPARE}"), None).await;
        assert_eq!(body["amphora"]["status"], "PENDING_DELETE");
        let (status, _) = api.call("DELETE", &format!("/v2/octavia/amphorae/{SPARE}"), None).await;
        assert_eq!(status, StatusCode::CONFLICT, "already pending");
        assert_eq!(jobs(&api).await, vec![("delete_amphora".to_owned(), SPARE.to_owned())]);
    }
}

#[tokio::test]
async fn configure_queues_an_agent_configuration_update() {
    for db in common::databases().await {
        let api = common::api(&db).await;
        seed(&api).await;
        let (status, _) = api.call("PUT", &format!("/v2/octavia/amphorae/{MISSING}/config"), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, body) = api.call("PUT", &format!("/v2/octavia/amphorae/{AMP3}/config"), None).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        assert_eq!(body, Value::Null);
        assert_eq!(jobs(&api).await, vec![("configure_amphora".to_owned(), AMP3.to_owned())]);
    }
}

#[tokio::test]
async fn stats_lists_one_entry_per_listener() {
    for db in common::databases().await {
        let api = common::api(&db).await;
        seed(&api).await;
        let (status, body) = api.call("GET", &format!("/v2/octavia/amphorae/{AMP1}/stats"), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["faultstring"], format!("Amphora stats for {AMP1} not found."));
        api.sql(&format!(
            "INSERT INTO listener_statistics (listener_id, amphora_id, bytes_in, bytes_out, active_connections, \
             total_connections, request_errors) VALUES ('l1', '{AMP1}', 10, 20, 3, 40, 5), ('l2', '{AMP1}', 1, 2, 0, 4, 0), \
             ('l1', '{AMP2}', 7, 7, 7, 7, 7)"
        ))
        .await;
        let (status, body) = api.call("GET", &format!("/v2/octavia/amphorae/{AMP1}/stats"), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body,
            json!({"amphora_stats": [
                {"active_connections": 3, "bytes_in": 10, "bytes_out": 20, "id": AMP1, "listener_id": "l1",
                 "loadbalancer_id": LB, "request_errors": 5, "total_connections": 40},
                {"active_connections": 0, "bytes_in": 1, "bytes_out": 2, "id": AMP1, "listener_id": "l2",
                 "loadbalancer_id": LB, "request_errors": 0, "total_connections": 4},
            ]})
        );
    }
}

/// A caller with fixed roles, for policy tests.
#[derive(Debug)]
struct Fixed(Context);

impl Authenticate for Fixed {
    fn authenticate<'a>(&'a self, _: &'a HeaderMap) -> BoxFuture<'a, ApiResult<Context>> {
        let ctx = self.0.clone();
        Box::pin(async move { Ok(ctx) })
    }
}

#[tokio::test]
async fn only_administrators_reach_the_amphora_api() {
    for db in common::databases().await {
        let mut api = common::api(&db).await;
        seed(&api).await;
        let member = Context::from_roles(Some("p1".into()), None, vec!["member".into(), "reader".into()]);
        api.state.auth = Arc::new(Fixed(member));
        api.router = api::app(api.state.clone());
        let forbidden = json!({"debuginfo": null, "faultcode": "Client", "faultstring": "Policy does not allow this request to be performed."});
        for (method, path) in [
            ("GET", "/v2/octavia/amphorae".to_owned()),
            ("GET", format!("/v2/octavia/amphorae/{AMP1}")),
            ("GET", format!("/v2/octavia/amphorae/{AMP1}/stats")),
            ("PUT", format!("/v2/octavia/amphorae/{AMP1}/config")),
            ("PUT", format!("/v2/octavia/amphorae/{AMP1}/failover")),
            ("DELETE", format!("/v2/octavia/amphorae/{SPARE}")),
        ] {
            let (status, body) = api.call(method, &path, None).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}");
            assert_eq!(body, forbidden);
        }
        // Show looks up first: a missing amphora is a 404 even for a member.
        let (status, _) = api.call("GET", &format!("/v2/octavia/amphorae/{MISSING}"), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(jobs(&api).await.is_empty());

        let lb_admin = Context::from_roles(Some("ops".into()), None, vec!["load-balancer_admin".into()]);
        api.state.auth = Arc::new(Fixed(lb_admin));
        api.router = api::app(api.state.clone());
        let (status, _) = api.call("GET", "/v2/octavia/amphorae", None).await;
        assert_eq!(status, StatusCode::OK);
    }
}
