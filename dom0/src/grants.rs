//! dom0's side of the two-domain grant test (`domu-demo grant`).
//!
//! A domU's console line `grant: offer <a> <b>` makes dom0 map grant `a`
//! writable (read it, store the complement of its first word at word 1,
//! copy it with `GNTTABOP_copy`) and grant `b` read-only; `grant: tried`
//! (the domU tried to revoke `a` while mapped) makes dom0 unmap `a`.
//! Mapping `b` stays until the domU has been destroyed: the domain must
//! then be dying (its page is still mapped here) and go away with the
//! unmap. Every step is one of dom0's checks, compared with Xen 4.17.

use guest_pv_shim::dom0_abi::domctl::DomInfoFlags;
use guest_pv_shim::dom0_abi::grant_table::{
    GNTCOPY_SOURCE_GREF, GntmapFlags, GnttabCopy, GnttabCopyPtr, GnttabMapGrantRef,
    GnttabUnmapGrantRef, GrantStatus,
};
use guest_pv_shim::dom0_abi::types::DomId;
use guest_pv_shim::{hypercall, mm, report};
use toolstack::xen::{GRANT_WINDOW_BASE, domain_info};

/// Where dom0 maps the two grants, and its own frame for the copy.
const WINDOWS: [usize; 2] = [GRANT_WINDOW_BASE, GRANT_WINDOW_BASE + 1];
const COPY_WINDOW: usize = GRANT_WINDOW_BASE + 2;

/// A mapping dom0 holds of a domU's grant.
#[derive(Clone, Copy, Debug)]
struct Held {
    handle: u32,
    window: usize,
}

/// The grants dom0 holds of one domU.
#[derive(Debug, Default)]
pub struct Grants {
    held: [Option<Held>; 2],
}

impl Grants {
    /// Acts on one console line of domain `domid` (named `name`).
    pub fn on_line(&mut self, domid: u16, name: &str, text: &[u8]) {
        let Some(rest) = text.strip_prefix(b"grant: ") else {
            return;
        };
        let Ok(rest) = core::str::from_utf8(rest) else {
            return;
        };
        let mut words = rest.split_ascii_whitespace();
        match words.next() {
            Some("offer") => {
                let mut refs = words.filter_map(|w| w.parse::<u32>().ok());
                if let (Some(a), Some(b)) = (refs.next(), refs.next()) {
                    self.offer(domid, name, a, b);
                }
            }
            Some("tried") => self.unmap(0, name),
            _ => {}
        }
    }

    /// Maps `a` writable (uses it) and `b` read-only.
    fn offer(&mut self, domid: u16, name: &str, a: u32, b: u32) {
        self.held[0] = map(domid, name, a, WINDOWS[0], false);
        if self.held[0].is_some() {
            let first = mm::window_read(WINDOWS[0], 0);
            report::ok_value(
                format_args!("{name} page read through the grant mapping"),
                format_args!("{first:#x}"),
            );
            mm::window_write(WINDOWS[0], 1, !first);
            copy(domid, name, a, first);
        }
        self.held[1] = map(domid, name, b, WINDOWS[1], true);
    }

    /// Unmaps mapping `i`, if held.
    fn unmap(&mut self, i: usize, name: &str) {
        let Some(held) = self.held.get_mut(i).and_then(Option::take) else {
            return;
        };
        let mut op = GnttabUnmapGrantRef {
            host_addr: mm::window_va(held.window),
            handle: held.handle,
            ..GnttabUnmapGrantRef::default()
        };
        let ret = hypercall::gnttab_unmap(core::slice::from_mut(&mut op));
        report::check_eq(
            format_args!("{name} mapping {i} unmapped"),
            (ret, op.status),
            (0, GrantStatus::Okay as i16),
        );
    }

    /// Whether dom0 still maps one of the domU's pages.
    #[must_use]
    pub fn holds(&self) -> bool {
        self.held.iter().any(Option::is_some)
    }

    /// After domain `domid` was destroyed: while dom0 still maps one of
    /// its pages it is dying; the unmap frees it.
    pub fn after_destroy(&mut self, domid: u16, name: &str) {
        if self.held[1].is_none() {
            return;
        }
        let dying = domain_info(domid)
            .is_ok_and(|i| i.domain == domid && i.dominf().contains(DomInfoFlags::DYING));
        report::check_eq(
            format_args!("{name} is dying while dom0 maps its page"),
            dying,
            true,
        );
        self.unmap(1, name);
        let gone = domain_info(domid).map_or(true, |i| i.domain != domid);
        report::check_eq(
            format_args!("{name} is gone after the last unmap"),
            gone,
            true,
        );
    }
}

/// Maps grant `gref` of `domid` at `window`.
fn map(domid: u16, name: &str, gref: u32, window: usize, readonly: bool) -> Option<Held> {
    let mut flags = GntmapFlags::HOST_MAP;
    flags.set(GntmapFlags::READONLY, readonly);
    let mut op = GnttabMapGrantRef {
        host_addr: mm::window_va(window),
        flags: flags.bits(),
        gref,
        dom: domid,
        ..GnttabMapGrantRef::default()
    };
    let ret = hypercall::gnttab_map(core::slice::from_mut(&mut op));
    let how = if readonly { "read-only" } else { "writable" };
    let ok = report::check_eq(
        format_args!("{name} grant {gref} mapped {how}"),
        (ret, op.status),
        (0, GrantStatus::Okay as i16),
    );
    ok.then_some(Held {
        handle: op.handle,
        window,
    })
}

/// Copies the first word of grant `gref` of `domid` into a frame of
/// dom0's and checks it is `want`.
fn copy(domid: u16, name: &str, gref: u32, want: u64) {
    let Some(own) = mm::alloc_frame() else {
        report::fail(format_args!("{name} grant copy"), format_args!("no frame"));
        return;
    };
    if mm::map_window(COPY_WINDOW, own.mfn, mm::PTE_RW) != 0 {
        report::fail(format_args!("{name} grant copy"), format_args!("window"));
        return;
    }
    let mut op = GnttabCopy {
        source: GnttabCopyPtr {
            u: u64::from(gref),
            domid,
            offset: 0,
            pad: 0,
        },
        dest: GnttabCopyPtr {
            u: own.mfn,
            domid: DomId::SELF.0,
            offset: 16,
            pad: 0,
        },
        len: 8,
        flags: GNTCOPY_SOURCE_GREF,
        ..GnttabCopy::default()
    };
    let ret = hypercall::gnttab_copy(core::slice::from_mut(&mut op));
    report::check_eq(
        format_args!("{name} grant copied"),
        (ret, op.status),
        (0, GrantStatus::Okay as i16),
    );
    report::check_eq(
        format_args!("{name} copy holds what the mapping showed"),
        mm::window_read(COPY_WINDOW, 2),
        want,
    );
    mm::unmap_window(COPY_WINDOW);
}
