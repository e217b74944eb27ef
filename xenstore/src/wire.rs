//! Errors and payload strings of `xs_wire` messages.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use dom0_abi::wire::Wire;
use dom0_abi::xenstore::{XSD_ERRORS, XsType, XsdSockmsg};

/// An error a request is answered with, sent as its name in an `ERROR`
/// reply. The order is Xen's `xsd_errors[]` table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs, reason = "each variant is the errno of the same name")]
pub enum XsError {
    Einval,
    Eacces,
    Eexist,
    Eisdir,
    Enoent,
    Enomem,
    Enospc,
    Eio,
    Enotempty,
    Enosys,
    Erofs,
    Ebusy,
    Eagain,
    Eisconn,
    E2big,
    Eperm,
}

impl XsError {
    /// The name sent on the wire (`"EINVAL"`, ...).
    #[must_use]
    pub const fn name(self) -> &'static str {
        XSD_ERRORS[self as usize]
    }

    /// The error whose name is `name`, as a client reads an `ERROR` reply
    /// (an unknown name is `EINVAL`, as Xen's clients take it).
    #[must_use]
    pub fn from_name(name: &[u8]) -> XsError {
        const ALL: [XsError; 16] = [
            XsError::Einval,
            XsError::Eacces,
            XsError::Eexist,
            XsError::Eisdir,
            XsError::Enoent,
            XsError::Enomem,
            XsError::Enospc,
            XsError::Eio,
            XsError::Enotempty,
            XsError::Enosys,
            XsError::Erofs,
            XsError::Ebusy,
            XsError::Eagain,
            XsError::Eisconn,
            XsError::E2big,
            XsError::Eperm,
        ];
        ALL.into_iter()
            .find(|e| e.name().as_bytes() == name)
            .unwrap_or(XsError::Einval)
    }
}

impl core::fmt::Display for XsError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// The strings of a payload as xenstored counts them: pieces separated by
/// NULs, the last one possibly unterminated (`a\0b` is two strings, `a\0`
/// one, an empty payload none).
pub fn strings(payload: &[u8]) -> impl Iterator<Item = &[u8]> {
    let body = payload.strip_suffix(&[0]).unwrap_or(payload);
    let mut parts = (!payload.is_empty()).then(|| body.split(|&b| b == 0));
    core::iter::from_fn(move || parts.as_mut()?.next())
}

/// Exactly `N` strings of the payload, as text; `EINVAL` for any other
/// count or non-UTF-8 text.
pub fn args<const N: usize>(payload: &[u8]) -> Result<[&str; N], XsError> {
    let mut out = [""; N];
    let mut count = 0;
    for s in strings(payload) {
        let slot = out.get_mut(count).ok_or(XsError::Einval)?;
        *slot = core::str::from_utf8(s).map_err(|_| XsError::Einval)?;
        count += 1;
    }
    if count == N {
        Ok(out)
    } else {
        Err(XsError::Einval)
    }
}

/// The single NUL-terminated argument of a payload (`path\0`): the first
/// NUL must be the payload's last byte (`EINVAL` otherwise).
pub fn one_arg(payload: &[u8]) -> Result<&str, XsError> {
    match payload.split_last() {
        Some((0, body)) if !body.contains(&0) => {
            core::str::from_utf8(body).map_err(|_| XsError::Einval)
        }
        _ => Err(XsError::Einval),
    }
}

/// A decimal number in an argument (digits only, no sign, no spaces).
pub fn decimal<T: core::str::FromStr>(text: &str) -> Result<T, XsError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(XsError::Einval);
    }
    text.parse().map_err(|_| XsError::Einval)
}

/// A whole message: header then payload.
#[must_use]
pub fn message(ty: XsType, req_id: u32, tx_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(XsdSockmsg::SIZE + payload.len());
    if let Some(header) = header(ty, req_id, tx_id, payload) {
        out.extend_from_slice(&header);
        out.extend_from_slice(payload);
    }
    out
}

/// Appends the message [`message`] makes to `out` (the reply queue),
/// without building it apart first.
pub fn queue_message(out: &mut VecDeque<u8>, ty: XsType, req_id: u32, tx_id: u32, payload: &[u8]) {
    if let Some(header) = header(ty, req_id, tx_id, payload) {
        out.extend(header);
        out.extend(payload);
    }
}

/// The header of a message carrying `payload`.
fn header(ty: XsType, req_id: u32, tx_id: u32, payload: &[u8]) -> Option<[u8; XsdSockmsg::SIZE]> {
    let header = XsdSockmsg {
        ty: ty as u32,
        req_id,
        tx_id,
        len: u32::try_from(payload.len()).unwrap_or(u32::MAX),
    };
    let mut raw = [0u8; XsdSockmsg::SIZE];
    header.to_wire(&mut raw)?;
    Some(raw)
}

/// An `ERROR` reply to the request `header`.
#[must_use]
pub fn error_reply(header: &XsdSockmsg, error: XsError) -> Vec<u8> {
    let mut name = Vec::from(error.name().as_bytes());
    name.push(0);
    message(XsType::Error, header.req_id, header.tx_id, &name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn strings_count_as_xenstored_does() {
        let count = |p: &[u8]| strings(p).count();
        assert_eq!(count(b""), 0);
        assert_eq!(count(b"\0"), 1);
        assert_eq!(count(b"a\0"), 1);
        assert_eq!(count(b"a\0b"), 2);
        assert_eq!(count(b"a\0b\0"), 2);
        assert_eq!(count(b"a\0\0"), 2);
        assert_eq!(
            strings(b"ab\0cd\0").collect::<Vec<_>>(),
            vec![&b"ab"[..], b"cd"]
        );
    }

    #[test]
    fn one_argument_must_end_at_its_nul() {
        assert_eq!(one_arg(b"/a\0"), Ok("/a"));
        assert_eq!(one_arg(b"/a"), Err(XsError::Einval));
        assert_eq!(one_arg(b"/a\0b\0"), Err(XsError::Einval));
        assert_eq!(one_arg(b""), Err(XsError::Einval));
        assert_eq!(one_arg(b"\xff\0"), Err(XsError::Einval));
    }

    #[test]
    fn argument_counts_are_exact() {
        assert_eq!(args::<2>(b"p\0t\0"), Ok(["p", "t"]));
        assert_eq!(args::<2>(b"p\0t\0x\0"), Err(XsError::Einval));
        assert_eq!(args::<3>(b"p\0t\0"), Err(XsError::Einval));
    }

    #[test]
    fn decimals_are_strict() {
        assert_eq!(decimal::<u16>("17"), Ok(17));
        assert_eq!(decimal::<u16>("-1"), Err(XsError::Einval));
        assert_eq!(decimal::<u16>(" 1"), Err(XsError::Einval));
        assert_eq!(decimal::<u16>("70000"), Err(XsError::Einval));
        assert_eq!(decimal::<u16>(""), Err(XsError::Einval));
    }

    #[test]
    fn error_names_round_trip() {
        assert_eq!(XsError::Eagain.name(), "EAGAIN");
        assert_eq!(XsError::from_name(b"E2BIG"), XsError::E2big);
        assert_eq!(XsError::from_name(b"EWHAT"), XsError::Einval);
        let header = XsdSockmsg {
            ty: 2,
            req_id: 9,
            tx_id: 4,
            len: 3,
        };
        let reply = error_reply(&header, XsError::Enoent);
        assert_eq!(
            &reply[..16],
            &[16, 0, 0, 0, 9, 0, 0, 0, 4, 0, 0, 0, 7, 0, 0, 0]
        );
        assert_eq!(&reply[16..], b"ENOENT\0");
    }
}
