//! The configuration loader on arbitrary bytes: it must never panic, and
//! every error it returns must point at a line and column inside the text.

#![no_main]

use connwatch::config::Config;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    // The loader takes text (the file reader rejects invalid UTF-8 first);
    // lossy conversion keeps every input useful.
    let text = String::from_utf8_lossy(data);
    let env = |name: &str| (name == "X").then(|| "x-value".to_string());
    let path = Path::new("/nonexistent-connwatch-fuzz/connwatch.toml");
    if let Err(errors) = Config::parse(path, &text, &env) {
        assert!(!errors.0.is_empty(), "Err without an error");
        let lines = text.split('\n').count();
        for e in &errors.0 {
            assert!(e.line >= 1 && e.line <= lines, "line out of range: {e}");
            let width = text
                .split('\n')
                .nth(e.line - 1)
                .unwrap_or("")
                .chars()
                .count();
            assert!(
                e.column >= 1 && e.column <= width + 1,
                "column out of range: {e}"
            );
            let _ = e.to_string();
        }
    }
});
