//! Command-line parsing for guest kernels.
//!
//! The command line is `start_info.cmd_line`: words separated by spaces or
//! tabs, each either `key=value` or a bare flag. The boot loader's first
//! word (the kernel's file name under QEMU's multiboot loader) has already
//! been removed by the hypervisor, on Xen and here.

#![forbid(unsafe_code)]

/// Iterates over the whitespace-separated words of a command line.
pub fn words(cmdline: &[u8]) -> impl Iterator<Item = &[u8]> {
    cmdline
        .split(|&b| b == b' ' || b == b'\t' || b == b'\n')
        .filter(|w| !w.is_empty())
}

/// The value of the last `key=value` word for `key`, if any.
///
/// Later words override earlier ones, as for Xen's and Linux's options.
#[must_use]
pub fn option<'a>(cmdline: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    words(cmdline)
        .filter_map(|w| {
            let eq = w.iter().position(|&b| b == b'=')?;
            (&w[..eq] == key).then(|| &w[eq + 1..])
        })
        .last()
}

/// Whether the bare word `flag` (not `flag=...`) appears.
#[must_use]
pub fn has_flag(cmdline: &[u8], flag: &[u8]) -> bool {
    words(cmdline).any(|w| w == flag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options() {
        let cl = b"test=hello  verbose x=1\ttest=xen_version";
        assert_eq!(option(cl, b"test"), Some(&b"xen_version"[..]));
        assert_eq!(option(cl, b"x"), Some(&b"1"[..]));
        assert_eq!(option(cl, b"y"), None);
        assert_eq!(option(b"test=", b"test"), Some(&b""[..]));
        assert!(has_flag(cl, b"verbose"));
        assert!(!has_flag(cl, b"test"));
        assert_eq!(words(b"   ").count(), 0);
    }
}
