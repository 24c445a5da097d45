//! The malformed-configuration corpus: every `tests/configs/invalid/NN-name.toml`
//! holds one fault, and `connwatch check` must reject it with exit code 2 and
//! print exactly the text of its twin `NN-name.err` (where `{dir}` stands for
//! the folder the file was copied to), and never panic.
//!
//! To add a case, write the `.toml` and then its `.err`, either by hand or
//! with `CONNWATCH_BLESS=1 cargo test --test config_corpus`, which writes
//! the `.err` of every case from what the binary prints. Read each one:
//! it must say what is wrong and where.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The corpus must not shrink by accident.
const MIN_CASES: usize = 30;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/configs/invalid")
}

fn files_with(ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("tests/configs/invalid exists")
        .map(|e| e.expect("readable folder entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    // By number: 100 comes after 99.
    v.sort_by_key(|p| {
        let name = p
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let n: u32 = name
            .split('-')
            .next()
            .and_then(|d| d.parse().ok())
            .unwrap_or(u32::MAX);
        (n, name)
    });
    v
}

/// One case's verdict: `None` when it passes, else what went wrong.
fn run_case(toml: &Path, bless: bool) -> Option<String> {
    let name = toml.file_name().unwrap().to_string_lossy().into_owned();
    // A fresh folder per case: relative paths in the file (secret files,
    // TLS files) resolve against it, and nothing else is there.
    let dir = tempfile::tempdir().expect("temp dir");
    let copy = dir.path().join(&name);
    std::fs::copy(toml, &copy).expect("copy the case");
    let out = Command::new(env!("CARGO_BIN_EXE_connwatch"))
        .arg("check")
        .arg("--config")
        .arg(&copy)
        // No inherited environment: `${VAR}` cases must not depend on the
        // shell the tests run in.
        .env_clear()
        .output()
        .expect("run connwatch");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let actual = stderr.replace(dir.path().to_str().expect("UTF-8 temp path"), "{dir}");
    let err_file = toml.with_extension("err");
    let code = out.status.code();

    let mut problems = Vec::new();
    if actual.contains("panicked") {
        problems.push("the binary panicked".to_string());
    }
    if code != Some(2) {
        problems.push(format!("exit code {code:?}, expected Some(2)"));
    }
    if bless && problems.is_empty() {
        std::fs::write(&err_file, actual.as_bytes()).expect("write .err");
        return None;
    }
    match std::fs::read_to_string(&err_file) {
        Ok(expected) if expected == actual => {}
        Ok(expected) => problems.push(format!(
            "stderr differs\n--- expected ({})\n{expected}--- actual\n{actual}---",
            err_file.file_name().unwrap().to_string_lossy()
        )),
        Err(e) => problems.push(format!(
            "cannot read {}: {e}\n--- actual stderr\n{actual}---",
            err_file.display()
        )),
    }
    if problems.is_empty() {
        None
    } else {
        Some(format!("{name}: {}", problems.join("; ")))
    }
}

#[test]
fn every_invalid_config_is_rejected_with_its_exact_message() {
    let cases = files_with("toml");
    assert!(
        cases.len() >= MIN_CASES,
        "only {} cases in {}; expected at least {MIN_CASES}",
        cases.len(),
        corpus_dir().display()
    );
    let bless = std::env::var_os("CONNWATCH_BLESS").is_some();

    // A few threads: each case is one process start.
    let threads = 4;
    let mut failures: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let cases = &cases;
                s.spawn(move || {
                    cases
                        .iter()
                        .skip(t)
                        .step_by(threads)
                        .filter_map(|c| run_case(c, bless))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("case thread"))
            .collect()
    });
    failures.sort();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

#[test]
fn every_err_file_has_its_config() {
    let orphans: Vec<String> = files_with("err")
        .into_iter()
        .filter(|e| !e.with_extension("toml").exists())
        .map(|e| e.display().to_string())
        .collect();
    assert!(
        orphans.is_empty(),
        ".err files without a .toml: {orphans:?}"
    );
}

#[test]
fn cases_are_numbered_one_fault_per_file() {
    // NN-short-name.toml, numbered from 01 without gaps or repeats.
    let cases = files_with("toml");
    for (i, c) in cases.iter().enumerate() {
        let name = c.file_name().unwrap().to_string_lossy();
        let want = format!("{:02}-", i + 1);
        assert!(
            name.starts_with(&want) && name.len() > want.len() + ".toml".len(),
            "{name}: expected a name like {want}short-name.toml"
        );
    }
}
