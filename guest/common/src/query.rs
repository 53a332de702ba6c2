//! Query-string parsing and percent-decoding.
//!
//! Query strings are `name=value` pairs joined by `&`. Names and values are
//! percent-decoded (`%2F` becomes `/`); `+` is left as it is, not turned into
//! a space (that rule belongs to HTML forms, not to URLs). A `%` that is not
//! followed by two hex digits is kept literally.

use std::borrow::Cow;
use std::fmt;

/// Percent-decoding produced bytes that are not UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidUtf8;

impl fmt::Display for InvalidUtf8 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("percent-decoded text is not UTF-8")
    }
}

impl std::error::Error for InvalidUtf8 {}

/// Percent-decodes `s`, borrowing it when it holds no `%`.
pub fn percent_decode(s: &str) -> Result<Cow<'_, str>, InvalidUtf8> {
    let bytes = s.as_bytes();
    let Some(first) = bytes.iter().position(|&b| b == b'%') else {
        return Ok(Cow::Borrowed(s));
    };
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(&bytes[..first]);
    let mut i = first;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%'
            && let Some(&[hi, lo]) = bytes.get(i + 1..i + 3)
            && let (Some(hi), Some(lo)) = (hex(hi), hex(lo))
        {
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| InvalidUtf8)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The raw (still percent-encoded) `(name, value)` pairs of a query string,
/// in order. A pair without `=` has an empty value; empty pairs are skipped.
pub fn pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
}

/// The percent-decoded value of the first parameter named `name`, if any.
pub fn param<'q>(query: &'q str, name: &str) -> Result<Option<Cow<'q, str>>, InvalidUtf8> {
    for (raw_name, raw_value) in pairs(query) {
        if percent_decode(raw_name).is_ok_and(|n| n == name) {
            return percent_decode(raw_value).map(Some);
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_percent_escapes() {
        assert_eq!(percent_decode("a%2Fb").as_deref(), Ok("a/b"));
        assert_eq!(percent_decode("a%2fb%20c").as_deref(), Ok("a/b c"));
        assert!(matches!(
            percent_decode("plain"),
            Ok(Cow::Borrowed("plain"))
        ));
        // `+` is not a space; malformed escapes are kept.
        assert_eq!(percent_decode("a+b").as_deref(), Ok("a+b"));
        assert_eq!(percent_decode("100%").as_deref(), Ok("100%"));
        assert_eq!(percent_decode("%zz%4").as_deref(), Ok("%zz%4"));
        assert_eq!(percent_decode("%C3%A9").as_deref(), Ok("é"));
        assert_eq!(percent_decode("%FF"), Err(InvalidUtf8));
    }

    #[test]
    fn finds_params() {
        let q = "bucket=my%20b&by=5&flag&&by=6&k%65y=v";
        assert_eq!(param(q, "bucket").ok().flatten().as_deref(), Some("my b"));
        assert_eq!(param(q, "by").ok().flatten().as_deref(), Some("5"));
        assert_eq!(param(q, "flag").ok().flatten().as_deref(), Some(""));
        assert_eq!(param(q, "key").ok().flatten().as_deref(), Some("v"));
        assert_eq!(param(q, "missing"), Ok(None));
        assert_eq!(param("", "bucket"), Ok(None));
        assert_eq!(param("x=%FF", "x"), Err(InvalidUtf8));
    }
}
