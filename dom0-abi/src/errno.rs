//! Xen error numbers (`public/errno.h`), as hypercalls return them.
//!
//! A hypercall reports failure by returning the *negated* error number in
//! RAX, so every `Errno` value `e` travels as `-(e as i64)`. Values 1 to 4095
//! of the negative range are reserved for errors; anything else is a result.
//!
//! Invariants:
//! - The numbers are Xen's, not the host C library's: `Errno::ENOSYS` is 38
//!   and `Errno::EOPNOTSUPP` is 95, whatever the build machine uses.
//! - `ERESTART` never reaches a guest: it is the hypervisor's internal
//!   "continue this hypercall later" marker, listed only because Xen's header
//!   reserves the number.
//! - `EWOULDBLOCK` and `EDEADLOCK` are aliases (associated constants), not
//!   variants, so each number has exactly one variant.

use core::fmt;

/// Declares `Errno` from one table: variant, number, one-line meaning.
macro_rules! errno_table {
    ($($name:ident = $value:literal, $what:literal;)*) => {
        /// A Xen error number (positive; hypercalls return it negated).
        ///
        /// Variant names keep Xen's upper-case C spelling so that Xen's
        /// documentation can be searched for them directly.
        #[repr(i32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[allow(clippy::upper_case_acronyms, reason = "Xen's names, kept verbatim")]
        pub enum Errno {
            $(
                #[doc = $what]
                $name = $value,
            )*
        }

        impl Errno {
            /// Every error number, in ascending order.
            pub const ALL: &'static [Errno] = &[$(Errno::$name),*];

            /// The error with the positive number `code`, if Xen defines one.
            #[must_use]
            pub const fn from_code(code: i32) -> Option<Errno> {
                match code {
                    $($value => Some(Errno::$name),)*
                    _ => None,
                }
            }

            /// Xen's C name of the error, e.g. `"ENOSYS"`.
            #[must_use]
            pub const fn name(self) -> &'static str {
                match self {
                    $(Errno::$name => stringify!($name),)*
                }
            }

            /// A short English description of the error.
            #[must_use]
            pub const fn description(self) -> &'static str {
                match self {
                    $(Errno::$name => $what,)*
                }
            }
        }
    };
}

errno_table! {
    EPERM = 1, "Operation not permitted: the caller lacks the privilege.";
    ENOENT = 2, "No such entry (for example a frame that is not populated).";
    ESRCH = 3, "No such domain (or other object looked up by id).";
    EINTR = 4, "Interrupted (internal to Xen; guests should not see it).";
    EIO = 5, "Input/output error.";
    ENXIO = 6, "No such device or address.";
    E2BIG = 7, "Argument too big.";
    ENOEXEC = 8, "Image format error.";
    EBADF = 9, "Bad handle.";
    ECHILD = 10, "No child.";
    EAGAIN = 11, "Temporarily unavailable: try again (alias EWOULDBLOCK).";
    ENOMEM = 12, "Out of memory.";
    EACCES = 13, "Permission denied (for example an interface version mismatch).";
    EFAULT = 14, "Bad address: a guest buffer could not be read or written.";
    EBUSY = 16, "Busy: the object is in use (for example a typed page).";
    EEXIST = 17, "Already exists (for example a VIRQ bound twice).";
    EXDEV = 18, "Cross-domain operation not allowed.";
    ENODEV = 19, "No such device.";
    ENOTDIR = 20, "Not a directory.";
    EISDIR = 21, "Is a directory.";
    EINVAL = 22, "Invalid argument.";
    ENFILE = 23, "Table overflow.";
    EMFILE = 24, "Too many open objects.";
    ENOSPC = 28, "No space left (for example no free event-channel port).";
    EROFS = 30, "Read-only.";
    EMLINK = 31, "Too many links.";
    EDOM = 33, "Argument out of domain.";
    ERANGE = 34, "Result out of range.";
    EDEADLK = 35, "Deadlock would occur (alias EDEADLOCK).";
    ENAMETOOLONG = 36, "Name too long.";
    ENOLCK = 37, "No locks available.";
    ENOSYS = 38, "Function not implemented: unknown hypercall or sub-operation.";
    ENOTEMPTY = 39, "Not empty.";
    ENODATA = 61, "No data available.";
    ETIME = 62, "Timer expired.";
    EBADMSG = 74, "Bad message.";
    EOVERFLOW = 75, "Value too large.";
    EILSEQ = 84, "Illegal byte sequence.";
    ERESTART = 85, "Restart the call (internal to the hypervisor, never returned).";
    ENOTSOCK = 88, "Not a socket.";
    EMSGSIZE = 90, "Message too large.";
    EOPNOTSUPP = 95, "Operation not supported.";
    EADDRINUSE = 98, "Address already in use.";
    EADDRNOTAVAIL = 99, "Address not available.";
    ENOBUFS = 105, "No buffer space: the guest's buffer is too small.";
    EISCONN = 106, "Already connected.";
    ENOTCONN = 107, "Not connected.";
    ETIMEDOUT = 110, "Timed out.";
    ECONNREFUSED = 111, "Connection refused.";
}

/// The largest magnitude a negative hypercall return can have and still be
/// an error: results in `-MAX_ERRNO..=-1` are errors, everything else is a
/// value (Linux and Xen guests use the same boundary).
pub const MAX_ERRNO: i64 = 4095;

impl Errno {
    /// Alias of [`Errno::EAGAIN`] (same number, 11).
    pub const EWOULDBLOCK: Errno = Errno::EAGAIN;
    /// Alias of [`Errno::EDEADLK`] (same number, 35).
    pub const EDEADLOCK: Errno = Errno::EDEADLK;

    /// The positive error number.
    #[must_use]
    pub const fn code(self) -> i32 {
        self as i32
    }

    /// The value a hypercall returns in RAX for this error: `-code`.
    #[must_use]
    pub const fn neg(self) -> i64 {
        -(self as i64)
    }

    /// The error a hypercall return value stands for, if it is one.
    ///
    /// Returns `None` for results (zero, positive, or below `-MAX_ERRNO`) and
    /// for negative values in the error range that Xen does not define.
    #[must_use]
    pub const fn from_ret(ret: i64) -> Option<Errno> {
        if ret >= 0 || ret < -MAX_ERRNO {
            return None;
        }
        // In range -4095..=-1, so the negation fits an i32.
        #[allow(clippy::cast_possible_truncation, reason = "checked range above")]
        let code = (-ret) as i32;
        Errno::from_code(code)
    }

    /// Converts a raw hypercall return into `Ok(value)` or `Err(errno)`.
    ///
    /// A negative value in the error range that Xen does not define is not
    /// an error here: it comes back as `Ok` with the raw register bits, so
    /// nothing the hypervisor returned is lost.
    ///
    /// # Errors
    /// The decoded [`Errno`] when `ret` is a defined negative error number.
    pub const fn result(ret: i64) -> Result<u64, Errno> {
        match Errno::from_ret(ret) {
            Some(e) => Err(e),
            #[allow(clippy::cast_sign_loss, reason = "raw register value, reinterpreted")]
            None => Ok(ret as u64),
        }
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.code())
    }
}

impl core::error::Error for Errno {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_match_xen() {
        assert_eq!(Errno::EPERM.code(), 1);
        assert_eq!(Errno::EFAULT.code(), 14);
        assert_eq!(Errno::EINVAL.code(), 22);
        assert_eq!(Errno::ENOSYS.code(), 38);
        assert_eq!(Errno::ENODATA.code(), 61);
        assert_eq!(Errno::EOPNOTSUPP.code(), 95);
        assert_eq!(Errno::ECONNREFUSED.code(), 111);
        assert_eq!(Errno::EWOULDBLOCK, Errno::EAGAIN);
        assert_eq!(Errno::EDEADLOCK.code(), 35);
    }

    #[test]
    fn round_trips() {
        for &e in Errno::ALL {
            assert_eq!(Errno::from_code(e.code()), Some(e));
            assert_eq!(Errno::from_ret(e.neg()), Some(e));
            assert_eq!(Errno::result(e.neg()), Err(e));
        }
        assert_eq!(Errno::ALL.len(), 49);
        assert!(Errno::ALL.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn non_errors() {
        assert_eq!(Errno::from_ret(0), None);
        assert_eq!(Errno::from_ret(4096), None);
        assert_eq!(Errno::from_ret(-15), None); // 15 is not a Xen errno
        assert_eq!(Errno::from_ret(-4096), None);
        assert_eq!(Errno::from_ret(i64::MIN), None);
        assert_eq!(Errno::result(0x0004_0011), Ok(0x0004_0011));
        assert_eq!(Errno::result(-5000), Ok(0u64.wrapping_sub(5000)));
    }

    #[test]
    fn names() {
        assert_eq!(Errno::ENOSYS.name(), "ENOSYS");
        assert_eq!(Errno::ENOSYS.neg(), -38);
        extern crate std;
        assert_eq!(std::format!("{}", Errno::EFAULT), "EFAULT (14)");
    }
}
