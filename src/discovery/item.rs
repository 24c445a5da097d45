//! What a source lists, parsed (pure): the `list`, `http_sd` and `file`
//! formats, and the placeholders of `status_url`.

use crate::config::{valid_id, DiscoveryFormat, MAX_DISCOVERED};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};

/// One listed connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `http_sd`/`file`: the target as listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// `http_sd`/`file`: the target group's labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A parsed answer: the items, and how many entries were left out (with
/// the first reason) because they had no usable id or repeated one.
#[derive(Debug, Default, PartialEq)]
pub struct Parsed {
    pub items: Vec<Item>,
    pub skipped: usize,
    pub first_skip: Option<String>,
}

/// An id made from a target: every character outside `A-Z a-z 0-9 _ . -`
/// becomes `_` (`erp.example:443` -> `erp.example_443`), cut to 64.
pub fn id_of_target(target: &str) -> String {
    target
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect()
}

/// Parses a source's answer. An answer that is not the format's shape is
/// an error (the caller keeps its last good set); entries without a usable
/// id are skipped and counted.
pub fn parse(format: &DiscoveryFormat, body: &[u8]) -> Result<Parsed, String> {
    let doc: Value =
        serde_json::from_slice(body).map_err(|e| format!("the answer is not JSON ({e})"))?;
    let mut out = Parsed::default();
    let mut seen = HashSet::new();
    let skip = |out: &mut Parsed, why: String| {
        out.skipped += 1;
        out.first_skip.get_or_insert(why);
    };
    let mut push = |out: &mut Parsed, item: Item| -> Result<(), String> {
        if !seen.insert(item.id.clone()) {
            skip(out, format!("id {:?} is listed twice", item.id));
            return Ok(());
        }
        if out.items.len() >= MAX_DISCOVERED {
            return Err(format!(
                "more than {MAX_DISCOVERED} connections listed; refusing the answer"
            ));
        }
        out.items.push(item);
        Ok(())
    };
    match format {
        DiscoveryFormat::List {
            items,
            id_pointer,
            name_pointer,
        } => {
            let list = doc
                .pointer(items)
                .ok_or_else(|| format!("nothing at {items:?} in the answer"))?
                .as_array()
                .ok_or_else(|| format!("{items:?} is not an array"))?;
            for (i, entry) in list.iter().enumerate() {
                let id = match entry.pointer(id_pointer) {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Number(n)) => n.to_string(),
                    _ => {
                        skip(&mut out, format!("item {i} has no id at {id_pointer:?}"));
                        continue;
                    }
                };
                if !valid_id(&id) {
                    skip(
                        &mut out,
                        format!(
                            "item {i}: id {:?} is not 1 to 64 characters of A-Z a-z 0-9 _ . -",
                            cut(&id)
                        ),
                    );
                    continue;
                }
                let name = name_pointer
                    .as_deref()
                    .and_then(|p| entry.pointer(p))
                    .and_then(Value::as_str)
                    .map(|s| s.chars().take(256).collect());
                push(
                    &mut out,
                    Item {
                        id,
                        name,
                        target: None,
                        labels: BTreeMap::new(),
                    },
                )?;
            }
        }
        DiscoveryFormat::HttpSd | DiscoveryFormat::File => {
            // Every target of a group carries the group's labels: bound
            // them, or a small answer could make gigabytes of items.
            const MAX_LABEL_BYTES: usize = 4096;
            let groups = doc
                .as_array()
                .ok_or("the answer is not an array of target groups")?;
            for (g, group) in groups.iter().enumerate() {
                let Some(targets) = group.get("targets").and_then(Value::as_array) else {
                    return Err(format!("target group {g} has no \"targets\" array"));
                };
                let mut labels = BTreeMap::new();
                match group.get("labels") {
                    None | Some(Value::Null) => {}
                    Some(Value::Object(m)) => {
                        for (k, v) in m {
                            let Some(v) = v.as_str() else {
                                return Err(format!(
                                    "target group {g}: label {k:?} is not a string"
                                ));
                            };
                            labels.insert(k.clone(), v.to_string());
                        }
                    }
                    Some(_) => {
                        return Err(format!("target group {g}: \"labels\" is not an object"))
                    }
                }
                let bytes: usize = labels.iter().map(|(k, v)| k.len() + v.len()).sum();
                if bytes > MAX_LABEL_BYTES {
                    return Err(format!(
                        "target group {g}: its labels take {bytes} bytes (at most {MAX_LABEL_BYTES})"
                    ));
                }
                for t in targets {
                    let Some(target) = t.as_str().filter(|t| !t.is_empty()) else {
                        skip(
                            &mut out,
                            format!("target group {g} lists a target that is not a string"),
                        );
                        continue;
                    };
                    let id = labels
                        .get("id")
                        .cloned()
                        .unwrap_or_else(|| id_of_target(target));
                    if !valid_id(&id) {
                        skip(
                            &mut out,
                            format!("target {:?}: id {:?} is not usable", cut(target), cut(&id)),
                        );
                        continue;
                    }
                    push(
                        &mut out,
                        Item {
                            id,
                            name: labels.get("name").map(|n| n.chars().take(256).collect()),
                            target: Some(target.to_string()),
                            labels: labels.clone(),
                        },
                    )?;
                }
            }
        }
    }
    if out.items.is_empty() && out.skipped > 0 {
        return Err(format!(
            "no listed entry is usable ({} skipped; first: {})",
            out.skipped,
            out.first_skip.as_deref().unwrap_or("")
        ));
    }
    Ok(out)
}

fn cut(s: &str) -> String {
    s.chars().take(80).collect()
}

/// A placeholder of `status_url` (and of template scope URLs).
#[derive(Debug, PartialEq, Eq)]
enum Placeholder<'a> {
    Id,
    Name,
    Target,
    Label(&'a str),
}

/// The placeholders in `template`, or what is wrong with one (every `{`
/// opens one: URLs have no use for a literal brace).
fn placeholders(template: &str) -> Result<Vec<(std::ops::Range<usize>, Placeholder<'_>)>, String> {
    let mut out = Vec::new();
    let mut i = 0;
    let b = template.as_bytes();
    while i < b.len() {
        if b[i] != b'{' {
            i += 1;
            continue;
        }
        let end = template[i..]
            .find('}')
            .map(|e| i + e)
            .ok_or_else(|| format!("unterminated \"{{\" at byte {i}"))?;
        let inner = &template[i + 1..end];
        let p = match inner {
            "id" => Placeholder::Id,
            "name" => Placeholder::Name,
            "target" => Placeholder::Target,
            _ => match inner.strip_prefix("label:") {
                Some(l) if !l.is_empty() => Placeholder::Label(l),
                _ => {
                    return Err(format!(
                        "unknown placeholder \"{{{inner}}}\" (known: {{id}}, {{name}}, {{target}}, {{label:NAME}})"
                    ))
                }
            },
        };
        out.push((i..end + 1, p));
        i = end + 1;
    }
    Ok(out)
}

/// Checks a template for `format`: `{target}` and `{label:…}` only where
/// the format has targets.
pub fn check_template(template: &str, format: &DiscoveryFormat) -> Result<(), String> {
    for (_, p) in placeholders(template)? {
        if matches!(p, Placeholder::Target | Placeholder::Label(_))
            && matches!(format, DiscoveryFormat::List { .. })
        {
            return Err(
                "{target} and {label:NAME} exist only in the http_sd and file formats; a list gives {id} and {name}"
                    .into(),
            );
        }
    }
    Ok(())
}

/// `template` with the item's values in place. A value is inserted as
/// listed; the caller parses the result as a URL.
pub fn fill(template: &str, item: &Item) -> Result<String, String> {
    let mut out = String::with_capacity(template.len() + 32);
    let mut last = 0;
    for (range, p) in placeholders(template)? {
        out.push_str(&template[last..range.start]);
        // Free text (a name, a label) is percent-encoded so that it cannot
        // change the URL's host or path; an id is safe as it is, and a
        // target is a host:port by definition.
        let (v, encode) = match p {
            Placeholder::Id => (Some(item.id.as_str()), false),
            Placeholder::Name => (item.name.as_deref().or(Some(item.id.as_str())), true),
            Placeholder::Target => (item.target.as_deref(), false),
            Placeholder::Label(l) => (item.labels.get(l).map(String::as_str), true),
        };
        match v {
            Some(v) if encode => out.extend(url::form_urlencoded::byte_serialize(v.as_bytes())),
            Some(v) => out.push_str(v),
            None => {
                return Err(match p {
                    Placeholder::Label(l) => format!("{:?} has no label {l:?}", item.id),
                    _ => format!("{:?} has no target", item.id),
                })
            }
        }
        last = range.end;
    }
    out.push_str(&template[last..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list() -> DiscoveryFormat {
        DiscoveryFormat::List {
            items: "/data".into(),
            id_pointer: "/id".into(),
            name_pointer: Some("/name".into()),
        }
    }

    #[test]
    fn a_list_gives_ids_and_names_and_skips_what_it_cannot_use() {
        let body = br#"{"data":[{"id":"sap","name":"SAP"},{"id":42},{"id":"bad id"},{"name":"x"},{"id":"sap"}]}"#;
        let p = parse(&list(), body).unwrap();
        let ids: Vec<_> = p.items.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["sap", "42"]);
        assert_eq!(p.items[0].name.as_deref(), Some("SAP"));
        assert_eq!(p.skipped, 3);
        assert!(p.first_skip.unwrap().contains("bad id"));
        assert_eq!(parse(&list(), br#"{"data":[]}"#).unwrap().items.len(), 0);
    }

    #[test]
    fn garbage_is_an_error_not_an_empty_list() {
        assert!(parse(&list(), b"<html>").unwrap_err().contains("not JSON"));
        assert!(parse(&list(), br#"{"items":[]}"#)
            .unwrap_err()
            .contains("nothing at"));
        assert!(parse(&list(), br#"{"data":{}}"#)
            .unwrap_err()
            .contains("not an array"));
        assert!(parse(&list(), br#"{"data":[{"id":"a b"}]}"#)
            .unwrap_err()
            .contains("no listed entry is usable"));
        let sd = DiscoveryFormat::HttpSd;
        assert!(parse(&sd, br#"{"targets":[]}"#).is_err());
        assert!(parse(&sd, br#"[{"labels":{}}]"#).is_err());
        assert!(parse(&sd, br#"[{"targets":["a"],"labels":{"x":1}}]"#).is_err());
    }

    #[test]
    fn http_sd_ids_come_from_the_id_label_or_the_target() {
        let body = br#"[{"targets":["erp.example:443","mes:80"],"labels":{"env":"prod"}},
                       {"targets":["cmms:8080"],"labels":{"id":"cmms-main","name":"CMMS"}}]"#;
        let p = parse(&DiscoveryFormat::HttpSd, body).unwrap();
        let ids: Vec<_> = p.items.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["erp.example_443", "mes_80", "cmms-main"]);
        assert_eq!(p.items[2].name.as_deref(), Some("CMMS"));
        assert_eq!(p.items[0].labels["env"], "prod");
        let u = fill("https://{target}/api/{label:env}/{id}/status", &p.items[0]).unwrap();
        assert_eq!(u, "https://erp.example:443/api/prod/erp.example_443/status");
        // Free text cannot leave its path segment.
        let mut evil = p.items[0].clone();
        evil.labels
            .insert("env".into(), "x/../../admin?y=1#z@h".into());
        let u = fill("https://{target}/api/{label:env}/status", &evil).unwrap();
        assert_eq!(
            u,
            "https://erp.example:443/api/x%2F..%2F..%2Fadmin%3Fy%3D1%23z%40h/status"
        );
        let big = format!(
            r#"[{{"targets":["a"],"labels":{{"x":"{}"}}}}]"#,
            "v".repeat(5000)
        );
        assert!(parse(&DiscoveryFormat::HttpSd, big.as_bytes())
            .unwrap_err()
            .contains("labels take"));
        assert!(fill("https://{target}/{label:team}", &p.items[0])
            .unwrap_err()
            .contains("no label \"team\""));
    }

    #[test]
    fn placeholders_are_checked() {
        assert!(check_template("https://p/{id}/status", &list()).is_ok());
        assert!(check_template("https://{target}/status", &list()).is_err());
        assert!(check_template("https://{target}/status", &DiscoveryFormat::File).is_ok());
        assert!(check_template("https://p/{ident}", &list())
            .unwrap_err()
            .contains("unknown placeholder"));
        assert!(check_template("https://p/{id", &list()).is_err());
        let it = Item {
            id: "a".into(),
            name: None,
            target: None,
            labels: BTreeMap::new(),
        };
        assert_eq!(fill("https://p/{id}/{name}", &it).unwrap(), "https://p/a/a");
    }
}
