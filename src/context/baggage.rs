//! W3C Baggage: `baggage: key=value;property,key2=value2`.
//!
//! Several lines are joined. Each list member is validated on its own: a malformed member is
//! dropped, the others pass on (as the OpenTelemetry propagators do). At most 180 members and
//! 8192 bytes are propagated; members that do not fit are dropped whole, from the right.

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

pub static BAGGAGE: HeaderName = HeaderName::from_static("baggage");
pub const MAX_MEMBERS: usize = 180;
pub const MAX_BYTES: usize = 8192;

/// RFC 9110 token characters.
fn tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `baggage-octet`: visible ASCII except `"`, `,`, `;`, `\` (and no spaces).
fn baggage_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2b | 0x2d..=0x3a | 0x3c..=0x5b | 0x5d..=0x7e)
}

fn valid_key(k: &str) -> bool {
    !k.is_empty() && k.bytes().all(tchar)
}

fn valid_value(v: &str) -> bool {
    v.bytes().all(baggage_octet)
}

/// Validates one list member (`key=value` with optional `;property` parts) and returns it
/// normalised (OWS around `=` and `;` removed).
fn member(m: &str) -> Option<String> {
    let mut parts = m.split(';');
    let (k, v) = parts.next()?.split_once('=')?;
    let (k, v) = (k.trim_matches([' ', '\t']), v.trim_matches([' ', '\t']));
    if !valid_key(k) || !valid_value(v) {
        return None;
    }
    let mut out = format!("{k}={v}");
    for p in parts {
        let p = p.trim_matches([' ', '\t']);
        let ok = match p.split_once('=') {
            Some((pk, pv)) => {
                valid_key(pk.trim_matches([' ', '\t'])) && valid_value(pv.trim_matches([' ', '\t']))
            }
            None => valid_key(p),
        };
        if !ok {
            return None;
        }
        out.push(';');
        out.push_str(&p.replace([' ', '\t'], ""));
    }
    Some(out)
}

/// Validated baggage: the value to send, and the members for attribute lookup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Baggage {
    pub value: String,
    pub members: usize,
}

impl Baggage {
    /// The percent-decoded value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<String> {
        self.value.split(',').find_map(|m| {
            let (k, rest) = m.split_once('=')?;
            let v = rest.split(';').next()?;
            (k == key).then(|| percent_decode(v))
        })
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = (b[i] == b'%')
            .then(|| b.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads and validates every `baggage` line. `None` when nothing valid remains.
pub fn extract(headers: &HeaderMap) -> Option<Baggage> {
    let mut value = String::new();
    let mut members = 0;
    for line in headers.get_all(&BAGGAGE) {
        let Ok(line) = line.to_str() else { continue };
        for m in line.split(',') {
            if m.trim_matches([' ', '\t']).is_empty() {
                continue;
            }
            let Some(m) = member(m) else { continue };
            let extra = m.len() + usize::from(!value.is_empty());
            if members == MAX_MEMBERS || value.len() + extra > MAX_BYTES {
                continue;
            }
            if !value.is_empty() {
                value.push(',');
            }
            value.push_str(&m);
            members += 1;
        }
    }
    (members > 0).then_some(Baggage { value, members })
}

/// Replaces every inbound `baggage` line with the validated one (or none).
pub fn inject(headers: &mut HeaderMap, baggage: Option<&Baggage>) {
    headers.remove(&BAGGAGE);
    if let Some(v) = baggage.and_then(|b| HeaderValue::from_str(&b.value).ok()) {
        headers.insert(&BAGGAGE, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(lines: &[&str]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for l in lines {
            m.append(&BAGGAGE, HeaderValue::from_str(l).unwrap());
        }
        m
    }

    #[test]
    fn members_with_properties_and_ows_are_normalised() {
        let b = extract(&h(&[
            "userId = alice ; ttl=60 , serverNode=DF%2028",
            "isProduction=false",
        ]))
        .unwrap();
        assert_eq!(
            b.value,
            "userId=alice;ttl=60,serverNode=DF%2028,isProduction=false"
        );
        assert_eq!(b.members, 3);
        assert_eq!(b.get("serverNode").as_deref(), Some("DF 28"));
        assert_eq!(b.get("userId").as_deref(), Some("alice"));
        assert_eq!(b.get("missing"), None);
    }

    #[test]
    fn malformed_members_are_dropped_others_kept() {
        let b = extract(&h(&["good=1,bad key=2,novalue,quote=\"x\",semi=a;;,ok=2"])).unwrap();
        assert_eq!(b.value, "good=1,ok=2");
    }

    #[test]
    fn nothing_valid_is_no_baggage() {
        assert!(extract(&h(&["=1, ,bad key=2"])).is_none());
        assert!(extract(&HeaderMap::new()).is_none());
    }

    #[test]
    fn at_most_180_members() {
        let list: Vec<String> = (0..200).map(|i| format!("k{i}=v")).collect();
        let b = extract(&h(&[&list.join(",")])).unwrap();
        assert_eq!(b.members, MAX_MEMBERS);
        assert!(b.value.ends_with("k179=v"));
    }

    #[test]
    fn at_most_8192_bytes_whole_members_only() {
        let big = "v".repeat(3000);
        let list = format!("a={big},b={big},c={big},d=1");
        let b = extract(&h(&[&list])).unwrap();
        assert!(b.value.len() <= MAX_BYTES);
        assert_eq!(
            b.value,
            format!("a={big},b={big},d=1"),
            "c does not fit, d still does"
        );
    }

    #[test]
    fn inject_replaces_every_line() {
        let mut m = h(&["a=1", "b=2"]);
        let b = extract(&m);
        inject(&mut m, b.as_ref());
        assert_eq!(m.get_all(&BAGGAGE).iter().count(), 1);
        assert_eq!(m[&BAGGAGE], "a=1,b=2");
        inject(&mut m, None);
        assert!(m.get(&BAGGAGE).is_none());
    }
}
