//! Throwaway virtual machines for tests that need a kernel feature the test
//! machine lacks (IPVS, for UDP and SCTP listeners through keepalived).
//!
//! The guest boots Debian's stock kernel (prepared by `scripts/vm-image.sh`)
//! and runs on this machine's own root filesystem, shared read-only over
//! 9p under a memory overlay, so every binary and package installed here is
//! there too; nothing is built for the guest. A job directory shared
//! read-write carries the command's output and exit status back. qemu
//! emulates the CPU (TCG): nested KVM is not dependable on the machines we
//! run on, and a guest that boots in seconds either way does not need it.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What a job in the guest left behind.
#[derive(Debug)]
pub struct Outcome {
    /// The command's exit status; `None` when the guest never reported one
    /// (it did not boot, or the time ran out).
    pub status: Option<i32>,
    /// The command's standard output and error.
    pub output: String,
    /// The guest's console (kernel messages, boot failures).
    pub console: String,
}

impl Outcome {
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }
}

/// The prepared image: `AMPHORA_VM_DIR`, else `target/vm` of the workspace.
pub fn image_dir() -> Result<PathBuf, String> {
    let dir = match std::env::var_os("AMPHORA_VM_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/vm"),
    };
    if dir.join("ready").is_file() {
        Ok(dir)
    } else {
        Err(format!("no VM image in {}: run scripts/vm-image.sh (scripts/test.sh does)", dir.display()))
    }
}

/// Whether this process is the guest's half of a test that
/// [`run_this_test`] started.
pub fn inside() -> bool {
    std::env::var_os(IN_VM).is_some()
}

const IN_VM: &str = "AMPHORA_IN_VM";

/// On the host: runs the test `name` of the current test binary in a guest
/// (with `AMPHORA_IN_VM` set there, so the test knows it is the guest's
/// half, and `env` added), prints its output and how long the guest ran,
/// and panics unless the guest reported the test passed. The outcome is
/// returned for further checks of the output.
pub fn run_this_test(name: &str, env: &[(&str, &str)], timeout: Duration) -> Outcome {
    let exe = std::env::current_exe().expect("this test's path");
    let command: Vec<OsString> = vec![exe.into_os_string(), name.into(), "--exact".into(), "--nocapture".into()];
    let mut all = vec![(IN_VM, "1"), ("RUST_BACKTRACE", "1")];
    all.extend_from_slice(env);
    let started = Instant::now();
    let outcome = run(&command, &all, timeout).unwrap_or_else(|e| panic!("cannot run the VM: {e}"));
    println!("{}\n(the VM ran for {:?})", outcome.output, started.elapsed());
    assert!(
        outcome.success() && outcome.output.contains(&format!("test {name} ... ok")),
        "{name} failed in the VM (status {:?}):\n{}\n---- console ----\n{}",
        outcome.status,
        outcome.output,
        if outcome.status.is_none() { outcome.console.as_str() } else { "" }
    );
    outcome
}

fn quote(text: &[u8]) -> String {
    format!("'{}'", String::from_utf8_lossy(text).replace('\'', r"'\''"))
}

/// Boots a guest, runs `command` (an absolute path and its arguments) in
/// the current directory with `env` added to a minimal environment, and
/// returns when it finished or `timeout` passed.
pub fn run(command: &[OsString], env: &[(&str, &str)], timeout: Duration) -> Result<Outcome, String> {
    let image = image_dir()?;
    let job = tempfile::Builder::new().prefix("amphora-vm.").tempdir().map_err(|e| e.to_string())?;
    let cwd = std::env::current_dir().map_err(|e| e.to_string())?;
    // /tmp stays the overlay's (writes land in the guest's memory like
    // everywhere else): a tmpfs over it would hide a checkout, its test
    // binaries and the image's modules when they live under the host's /tmp.
    // The guest's hostname resolves locally: the host's resolver is out of
    // reach there, and keepalived looks its hostname up at every start
    // (10 s of DNS timeouts each time otherwise).
    let mut script = String::from(
        "#!/bin/sh\n# Stage 2, on the overlay root: a usable system, then the job.\n\
         mount -t proc proc /proc\nmount -t sysfs sys /sys\nmount -t devtmpfs dev /dev\n\
         mkdir -p /dev/pts /dev/shm\nmount -t devpts devpts /dev/pts\nmount -t tmpfs tmpfs /dev/shm\n\
         mount -t tmpfs tmpfs /run\nmkdir -p /run/netns /run/lock\n\
         mount --make-rshared /\necho 1 > /proc/sys/kernel/sysrq\n\
         ip link set lo up\nhostname amphora-vm\n\
         echo \"127.0.1.1 amphora-vm\" >> /etc/hosts\n",
    );
    let _ = writeln!(
        script,
        "mkdir -p /lib/modules\nmount --bind {} /lib/modules",
        quote(image.join("lib/modules").as_os_str().as_bytes())
    );
    // A directory the guest cannot see must fail the job, not run it in /.
    let _ = writeln!(
        script,
        "cd {} || {{ echo \"vm: cannot enter the working directory\" > /job/output; echo 125 > /job/status; \
         sync; echo o > /proc/sysrq-trigger; sleep 60; }}",
        quote(cwd.as_os_str().as_bytes())
    );
    script.push_str("export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root\n");
    for (key, value) in env {
        let _ = writeln!(script, "export {key}={}", quote(value.as_bytes()));
    }
    let words: Vec<String> = command.iter().map(|w| quote(w.as_bytes())).collect();
    let _ = writeln!(script, "{} > /job/output 2>&1 < /dev/null\necho $? > /job/status", words.join(" "));
    script.push_str("sync\necho o > /proc/sysrq-trigger\nsleep 60\n");
    std::fs::write(job.path().join("run.sh"), script).map_err(|e| e.to_string())?;

    let console_path = job.path().join("console.log");
    let console = std::fs::File::create(&console_path).map_err(|e| e.to_string())?;
    let accel = std::env::var("AMPHORA_VM_ACCEL").unwrap_or_else(|_| "tcg,thread=multi".into());
    let share = |path: &Path, tag: &str, extra: &str| {
        format!("local,path={},mount_tag={tag},security_model=none,multidevs=remap{extra}", path.display())
    };
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            &accel,
            "-cpu",
            &std::env::var("AMPHORA_VM_CPU").unwrap_or_else(|_| "max".into()),
            "-m",
            "2048",
            "-smp",
            "2",
        ])
        .args(["-nographic", "-no-reboot", "-nic", "none", "-monitor", "none", "-serial", "stdio"])
        .arg("-kernel")
        .arg(image.join("kernel"))
        .arg("-initrd")
        .arg(image.join("initrd.gz"))
        .args(["-append", "console=ttyS0 quiet loglevel=3 panic=-1"])
        .args(["-virtfs", &share(Path::new("/"), "hostroot", ",readonly=on")])
        .args(["-virtfs", &share(job.path(), "job", "")])
        .stdin(Stdio::null())
        .stdout(console.try_clone().map_err(|e| e.to_string())?)
        .stderr(console)
        .spawn()
        .map_err(|e| format!("cannot run qemu-system-x86_64: {e}"))?;
    let deadline = Instant::now() + timeout;
    let finished = loop {
        match child.try_wait() {
            Ok(Some(_)) => break true,
            Ok(None) if Instant::now() >= deadline => break false,
            Ok(None) => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => return Err(e.to_string()),
        }
    };
    if !finished {
        let _ = child.kill();
        let _ = child.wait();
    }
    let read = |name: &str| std::fs::read_to_string(job.path().join(name)).unwrap_or_default();
    Ok(Outcome { status: read("status").trim().parse().ok(), output: read("output"), console: read("console.log") })
}
