//! Specs and manifests read from YAML (or JSON), with errors a person can act on: the
//! source's name, the line and column, the field's whole path (`framework.comand`,
//! `data_stores[1].type`), what was expected in words, and the line itself.

use serde::de::DeserializeOwned;

/// A document that did not parse: the field's path where it went wrong (or the
/// document's name) and the message.
#[derive(Debug, Clone, PartialEq)]
pub struct YamlError {
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for YamlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for YamlError {}

/// A validation error `field: message` of the document `source`.
pub fn invalid(source: &str, error: &str) -> YamlError {
    // `a, b: ...` is about both: named by the first.
    let field = error.split(':').next().unwrap_or(source);
    let field = field.split(',').next().unwrap_or(field).trim();
    YamlError {
        field: if field.contains(' ') {
            source.to_string()
        } else {
            field.to_string()
        },
        message: format!("{source}: {error}"),
    }
}

/// Parses `text` (named `source` in messages: a file's path, `manifest`, `spec`).
pub fn parse<T: DeserializeOwned>(text: &str, source: &str) -> Result<T, YamlError> {
    serde_saphyr::from_str(text).map_err(|e| explain(text, source, &e))
}

fn explain(text: &str, source: &str, e: &serde_saphyr::Error) -> YamlError {
    let raw = e.without_snippet().to_string();
    // "error: line 5 column 3: unknown field ..." -> "unknown field ..."
    let reason = raw
        .split_once(": ")
        .filter(|(head, _)| head.starts_with("error"))
        .map_or(raw.as_str(), |(_, r)| r);
    let reason = match reason.split_once(": ") {
        Some((at, r)) if at.starts_with("line ") => r,
        _ => reason,
    }
    .trim();
    // "... at line 1, column 11" said once, in front.
    let reason = reason.split(" at line ").next().unwrap_or(reason).trim();
    let Some(loc) = e.location() else {
        return YamlError {
            field: source.to_string(),
            message: format!("{source}: {reason}"),
        };
    };
    let (line, col) = (loc.line() as usize, loc.column() as usize);
    let the_line = text.lines().nth(line.saturating_sub(1)).unwrap_or("");
    let mut path = path_at(text, line);
    // A missing field is reported at its mapping's first key: name it instead.
    if let Some(missing) = reason
        .strip_prefix("missing field `")
        .and_then(|r| r.split('`').next())
    {
        path = match path.rfind('.') {
            Some(i) => format!("{}.{missing}", &path[..i]),
            None => missing.to_string(),
        };
    }
    let field = if path.is_empty() {
        source.to_string()
    } else {
        path.clone()
    };
    let value = the_line
        .split_once(':')
        .map_or("", |(_, v)| v)
        .split(" #")
        .next()
        .unwrap_or("")
        .trim();
    let reason = in_words(reason, value);
    let at = if path.is_empty() {
        String::new()
    } else {
        format!("{path}: ")
    };
    YamlError {
        field,
        message: format!(
            "{source}:{line}:{col}: {at}{reason}\n  {line} | {}",
            the_line.trim_end()
        ),
    }
}

/// serde's words for a type that did not read, as a person would say them.
fn in_words(reason: &str, value: &str) -> String {
    let kind = reason.strip_prefix("invalid ").unwrap_or("");
    let want = match kind {
        "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number, 0 or more",
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number",
        "f32" | "f64" => "a number",
        "bool" => "true or false",
        _ => return reason.to_string(),
    };
    if value.is_empty() {
        format!("expected {want}")
    } else {
        format!("expected {want}, got {value}")
    }
}

/// The column a block-style line starts at (its dash's, for `- key: v`), the key it
/// names (empty when none), and whether it starts a list item.
fn key_of(line: &str) -> Option<(usize, &str, bool)> {
    let indent = line.len() - line.trim_start().len();
    let rest = &line[indent..];
    if rest.is_empty() || rest.starts_with('#') {
        return None;
    }
    let (dash, body) = match rest.strip_prefix("- ") {
        Some(r) => (true, r.trim_start()),
        None => (false, rest),
    };
    let key = body
        .split_once(':')
        .filter(|(k, v)| {
            !k.is_empty() && !k.contains(['{', '[', ' ']) && (v.is_empty() || v.starts_with(' '))
        })
        .map_or("", |(k, _)| k);
    Some((indent, key, dash))
}

/// The dotted path of the key on line `line` (1-based) of a block-style document, from
/// the indentation of the lines above it; list items are `[i]`. Empty when the line
/// names no key.
pub fn path_at(text: &str, line: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let Some(target) = line.checked_sub(1).and_then(|i| lines.get(i)) else {
        return String::new();
    };
    let Some((tcol, tkey, tdash)) = key_of(target) else {
        return String::new();
    };
    let mut parts: Vec<String> = Vec::new();
    // The column of the innermost container still to be named.
    let mut col = if tdash {
        // `- key: v`: the key sits at the dash's column + 2, inside item of the dash.
        tcol + 2
    } else {
        tcol
    };
    if !tkey.is_empty() {
        parts.push(tkey.to_string());
    }
    // In a list item: counting earlier items at `item_col`.
    let mut item: Option<(usize, usize)> = tdash.then_some((tcol, 0));
    for l in lines[..line - 1].iter().rev() {
        let Some((c, key, dash)) = key_of(l) else {
            continue;
        };
        if let Some((item_col, n)) = item {
            if dash && c == item_col {
                item = Some((item_col, n + 1));
                continue;
            }
            if c > item_col {
                continue;
            }
            // The list's own key (items may sit at its indentation).
            if !key.is_empty() && !dash {
                parts.push(format!("{key}[{n}]"));
                col = c;
                item = None;
                continue;
            }
            return String::new();
        }
        if dash && c < col {
            // The item holding what we have named so far.
            item = Some((c, 0));
            col = c;
            continue;
        }
        if !dash && c < col && !key.is_empty() {
            parts.push(key.to_string());
            col = c;
        }
        if col == 0 && item.is_none() {
            break;
        }
    }
    if item.is_some() {
        // A top-level list: name the item alone.
        if let Some((_, n)) = item {
            parts.push(format!("[{n}]"));
        }
    }
    parts.reverse();
    let mut out = String::new();
    for p in parts {
        if !out.is_empty() && !p.starts_with('[') {
            out.push('.');
        }
        out.push_str(&p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_comes_from_the_indentation() {
        let doc = "name: x\nframework:\n  name: custom\n  comand: x\ndata_stores:\n  - id: a\n    type: s3\n  - id: b\n    connection:\n      path: /x\n";
        assert_eq!(path_at(doc, 1), "name");
        assert_eq!(path_at(doc, 4), "framework.comand");
        assert_eq!(path_at(doc, 6), "data_stores[0].id");
        assert_eq!(path_at(doc, 7), "data_stores[0].type");
        assert_eq!(path_at(doc, 8), "data_stores[1].id");
        assert_eq!(path_at(doc, 10), "data_stores[1].connection.path");
        // Comments and blank lines are skipped.
        let doc = "slo:\n  # the objective\n\n  latency_s: x\n";
        assert_eq!(path_at(doc, 4), "slo.latency_s");
        assert_eq!(path_at("- a: 1\n- b: 2\n", 2), "[1].b");
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Fw {
        name: String,
        command: String,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Doc {
        learners: u32,
        framework: Fw,
    }

    #[test]
    fn errors_name_the_source_line_field_and_what_was_expected() {
        let e = parse::<Doc>(
            "learners: 1\nframework:\n  name: custom\n  comand: x\n",
            "job.yaml",
        )
        .unwrap_err();
        assert_eq!(e.field, "framework.comand");
        assert!(
            e.message
                .starts_with("job.yaml:4:3: framework.comand: unknown field `comand`"),
            "{}",
            e.message
        );
        assert!(e.message.contains("4 |   comand: x"), "{}", e.message);
        let e = parse::<Doc>(
            "learners: -2\nframework: {name: a, command: b}\n",
            "job.yaml",
        )
        .unwrap_err();
        assert_eq!(e.field, "learners");
        assert!(
            e.message
                .contains("learners: expected a whole number, 0 or more, got -2"),
            "{}",
            e.message
        );
        assert!(!e.message.contains("<input>"));
        let e = parse::<Doc>("learners: 1\nframework:\n  name: custom\n", "job.yaml").unwrap_err();
        assert_eq!(e.field, "framework.command", "{}", e.message);
    }
}
