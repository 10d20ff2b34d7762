//! The packaging's scripts pass ShellCheck (every shell script under
//! packaging/: build.sh, the maintainer scripts, the image element's
//! hooks), and the image element passes diskimage-builder's own dib-lint
//! (the element cannot be built here: that needs cloud images), and the
//! agent's OpenAPI document (docs/agent-openapi.json) passes
//! openapi-spec-validator. The tools are pinned in scripts/lint-venv.sh,
//! which makes their virtualenv when LINT_VENV_BIN does not name one.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace root")
}

/// The bin directory of the linters' virtualenv, made once for all the
/// tests of this binary (they run in parallel).
fn lint_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(bin) = std::env::var("LINT_VENV_BIN")
            && !bin.is_empty()
        {
            return bin.into();
        }
        let output = Command::new(workspace_root().join("scripts/lint-venv.sh")).output().expect("run lint-venv.sh");
        assert!(output.status.success(), "lint-venv.sh failed:\n{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).expect("UTF-8").trim().into()
    })
    .clone()
}

fn report(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// Every file under `dir` whose first line is a shell's `#!`.
fn shell_scripts(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let text = std::fs::read(&path).expect("read");
                let first = text.split(|b| *b == b'\n').next().unwrap_or_default();
                let first = String::from_utf8_lossy(first);
                let shells = ["/sh", "/bash", "env bash", "env sh"];
                if first.starts_with("#!") && shells.iter().any(|s| first.trim_end().ends_with(s)) {
                    found.push(path);
                }
            }
        }
    }
    found.sort();
    found
}

#[test]
fn the_packaging_scripts_pass_shellcheck() {
    let packaging = workspace_root().join("packaging");
    let scripts = shell_scripts(&packaging);
    let names: Vec<String> =
        scripts.iter().map(|p| p.strip_prefix(&packaging).expect("under packaging").display().to_string()).collect();
    // The scripts this test exists for, written down so that a change in
    // how scripts are found cannot silently skip them.
    for expected in [
        "deb/build.sh",
        "deb/debian/postinst",
        "deb/debian/prerm",
        "deb/debian/postrm",
        "dib/amphora-agent-rs/extra-data.d/10-amphora-agent-rs-copy-deb",
        "dib/amphora-agent-rs/install.d/80-amphora-agent-rs-install",
        "dib/amphora-agent-rs/post-install.d/15-amphora-agent-rs-replace-upstream",
    ] {
        assert!(names.iter().any(|n| n == expected), "{expected} not found among {names:?}");
    }
    let output = Command::new(lint_bin().join("shellcheck"))
        .args(["--external-sources", "--severity=style"])
        .args(&scripts)
        .output()
        .expect("run shellcheck");
    assert!(output.status.success(), "shellcheck found problems:\n{}", report(&output));
}

#[test]
fn shellcheck_rejects_an_unquoted_expansion() {
    // The linter itself works: a classic mistake fails it.
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("bad.sh");
    std::fs::write(&script, "#!/bin/sh\nrm -rf $1/state\n").expect("write");
    let output = Command::new(lint_bin().join("shellcheck")).arg(&script).output().expect("run shellcheck");
    assert!(!output.status.success(), "{}", report(&output));
    assert!(report(&output).contains("SC2086"), "{}", report(&output));
}

/// dib-lint over the elements in `elements`, run from the workspace (it
/// asks git which files are ignored, and reads exclusions from a tox.ini
/// there: there is none), with no library scripts of ours to check.
fn dib_lint(elements: &Path) -> Output {
    let bin = lint_bin();
    let root = workspace_root();
    assert!(!root.join("tox.ini").exists(), "a tox.ini would change dib-lint's rules");
    let no_lib = tempfile::tempdir().expect("tempdir");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    Command::new(bin.join("dib-lint"))
        .current_dir(root)
        .env("PATH", path)
        .env("ELEMENTS_DIR", elements)
        .env("LIB_DIR", no_lib.path())
        .output()
        .expect("run dib-lint")
}

#[test]
fn the_image_element_passes_dib_lint() {
    let output = dib_lint(&workspace_root().join("packaging/dib"));
    let text = report(&output);
    assert!(output.status.success(), "dib-lint failed:\n{text}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("amphora-agent-rs/install.d/80-amphora-agent-rs-install"), "{text}");
    assert!(stdout.trim_end().ends_with("PASS"), "{text}");
}

#[test]
fn dib_lint_rejects_a_hook_without_set_e() {
    // The element's structure is really checked: the same element with one
    // hook missing `set -e` fails.
    let dir = tempfile::tempdir().expect("tempdir");
    let element = dir.path().join("amphora-agent-rs");
    let source = workspace_root().join("packaging/dib/amphora-agent-rs");
    let output = Command::new("cp").arg("-a").arg(&source).arg(&element).output().expect("cp");
    assert!(output.status.success(), "{}", report(&output));
    let hook = element.join("install.d/80-amphora-agent-rs-install");
    let text = std::fs::read_to_string(&hook).expect("hook");
    assert!(text.contains("set -eu\n"), "{text}");
    std::fs::write(&hook, text.replace("set -eu\n", "set -u\n")).expect("write");
    let output = dib_lint(dir.path());
    assert!(!output.status.success(), "{}", report(&output));
    assert!(report(&output).contains("is not set -e"), "{}", report(&output));
}

fn validate_openapi(path: &Path) -> Output {
    Command::new(lint_bin().join("openapi-spec-validator")).arg(path).output().expect("run openapi-spec-validator")
}

#[test]
fn the_agent_openapi_document_is_valid_openapi() {
    let output = validate_openapi(&workspace_root().join("docs/agent-openapi.json"));
    assert!(output.status.success(), "{}", report(&output));
}

#[test]
fn the_validator_rejects_a_document_with_a_dangling_reference() {
    // The validator itself works: the same document with one schema gone
    // fails.
    let text = std::fs::read_to_string(workspace_root().join("docs/agent-openapi.json")).expect("document");
    let mut document: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let schemas = document["components"]["schemas"].as_object_mut().expect("schemas");
    assert!(schemas.remove("Message").is_some());
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("broken.json");
    std::fs::write(&path, serde_json::to_string(&document).expect("JSON")).expect("write");
    let output = validate_openapi(&path);
    assert!(!output.status.success(), "{}", report(&output));
}
