//! oslo.config-style INI files, as OpenStack services (and so upstream
//! Octavia's agent and controller) read them.
//!
//! `[section]` headers, `key = value` lines, `#`/`;` comments, indented
//! continuation lines. Several files may be given; a later file overrides an
//! earlier one key by key. Options a program does not know are reported as
//! warnings (oslo.config ignores them silently; an operator deserves to know).
//! Errors name the file, section and key so an operator can fix a deployment
//! without reading code. The typed configuration itself belongs to each
//! program; this crate only reads values.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use ini::{Ini, ParseOption};

/// The options a program knows, by section: `(section, &[key, ...])`.
pub type KnownOptions = [(&'static str, &'static [&'static str])];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}:{line}:{column}: malformed configuration: {message}")]
    Syntax { path: PathBuf, line: usize, column: usize, message: String },
    #[error("{path}: [{section}] {key} = {value:?}: {reason}")]
    Invalid { path: PathBuf, section: String, key: String, value: String, reason: String },
    #[error("missing required option [{section}] {key} (read {files})")]
    Missing { section: &'static str, key: &'static str, files: FileList },
}

/// The files a configuration was read from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileList(pub Vec<PathBuf>);

impl fmt::Display for FileList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("no files");
        }
        for (i, path) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}", path.display())?;
        }
        Ok(())
    }
}

/// Something worth telling the operator that does not stop the program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning(pub String);

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One option's value and the file it came from.
#[derive(Debug, Clone)]
struct Setting {
    value: String,
    file: PathBuf,
}

/// All options of all files, later files winning.
#[derive(Debug)]
pub struct Layers {
    known: &'static KnownOptions,
    settings: BTreeMap<(String, String), Setting>,
    files: Vec<PathBuf>,
    warnings: Vec<ConfigWarning>,
}

impl Layers {
    pub fn new(known: &'static KnownOptions) -> Self {
        Layers { known, settings: BTreeMap::new(), files: Vec::new(), warnings: Vec::new() }
    }

    /// Reads `paths` in order; a later file overrides an earlier one.
    pub fn load(known: &'static KnownOptions, paths: &[PathBuf]) -> Result<Self, ConfigError> {
        let mut layers = Layers::new(known);
        for path in paths {
            let text =
                std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.clone(), source })?;
            layers.add(path, &text)?;
        }
        Ok(layers)
    }

    /// Adds one file's text, labelled with the path it came from.
    pub fn add(&mut self, path: &Path, text: &str) -> Result<(), ConfigError> {
        let options = ParseOption {
            enabled_quote: false,
            enabled_escape: false,
            enabled_indented_mutiline_value: true,
            enabled_preserve_key_leading_whitespace: false,
        };
        let ini = Ini::load_from_str_opt(text, options).map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            line: e.line + 1,
            column: e.col + 1,
            message: e.msg.into_owned(),
        })?;
        self.files.push(path.to_owned());
        for (section, props) in ini.iter() {
            let section = section.unwrap_or("DEFAULT");
            let known = self.known.iter().find(|(name, _)| *name == section);
            if known.is_none() && props.iter().next().is_some() {
                self.warnings.push(ConfigWarning(format!("{}: ignoring unknown section [{section}]", path.display())));
            }
            for (key, value) in props.iter() {
                if let Some((_, keys)) = known
                    && !keys.contains(&key)
                {
                    self.warnings
                        .push(ConfigWarning(format!("{}: ignoring unknown option [{section}] {key}", path.display())));
                }
                self.settings.insert(
                    (section.to_owned(), key.to_owned()),
                    Setting { value: unquote(value.trim()).to_owned(), file: path.to_owned() },
                );
            }
        }
        Ok(())
    }

    /// The files read, in order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Takes the warnings gathered so far (unknown sections and options).
    pub fn take_warnings(&mut self) -> Vec<ConfigWarning> {
        std::mem::take(&mut self.warnings)
    }

    /// Whether the option is set in any file.
    pub fn is_set(&self, section: &str, key: &str) -> bool {
        self.settings.contains_key(&(section.to_owned(), key.to_owned()))
    }

    /// The option parsed by `parse`, or `default` when absent.
    pub fn get<T>(
        &self,
        section: &str,
        key: &str,
        default: T,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        match self.settings.get(&(section.to_owned(), key.to_owned())) {
            None => Ok(default),
            Some(setting) => parse(&setting.value).map_err(|reason| ConfigError::Invalid {
                path: setting.file.clone(),
                section: section.to_owned(),
                key: key.to_owned(),
                value: setting.value.clone(),
                reason,
            }),
        }
    }

    pub fn string(&self, section: &str, key: &str, default: &str) -> Result<String, ConfigError> {
        self.get(section, key, default.to_owned(), |v| Ok(v.to_owned()))
    }

    /// An option whose empty value means "not set".
    pub fn optional_string(&self, section: &str, key: &str) -> Result<Option<String>, ConfigError> {
        self.get(section, key, None, |v| Ok((!v.is_empty()).then(|| v.to_owned())))
    }

    pub fn path(&self, section: &str, key: &str, default: &str) -> Result<PathBuf, ConfigError> {
        self.get(section, key, PathBuf::from(default), parse_absolute_path)
    }

    pub fn bool(&self, section: &str, key: &str, default: bool) -> Result<bool, ConfigError> {
        self.get(section, key, default, parse_bool)
    }

    pub fn int(&self, section: &str, key: &str, default: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
        self.get(section, key, default, |v| parse_int(v, min, max))
    }

    pub fn required(&self, section: &'static str, key: &'static str) -> Result<String, ConfigError> {
        match self.optional_string(section, key)? {
            Some(value) => Ok(value),
            None => Err(ConfigError::Missing { section, key, files: FileList(self.files.clone()) }),
        }
    }
}

/// oslo.config strips one pair of matching quotes around a value.
pub fn unquote(value: &str) -> &str {
    let bytes = value.as_bytes();
    if bytes.len() >= 2 && bytes[0] == bytes[bytes.len() - 1] && (bytes[0] == b'"' || bytes[0] == b'\'') {
        &value[1..value.len() - 1]
    } else {
        value
    }
}

/// oslo.config's boolean spellings.
pub fn parse_bool(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "t" | "true" | "on" | "y" | "yes" => Ok(true),
        "0" | "f" | "false" | "off" | "n" | "no" => Ok(false),
        _ => Err("expected a boolean (true/false, yes/no, on/off, 1/0)".into()),
    }
}

/// An integer within `min..=max`.
pub fn parse_int(value: &str, min: u64, max: u64) -> Result<u64, String> {
    let n: u64 = value.parse().map_err(|_| format!("expected an integer from {min} to {max}"))?;
    if n < min || n > max {
        return Err(format!("expected an integer from {min} to {max}"));
    }
    Ok(n)
}

pub fn parse_absolute_path(value: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(value);
    if path.is_absolute() { Ok(path) } else { Err("expected an absolute path".into()) }
}

/// oslo.config ListOpt: comma separated, blanks dropped.
pub fn parse_list(value: &str) -> Vec<String> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KNOWN: &KnownOptions = &[("DEFAULT", &["debug"]), ("api", &["port", "hosts"])];

    #[test]
    fn later_files_win_key_by_key_and_unknown_keys_warn() {
        let mut layers = Layers::new(KNOWN);
        layers.add(Path::new("/a.conf"), "[api]\nport = 1\nhosts = a, b\ncolour = red\n").expect("valid");
        layers.add(Path::new("/b.conf"), "[api]\nport = 2\n[odd]\nx = 1\n").expect("valid");
        assert_eq!(layers.int("api", "port", 0, 0, 10).expect("int"), 2);
        assert_eq!(layers.get("api", "hosts", vec![], |v| Ok(parse_list(v))).expect("list"), vec!["a", "b"]);
        assert_eq!(
            layers.take_warnings(),
            vec![
                ConfigWarning("/a.conf: ignoring unknown option [api] colour".into()),
                ConfigWarning("/b.conf: ignoring unknown section [odd]".into()),
            ]
        );
        assert_eq!(layers.files(), &[PathBuf::from("/a.conf"), PathBuf::from("/b.conf")]);
    }

    #[test]
    fn invalid_value_names_file_section_and_key() {
        let mut layers = Layers::new(KNOWN);
        layers.add(Path::new("/a.conf"), "[api]\nport = lots\n").expect("valid");
        let err = layers.int("api", "port", 0, 0, 10).expect_err("invalid").to_string();
        assert_eq!(err, "/a.conf: [api] port = \"lots\": expected an integer from 0 to 10");
    }

    #[test]
    fn quotes_are_stripped_once() {
        assert_eq!(unquote("\"x\""), "x");
        assert_eq!(unquote("'\"x\"'"), "\"x\"");
        assert_eq!(unquote("\"x'"), "\"x'");
    }
}
