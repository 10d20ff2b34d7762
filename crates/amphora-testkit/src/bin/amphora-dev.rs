//! `amphora-dev`: run the agent for real on a development machine.
//!
//! Generates a throwaway PKI and a configuration in a directory (once; later
//! runs reuse them so pasted commands keep working), prints a ready-to-paste
//! curl command, then replaces itself with the agent.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use amphora_testkit::Pki;
use amphora_testkit::agent::unique_amphora_id;
use anyhow::Context;
use clap::Parser;

#[derive(Debug, Parser)]
#[command(about = "Run the amphora agent with throwaway development certificates")]
struct Args {
    /// Directory for certificates, configuration and state.
    #[arg(long, default_value = ".dev")]
    dir: PathBuf,
    /// Port the agent listens on (127.0.0.1).
    #[arg(long, default_value_t = 9443)]
    port: u16,
    /// Network namespace for haproxy; empty runs it in the agent's own.
    #[arg(long, default_value = "")]
    netns: String,
    /// The agent binary; defaults to the one built beside this program.
    #[arg(long)]
    agent: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.dir).with_context(|| format!("cannot create {}", args.dir.display()))?;
    let dir = std::fs::canonicalize(&args.dir)?;
    let file = |name: &str| dir.join(name);

    if !file("client.pem").exists() {
        let amphora_id = unique_amphora_id();
        let pki = Pki::new(&amphora_id);
        write(&file("server_ca.pem"), &pki.server_ca.cert_pem(), 0o644)?;
        write(&file("client_ca.pem"), &pki.client_ca.cert_pem(), 0o644)?;
        write(&file("server.pem"), &pki.server.combined_pem(), 0o600)?;
        write(&file("client.crt"), &pki.client.cert_pem, 0o644)?;
        write(&file("client.key"), &pki.client.key_pem, 0o600)?;
        write(&file("client.pem"), &pki.client.combined_pem(), 0o600)?;
        write(&file("amphora_id"), &amphora_id, 0o644)?;
    }
    let amphora_id = std::fs::read_to_string(file("amphora_id"))?.trim().to_owned();
    let config = format!(
        "[DEFAULT]\ndebug = False\n\n\
         [haproxy_amphora]\nbase_path = {state}\nbase_cert_dir = {state}/certs\nbind_host = 127.0.0.1\nbind_port = {port}\n\n\
         [health_manager]\nheartbeat_key = insecure\n\n\
         [amphora_agent]\nagent_server_ca = {ca}\nagent_server_cert = {cert}\namphora_id = {amphora_id}\nnetwork_namespace = {netns}\n\n\
         [controller_worker]\nloadbalancer_topology = SINGLE\n",
        state = file("state").display(),
        port = args.port,
        ca = file("client_ca.pem").display(),
        cert = file("server.pem").display(),
        netns = args.netns,
    );
    write(&file("amphora-agent.conf"), &config, 0o600)?;

    let agent = match args.agent {
        Some(path) => path,
        None => std::env::current_exe()?.with_file_name("amphora-agent"),
    };
    println!("amphora agent {amphora_id} starting on https://127.0.0.1:{}", args.port);
    println!("try, from another terminal:\n");
    println!(
        "  curl --cacert {} --cert {} --key {} https://127.0.0.1:{}/1.0/info\n",
        file("server_ca.pem").display(),
        file("client.crt").display(),
        file("client.key").display(),
        args.port
    );
    let error = Command::new(&agent).arg("--config-file").arg(file("amphora-agent.conf")).exec();
    Err(error).with_context(|| format!("cannot run {}", agent.display()))
}

fn write(path: &Path, content: &str, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, content).with_context(|| format!("cannot write {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}
