//! The audit log with the real binary: every kind of line in one hash chain,
//! SIGUSR1 reopening a renamed (rotated) file, `connwatch audit verify`
//! across both files, and an edited line caught.

mod common;
use common::*;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

#[test]
fn audit_chain_survives_rotation_and_catches_an_edit() {
    let setup = Setup::new(
        "[daemon]\ndatabase = \"cw.db\"\naudit_log = \"audit.jsonl\"\nhistory_flush = \"1s\"\n\
         [defaults]\ninterval = \"500ms\"\ntimeout = \"300ms\"\n\
         [[connection]]\nid = \"dead\"\nurl = \"http://127.0.0.1:9/status\"\n\
         [[sink]]\nid = \"file\"\nkind = \"log\"\npath = \"events.jsonl\"\n",
    );
    let audit = setup.dir.path().join("audit.jsonl");
    let rotated = setup.dir.path().join("audit.jsonl.1");
    let mut d = setup.spawn_daemon(&[]);
    assert!(eventually(Duration::from_secs(10), || {
        std::fs::read_to_string(&audit).is_ok_and(|t| t.contains("\"delivery_attempt\""))
    }));
    // An operator action from another process joins the same chain.
    let out = setup.cmd(&["events", "--json"]);
    let events: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let id = events[0]["id"].as_str().unwrap().to_string();
    assert_eq!(setup.cmd(&["events", "replay", &id]).status.code(), Some(0));
    // logrotate: rename, then SIGUSR1.
    std::fs::rename(&audit, &rotated).unwrap();
    Command::new("kill")
        .args(["-USR1", &d.id().to_string()])
        .status()
        .unwrap();
    assert!(eventually(Duration::from_secs(5), || {
        std::fs::read_to_string(&audit).is_ok_and(|t| t.contains("\"log_reopened\""))
    }));
    std::thread::sleep(Duration::from_millis(1_500));
    assert_eq!(
        terminate(&mut d, Duration::from_secs(15)),
        Some(0),
        "{}",
        setup.daemon_log()
    );

    let old = std::fs::read_to_string(&rotated).unwrap();
    let kinds: Vec<String> = old
        .lines()
        .chain(std::fs::read_to_string(&audit).unwrap().lines())
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    for k in [
        "config_load",
        "transition",
        "event",
        "delivery_attempt",
        "operator",
        "log_reopened",
    ] {
        assert!(kinds.iter().any(|x| x == k), "{k} missing: {kinds:?}");
    }
    let transition = old.lines().find(|l| l.contains("\"transition\"")).unwrap();
    assert!(
        transition.contains("\"connection_id\":\"dead\""),
        "{transition}"
    );
    assert_eq!(
        std::fs::metadata(&audit).unwrap().permissions().mode() & 0o777,
        0o640
    );

    // verify: default files (the rotated one first), then explicit ones.
    let out = setup.cmd(&["audit", "verify"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 file(s)"));
    // Edit the third line of the rotated file: the fourth no longer matches.
    let lines: Vec<&str> = old.lines().collect();
    let mut edited: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
    edited[2] = edited[2].replacen("\"kind\"", "\"kind \"", 1);
    std::fs::write(&rotated, edited.join("\n") + "\n").unwrap();
    let out = Command::new(BIN)
        .args(["audit", "verify"])
        .arg(&rotated)
        .arg(&audit)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("broken chain at {}:4", rotated.display())),
        "{err}"
    );
}
