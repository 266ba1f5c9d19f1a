//! The process environment as config input, and the OTel `key=value,...` list format.

use std::collections::HashMap;

/// A snapshot of environment variables. Tests build one from pairs.
#[derive(Clone, Debug, Default)]
pub struct Env {
    vars: HashMap<String, String>,
}

impl Env {
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Env {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    pub fn get(&self, name: &str) -> Option<String> {
        self.vars.get(name).cloned()
    }
}

/// The current process environment.
pub fn process_env() -> Env {
    Env {
        vars: std::env::vars().collect(),
    }
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("invalid percent-encoding in `{s}`"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("`{s}` is not UTF-8 once decoded"))
}

/// Parses `k1=v1,k2=v2` (W3C baggage-like, values percent-decoded), as used by
/// `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_EXPORTER_OTLP_HEADERS`.
pub fn parse_key_values(raw: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for item in raw.split(',') {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| format!("`{item}` is not key=value"))?;
        let k = k.trim();
        if k.is_empty() {
            return Err(format!("`{item}` has an empty key"));
        }
        out.push((percent_decode(k)?, percent_decode(v.trim())?));
    }
    Ok(out)
}

/// A value that is exactly `${NAME}` is read from the environment; anything else is literal.
pub fn substitute(value: &str, env: &Env) -> Result<String, String> {
    match value.strip_prefix("${").and_then(|v| v.strip_suffix('}')) {
        Some(name) => env
            .get(name)
            .ok_or_else(|| format!("environment variable `{name}` is not set")),
        None => Ok(value.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values_are_trimmed_and_percent_decoded() {
        let kv = parse_key_values("a=1, b = x%20y ,,c=").unwrap();
        assert_eq!(
            kv,
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x y".into()),
                ("c".into(), "".into())
            ]
        );
    }

    #[test]
    fn key_values_reject_missing_equals_and_bad_escapes() {
        assert!(parse_key_values("novalue").is_err());
        assert!(parse_key_values("a=%zz").is_err());
        assert!(parse_key_values("=v").is_err());
    }

    #[test]
    fn substitution_reads_env_only_for_whole_placeholders() {
        let env = Env::from_pairs([("TOKEN", "s3cret")]);
        assert_eq!(substitute("${TOKEN}", &env).unwrap(), "s3cret");
        assert_eq!(
            substitute("Bearer ${TOKEN}", &env).unwrap(),
            "Bearer ${TOKEN}"
        );
        assert!(substitute("${MISSING}", &env).is_err());
    }
}
