//! Records the commit the binary is built from, for `connwatch --version`:
//! `CONNWATCH_COMMIT` if set (a source tarball has no .git), else
//! `git rev-parse --short=12 HEAD`, else "unknown". (Uncommitted changes
//! are not flagged: watching the index would rebuild on every `git add`.)

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    println!("cargo:rerun-if-env-changed=CONNWATCH_COMMIT");
    // The commit moves when HEAD or the branch it names does.
    if std::path::Path::new(".git/HEAD").exists() {
        println!("cargo:rerun-if-changed=.git/HEAD");
    }
    if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
        let p = format!(".git/{r}");
        if std::path::Path::new(&p).exists() {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    let commit = std::env::var("CONNWATCH_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=CONNWATCH_COMMIT={commit}");
}
