//! haproxy's `show stat` answer: the one parser of its CSV, and the one
//! place that says what a frontend, backend or server status means to the
//! heartbeat and to the listener APIs.
//!
//! Columns are found by name in the header, so columns a newer haproxy adds
//! (or reorders) are ignored. Statuses keep haproxy's spelling: the
//! heartbeat forwards them as they are, as upstream does.

use amphora_proto::heartbeat::{BackendStatus, FrontendStatus, ServerStatus};
use amphora_proto::{ListenerState, MemberState};

/// Proxies of Octavia's internal Prometheus exporter: not user listeners,
/// and their traffic is not billed.
const INTERNAL_PROXY_MARK: &str = "prometheus";

/// What a row describes: `svname` is `FRONTEND`, `BACKEND` or a server name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Service {
    Frontend,
    Backend,
    Server(String),
}

impl Service {
    fn parse(svname: &str) -> Self {
        match svname {
            "FRONTEND" => Service::Frontend,
            "BACKEND" => Service::Backend,
            server => Service::Server(server.to_owned()),
        }
    }
}

/// One row of `show stat`: the columns the agent uses. Counters missing or
/// empty in the row read as 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatRow {
    /// `pxname`: the frontend or backend name (Octavia: the listener id, or
    /// `{pool}:{listener}`).
    pub proxy: String,
    pub service: Service,
    /// `status`, as haproxy spells it ("OPEN", "UP", "DOWN 1/2", "no check").
    pub status: String,
    /// `weight`; absent on frontends.
    pub weight: Option<u64>,
    /// Current sessions.
    pub scur: u64,
    /// Bytes in.
    pub bin: u64,
    /// Bytes out.
    pub bout: u64,
    /// Request errors.
    pub ereq: u64,
    /// Total sessions.
    pub stot: u64,
}

impl StatRow {
    /// The frontend status as the heartbeat reports it.
    pub fn frontend_status(&self) -> FrontendStatus {
        FrontendStatus::from(self.status.as_str())
    }

    /// The backend (pool) status as the heartbeat reports it.
    pub fn backend_status(&self) -> BackendStatus {
        BackendStatus::from(self.status.as_str())
    }

    /// The server (member) status as the heartbeat reports it. Some haproxy
    /// versions report a drained server (weight 0) as UP; upstream reports
    /// it as DRAIN.
    pub fn server_status(&self) -> ServerStatus {
        if self.status == "UP" && self.weight == Some(0) {
            ServerStatus::Drain
        } else {
            ServerStatus::from(self.status.as_str())
        }
    }

    /// Whether a frontend accepts connections: OPEN, or FULL (at its
    /// connection limit, still listening).
    pub fn frontend_accepts(&self) -> bool {
        matches!(self.frontend_status(), FrontendStatus::Open | FrontendStatus::Full)
    }

    /// A member's state as the 0.1 listener detail reports it: UP or DOWN
    /// (haproxy's transitional "UP 1/3" and unchecked members count as UP,
    /// maintenance as DOWN); anything else as haproxy spells it.
    pub fn member_state(&self) -> MemberState {
        let status = self.status.as_str();
        if status.starts_with("UP") || status == "no check" {
            MemberState::Up
        } else if status.starts_with("DOWN") || status.starts_with("MAINT") {
            MemberState::Down
        } else {
            MemberState::from(status)
        }
    }
}

/// The listener state the APIs report for a frontend of a running haproxy:
/// ACTIVE when it accepts connections, STOPPED otherwise (including a
/// frontend `show stat` does not list).
pub fn listener_state(frontend: Option<&StatRow>) -> ListenerState {
    match frontend {
        Some(row) if row.frontend_accepts() => ListenerState::Active,
        _ => ListenerState::Stopped,
    }
}

/// Parses a `show stat` answer. Rows without a proxy name and rows of the
/// internal Prometheus exporter are left out; an answer without a header
/// (an error message, say) has no rows.
pub fn parse(text: &str) -> Vec<StatRow> {
    let body = text.trim_start_matches("# ");
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(body.as_bytes());
    let Ok(headers) = reader.headers() else { return Vec::new() };
    let column = |name: &str| headers.iter().position(|h| h == name);
    let [pxname, svname, status, weight, scur, bin, bout, ereq, stot] =
        ["pxname", "svname", "status", "weight", "scur", "bin", "bout", "ereq", "stot"].map(column);
    let mut rows = Vec::new();
    let mut record = csv::StringRecord::new();
    while reader.read_record(&mut record).unwrap_or(false) {
        let text = |c: Option<usize>| c.and_then(|c| record.get(c)).unwrap_or("");
        let number = |c: Option<usize>| text(c).parse::<u64>().ok();
        let proxy = text(pxname);
        if proxy.is_empty() || proxy.contains(INTERNAL_PROXY_MARK) {
            continue;
        }
        rows.push(StatRow {
            proxy: proxy.to_owned(),
            service: Service::parse(text(svname)),
            status: text(status).to_owned(),
            weight: number(weight),
            scur: number(scur).unwrap_or(0),
            bin: number(bin).unwrap_or(0),
            bout: number(bout).unwrap_or(0),
            ereq: number(ereq).unwrap_or(0),
            stot: number(stot).unwrap_or(0),
        });
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `show stat` of haproxy 2.6.12 (Debian 12) for one frontend and a
    /// backend with an unchecked server, a drained one (weight 0) and one
    /// whose check fails: the full header, with its ~150 columns the agent
    /// does not use.
    const REAL_SHOW_STAT: &str = "\
# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,ctime,rtime,ttime,agent_status,agent_code,agent_duration,check_desc,agent_desc,check_rise,check_fall,check_health,agent_rise,agent_fall,agent_health,addr,cookie,mode,algo,conn_rate,conn_rate_max,conn_tot,intercepted,dcon,dses,wrew,connect,reuse,cache_lookups,cache_hits,srv_icur,src_ilim,qtime_max,ctime_max,rtime_max,ttime_max,eint,idle_conn_cur,safe_conn_cur,used_conn_cur,need_conn_est,uweight,agg_server_status,agg_server_check_status,agg_check_status,-,ssl_sess,ssl_reused_sess,ssl_failed_handshake,h2_headers_rcvd,h2_data_rcvd,h2_settings_rcvd,h2_rst_stream_rcvd,h2_goaway_rcvd,h2_detected_conn_protocol_errors,h2_detected_strm_protocol_errors,h2_rst_stream_resp,h2_goaway_resp,h2_open_connections,h2_backend_open_streams,h2_total_connections,h2_backend_total_streams,h1_open_connections,h1_open_streams,h1_total_connections,h1_total_streams,h1_bytes_in,h1_bytes_out,h1_spliced_bytes_in,h1_spliced_bytes_out,
8a1c2e-listener,FRONTEND,,,0,0,9985,0,0,0,0,0,0,,,,,OPEN,,,,,,,,,1,2,0,,,,0,0,0,0,,,,,,,,,,,0,0,0,,,0,0,0,0,,,,,,,,,,,,,,,,,,,,,tcp,,0,0,0,,0,0,0,,,,,,,,,,,0,,,,,,,,,-,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,
5d3f-pool:8a1c2e-listener,member-up,0,0,0,0,,0,0,0,,0,,0,0,0,0,no check,1,1,0,,,2,,,1,3,1,,0,,2,0,,0,,,,,,,,,,,,,,0,0,,,,,-1,,,0,0,0,0,,,,,,,,,,,,127.0.0.1:9,,tcp,,,,,,,,0,0,0,,,0,,0,0,0,0,0,0,0,0,0,1,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,
5d3f-pool:8a1c2e-listener,member-drain,0,0,0,0,,0,0,0,,0,,0,0,0,0,no check,0,1,0,,,2,,,1,3,2,,0,,2,0,,0,,,,,,,,,,,,,,0,0,,,,,-1,,,0,0,0,0,,,,,,,,,,,,127.0.0.1:9,,tcp,,,,,,,,0,0,0,,,0,,0,0,0,0,0,0,0,0,0,0,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,
5d3f-pool:8a1c2e-listener,member-down,0,0,0,0,,0,0,0,,0,,0,0,0,0,DOWN,1,1,0,1,1,2,2,,1,3,3,,0,,2,0,,0,L4CON,,0,,,,,,,,,,,0,0,,,,,-1,Connection refused,,0,0,0,0,,,,Layer4 connection problem,,2,1,0,,,,127.0.0.1:1,,tcp,,,,,,,,0,0,0,,,0,,0,0,0,0,0,0,0,0,1,1,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,
5d3f-pool:8a1c2e-listener,BACKEND,0,0,0,0,999,0,0,0,0,0,,0,0,0,0,UP,1,1,0,,0,2,0,,1,3,0,,0,,1,0,,0,,,,,,,,,,,,,,0,0,0,0,0,0,-1,,,0,0,0,0,,,,,,,,,,,,,,tcp,roundrobin,,,,,,,0,0,0,,,,,0,0,0,0,0,,,,,1,0,0,0,-,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,

";

    fn row(proxy: &str, service: Service, status: &str, weight: Option<u64>) -> StatRow {
        StatRow {
            proxy: proxy.into(),
            service,
            status: status.into(),
            weight,
            scur: 0,
            bin: 0,
            bout: 0,
            ereq: 0,
            stot: 0,
        }
    }

    #[test]
    fn real_haproxy_rows_are_read_by_column_name() {
        let pool = "5d3f-pool:8a1c2e-listener";
        assert_eq!(
            parse(REAL_SHOW_STAT),
            vec![
                row("8a1c2e-listener", Service::Frontend, "OPEN", None),
                row(pool, Service::Server("member-up".into()), "no check", Some(1)),
                row(pool, Service::Server("member-drain".into()), "no check", Some(0)),
                row(pool, Service::Server("member-down".into()), "DOWN", Some(1)),
                row(pool, Service::Backend, "UP", Some(1)),
            ]
        );
    }

    #[test]
    fn unknown_and_reordered_columns_are_ignored() {
        let text = "# svname,future_column,stot,pxname,status,bin,bout,ereq,scur,weight,another\n\
                    FRONTEND,x,10,listener-1,OPEN,1000,5000,1,2,,y\n";
        let expected = StatRow {
            proxy: "listener-1".into(),
            service: Service::Frontend,
            status: "OPEN".into(),
            weight: None,
            scur: 2,
            bin: 1000,
            bout: 5000,
            ereq: 1,
            stot: 10,
        };
        assert_eq!(parse(text), vec![expected]);
    }

    #[test]
    fn missing_columns_read_as_empty_and_zero() {
        let text = "# pxname,svname\nbe,srv\n";
        assert_eq!(parse(text), vec![row("be", Service::Server("srv".into()), "", None)]);
    }

    #[test]
    fn internal_exporter_rows_and_answers_without_rows_are_left_out() {
        let text = "# pxname,svname,status\n\
                    prometheus-exporter-internal-endpoint,FRONTEND,OPEN\n\
                    ,FRONTEND,OPEN\n";
        assert_eq!(parse(text), Vec::new());
        assert_eq!(parse(""), Vec::new());
        assert_eq!(parse("Unknown command.\n"), Vec::new());
    }

    #[test]
    fn a_drained_server_reports_drain_and_other_statuses_pass_through() {
        let server = |status: &str, weight| row("p", Service::Server("s".into()), status, Some(weight));
        assert_eq!(server("UP", 0).server_status(), ServerStatus::Drain);
        assert_eq!(server("UP", 1).server_status(), ServerStatus::Up);
        assert_eq!(server("no check", 0).server_status(), ServerStatus::NoCheck);
        assert_eq!(server("DOWN 1/2", 1).server_status(), ServerStatus::Other("DOWN 1/2".into()));
        assert_eq!(server("MAINT", 1).server_status(), ServerStatus::Maint);
    }

    #[test]
    fn member_states_of_the_listener_detail() {
        let member = |status: &str| row("p", Service::Server("s".into()), status, Some(1)).member_state();
        assert_eq!(member("UP"), MemberState::Up);
        assert_eq!(member("UP 1/3"), MemberState::Up);
        assert_eq!(member("no check"), MemberState::Up);
        assert_eq!(member("DOWN"), MemberState::Down);
        assert_eq!(member("DOWN 1/2"), MemberState::Down);
        assert_eq!(member("MAINT (via x/y)"), MemberState::Down);
        assert_eq!(member("DRAIN"), MemberState::Drain);
        assert_eq!(member("NOLB"), MemberState::NoLb);
        assert_eq!(member("A FUTURE STATE"), MemberState::Other("A FUTURE STATE".into()));
    }

    #[test]
    fn listener_state_of_a_frontend() {
        let frontend = |status: &str| row("l", Service::Frontend, status, None);
        assert_eq!(listener_state(Some(&frontend("OPEN"))), ListenerState::Active);
        assert_eq!(listener_state(Some(&frontend("FULL"))), ListenerState::Active);
        assert_eq!(listener_state(Some(&frontend("STOP"))), ListenerState::Stopped);
        assert_eq!(listener_state(None), ListenerState::Stopped);
    }
}
