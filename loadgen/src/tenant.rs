//! The tenants a run spreads its requests over (`--tenants`), and how a
//! tenant's name is written into a request path.
//!
//! Three spellings:
//! - a count, `100`: the runner's own `t0` … `t99`;
//! - a comma list, `shop,blog,api`;
//! - a pattern with one inclusive decimal range, `shop-{0..99}`, zero-padded
//!   when a bound is written with a leading zero, as the shell's brace
//!   expansion does (`shop-{00..99}`: `shop-00` … `shop-99`).
//!
//! List items may be patterns: `a,b,shop-{1..8}`. Ranges are not expanded:
//! a name is written straight into the request path buffer from its index,
//! so a million tenants cost as little as ten.

use std::fmt::{self, Write as _};
use std::str::FromStr;

use anyhow::{Context, bail, ensure};
use bytes::BytesMut;

/// A set of tenant names, indexed `0..len()` (the index a tenant
/// distribution draws).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantSet {
    groups: Vec<Group>,
    /// `starts[i]`: the index of `groups[i]`'s first name.
    starts: Vec<usize>,
    len: usize,
}

/// Names that follow one another in the set.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Group {
    /// One name, as written.
    Name(String),
    /// `{prefix}{n}{suffix}` for `n` in `first ..= last`, each `n` written
    /// with at least `width` digits (0: no padding).
    Range {
        prefix: String,
        first: u64,
        last: u64,
        width: usize,
        suffix: String,
    },
}

impl Group {
    fn len(&self) -> usize {
        match self {
            Group::Name(_) => 1,
            // `last - first` fits: the parser bounds the whole set's size.
            Group::Range { first, last, .. } => (last - first) as usize + 1,
        }
    }
}

impl TenantSet {
    /// `t0` … `t{n-1}`, the runner's default tenant names.
    pub fn count(n: usize) -> TenantSet {
        assert!(n >= 1, "a tenant set holds at least one tenant");
        TenantSet::from_groups(vec![Group::Range {
            prefix: "t".to_owned(),
            first: 0,
            last: n as u64 - 1,
            width: 0,
            suffix: String::new(),
        }])
    }

    fn from_groups(groups: Vec<Group>) -> TenantSet {
        let mut starts = Vec::with_capacity(groups.len());
        let mut len = 0;
        for group in &groups {
            starts.push(len);
            len += group.len();
        }
        TenantSet {
            groups,
            starts,
            len,
        }
    }

    /// How many tenants; at least one.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a set holds at least one tenant.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends the name of tenant `index` (`< len()`) to `out`, with no
    /// allocation.
    #[inline]
    pub fn write(&self, index: usize, out: &mut BytesMut) {
        let group = match self.groups.len() {
            1 => 0,
            _ => self.starts.partition_point(|&s| s <= index) - 1,
        };
        match &self.groups[group] {
            Group::Name(name) => out.extend_from_slice(name.as_bytes()),
            Group::Range {
                prefix,
                first,
                width,
                suffix,
                ..
            } => {
                out.extend_from_slice(prefix.as_bytes());
                let n = first + (index - self.starts[group]) as u64;
                // Writes into a BytesMut cannot fail.
                let _ = write!(out, "{n:0width$}");
                out.extend_from_slice(suffix.as_bytes());
            }
        }
    }

    /// The name of tenant `index`, as an owned string (for tests and
    /// messages; the hot path uses [`TenantSet::write`]).
    pub fn name(&self, index: usize) -> String {
        let mut out = BytesMut::new();
        self.write(index, &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// The set in the `--tenants` syntax: `t{0..99}` for the count 100.
impl fmt::Display for TenantSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, group) in self.groups.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match group {
                Group::Name(name) => f.write_str(name)?,
                Group::Range {
                    prefix,
                    first,
                    last,
                    width,
                    suffix,
                } => write!(f, "{prefix}{{{first:0width$}..{last:0width$}}}{suffix}")?,
            }
        }
        Ok(())
    }
}

/// Most tenants in a set: a tenant index is drawn as a 32-bit number.
const MAX_TENANTS: u64 = u32::MAX as u64;

impl FromStr for TenantSet {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<TenantSet> {
        let s = s.trim();
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            let n: u64 = s
                .parse()
                .ok()
                .filter(|&n| n <= MAX_TENANTS)
                .with_context(|| format!("a tenant count is at most {MAX_TENANTS}, got {s}"))?;
            ensure!(n >= 1, "the tenant count must be at least 1");
            return Ok(TenantSet::count(n as usize));
        }
        let mut depth = 0i32;
        for c in s.chars() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth > 0 => bail!(
                    "tenants {s:?}: a range is written {{first..last}}, e.g. {{0..99}}, and \
                     a list a,b,c outside braces"
                ),
                _ => {}
            }
        }
        let mut groups = Vec::new();
        let mut total: u64 = 0;
        for item in s.split(',').map(str::trim) {
            ensure!(
                !item.is_empty(),
                "tenant list {s:?} has an empty item; write a count (100), names (a,b,c) \
                 or a pattern (shop-{{0..99}})"
            );
            let group = parse_item(item)?;
            if let Group::Name(name) = &group {
                ensure!(!groups.contains(&group), "tenant {name:?} is listed twice");
            }
            total += group.len() as u64;
            ensure!(
                total <= MAX_TENANTS,
                "more than {MAX_TENANTS} tenants in {s:?}"
            );
            groups.push(group);
        }
        Ok(TenantSet::from_groups(groups))
    }
}

/// One list item: a name, or a name with one `{first..last}` range.
fn parse_item(item: &str) -> anyhow::Result<Group> {
    let Some(open) = item.find('{') else {
        check_name_part(item, item)?;
        return Ok(Group::Name(item.to_owned()));
    };
    let close = item[open..]
        .find('}')
        .map(|i| open + i)
        .with_context(|| format!("tenant pattern {item:?} has a '{{' without its '}}'"))?;
    let (prefix, range, suffix) = (&item[..open], &item[open + 1..close], &item[close + 1..]);
    ensure!(
        !suffix.contains(['{', '}']),
        "tenant pattern {item:?} has more than one range"
    );
    check_name_part(item, prefix)?;
    check_name_part(item, suffix)?;
    let Some((a, b)) = range.split_once("..") else {
        bail!("tenant pattern {item:?}: the range is written {{first..last}}, e.g. {{0..99}}");
    };
    let bound = |text: &str| {
        text.parse::<u64>()
            .ok()
            .filter(|_| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
            .with_context(|| {
                format!("tenant pattern {item:?}: {text:?} is not a non-negative whole number")
            })
    };
    let (first, last) = (bound(a)?, bound(b)?);
    ensure!(
        first <= last,
        "tenant pattern {item:?}: the range runs from its first to its last number, \
         {first} > {last}"
    );
    ensure!(
        last - first < MAX_TENANTS,
        "more than {MAX_TENANTS} tenants in {item:?}"
    );
    // As the shell pads {00..10}: to the wider bound, when either is written
    // with a leading zero.
    let padded = |t: &str| t.len() > 1 && t.starts_with('0');
    let width = if padded(a) || padded(b) {
        a.len().max(b.len())
    } else {
        0
    };
    Ok(Group::Range {
        prefix: prefix.to_owned(),
        first,
        last,
        width,
        suffix: suffix.to_owned(),
    })
}

/// Tenant names go into request paths unescaped: only URL-unreserved bytes.
fn check_name_part(item: &str, part: &str) -> anyhow::Result<()> {
    ensure!(
        part.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b)),
        "tenant {item:?}: names are ASCII letters, digits, '-', '_', '.' or '~'"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(s: &str) -> Vec<String> {
        let set: TenantSet = s.parse().expect("valid tenants");
        (0..set.len()).map(|i| set.name(i)).collect()
    }

    fn err(s: &str) -> String {
        format!(
            "{:#}",
            s.parse::<TenantSet>().expect_err("should be rejected")
        )
    }

    #[test]
    fn a_count_is_the_runners_default_names() {
        assert_eq!(names("3"), ["t0", "t1", "t2"]);
        let set: TenantSet = "100".parse().expect("valid");
        assert_eq!((set.len(), set.name(99)), (100, "t99".to_owned()));
        assert_eq!(set.to_string(), "t{0..99}");
        assert_eq!(set, TenantSet::count(100));
    }

    #[test]
    fn lists_and_patterns() {
        assert_eq!(names("shop, blog,api"), ["shop", "blog", "api"]);
        assert_eq!(names("app"), ["app"]);
        assert_eq!(names("shop-{0..2}"), ["shop-0", "shop-1", "shop-2"]);
        assert_eq!(names("s{8..10}.x"), ["s8.x", "s9.x", "s10.x"]);
        assert_eq!(names("{1..2}"), ["1", "2"]);
        // Zero-padded to the wider bound, as the shell does.
        assert_eq!(names("n{08..10}"), ["n08", "n09", "n10"]);
        assert_eq!(names("n{000..1}"), ["n000", "n001"]);
        // Names and patterns mixed; indices run across the groups.
        assert_eq!(names("a,x{1..3},b"), ["a", "x1", "x2", "x3", "b"]);
        let set: TenantSet = "a,x{1..3},b".parse().expect("valid");
        assert_eq!(set.to_string(), "a,x{1..3},b");
        let set: TenantSet = "shop-{0..999999}".parse().expect("valid");
        assert_eq!(
            (set.len(), set.name(123_456)),
            (1_000_000, "shop-123456".into())
        );
    }

    #[test]
    fn rejects_bad_sets() {
        assert!(err("0").contains("at least 1"));
        assert!(err("99999999999").contains("at most"));
        assert!(err("a,,b").contains("empty item"));
        assert!(err("a,a").contains("listed twice"));
        assert!(err("a/b").contains("names are ASCII letters"));
        assert!(err("shop-{0..9").contains("without its"));
        assert!(err("shop-{0..9}-{0..9}").contains("more than one range"));
        assert!(err("shop-{a..9}").contains("not a non-negative whole number"));
        assert!(err("shop-{-1..9}").contains("not a non-negative whole number"));
        assert!(err("shop-{9..1}").contains("9 > 1"));
        assert!(err("shop-{0,9}").contains("{first..last}"));
        assert!(err("x{0..4294967295}").contains("more than"));
    }
}
