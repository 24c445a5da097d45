//! Secrets (header values, URL credentials and secret-looking query values,
//! sink secrets and routing keys, the admin token) never appear in the
//! database, the logs (at trace level), the audit log, the output of any
//! command, the admin API's answers or the status page.

mod common;
use common::*;
use std::time::Duration;

const HEADER_SECRET: &str = "tok-SECRET-5b1e9c";
const QUERY_SECRET: &str = "qry-SECRET-77ad";
const USERINFO_SECRET: &str = "pw-SECRET-99f0";
const ROUTING_KEY: &str = "pd-SECRET-31c4";
// base64 of "sink-SECRET-webhook-key"
const WEBHOOK_SECRET: &str = "whsec_c2luay1TRUNSRVQtd2ViaG9vay1rZXk=";
const ADMIN_TOKEN: &str = "adm-SECRET-0c1d2e3f4a5b";

#[test]
fn no_secret_leaks_anywhere() {
    let addr = scenario_server();
    let port = free_port();
    // The token comes from a file outside the scanned directory (as with
    // systemd's LoadCredential=).
    let creds = tempfile::tempdir().unwrap();
    let token_file = creds.path().join("admin.token");
    std::fs::write(&token_file, format!("{ADMIN_TOKEN}\n")).unwrap();
    let setup = Setup::new(&format!(
        r#"
[daemon]
database = "cw.db"
history_flush = "1s"
audit_log = "audit.jsonl"
listen = "127.0.0.1:{port}"
admin_token_file = "{}"

[defaults]
interval = "1s"
timeout = "800ms"
headers = {{ Authorization = "Bearer ${{CW_TEST_TOKEN}}", X-Api-Key = "${{CW_TEST_TOKEN}}" }}

[[connection]]
id = "auth"
url = "http://{addr}/auth?api_key={QUERY_SECRET}&page=1"

[[connection]]
id = "userinfo"
url = "http://svc:{USERINFO_SECRET}@{addr}/goes-down"

[[connection]]
id = "dead"
url = "http://127.0.0.1:9/status?token={QUERY_SECRET}"

[[sink]]
id = "hook"
kind = "webhook"
url = "http://{addr}/hook?token={QUERY_SECRET}"
secret = "{WEBHOOK_SECRET}"

[[sink]]
id = "pager"
kind = "pagerduty"
routing_key = "${{CW_PD_KEY}}"
url = "http://{addr}/pd"
"#,
        token_file.display()
    ));
    let env = [
        ("CW_TEST_TOKEN", HEADER_SECRET),
        ("CW_PD_KEY", ROUTING_KEY),
        ("RUST_LOG", "trace"),
    ];
    let mut daemon = setup.spawn_daemon(&env);
    assert!(
        eventually(Duration::from_secs(30), || setup.db().exists()
            && setup
                .status_json()
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c["health"] != "unknown")),
        "log:\n{}",
        setup.daemon_log()
    );

    let mut outputs = Vec::new();
    for args in [
        vec!["check"],
        vec!["status"],
        vec!["status", "--json"],
        vec!["history", "auth"],
        vec!["history", "auth", "--json"],
        vec!["history", "dead", "--json"],
        vec!["probe", "auth"],
        vec!["probe", "userinfo", "--json"],
        vec!["probe", "dead"],
        vec!["events"],
        vec!["events", "--json"],
    ] {
        let out = setup.cmd_env(&args, &env);
        // 3: status of a stopped daemon, probe of an unhealthy connection.
        assert!(
            matches!(out.status.code(), Some(0 | 3)),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        outputs.extend(out.stdout);
        outputs.extend(out.stderr);
    }
    // The admin API and the status page, read with the token, and the
    // mutating routes with the right, a wrong and a near-miss token.
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let near = format!("Bearer {}", &ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1]);
    for (method, path, auth) in [
        ("GET", "/", bearer.as_str()),
        ("GET", "/metrics", bearer.as_str()),
        ("GET", "/readyz", ""),
        ("GET", "/api/v1/connections", bearer.as_str()),
        ("GET", "/api/v1/connections/auth", bearer.as_str()),
        ("GET", "/api/v1/connections/userinfo", bearer.as_str()),
        ("GET", "/api/v1/connections/dead", bearer.as_str()),
        ("GET", "/api/v1/events?limit=500", bearer.as_str()),
        ("POST", "/api/v1/connections/auth/probe", bearer.as_str()),
        ("POST", "/api/v1/connections/auth/probe", near.as_str()),
        ("POST", "/api/v1/connections/auth/probe", "Bearer wrong"),
    ] {
        let headers: Vec<(&str, &str)> = if auth.is_empty() {
            vec![]
        } else {
            vec![("Authorization", auth)]
        };
        let (code, head, body) = http_req(port, method, path, &headers)
            .unwrap_or_else(|| panic!("{method} {path}: no answer"));
        assert!(code < 500, "{method} {path}: {code} {body}");
        outputs.extend(head.into_bytes());
        outputs.extend(body.into_bytes());
    }
    // An error path: a bad header value built from the secret.
    let bad = Setup::new("[[connection]]\nid = \"a\"\nurl = \"http://127.0.0.1:9/\"\nheaders = { A = \"${CW_TEST_TOKEN}\\n\" }\n");
    let out = bad.cmd_env(&["check"], &env);
    assert_eq!(out.status.code(), Some(2));
    outputs.extend(out.stderr);

    assert_eq!(terminate(&mut daemon, Duration::from_secs(15)), Some(0));
    let log = setup.daemon_log();
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "trace logging was on"
    );
    assert!(
        setup.dir.path().join("audit.jsonl").exists(),
        "the audit log is scanned too"
    );
    let files = all_bytes(setup.dir.path());
    assert!(files.len() > 10_000, "database and log were read");
    for secret in [
        HEADER_SECRET,
        QUERY_SECRET,
        USERINFO_SECRET,
        ROUTING_KEY,
        WEBHOOK_SECRET,
        "c2luay1TRUNSRVQ",
        ADMIN_TOKEN,
    ] {
        assert!(
            !contains(&files, secret),
            "{secret} found in the database or log files"
        );
        assert!(
            !contains(&outputs, secret),
            "{secret} found in command output"
        );
    }
    // The masked forms are there instead.
    let outs = String::from_utf8_lossy(&outputs);
    assert!(outs.contains("api_key=***"), "{outs}");
    assert!(outs.contains("page=1"));
    assert!(outs.contains("svc:***@") || outs.contains("***@"), "{outs}");
    // The API answered (rows for every connection, the page rendered).
    assert!(outs.contains("\"id\":\"userinfo\""), "{outs}");
    assert!(outs.contains("<html"), "status page");
}
