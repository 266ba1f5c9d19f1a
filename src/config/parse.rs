//! Deserializing the YAML, with error recovery so that one run reports every schema error.

use super::ConfigError;
use super::schema::FileConfig;

/// At most this many schema errors are collected from one file.
const MAX_SCHEMA_ERRORS: usize = 20;

/// Deserializes, recovering from schema errors so that one run reports them all: after an
/// error on an inline `key: value` line, that line is blanked (line numbers stay put) and the
/// text parsed again. The recovered document, when there is one, still gets validated.
/// Recovery stops at anything it cannot step over (block values, list items, YAML syntax) and
/// drops the "missing field" errors that blanking a required key would cause.
pub(super) fn parse_recovering(text: &str, source: &str) -> (Option<FileConfig>, Vec<ConfigError>) {
    if text.trim().is_empty() {
        return (Some(FileConfig::default()), Vec::new());
    }
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let mut errors: Vec<ConfigError> = Vec::new();
    let mut current = text.to_string();
    while errors.len() < MAX_SCHEMA_ERRORS {
        let e = match serde_saphyr::from_str::<FileConfig>(&current) {
            Ok(file) => return (Some(file), errors),
            Err(e) => syntax_error(&e, text, source),
        };
        if !errors.is_empty() && e.message.starts_with("missing field") {
            break;
        }
        let line = usize::try_from(e.line).unwrap_or(0);
        let recoverable = errors.iter().all(|p| p.line != e.line) && inline_entry(&lines, line);
        errors.push(e);
        if !recoverable {
            break;
        }
        lines[line - 1] = placeholder(&lines, line - 1);
        current = lines.join("\n");
    }
    (None, errors)
}

/// What replaces a removed entry: nothing, or `{}` when it was its mapping's only entry (a
/// blank would turn the parent into `null` and report a second, invented error).
fn placeholder(lines: &[String], i: usize) -> String {
    let indent_of = |l: &String| l.len() - l.trim_start().len();
    let indent = indent_of(&lines[i]);
    let in_block = |l: &&String| !l.trim().is_empty();
    let before = lines[..i]
        .iter()
        .rev()
        .filter(in_block)
        .take_while(|l| indent_of(l) >= indent);
    let after = lines[i + 1..]
        .iter()
        .filter(in_block)
        .take_while(|l| indent_of(l) >= indent);
    let siblings = before.chain(after).any(|l| indent_of(l) == indent);
    if siblings {
        String::new()
    } else {
        format!("{}{{}}", " ".repeat(indent))
    }
}

/// Line `line` (1-based) is `key: value` with the value on the same line, not a list item,
/// and the next non-empty line is not indented deeper (no block value belongs to it).
fn inline_entry(lines: &[String], line: usize) -> bool {
    let Some(l) = line.checked_sub(1).and_then(|i| lines.get(i)) else {
        return false;
    };
    let t = l.trim_start();
    if t.starts_with('-') || t.starts_with('#') {
        return false;
    }
    let Some((_, value)) = t.split_once(':') else {
        return false;
    };
    let value = value.trim();
    if value.is_empty() || value.starts_with('#') {
        return false;
    }
    let indent = l.len() - t.len();
    lines[line..]
        .iter()
        .find(|n| !n.trim().is_empty())
        .is_none_or(|n| n.len() - n.trim_start().len() <= indent)
}

/// A deserialization error: its location, and the key found on that line of the text.
fn syntax_error(e: &serde_saphyr::Error, text: &str, source: &str) -> ConfigError {
    let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
    let message = e.without_snippet().to_string();
    // The message may end with its own " at line X column Y": the location is printed once.
    let message = match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message,
    };
    ConfigError {
        source: source.to_string(),
        line: line.max(1),
        column,
        key: key_on_line(text, line).unwrap_or_else(|| "(document)".into()),
        message,
    }
}

/// The mapping key that a line of YAML sets, e.g. `upstream` for `  - upstream: x`.
fn key_on_line(text: &str, line: u64) -> Option<String> {
    let l = text
        .lines()
        .nth(usize::try_from(line).ok()?.checked_sub(1)?)?;
    let l = l.trim_start().trim_start_matches("- ").trim_start();
    let (key, _) = l.split_once(':')?;
    let key = key.trim().trim_matches(|c| c == '"' || c == '\'');
    (!key.is_empty() && !key.contains(' ')).then(|| key.to_string())
}
