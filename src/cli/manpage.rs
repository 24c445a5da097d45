//! Man pages and shell completions for the package (`connwatch assets
//! DIR`, hidden): `connwatch(1)` and one page per subcommand from the real
//! command line (`clap_mangen`), completions for bash, zsh and fish
//! (`clap_complete`), and `connwatch.toml(5)` made from
//! `docs/configuration.md` itself, so the reference and the page cannot
//! drift (a test checks that every key the loader knows is in both).

use clap::Command;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The configuration reference, as the page is made from it.
pub const CONFIGURATION_MD: &str = include_str!("../../docs/configuration.md");

/// Writes every asset under `dir`; returns the paths written.
pub fn write_assets(cmd: Command, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let man = dir.join("man");
    let comp = dir.join("completions");
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&comp)?;
    let mut out = Vec::new();
    let mut page = |name: String, roff: Vec<u8>| -> std::io::Result<()> {
        let p = man.join(format!("{name}.gz"));
        std::fs::write(&p, gzip(&roff)?)?;
        out.push(p);
        Ok(())
    };
    let mut cmd = cmd.version(crate::VERSION);
    cmd.build();
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut buf)?;
    page("connwatch.1".into(), buf)?;
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        let name = format!("connwatch-{}", sub.get_name());
        let mut buf = Vec::new();
        clap_mangen::Man::new(sub.clone().name(name.clone()).version(crate::VERSION))
            .render(&mut buf)?;
        page(format!("{name}.1"), buf)?;
    }
    page("connwatch.toml.5".into(), config_page().into_bytes())?;
    for (shell, file) in [
        (clap_complete::Shell::Bash, "connwatch.bash"),
        (clap_complete::Shell::Zsh, "_connwatch"),
        (clap_complete::Shell::Fish, "connwatch.fish"),
    ] {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut cmd, "connwatch", &mut buf);
        let p = comp.join(file);
        std::fs::write(&p, buf)?;
        out.push(p);
    }
    Ok(out)
}

/// gzip with no name and no time stamp, so the package is reproducible.
fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut e = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::best());
    e.write_all(data)?;
    e.finish()
}

/// `connwatch.toml(5)`.
pub fn config_page() -> String {
    let mut out = format!(
        ".TH CONNWATCH.TOML 5 \"\" \"connwatch {}\" \"File Formats\"\n\
         .SH NAME\nconnwatch.toml \\- configuration file of connwatch\n\
         .SH SYNOPSIS\n/etc/connwatch/connwatch.toml\n",
        env!("CARGO_PKG_VERSION")
    );
    out.push_str(&markdown_to_roff(CONFIGURATION_MD));
    out.push_str(
        ".SH SEE ALSO\n\\fBconnwatch\\fR(1), \\fBconnwatch-check\\fR(1); \
         /usr/share/doc/connwatch/docs/ for the events, delivery and fleet references.\n",
    );
    out
}

/// The subset of Markdown the project's docs use, as roff: headings,
/// paragraphs, bullet lists, fenced code, tables (one tagged paragraph
/// per row: the first cell is the tag, the others follow with their
/// column's name), inline code and bold.
pub fn markdown_to_roff(md: &str) -> String {
    let mut out = String::new();
    let mut lines = md.lines().peekable();
    let mut in_code = false;
    let mut header: Vec<String> = Vec::new();
    let mut first_title = true;
    while let Some(line) = lines.next() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            out.push_str(if in_code {
                ".PP\n.RS 4\n.nf\n"
            } else {
                ".fi\n.RE\n"
            });
            continue;
        }
        if in_code {
            out.push_str(&escape_line(&escape(line)));
            out.push('\n');
            continue;
        }
        let t = line.trim();
        if let Some(h) = t.strip_prefix("# ") {
            if first_title {
                first_title = false;
                out.push_str(".SH DESCRIPTION\n");
                continue;
            }
            out.push_str(&format!(".SH {}\n", inline(h)));
        } else if let Some(h) = t.strip_prefix("## ") {
            out.push_str(&format!(".SH {}\n", inline(h)));
        } else if let Some(h) = t.strip_prefix("### ") {
            out.push_str(&format!(".SS {}\n", inline(h)));
        } else if t.starts_with('|') {
            let cells: Vec<String> = t
                .trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().trim_matches('|').trim().to_string())
                .collect();
            let separator = cells
                .iter()
                .all(|c| !c.is_empty() && c.chars().all(|ch| matches!(ch, '-' | ':')));
            if separator {
                continue;
            }
            // The row after the header's separator is data; a table's first
            // row is its header.
            let is_header = lines
                .peek()
                .is_some_and(|n| n.trim().starts_with('|') && n.contains("---"));
            if is_header {
                header = cells.iter().map(|c| plain(c)).collect();
                continue;
            }
            out.push_str(".TP\n");
            out.push_str(&escape_line(&inline(&cells[0])));
            out.push('\n');
            let rest: Vec<String> = cells
                .iter()
                .enumerate()
                .skip(1)
                .filter(|(_, c)| !c.is_empty())
                .map(|(i, c)| match header.get(i).map(String::as_str) {
                    Some("meaning") | None => inline(c),
                    Some(h) => format!("{}: {}", escape(h), inline(c)),
                })
                .collect();
            out.push_str(&escape_line(&rest.join("; ")));
            out.push('\n');
        } else if let Some(item) = t.strip_prefix("- ") {
            out.push_str(".IP \\(bu 2\n");
            out.push_str(&escape_line(&inline(item)));
            out.push('\n');
        } else if t.is_empty() {
            out.push_str(".PP\n");
        } else {
            out.push_str(&escape_line(&inline(t)));
            out.push('\n');
        }
    }
    out
}

/// Escapes roff's escape character.
fn escape(s: &str) -> String {
    s.replace('\\', "\\e")
}

/// A line that starts with `.` or `'` would be a request: guard it.
fn escape_line(s: &str) -> String {
    if s.starts_with('.') || s.starts_with('\'') {
        format!("\\&{s}")
    } else {
        s.to_string()
    }
}

/// Markdown text without its marks (headings, table headers).
fn plain(s: &str) -> String {
    links(s).replace(['`', '*'], "")
}

/// `[text](url)` -> `text`.
fn links(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(open) = rest.find('[') {
        let Some(close) = rest[open..].find("](").map(|c| open + c) else {
            break;
        };
        let Some(end) = rest[close..].find(')').map(|e| close + e) else {
            break;
        };
        out.push_str(&rest[..open]);
        out.push_str(&rest[open + 1..close]);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// Inline marks: `code` and **bold** as bold, links as their text.
fn inline(s: &str) -> String {
    let s = escape(&links(s));
    let mut out = String::with_capacity(s.len() + 16);
    let mut bold = false;
    let mut code = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '`' => {
                code = !code;
                out.push_str(if code { "\\fB" } else { "\\fR" });
            }
            '*' if !code && chars.peek() == Some(&'*') => {
                chars.next();
                bold = !bold;
                out.push_str(if bold { "\\fB" } else { "\\fR" });
            }
            c => out.push(c),
        }
    }
    if code || bold {
        out.push_str("\\fR");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::schema::{Field, Shape};

    /// Every key the loader knows: the top-level tables and everything
    /// under them, each sink kind's keys included.
    fn keys() -> Vec<&'static str> {
        fn walk(fields: &'static [Field], out: &mut Vec<&'static str>) {
            for f in fields {
                out.push(f.name);
                match f.shape {
                    Shape::Table(sub) | Shape::Tables(sub) => walk(sub, out),
                    Shape::Sinks => {
                        walk(crate::config::schema::SINK_COMMON, out);
                        for k in crate::sinks::KINDS {
                            walk(k.keys, out);
                        }
                    }
                    Shape::Leaf | Shape::Map => {}
                }
            }
        }
        let mut out = Vec::new();
        walk(crate::config::schema::TOP, &mut out);
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The identifiers inside every span between `open` and `close`
    /// (`breaker.failure_rate` names `breaker` and `failure_rate`;
    /// `[[connection]]` names `connection`).
    fn named(text: &str, open: &str, close: &str) -> std::collections::HashSet<String> {
        let mut out = std::collections::HashSet::new();
        let mut rest = text;
        while let Some(a) = rest.find(open) {
            let after = &rest[a + open.len()..];
            let Some(b) = after.find(close) else { break };
            for word in after[..b].split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if !word.is_empty() {
                    out.insert(word.to_string());
                }
            }
            rest = &after[b + close.len()..];
        }
        out
    }

    #[test]
    fn every_key_of_the_loader_is_in_the_reference_and_the_page() {
        let in_md = named(CONFIGURATION_MD, "`", "`");
        let missing_md: Vec<_> = keys().into_iter().filter(|k| !in_md.contains(*k)).collect();
        assert!(
            missing_md.is_empty(),
            "keys the loader knows but docs/configuration.md does not name in `code`: {missing_md:?}"
        );
        let page = config_page();
        let in_page = named(&page, "\\fB", "\\fR");
        let missing_page: Vec<_> = keys()
            .into_iter()
            .filter(|k| !in_page.contains(*k))
            .collect();
        assert!(
            missing_page.is_empty(),
            "keys missing from connwatch.toml(5): {missing_page:?}"
        );
        // The sink kinds' own keys are in the walk too.
        for k in ["routing_key", "group_wait", "resend_interval", "smtp_url"] {
            assert!(keys().contains(&k), "{k}");
        }
    }

    #[test]
    fn markdown_becomes_roff() {
        let r = markdown_to_roff(
            "# T\n\nSome `code` and **bold**, a [link](x.md).\n\n## `[daemon]`\n\n\
             | key | default | meaning |\n|---|---|---|\n| `listen` | none | where |\n\n\
             - item\n\n```toml\n.x = \"a\\\\b\"\n```\n",
        );
        assert!(r.contains(".SH DESCRIPTION\n"), "{r}");
        assert!(
            r.contains("Some \\fBcode\\fR and \\fBbold\\fR, a link."),
            "{r}"
        );
        assert!(r.contains(".SH \\fB[daemon]\\fR\n"), "{r}");
        assert!(
            r.contains(".TP\n\\fBlisten\\fR\ndefault: none; where\n"),
            "{r}"
        );
        assert!(r.contains(".IP \\(bu 2\nitem\n"), "{r}");
        assert!(r.contains(".nf\n\\&.x = \"a\\e\\eb\"\n.fi\n"), "{r}");
    }
}
