//! The virtual machine harness itself: the guest boots on this machine's
//! root, has the kernel features the host lacks, and reports the command's
//! output and exit status faithfully.

use std::ffi::OsString;
use std::time::Duration;

use amphora_testkit::vm;

#[test]
fn a_guest_runs_a_command_with_ipvs_and_reports_its_status() {
    let command: Vec<OsString> =
        ["/bin/sh", "-c", "ipvsadm -A -u 192.0.2.1:53 -s rr && ipvsadm -Ln && echo \"$GREETING\"; exit 3"]
            .iter()
            .map(OsString::from)
            .collect();
    let outcome = vm::run(&command, &[("GREETING", "it's me")], Duration::from_secs(300)).expect("vm");
    assert_eq!(outcome.status, Some(3), "output:\n{}\nconsole:\n{}", outcome.output, outcome.console);
    assert!(outcome.output.contains("UDP  192.0.2.1:53 rr"), "{}", outcome.output);
    assert!(outcome.output.contains("it's me"), "{}", outcome.output);
}
