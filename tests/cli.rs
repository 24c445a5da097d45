//! The command line: exit codes and messages of the real binary.

mod common;
use common::*;

/// Bad configurations: each exits 2 and names the file and line.
#[test]
fn bad_configs_exit_2_naming_the_line() {
    let cases: &[(&str, &str, &str)] = &[
        ("unknown key", "[[connection]]\nid = \"a\"\nurl = \"http://h/\"\ntimout = \"1s\"\n", ":4:1: unknown key `timout`"),
        ("bad duration", "[[connection]]\nid = \"a\"\nurl = \"http://h/\"\ninterval = \"soon\"\n", ":4:12: connection \"a\".interval: invalid duration"),
        ("duplicate id", "[[connection]]\nid = \"a\"\nurl = \"http://h/\"\n[[connection]]\nid = \"a\"\nurl = \"http://h/\"\n", ":5:6: connection \"a\".id: duplicate connection id"),
        ("bad url", "[[connection]]\nid = \"a\"\nurl = \"http//h\"\n", ":3:7: connection \"a\".url: invalid URL"),
        ("missing env var", "[[connection]]\nid = \"a\"\nurl = \"http://h/${CW_UNSET_VAR_X}\"\n", ":3:7: connection \"a\".url: environment variable CW_UNSET_VAR_X is not set"),
        ("bad cron", "[[connection]]\nid = \"a\"\nurl = \"http://h/\"\nschedule = \"* * * * *\"\n", ":4:12: connection \"a\".schedule: cron expression"),
        ("toml syntax", "[[connection]\nid = \"a\"\n", ":1:"),
    ];
    for (name, text, want) in cases {
        let s = Setup::new(text);
        // status/history need only [daemon], but syntax and keys are checked.
        let read_only_too = matches!(*name, "unknown key" | "toml syntax");
        let cmds: &[&[&str]] = if read_only_too {
            &[&["check"], &["run"], &["status"]]
        } else {
            &[&["check"], &["run"]]
        };
        for cmd in cmds {
            let out = s.cmd(cmd);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{name} / {cmd:?}: {err}");
            let path = s.config.display().to_string();
            assert!(
                err.contains(&format!("{path}{want}")),
                "{name} / {cmd:?}: {err:?} lacks {want:?}"
            );
        }
    }
}

#[test]
fn read_only_commands_need_no_secret_variables() {
    let s = Setup::new("[daemon]\ndatabase = \"cw.db\"\n[[connection]]\nid = \"a\"\nurl = \"http://h/\"\nheaders = { A = \"${CW_NOT_SET_HERE}\" }\n");
    connwatch::store::Store::open(&s.db()).unwrap();
    let out = s.cmd(&["status"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // ...while check, which validates everything, names the variable.
    let out = s.cmd(&["check"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("CW_NOT_SET_HERE is not set"));
}

#[test]
fn check_prints_the_plan() {
    let s = Setup::new(
        "[defaults]\ninterval = \"15s\"\n[[connection]]\nid = \"sap-prod\"\nurl = \"https://u:p@h.example/s?token=t0k\"\nsinks = [\"ops\"]\n\
         [[connection]]\nid = \"cron-one\"\nurl = \"http://h/\"\nschedule = \"0 */5 * * * *\"\ntimeout = \"3s\"\n\
         [[sink]]\nid = \"ops\"\nkind = \"log\"\n\
         [[sink]]\nid = \"chat\"\nkind = \"slack\"\nurl = \"https://hooks.slack.example/services/T0/B0/slacksecret\"\n",
    );
    let out = s.cmd(&["check"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("is valid"), "{text}");
    let sap = text.lines().find(|l| l.starts_with("sap-prod")).unwrap();
    assert!(
        sap.contains("every 15s") && sap.contains("10s") && sap.contains("ops"),
        "{sap}"
    );
    assert!(!sap.contains("t0k") && !sap.contains(":p@"), "{sap}");
    let cron = text.lines().find(|l| l.starts_with("cron-one")).unwrap();
    assert!(
        cron.contains("cron 0 */5 * * * *") && cron.contains("3s"),
        "{cron}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("ops") && l.contains("log")),
        "{text}"
    );
    assert!(
        !text.contains("slacksecret"),
        "a Slack webhook URL is a secret: {text}"
    );
    assert!(text.contains("https://hooks.slack.example/***"), "{text}");
}

#[test]
fn usage_errors_exit_2_and_runtime_errors_exit_1() {
    let s = Setup::new("[daemon]\ndatabase = \"cw.db\"\n[[connection]]\nid = \"a\"\nurl = \"http://127.0.0.1:9/\"\n");
    assert_eq!(s.cmd(&["no-such-command"]).status.code(), Some(2));
    assert_eq!(s.cmd(&["history"]).status.code(), Some(2));
    assert_eq!(
        s.cmd(&["history", "a", "--since", "forever"]).status.code(),
        Some(2)
    );
    // No database yet: a runtime failure with a clear message.
    let out = s.cmd(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
    assert_eq!(s.cmd(&["probe", "nope"]).status.code(), Some(2));
    let out = s.cmd(&["probe", "--url", "ftp://x/"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn probe_classifies_without_writing() {
    let addr = scenario_server();
    let s = Setup::new(&format!("[daemon]\ndatabase = \"cw.db\"\n[[connection]]\nid = \"a\"\nurl = \"http://{addr}/degraded\"\n"));
    let out = s.cmd(&["probe", "a", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["outcome"], "degraded");
    assert_eq!(v["http_status"], 200);
    assert!(!s.db().exists(), "probe wrote nothing");
    let out = s.cmd(&["probe", "--url", &format!("http://{addr}/ratelimit")]);
    assert_eq!(out.status.code(), Some(3), "not healthy: exit 3");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("rate_limited") && text.contains("retry after: 30 s"),
        "{text}"
    );
    // Nothing listening: unreachable/connect.
    let out = s.cmd(&["probe", "--url", "http://127.0.0.1:9/", "--json"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("adhoc: unreachable"));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["outcome"], "unreachable");
    assert_eq!(v["error"]["kind"], "connect");
}

#[test]
fn prune_applies_retention() {
    let s = Setup::new("[daemon]\ndatabase = \"cw.db\"\nretention = \"1h\"\n[[connection]]\nid = \"a\"\nurl = \"http://127.0.0.1:9/\"\n");
    // Create the database with one old and one new probe row.
    {
        let mut store = connwatch::store::Store::open(&s.db()).unwrap();
        let k = store
            .sync_connections(&[connwatch::store::ConnMeta::bare("a")])
            .unwrap()["a"]
            .key;
        let now = connwatch::model::now_ms();
        store
            .db
            .execute(
                "INSERT INTO probes (conn, at, outcome, latency_ms) VALUES (?1, ?2, 3, 1)",
                [k, now - 7_200_000],
            )
            .unwrap();
        store
            .db
            .execute(
                "INSERT INTO probes (conn, at, outcome, latency_ms) VALUES (?1, ?2, 3, 1)",
                [k, now],
            )
            .unwrap();
    }
    let out = s.cmd(&["prune"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("pruned 1 probe rows"));
}

/// Output cut short by the reader (`| head`) ends the command quietly.
#[test]
fn a_closed_pipe_is_not_a_panic() {
    use std::io::Read;
    let mut text = String::from("[daemon]\ndatabase = \"cw.db\"\n");
    for i in 0..3_000 {
        text.push_str(&format!(
            "[[connection]]\nid = \"c{i}\"\nurl = \"http://127.0.0.1:9/{i}\"\n"
        ));
    }
    let s = Setup::new(&text);
    let mut child = std::process::Command::new(BIN)
        .args(["check", "--config"])
        .arg(&s.config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 16];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    // The reader has gone (its end dropped above).
    let out = wait_output(child, std::time::Duration::from_secs(30));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.status.signal(),
        Some(13),
        "ended by SIGPIPE: {:?}",
        out.status
    );
}
