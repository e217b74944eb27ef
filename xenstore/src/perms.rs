//! Node permissions: `<c><domid>` entries (`n` none, `r` read, `w` write,
//! `b` both), the first naming the owner and the default access.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write as _;

use crate::DomId;
use crate::wire::{XsError, decimal};

/// What one permission entry grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// `n`
    None,
    /// `r`
    Read,
    /// `w`
    Write,
    /// `b`
    Both,
}

impl Access {
    /// Read access included.
    #[must_use]
    pub const fn reads(self) -> bool {
        matches!(self, Access::Read | Access::Both)
    }

    /// Write access included.
    #[must_use]
    pub const fn writes(self) -> bool {
        matches!(self, Access::Write | Access::Both)
    }

    const fn letter(self) -> char {
        match self {
            Access::None => 'n',
            Access::Read => 'r',
            Access::Write => 'w',
            Access::Both => 'b',
        }
    }
}

/// One entry of a permission list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Perm {
    /// The domain it names (the owner in entry 0).
    pub domid: DomId,
    /// What it grants (entry 0: to every domain not named later).
    pub access: Access,
}

impl Perm {
    /// Parses `<c><domid>`; `EINVAL` if malformed.
    pub fn parse(text: &str) -> Result<Perm, XsError> {
        let mut chars = text.chars();
        let access = match chars.next() {
            Some('n') => Access::None,
            Some('r') => Access::Read,
            Some('w') => Access::Write,
            Some('b') => Access::Both,
            _ => return Err(XsError::Einval),
        };
        Ok(Perm {
            domid: decimal(chars.as_str())?,
            access,
        })
    }

    /// `n0`, `r5`, ...
    #[must_use]
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = write!(out, "{}{}", self.access.letter(), self.domid);
        out
    }
}

/// A node's permission list; never empty.
pub type Perms = Vec<Perm>;

/// The owner of a permission list.
#[must_use]
pub fn owner(perms: &[Perm]) -> DomId {
    perms.first().map_or(0, |p| p.domid)
}

/// The access `dom` (acting also for `target`, the domain it was made the
/// device model of, if any) has to a node with `perms`: dom0 and the owner
/// may do anything, otherwise the first later entry naming the domain
/// applies, otherwise entry 0's access.
#[must_use]
pub fn access(perms: &[Perm], dom: DomId, target: Option<DomId>) -> Access {
    let is = |d: DomId| d == dom || Some(d) == target;
    match perms.split_first() {
        _ if dom == 0 => Access::Both,
        None => Access::None,
        Some((first, _)) if is(first.domid) => Access::Both,
        Some((first, rest)) => rest.iter().find(|p| is(p.domid)).unwrap_or(first).access,
    }
}

/// May `dom` change the permissions (dom0 or the owner, or its target's
/// owner)?
#[must_use]
pub fn owns(perms: &[Perm], dom: DomId, target: Option<DomId>) -> bool {
    let o = owner(perms);
    dom == 0 || o == dom || Some(o) == target
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perms(list: &[&str]) -> Perms {
        list.iter().map(|p| Perm::parse(p).unwrap()).collect()
    }

    #[test]
    fn parse_and_print() {
        assert_eq!(
            Perm::parse("r5"),
            Ok(Perm {
                domid: 5,
                access: Access::Read
            })
        );
        assert_eq!(Perm::parse("b0").unwrap().text(), "b0");
        assert_eq!(Perm::parse("x1"), Err(XsError::Einval));
        assert_eq!(Perm::parse("r"), Err(XsError::Einval));
        assert_eq!(Perm::parse("r-1"), Err(XsError::Einval));
        assert_eq!(Perm::parse(""), Err(XsError::Einval));
    }

    #[test]
    fn xen_access_rule() {
        let p = perms(&["n0", "r5", "w7", "r7"]);
        assert_eq!(access(&p, 0, None), Access::Both);
        assert_eq!(access(&p, 5, None), Access::Read);
        assert_eq!(
            access(&p, 7, None),
            Access::Write,
            "the first entry naming 7"
        );
        assert_eq!(access(&p, 9, None), Access::None, "entry 0 is the default");
        assert_eq!(
            access(&p, 9, Some(5)),
            Access::Read,
            "acting for its target"
        );
        let owned = perms(&["n3", "r4"]);
        assert_eq!(access(&owned, 3, None), Access::Both, "the owner");
        assert!(owns(&owned, 3, None) && owns(&owned, 0, None) && !owns(&owned, 4, None));
        assert_eq!(access(&[], 4, None), Access::None);
    }
}
