use super::*;

fn env(name: &str) -> Option<String> {
    match name {
        "TOKEN" => Some("s3cr3t-token".into()),
        "PD_KEY" => Some("pd-routing-key".into()),
        _ => None,
    }
}

fn parse(text: &str) -> Result<Config, ConfigErrors> {
    Config::parse(Path::new("/etc/connwatch/test.toml"), text, &env)
}

fn errors(text: &str) -> Vec<ConfigError> {
    match parse(text) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(e) => e.0,
    }
}

const MIN: &str = "[[connection]]\nid = \"a\"\nurl = \"http://127.0.0.1:1/status\"\n";

#[test]
fn equal_expect_tables_share_one_copy() {
    let c = parse(
        "[[connection]]\nid = \"a\"\nurl = \"http://127.0.0.1:1/a\"\n\
         [[connection]]\nid = \"b\"\nurl = \"http://127.0.0.1:1/b\"\n\
         [[connection]]\nid = \"c\"\nurl = \"http://127.0.0.1:1/c\"\nexpect = { json_pointer = \"/state\" }\n",
    )
    .unwrap();
    let k = &c.connections;
    assert!(Arc::ptr_eq(&k[0].expect, &k[1].expect));
    assert!(!Arc::ptr_eq(&k[0].expect, &k[2].expect));
    assert_eq!(k[2].expect.json_pointer.as_deref(), Some("/state"));
}

#[test]
fn minimal_config_gets_every_default() {
    let c = parse(MIN).unwrap();
    let k = &c.connections[0];
    assert_eq!(k.cadence, Cadence::Interval(DEFAULT_INTERVAL));
    assert_eq!(k.timeout, DEFAULT_TIMEOUT);
    assert_eq!(k.max_body, DEFAULT_MAX_BODY);
    assert_eq!(*k.expect, Expect::default());
    assert_eq!(k.breaker, Breaker::default());
    assert_eq!(k.method, reqwest::Method::GET);
    assert_eq!(c.daemon.database, PathBuf::from(DEFAULT_DATABASE));
    assert_eq!(
        c.daemon.max_concurrent_probes,
        DEFAULT_MAX_CONCURRENT_PROBES
    );
    assert!(c.sinks.is_empty() && k.sinks.is_empty());
}

#[test]
fn defaults_are_inherited_and_overridden_key_by_key() {
    let c = parse(
        r#"
[defaults]
interval = "10s"
timeout = "3s"
headers = { Authorization = "Bearer ${TOKEN}", X-Tenant = "t1" }
breaker = { failure_threshold = 5, open_for = "1m" }
expect = { json_pointer = "/state" }

[[connection]]
id = "a"
url = "https://h.example/status"
breaker = { success_threshold = 4 }
headers = { X-Tenant = "t2" }

[[connection]]
id = "b"
url = "https://h.example/b"
schedule = "0 */5 * * * *"
expect = { json_pointer = "" }
"#,
    )
    .unwrap();
    let a = &c.connections[0];
    assert_eq!(a.cadence, Cadence::Interval(Duration::from_secs(10)));
    assert_eq!(a.timeout, Duration::from_secs(3));
    assert_eq!(a.breaker.failure_threshold, 5);
    assert_eq!(a.breaker.success_threshold, 4);
    assert_eq!(a.breaker.open_for, Duration::from_secs(60));
    assert_eq!(a.expect.json_pointer.as_deref(), Some("/state"));
    let h: Vec<(&str, &str)> = a
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.expose()))
        .collect();
    assert!(h.contains(&("Authorization", "Bearer s3cr3t-token")));
    assert!(h.contains(&("X-Tenant", "t2")));
    assert_eq!(h.len(), 2);
    let b = &c.connections[1];
    assert_eq!(b.cadence, Cadence::Cron("0 */5 * * * *".into()));
    assert_eq!(b.expect.json_pointer, None);
}

#[test]
fn secrets_print_as_stars() {
    let c = parse(&format!(
        "{MIN}headers = {{ Authorization = \"Bearer ${{TOKEN}}\" }}\n[[sink]]\nid = \"p\"\nkind = \"pagerduty\"\nrouting_key = \"${{PD_KEY}}\"\n"
    ))
    .unwrap();
    let dump = format!("{c:?}");
    assert!(!dump.contains("s3cr3t-token"), "{dump}");
    assert!(!dump.contains("pd-routing-key"), "{dump}");
    assert!(dump.contains("***"));
    assert_eq!(c.connections[0].sinks, vec!["p".to_string()]);
}

/// Each bad configuration, the line its first error is on, and words the
/// message must contain.
#[test]
fn bad_configs_name_line_and_problem() {
    let cases: &[(&str, &str, usize, &[&str])] = &[
        ("toml syntax", "[daemon\ndatabase = 1\n", 1, &["invalid TOML"]),
        ("unterminated string", "[[connection]]\nid = \"a\nurl = \"x\"\n", 2, &["invalid TOML"]),
        ("unknown top key", "[deamon]\n", 1, &["unknown key `deamon`", "did you mean `daemon`"]),
        ("unknown connection key", &format!("{MIN}intervall = \"5s\"\n"), 4, &["`intervall`", "did you mean `interval`"]),
        ("unknown nested key", &format!("{MIN}breaker = {{ failure_treshold = 3 }}\n"), 4, &["`failure_treshold`", "connection.breaker", "`failure_threshold`"]),
        ("unknown key, no suggestion", &format!("{MIN}zzzzzz = 1\n"), 4, &["unknown key `zzzzzz`"]),
        ("id in defaults", "[defaults]\nid = \"x\"\n", 2, &["unknown key `id` in [defaults]"]),
        ("wrong type", &format!("{MIN}timeout = 5\n"), 4, &["connection \"a\".timeout: expected a string", "found integer"]),
        ("bad duration", &format!("{MIN}interval = \"5 parsecs\"\n"), 4, &["connection \"a\".interval", "invalid duration"]),
        ("duration without unit", &format!("{MIN}timeout = \"30\"\n"), 4, &["no unit"]),
        ("interval too short", &format!("{MIN}interval = \"10ms\"\n"), 4, &["out of range"]),
        ("duplicate id", &format!("{MIN}{MIN}"), 5, &["duplicate connection id \"a\""]),
        ("bad id", "[[connection]]\nid = \"has space\"\nurl = \"http://x/\"\n", 2, &["must be 1 to 64 characters"]),
        ("missing id", "[[connection]]\nurl = \"http://x/\"\n", 1, &["needs an `id`"]),
        ("missing url", "[[connection]]\nid = \"a\"\n", 1, &["needs a `url`"]),
        ("bad url", "[[connection]]\nid = \"a\"\nurl = \"not a url\"\n", 3, &["connection \"a\".url", "invalid URL"]),
        ("non-http url", "[[connection]]\nid = \"a\"\nurl = \"ftp://x/\"\n", 3, &["http:// or https://"]),
        ("missing env var", &format!("{MIN}headers = {{ Authorization = \"Bearer ${{NOPE}}\" }}\n"), 4, &["environment variable NOPE is not set"]),
        ("bad cron (5 fields)", &format!("{MIN}schedule = \"*/5 * * * *\"\n"), 4, &["5 fields", "6"]),
        ("bad cron (garbage)", &format!("{MIN}schedule = \"a b c d e f\"\n"), 4, &["invalid cron"]),
        ("interval and schedule", &format!("{MIN}interval = \"5s\"\nschedule = \"0 * * * * *\"\n"), 5, &["not both"]),
        ("threshold zero", &format!("{MIN}breaker = {{ failure_threshold = 0 }}\n"), 4, &["failure_threshold", "out of range"]),
        ("failure rate > 1", &format!("{MIN}breaker = {{ failure_rate = 1.5 }}\n"), 4, &["failure_rate"]),
        ("min_probes > window", &format!("{MIN}breaker = {{ window = 5, min_probes = 10 }}\n"), 4, &["min_probes (10) is larger than window (5)"]),
        ("unknown sink reference", &format!("{MIN}sinks = [\"opz\"]\n[[sink]]\nid = \"ops\"\nkind = \"log\"\n"), 4, &["no sink with id \"opz\"", "did you mean \"ops\""]),
        ("bad sink kind", "[[sink]]\nid = \"s\"\nkind = \"sms\"\n", 3, &["unknown sink kind \"sms\""]),
        ("webhook without url", "[[sink]]\nid = \"s\"\nkind = \"webhook\"\n", 1, &["needs a `url`"]),
        ("bad webhook secret", "[[sink]]\nid = \"s\"\nkind = \"webhook\"\nurl = \"http://h/\"\nsecret = \"plain\"\n", 5, &["whsec_"]),
        ("pagerduty without key", "[[sink]]\nid = \"s\"\nkind = \"pagerduty\"\n", 1, &["routing_key"]),
        ("key not for this kind", "[[sink]]\nid = \"s\"\nkind = \"log\"\nurl = \"http://h/\"\n", 4, &["does not apply to a log sink"]),
        ("duplicate sink", "[[sink]]\nid = \"s\"\nkind = \"log\"\n[[sink]]\nid = \"s\"\nkind = \"log\"\n", 5, &["duplicate sink id"]),
        ("unknown event type", &format!("{MIN}events = [\"connection.status_change\"]\n"), 4, &["unknown event type", "connection.status_changed"]),
        ("bad status code", &format!("{MIN}expect = {{ status = [200, 999] }}\n"), 4, &["999 is out of range"]),
        ("bad json pointer", &format!("{MIN}expect = {{ json_pointer = \"status\" }}\n"), 4, &["must start with \"/\""]),
        ("overlapping value maps", &format!("{MIN}expect = {{ online = [\"ok\"], offline = [\"OK\"] }}\n"), 4, &["more than one outcome"]),
        ("max_body too big", &format!("{MIN}max_body = \"1GiB\"\n"), 4, &["unknown size unit"]),
        ("bad header name", &format!("{MIN}headers = {{ \"Bad Header\" = \"x\" }}\n"), 4, &["not a valid HTTP header name"]),
        ("missing CA file", &format!("{MIN}tls_ca_file = \"/nonexistent/ca.pem\"\n"), 4, &["cannot read /nonexistent/ca.pem"]),
        ("cert without key", &format!("{MIN}tls_client_cert = \"/etc/hostname\"\n"), 1, &["go together"]),
        ("maintenance bad reference", &format!("{MIN}[[maintenance]]\nconnections = [\"b\"]\nschedule = \"0 0 2 * * Sun\"\nduration = \"2h\"\n"), 5, &["no connection with id \"b\""]),
        ("maintenance without duration", &format!("{MIN}[[maintenance]]\nschedule = \"0 0 2 * * Sun\"\n"), 4, &["needs a `duration`"]),
        ("bad log format", "[daemon]\nlog_format = \"xml\"\n", 2, &["\"xml\""]),
        ("bad listen", "[daemon]\nlisten = \"localhost\"\n", 2, &["not an address"]),
        ("sandbox off loopback", "[sandbox]\nlisten = \"0.0.0.0:8089\"\n", 2, &["loopback"]),
        ("bad concurrency", "[daemon]\nmax_concurrent_probes = 0\n", 2, &["out of range"]),
    ];
    for (name, text, line, words) in cases {
        let errs = errors(text);
        let first = &errs[0];
        let shown = first.to_string();
        assert_eq!(first.line, *line, "{name}: {shown}");
        assert!(first.column >= 1, "{name}");
        assert!(
            shown.starts_with("/etc/connwatch/test.toml:"),
            "{name}: {shown}"
        );
        for w in *words {
            assert!(shown.contains(w), "{name}: {shown:?} lacks {w:?}");
        }
    }
}

#[test]
fn every_unknown_key_is_reported_not_just_the_first() {
    let errs = errors("[daemon]\ndatabse = \"x\"\n[[connection]]\nid = \"a\"\nurl = \"http://h/\"\ntimout = \"1s\"\n");
    assert_eq!(errs.len(), 2);
    assert_eq!((errs[0].line, errs[1].line), (2, 6));
}

#[test]
fn validation_collects_every_error() {
    let errs = errors(
        "[[connection]]\nid = \"a\"\nurl = \"bad\"\ninterval = \"x\"\n[[connection]]\nid = \"b b\"\nurl = \"http://h/\"\n",
    );
    assert_eq!(errs.len(), 3, "{errs:?}");
}

#[test]
fn secret_values_never_appear_in_errors() {
    // An invalid header value that embeds a secret: the error names the
    // header, never the value.
    let errs = errors(&format!(
        "{MIN}headers = {{ Authorization = \"Bearer ${{TOKEN}}\\u0007\" }}\n"
    ));
    let shown = errs[0].to_string();
    assert!(shown.contains("Authorization"), "{shown}");
    assert!(!shown.contains("s3cr3t-token"), "{shown}");
    // A bad URL with credentials: not echoed either.
    let errs = errors("[[connection]]\nid = \"a\"\nurl = \"http://user:${TOKEN}@[bad/\"\n");
    assert!(!errs[0].to_string().contains("s3cr3t-token"));
}

#[test]
fn the_example_config_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
    let c = Config::load_with_env(&path, &|_| None).unwrap_or_else(|e| panic!("{e}"));
    assert!(c.sandbox.as_ref().is_some_and(|s| s.enabled));
    assert!(c.connections.len() >= 8);
    assert!(c
        .connections
        .iter()
        .any(|k| matches!(k.cadence, Cadence::Cron(_))));
    // Relative database path resolves next to the file.
    assert!(c.daemon.database.starts_with(env!("CARGO_MANIFEST_DIR")));
}

#[test]
fn urls_are_redacted() {
    let u = Url::parse("https://user:pw@h.example/s?token=abc&page=2&api_key=k").unwrap();
    let r = redact_url(&u);
    assert!(
        !r.contains("pw") && !r.contains("abc") && !r.contains("=k"),
        "{r}"
    );
    assert!(r.contains("page=2"), "{r}");
    assert_eq!(redact_url(&Url::parse("http://h/x").unwrap()), "http://h/x");
}

#[test]
fn unreadable_file_is_named() {
    let e = Config::load(Path::new("/nonexistent/connwatch.toml")).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/connwatch.toml"));
}

#[test]
fn secrets_come_from_files_with_the_path_expanded_and_the_contents_not() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    std::fs::write(
        dir.path().join("admin"),
        "admin-token-${NOT_EXPANDED}-0123\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("pd"), "pd-key-from-file\n\n").unwrap();
    let wh1 = "whsec_c2FuZGJveC1vbmx5LW5vdC1hLXJlYWwtc2VjcmV0";
    let wh2 = "whsec_b3RoZXItc2FuZGJveC1zZWNyZXQtdmFsdWU=";
    std::fs::write(dir.path().join("wh"), format!("{wh1}\n{wh2}\n")).unwrap();
    let env = |name: &str| (name == "CREDS").then(|| d.clone());
    let text = "[daemon]\nlisten = \"127.0.0.1:9185\"\nadmin_token_file = \"${CREDS}/admin\"\n\
                [[sink]]\nid = \"pd\"\nkind = \"pagerduty\"\nrouting_key_file = \"${CREDS}/pd\"\n\
                [[sink]]\nid = \"wh\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:1/\"\nsecret_file = \"${CREDS}/wh\"\n";
    let c = Config::parse(Path::new("/etc/connwatch/test.toml"), text, &env).unwrap();
    assert_eq!(
        c.daemon.admin_token.as_ref().unwrap().expose(),
        "admin-token-${NOT_EXPANDED}-0123"
    );
    let any = |i: usize| -> &dyn std::any::Any { &*c.sinks[i].imp };
    let pd = any(0).downcast_ref::<crate::sinks::pagerduty::PagerDuty>();
    assert_eq!(pd.unwrap().routing_key().expose(), "pd-key-from-file");
    let wh = any(1)
        .downcast_ref::<crate::sinks::webhook::Webhook>()
        .unwrap();
    let secrets: Vec<&str> = wh.secrets().iter().map(|s| s.expose()).collect();
    assert_eq!(secrets, [wh1, wh2]);

    // Both forms, a missing file, an empty file: errors at the *_file key.
    std::fs::write(dir.path().join("empty"), "\n").unwrap();
    let bad = "[daemon]\nadmin_token = \"0123456789abcdef\"\nadmin_token_file = \"${CREDS}/admin\"\n\
               [[sink]]\nid = \"pd\"\nkind = \"pagerduty\"\nrouting_key_file = \"${CREDS}/missing\"\n\
               [[sink]]\nid = \"wh\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:1/\"\nsecret_file = \"${CREDS}/empty\"\n";
    let errs = Config::parse(Path::new("/etc/connwatch/test.toml"), bad, &env)
        .unwrap_err()
        .0;
    let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert_eq!(text.len(), 3, "{text:#?}");
    assert!(
        text[0].contains("test.toml:3:20:") && text[0].contains("not both"),
        "{text:#?}"
    );
    assert!(
        text[1].contains("test.toml:7:20:") && text[1].contains("cannot read"),
        "{text:#?}"
    );
    assert!(
        text[2].contains("test.toml:12:15:") && text[2].contains("is empty"),
        "{text:#?}"
    );
}

#[test]
fn admin_listen_beyond_loopback_needs_a_token() {
    let errs = errors("[daemon]\nlisten = \"0.0.0.0:9185\"\n");
    assert!(errs[0].to_string().contains("admin_token"), "{errs:?}");
    let c = parse("[daemon]\nlisten = \"0.0.0.0:9185\"\nadmin_token = \"${TOKEN}-0123456789\"\n")
        .unwrap();
    assert!(c.daemon.admin_token.is_some());
    let errs = errors("[daemon]\nadmin_token = \"short\"\n");
    assert!(errs[0].to_string().contains("too short"), "{errs:?}");
}

#[test]
fn tls_files_are_parsed_as_pem_at_load() {
    let fx = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    // A self-signed test certificate serves as CA bundle and client cert.
    let ok = parse(&format!(
        "{MIN}tls_ca_file = \"{fx}/test-client.pem\"\ntls_client_cert = \"{fx}/test-client.pem\"\ntls_client_key = \"{fx}/test-client.key\"\n"
    ));
    assert!(ok.is_ok(), "{:?}", ok.err());
    // The key where the certificate belongs: refused, at the key.
    let errs = errors(&format!(
        "{MIN}tls_client_cert = \"{fx}/test-client.key\"\ntls_client_key = \"{fx}/test-client.key\"\n"
    ));
    let shown = errs[0].to_string();
    assert!(
        shown.contains("connection \"a\".tls_client_cert")
            && shown.contains("test-client.key holds no PEM certificate"),
        "{shown}"
    );
    // The certificate where the key belongs: refused, naming the key file.
    let errs = errors(&format!(
        "{MIN}tls_client_cert = \"{fx}/test-client.pem\"\ntls_client_key = \"{fx}/test-client.pem\"\n"
    ));
    let shown = errs[0].to_string();
    assert!(
        shown.contains("test-client.pem holds no PEM private key"),
        "{shown}"
    );
    // A key file as CA bundle: no certificate in it.
    let errs = errors(&format!("{MIN}tls_ca_file = \"{fx}/test-client.key\"\n"));
    assert!(
        errs[0].to_string().contains("holds no PEM certificate"),
        "{}",
        errs[0]
    );
}
