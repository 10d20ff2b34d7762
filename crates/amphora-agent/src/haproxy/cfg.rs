//! The little the agent needs to know about an haproxy configuration it was
//! given: its stats socket and its frontends (the listeners), with the
//! listener type the controller expects. Pure text analysis; haproxy itself
//! is the judge of validity (`haproxy -c`).

use std::path::PathBuf;

/// Frontends haproxy runs for Octavia's own purposes, not user listeners.
const INTERNAL_FRONTEND_PREFIX: &str = "prometheus-exporter-internal";

const SECTION_KEYWORDS: &[&str] = &[
    "global",
    "defaults",
    "frontend",
    "backend",
    "listen",
    "peers",
    "resolvers",
    "userlist",
    "cache",
    "program",
    "http-errors",
    "ring",
    "mailers",
    "log-forward",
    "crt-store",
    "traces",
];

/// What the agent reads out of an haproxy configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Summary {
    /// `stats socket <path>` of the global section.
    pub stats_socket: Option<PathBuf>,
    /// User frontends in file order.
    pub frontends: Vec<Frontend>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frontend {
    /// The frontend name: Octavia names it after the listener id.
    pub name: String,
    /// HTTP, TCP or TERMINATED_HTTPS, as upstream reports it.
    pub kind: String,
}

#[derive(Debug)]
struct Section<'a> {
    keyword: &'a str,
    name: Option<&'a str>,
    mode: Option<&'a str>,
    tls_bind: bool,
}

/// Analyses a configuration text.
pub fn summarize(text: &str) -> Summary {
    let mut summary = Summary::default();
    let mut default_mode: Option<String> = None;
    let mut current: Option<Section<'_>> = None;

    for line in text.lines() {
        let words: Vec<&str> = strip_comment(line).split_whitespace().collect();
        let Some(&first) = words.first() else { continue };
        if SECTION_KEYWORDS.contains(&first) {
            if let Some(done) = current.take() {
                finish(done, &mut default_mode, &mut summary);
            }
            current = Some(Section { keyword: first, name: words.get(1).copied(), mode: None, tls_bind: false });
            continue;
        }
        let Some(section) = current.as_mut() else { continue };
        match (section.keyword, first) {
            ("global", "stats") if words.get(1) == Some(&"socket") && summary.stats_socket.is_none() => {
                summary.stats_socket = words.get(2).map(PathBuf::from);
            }
            (_, "mode") => section.mode = words.get(1).copied(),
            ("frontend" | "listen", "bind") => {
                let ssl = words.contains(&"ssl");
                let crt = words.iter().any(|w| *w == "crt" || *w == "crt-list");
                section.tls_bind |= ssl && crt;
            }
            _ => {}
        }
    }
    if let Some(done) = current.take() {
        finish(done, &mut default_mode, &mut summary);
    }
    summary
}

fn finish(section: Section<'_>, default_mode: &mut Option<String>, summary: &mut Summary) {
    match section.keyword {
        "defaults" => {
            if let Some(mode) = section.mode {
                *default_mode = Some(mode.to_owned());
            }
        }
        "frontend" => {
            let Some(name) = section.name else { return };
            if name.starts_with(INTERNAL_FRONTEND_PREFIX) {
                return;
            }
            let kind = if section.tls_bind {
                "TERMINATED_HTTPS".to_owned()
            } else {
                section
                    .mode
                    .map(str::to_owned)
                    .or_else(|| default_mode.clone())
                    .unwrap_or_else(|| "tcp".into())
                    .to_ascii_uppercase()
            };
            summary.frontends.push(Frontend { name: name.to_owned(), kind });
        }
        _ => {}
    }
}

/// haproxy starts a comment at an unescaped '#' outside quotes.
fn strip_comment(line: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' | '\'' if quote == Some(c) => quote = None,
            '"' | '\'' if quote.is_none() => quote = Some(c),
            '#' if quote.is_none() => return &line[..i],
            _ => {}
        }
    }
    line
}

/// Removes `group` lines, as upstream does: the agent supplies the group in
/// a second configuration file, and haproxy refuses a duplicate.
pub fn strip_group_lines(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let mut words = strip_comment(line).split_whitespace();
        if words.next() == Some("group") && words.next().is_some() {
            continue;
        }
        out.push_str(line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shaped like the output of upstream's combined-listeners template.
    const OCTAVIA: &str = "\
# Configuration for loadbalancer 5e4bd1ae-4a73-4d26-a4b5-4a3ac1b8a0a2
global
    daemon
    user nobody
    group nogroup
    log /run/rsyslog/octavia/log local0
    stats socket /var/lib/octavia/5e4bd1ae-4a73-4d26-a4b5-4a3ac1b8a0a2.sock mode 0666 level user
    maxconn 50000

defaults
    log global
    retries 3

frontend prometheus-exporter-internal-endpoint
    bind 127.0.0.1:9101
    mode http

frontend 0b4b3c10-cb6e-4b1b-8c36-6d4a1e4a7fb1
    maxconn 50000
    bind 203.0.113.2:80
    mode http
    default_backend pool:0b4b3c10 # a comment

frontend 6c1f7e0e-8b1e-4c1e-9e5a-9d5ee1d5d1f2
    redirect scheme https if !{ ssl_fc }
    bind 203.0.113.2:443 ssl crt-list /var/lib/octavia/certs/lb/listener.pem
    mode http

frontend 9b3b5a12-0c4b-4a67-bb3b-3d02f4f0a9d0
    bind 203.0.113.2:3306
    mode tcp

backend pool:0b4b3c10
    mode http
    server m1 10.0.0.5:80
";

    #[test]
    fn reads_octavia_configuration() {
        let summary = summarize(OCTAVIA);
        assert_eq!(
            summary.stats_socket,
            Some(PathBuf::from("/var/lib/octavia/5e4bd1ae-4a73-4d26-a4b5-4a3ac1b8a0a2.sock"))
        );
        assert_eq!(
            summary.frontends,
            vec![
                Frontend { name: "0b4b3c10-cb6e-4b1b-8c36-6d4a1e4a7fb1".into(), kind: "HTTP".into() },
                Frontend { name: "6c1f7e0e-8b1e-4c1e-9e5a-9d5ee1d5d1f2".into(), kind: "TERMINATED_HTTPS".into() },
                Frontend { name: "9b3b5a12-0c4b-4a67-bb3b-3d02f4f0a9d0".into(), kind: "TCP".into() },
            ]
        );
    }

    #[test]
    fn frontend_mode_falls_back_to_defaults_then_tcp() {
        let text = "defaults\n  mode http\nfrontend a\n  bind :80\n";
        assert_eq!(summarize(text).frontends[0].kind, "HTTP");
        let text = "frontend a\n  bind :80\n";
        assert_eq!(summarize(text).frontends[0].kind, "TCP");
    }

    #[test]
    fn comments_do_not_count() {
        let text = "global\n  # stats socket /nope.sock\n  stats socket /yes.sock # trailing\n";
        assert_eq!(summarize(text).stats_socket, Some(PathBuf::from("/yes.sock")));
        assert_eq!(strip_comment("  acl x hdr(a) -m str \"#no\" # yes"), "  acl x hdr(a) -m str \"#no\" ");
    }

    #[test]
    fn group_lines_are_removed_and_nothing_else() {
        let text = "global\n    user nobody\n    group nogroup\n    log-tag group\nbackend b\n    http-request set-header X-group a\n";
        assert_eq!(
            strip_group_lines(text),
            "global\n    user nobody\n    log-tag group\nbackend b\n    http-request set-header X-group a\n"
        );
    }
}
