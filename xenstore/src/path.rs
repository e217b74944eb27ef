//! Path syntax: what a node name may look like, and where a relative path
//! sent by a domain points.

use alloc::string::String;

use dom0_abi::xenstore::XENSTORE_REL_PATH_MAX;

use crate::DomId;
use crate::wire::XsError;

/// The special watch path fired when a domain is introduced.
pub const INTRODUCE_DOMAIN: &str = "@introduceDomain";
/// The special watch path fired when a domain is released or goes away.
pub const RELEASE_DOMAIN: &str = "@releaseDomain";

/// `/local/domain/<domid>`, a domain's home.
#[must_use]
pub fn domain_path(domid: DomId) -> String {
    let mut path = String::with_capacity(HOME_MAX);
    push_domain_path(&mut path, domid);
    path
}

/// Length of the longest home path, `/local/domain/65535`.
const HOME_MAX: usize = "/local/domain/".len() + 5;

/// Appends `/local/domain/<domid>` to `out` (no formatting machinery: a
/// relative path is made absolute on every request).
fn push_domain_path(out: &mut String, domid: DomId) {
    out.push_str("/local/domain/");
    let mut digits = [0u8; 5];
    let mut at = digits.len();
    let mut n = domid;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend(digits[at..].iter().map(|&d| char::from(d)));
}

/// Whether `node` is a well-formed absolute path: `/` or `/`-separated
/// non-empty components of ASCII letters, digits and `-_@`, at most 2048
/// bytes beyond a `/local/domain/<id>/` prefix.
#[must_use]
pub fn is_valid(node: &str) -> bool {
    let Some(rest) = node.strip_prefix('/') else {
        return false;
    };
    if rest.is_empty() {
        return true;
    }
    // One pass: allowed bytes only, no empty component (`//`), no
    // trailing `/` (the byte before the first is the leading `/`).
    let mut after_slash = true;
    for b in rest.bytes() {
        let slash = b == b'/';
        if (slash && after_slash)
            || !(slash || b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'@'))
        {
            return false;
        }
        after_slash = slash;
    }
    !after_slash && node.len() - home_prefix_len(node) <= XENSTORE_REL_PATH_MAX
}

/// Length of a leading `/local/domain/<digits>/`, else 0.
fn home_prefix_len(node: &str) -> usize {
    let Some(rest) = node.strip_prefix("/local/domain/") else {
        return 0;
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits > 0 && digits <= 5 && rest.as_bytes().get(digits) == Some(&b'/') {
        node.len() - rest.len() + digits + 1
    } else {
        0
    }
}

/// Whether `node` names one of the special watch paths' namespace (`@…`).
#[must_use]
pub fn is_special(node: &str) -> bool {
    node.starts_with('@')
}

/// The absolute, checked form of `node` as domain `from` sent it: relative
/// paths are under its home. `EINVAL` for a malformed path.
pub fn canonical(from: DomId, node: &str) -> Result<String, XsError> {
    let mut full = String::new();
    canonical_into(from, node, &mut full)?;
    Ok(full)
}

/// [`canonical`] into `out` (cleared first), so that a caller that keeps
/// `out` allocates nothing per path.
///
/// # Errors
/// `EINVAL` for a malformed path (`out` then holds nothing useful).
pub fn canonical_into(from: DomId, node: &str, out: &mut String) -> Result<(), XsError> {
    out.clear();
    if node.is_empty() {
        return Err(XsError::Einval);
    }
    if !node.starts_with('/') {
        out.reserve(HOME_MAX + 1 + node.len());
        push_domain_path(out, from);
        out.push('/');
    }
    out.push_str(node);
    if is_valid(out) {
        Ok(())
    } else {
        Err(XsError::Einval)
    }
}

/// The parent of an absolute path other than `/`.
#[must_use]
pub fn parent(node: &str) -> &str {
    match node.rfind('/') {
        Some(0) | None => "/",
        Some(at) => &node[..at],
    }
}

/// The last component of an absolute path.
#[must_use]
pub fn base(node: &str) -> &str {
    node.rfind('/').map_or(node, |at| &node[at + 1..])
}

/// Whether `node` is `ancestor` or lies below it.
#[must_use]
pub fn is_at_or_below(node: &str, ancestor: &str) -> bool {
    ancestor == "/"
        || node
            .strip_prefix(ancestor)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    #[test]
    fn validity() {
        for good in ["/", "/a", "/a/b-c_d@e", "/local/domain/1/x"] {
            assert!(is_valid(good), "{good}");
        }
        for bad in ["", "a", "/a/", "//", "/a//b", "/a b", "/a.b", "/é"] {
            assert!(!is_valid(bad), "{bad}");
        }
        let long = format!("/local/domain/3/{}", "x".repeat(2048));
        assert!(is_valid(&long));
        assert!(!is_valid(&format!("{long}y")));
        assert!(!is_valid(&format!("/{}", "x".repeat(2048))));
    }

    proptest::proptest! {
        /// The one-pass check says what the rules say, component by
        /// component, on paths made of the interesting bytes.
        #[test]
        fn validity_is_the_rules(node in "[/a1@_.-]{0,12}") {
            let rules = node.strip_prefix('/').is_some_and(|rest| {
                rest.is_empty()
                    || rest.split('/').all(|c| {
                        !c.is_empty()
                            && c.bytes().all(|b| {
                                b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'@')
                            })
                    })
            });
            proptest::prop_assert_eq!(is_valid(&node), rules);
        }
    }

    #[test]
    fn relative_paths_are_under_the_home() {
        assert_eq!(canonical(5, "name").unwrap(), "/local/domain/5/name");
        assert_eq!(canonical(5, "/tool").unwrap(), "/tool");
        assert_eq!(canonical(5, ""), Err(XsError::Einval));
        assert_eq!(canonical(5, "a/"), Err(XsError::Einval));
        assert_eq!(canonical(5, "@x"), Ok(String::from("/local/domain/5/@x")));
        for (domid, home) in [
            (0, "/local/domain/0"),
            (10, "/local/domain/10"),
            (65535, "/local/domain/65535"),
        ] {
            assert_eq!(domain_path(domid), home);
            assert_eq!(canonical(domid, "a").unwrap(), format!("{home}/a"));
        }
    }

    #[test]
    fn tree_helpers() {
        assert_eq!(parent("/a/b"), "/a");
        assert_eq!(parent("/a"), "/");
        assert_eq!(base("/a/b"), "b");
        assert!(is_at_or_below("/a/b", "/a"));
        assert!(is_at_or_below("/a", "/a"));
        assert!(!is_at_or_below("/ab", "/a"));
        assert!(is_at_or_below("/ab", "/"));
    }
}
