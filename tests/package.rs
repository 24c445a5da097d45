//! What the Debian package ships, checked without building it (`.ci/package`
//! builds, lints, installs and purges it): the production template is valid
//! as shipped and with every commented key switched on; `--version` names
//! the commit; the hidden `assets` command writes every man page and
//! completion the package lists.

mod common;
use common::*;

const TEMPLATE: &str = include_str!("../debian/connwatch.toml");

/// The template with every commented TOML line (`# [table]`, `# key = …`)
/// switched on; prose comments stay.
fn switched_on(text: &str) -> String {
    text.lines()
        .map(|l| {
            let Some(rest) = l.strip_prefix("# ") else {
                return l.to_string();
            };
            let header = rest.starts_with('[')
                && rest
                    .split_whitespace()
                    .next()
                    .is_some_and(|h| h.ends_with(']'));
            let key = rest.split_once(" = ").is_some_and(|(k, _)| {
                !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            });
            if header || key {
                rest.to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_production_template_is_valid_as_shipped_and_switched_on() {
    let s = Setup::new(TEMPLATE);
    let out = s.cmd(&["check"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(plan.contains("0 connection(s)"), "{plan}");

    let on = switched_on(TEMPLATE);
    assert!(on.contains("\n[[sink]]\nid = \"mail\""), "{on}");
    let creds = tempfile::tempdir().unwrap();
    std::fs::write(creds.path().join("pd_routing_key"), "R0UT1NGKEY\n").unwrap();
    std::fs::write(
        creds.path().join("admin_token"),
        "an-admin-token-of-32-characters\n",
    )
    .unwrap();
    let s = Setup::new(&on);
    let cd = creds.path().to_str().unwrap();
    let out = s.cmd_env(
        &["check"],
        &[
            ("CREDENTIALS_DIRECTORY", cd),
            ("PLATFORM_TOKEN", "t"),
            (
                "CONNWATCH_WEBHOOK_SECRET",
                "whsec_c2FuZGJveC1vbmx5LW5vdC1hLXJlYWwtc2VjcmV0",
            ),
            ("SLACK_WEBHOOK_URL", "https://hooks.slack.com/services/x"),
            ("TEAMS_WORKFLOW_URL", "https://teams.example/workflow"),
            ("SMTP_PASSWORD", "p"),
            ("CONNWATCH_HEARTBEAT_URL", "https://hc.example/ping/x"),
        ],
    );
    let plan = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{plan}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every sink kind is in the template.
    for kind in [
        "webhook",
        "pagerduty",
        "alertmanager",
        "slack",
        "teams",
        "email",
        "command",
        "log",
    ] {
        assert!(
            plan.contains(&format!(" {kind} ")),
            "{kind} missing from:\n{plan}"
        );
    }
    assert!(!plan.contains("R0UT1NGKEY"), "no secret in the plan");
}

#[test]
fn version_names_the_commit_and_assets_are_written() {
    let out = std::process::Command::new(BIN)
        .arg("--version")
        .output()
        .unwrap();
    let v = String::from_utf8_lossy(&out.stdout);
    assert!(
        v.starts_with(&format!("connwatch {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{v}"
    );
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN)
        .arg("assets")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for p in [
        "man/connwatch.1.gz",
        "man/connwatch-run.1.gz",
        "man/connwatch-check.1.gz",
        "man/connwatch-status.1.gz",
        "man/connwatch.toml.5.gz",
        "completions/connwatch.bash",
        "completions/_connwatch",
        "completions/connwatch.fish",
    ] {
        let f = dir.path().join(p);
        assert!(
            std::fs::metadata(&f).is_ok_and(|m| m.len() > 100),
            "{p} missing or empty"
        );
    }
    let bash = std::fs::read_to_string(dir.path().join("completions/connwatch.bash")).unwrap();
    assert!(
        bash.contains("--discover"),
        "completions know the real flags"
    );
    // The hidden command stays out of the pages and of --help.
    let help = std::process::Command::new(BIN)
        .arg("--help")
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&help.stdout).contains("assets"));
}
