//! The running configuration, and `PUT /1.0/config`.
//!
//! A new configuration replaces the first configuration file (the one
//! upstream's controller renders; later files still override it) only after
//! it parses and validates together with the other files. Options upstream
//! marks mutable take effect at once, through a watch channel the
//! interested parts subscribe to; the others are written for the next start
//! and reported as such.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;

use crate::config::{self, Config};
use crate::fsutil;

/// Switches debug logging on or off.
pub struct LogControl(Box<dyn Fn(bool) + Send + Sync>);

impl LogControl {
    pub fn new(set_debug: impl Fn(bool) + Send + Sync + 'static) -> Self {
        Self(Box::new(set_debug))
    }
}

impl fmt::Debug for LogControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LogControl")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("the configuration is not valid UTF-8")]
    NotUtf8,
    #[error("{0}")]
    Invalid(#[from] config::ConfigError),
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// What an update changed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpdateReport {
    /// `[section] key` of options now in effect.
    pub applied: Vec<String>,
    /// `[section] key` of options that take effect at the next start.
    pub after_restart: Vec<String>,
}

impl fmt::Display for UpdateReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |items: &[String]| if items.is_empty() { "none".to_owned() } else { items.join(", ") };
        write!(f, "applied: {}; after restart: {}", list(&self.applied), list(&self.after_restart))
    }
}

#[derive(Debug)]
pub struct LiveConfig {
    files: Vec<PathBuf>,
    current: watch::Sender<Arc<Config>>,
    log: Option<LogControl>,
    updating: tokio::sync::Mutex<()>,
}

impl LiveConfig {
    pub fn new(config: Config, files: Vec<PathBuf>, log: Option<LogControl>) -> Self {
        let (current, _) = watch::channel(Arc::new(config));
        Self { files, current, log, updating: tokio::sync::Mutex::new(()) }
    }

    pub fn current(&self) -> Arc<Config> {
        self.current.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<Config>> {
        self.current.subscribe()
    }

    /// Validates, stores and applies a complete configuration file.
    pub async fn update(&self, text: &[u8]) -> Result<UpdateReport, UpdateError> {
        let _guard = self.updating.lock().await;
        let text = std::str::from_utf8(text).map_err(|_| UpdateError::NotUtf8)?;
        let Some((main, others)) = self.files.split_first() else {
            return Err(UpdateError::Write {
                path: PathBuf::new(),
                source: std::io::Error::other("the agent was started without a configuration file"),
            });
        };
        let mut sources = vec![(main.clone(), text.to_owned())];
        for path in others {
            let other = std::fs::read_to_string(path)
                .map_err(|source| config::ConfigError::Read { path: path.clone(), source })?;
            sources.push((path.clone(), other));
        }
        let loaded = config::parse(sources.iter().map(|(p, t)| (p.as_path(), t.as_str())))?;
        for warning in &loaded.warnings {
            tracing::warn!("{warning}");
        }
        fsutil::write_atomic_async(main, text.as_bytes(), 0o600)
            .await
            .map_err(|source| UpdateError::Write { path: main.clone(), source })?;

        let old = self.current();
        let new = loaded.config;
        let effective = apply_mutable(&old, &new);
        let changed = differences(&old, &new);
        let applied = differences(&old, &effective);
        let report =
            UpdateReport { after_restart: changed.iter().filter(|o| !applied.contains(o)).cloned().collect(), applied };
        if effective.debug != old.debug
            && let Some(log) = &self.log
        {
            (log.0)(effective.debug);
        }
        self.current.send_replace(Arc::new(effective));
        tracing::info!(%report, path = %main.display(), "configuration updated");
        Ok(report)
    }
}

/// `running` with the options upstream marks mutable (`mutable` in
/// `config::OPTIONS`) taken from `new`.
pub fn apply_mutable(running: &Config, new: &Config) -> Config {
    let mut effective = running.clone();
    for option in config::OPTIONS.iter().filter(|o| o.mutable) {
        option.copy(&mut effective, new);
    }
    effective
}

/// `[section] key` of every option whose value differs.
fn differences(a: &Config, b: &Config) -> Vec<String> {
    config::OPTIONS.iter().filter(|o| o.show(a) != o.show(b)).map(|o| o.name()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parse(text: &str) -> Config {
        config::parse([(Path::new("/a.conf"), text)]).expect("valid").config
    }

    #[test]
    fn mutable_options_apply_and_the_others_wait() {
        let old = parse("[amphora_agent]\namphora_id = a\n");
        let new = parse(
            "[DEFAULT]\ndebug = true\n[amphora_agent]\namphora_id = a\n[haproxy_amphora]\nbind_port = 1234\n\
             [health_manager]\nheartbeat_interval = 3\nheartbeat_key = k\ncontroller_ip_port_list = 10.0.0.1:5555\n\
             [controller_worker]\nloadbalancer_topology = ACTIVE_STANDBY\n",
        );
        let effective = apply_mutable(&old, &new);
        assert_eq!(effective.haproxy_amphora.bind_port, 9443);
        assert_eq!(
            differences(&old, &effective),
            vec![
                "[DEFAULT] debug",
                "[health_manager] controller_ip_port_list",
                "[health_manager] heartbeat_interval",
                "[health_manager] heartbeat_key",
                "[controller_worker] loadbalancer_topology",
            ]
        );
        assert_eq!(differences(&effective, &new), vec!["[haproxy_amphora] bind_port"]);
    }

    #[test]
    fn reports_read_well() {
        let report = UpdateReport { applied: vec!["[DEFAULT] debug".into()], after_restart: vec![] };
        assert_eq!(report.to_string(), "applied: [DEFAULT] debug; after restart: none");
    }
}
