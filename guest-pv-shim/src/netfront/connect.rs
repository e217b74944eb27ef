//! The front end's side of the vif handshake, on the bare-metal target:
//! grants, rings in two windows, the event channel and the xenstore keys.

use dom0_abi::event_channel::EvtchnAllocUnbound;
use dom0_abi::netif::keys;
use dom0_abi::types::DomId;
use dom0_abi::xenstore::XenbusState;

use super::{Netfront, PacketPages, RX_PAGES, TX_PAGES};
use crate::ring::WindowMemory;
use crate::xenbus::{WindowRing, Xenbus, XenbusError};
use crate::{hypercall, mm};

/// First grant reference used: 0-7 are the toolstack's and
/// `8..8 + WINDOW_COUNT` blkfront's (one per window), so a domain with
/// disks and a vif never grants one reference twice. The TX ring's page
/// is granted as this reference.
pub const FIRST_GREF: u32 = 80;
const _: () = assert!(FIRST_GREF as usize >= 8 + mm::WINDOW_COUNT);

/// The packet pages, in the kernel image (page-aligned, so each is one
/// frame of the initial mapping).
#[repr(C, align(4096))]
#[derive(Debug)]
pub struct StaticPages {
    tx: [[u8; 4096]; TX_PAGES],
    rx: [[u8; 4096]; RX_PAGES],
}

impl StaticPages {
    /// Zeroed pages (for a `static`).
    #[must_use]
    pub const fn new() -> StaticPages {
        StaticPages {
            tx: [[0; 4096]; TX_PAGES],
            rx: [[0; 4096]; RX_PAGES],
        }
    }
}

impl Default for StaticPages {
    fn default() -> Self {
        StaticPages::new()
    }
}

impl PacketPages for &'static mut StaticPages {
    fn write_tx(&mut self, id: usize, frame: &[u8]) {
        if let Some(out) = self.tx.get_mut(id).and_then(|p| p.get_mut(..frame.len())) {
            out.copy_from_slice(frame);
        }
    }
    fn with_rx<R>(&self, id: usize, f: impl FnOnce(&[u8]) -> R) -> R {
        f(self.rx.get(id).map_or(&[][..], |p| &p[..]))
    }
}

/// A connected vif.
pub struct Connected {
    /// The rings and pages.
    pub net: Netfront<WindowMemory, &'static mut StaticPages>,
    /// This end of the event channel.
    pub port: u32,
    /// The `mac` key, as text.
    pub mac: [u8; 17],
    /// The back end's `ip` key (empty if none), and its length.
    pub ip: ([u8; 64], usize),
}

/// The frame number of the page at `page`, for a grant entry.
fn frame_of(page: &[u8; 4096]) -> Result<u32, XenbusError> {
    mm::virt_to_mfn(page.as_ptr() as u64)
        .and_then(|mfn| u32::try_from(mfn).ok())
        .ok_or(XenbusError::Protocol)
}

/// Reads `path` as text into `buf`; its length.
fn read(xb: &mut Xenbus<WindowRing>, path: &str, buf: &mut [u8]) -> Result<usize, XenbusError> {
    xb.read(0, path, buf)
}

/// Connects vif `devid` (`device/vif/<devid>` of this domain): grants the
/// pages (the grant table mapped at `table_window`), initialises the
/// rings in `ring_windows`, allocates the event channel, publishes the
/// keys, switches to Connected and waits until the back end is
/// Connected too.
///
/// # Errors
/// A store request failed, the back end never got there, or a hypercall
/// failed (`Protocol`).
pub fn connect(
    xb: &mut Xenbus<WindowRing>,
    devid: u32,
    pages: &'static mut StaticPages,
    table_window: usize,
    ring_windows: [usize; 2],
) -> Result<Connected, XenbusError> {
    let mut dir_buf = [0u8; 32];
    let dir = format(&mut dir_buf, format_args!("device/vif/{devid}"))?;
    let mut text = [0u8; 64];
    let n = read(xb, &path(dir, keys::BACKEND_ID)?, &mut text)?;
    let backend_id: u16 = parse(&text[..n])?;
    let mut backend_buf = [0u8; 64];
    let n = read(xb, &path(dir, keys::BACKEND)?, &mut backend_buf)?;
    let backend = core::str::from_utf8(&backend_buf[..n]).map_err(|_| XenbusError::Protocol)?;
    let mut mac = [0u8; 17];
    let n = read(xb, &path(dir, keys::MAC)?, &mut mac)?;
    if n != mac.len() {
        return Err(XenbusError::Protocol);
    }
    let mut ip = [0u8; 64];
    let ip_len = read(xb, &path(backend, keys::IP)?, &mut ip).unwrap_or(0);
    xb.wait_state(backend, "netfront", |s| s == XenbusState::InitWait)?;

    mm::map_own_grant_table(table_window).map_err(|_| XenbusError::Protocol)?;
    let mut gref = FIRST_GREF;
    let mut ring_refs = [0u32; 2];
    for (window, r) in ring_windows.iter().zip(&mut ring_refs) {
        let frame = mm::alloc_frame().ok_or(XenbusError::Protocol)?;
        if mm::map_window(*window, frame.mfn, mm::PTE_RW) != 0 {
            return Err(XenbusError::Protocol);
        }
        let mfn = u32::try_from(frame.mfn).map_err(|_| XenbusError::Protocol)?;
        mm::grant_access(table_window, gref, backend_id, mfn, false);
        *r = gref;
        gref += 1;
    }
    let mut tx_grefs = [0u32; TX_PAGES];
    for (page, r) in pages.tx.iter().zip(&mut tx_grefs) {
        mm::grant_access(table_window, gref, backend_id, frame_of(page)?, true);
        *r = gref;
        gref += 1;
    }
    let mut rx_grefs = [0u32; RX_PAGES];
    for (page, r) in pages.rx.iter().zip(&mut rx_grefs) {
        mm::grant_access(table_window, gref, backend_id, frame_of(page)?, false);
        *r = gref;
        gref += 1;
    }
    let mut unbound = EvtchnAllocUnbound {
        dom: DomId::SELF.0,
        remote_dom: backend_id,
        port: 0,
    };
    if hypercall::evtchn_alloc_unbound(&mut unbound) != 0 {
        return Err(XenbusError::Protocol);
    }
    let mut net = Netfront::new(
        WindowMemory::new(ring_windows[0]),
        WindowMemory::new(ring_windows[1]),
        tx_grefs,
        rx_grefs,
        pages,
    );
    net.post_rx();
    let mut value = [0u8; 16];
    for (key, number) in [
        (keys::TX_RING_REF, ring_refs[0]),
        (keys::RX_RING_REF, ring_refs[1]),
        (keys::EVENT_CHANNEL, unbound.port),
        (keys::REQUEST_RX_COPY, 1),
        (keys::FEATURE_RX_NOTIFY, 1),
    ] {
        let shown = format(&mut value, format_args!("{number}"))?;
        xb.write(0, &path(dir, key)?, shown.as_bytes())?;
    }
    xb.set_state(0, dir, XenbusState::Connected)?;
    let state = xb.wait_state(backend, "netfront", |s| s != XenbusState::InitWait)?;
    if state != XenbusState::Connected {
        return Err(XenbusError::Protocol);
    }
    Ok(Connected {
        net,
        port: unbound.port,
        mac,
        ip: (ip, ip_len),
    })
}

/// A short path or value formatted on the stack.
struct Text<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> core::ops::Deref for Text<N> {
    type Target = str;
    fn deref(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl<const N: usize> core::fmt::Write for Text<N> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let end = self.len + s.len();
        self.buf
            .get_mut(self.len..end)
            .ok_or(core::fmt::Error)?
            .copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// `dir/key`.
fn path(dir: &str, key: &str) -> Result<Text<96>, XenbusError> {
    let mut text = Text {
        buf: [0; 96],
        len: 0,
    };
    core::fmt::Write::write_fmt(&mut text, format_args!("{dir}/{key}"))
        .map_err(|_| XenbusError::Protocol)?;
    Ok(text)
}

/// Formats `args` into `buf`.
fn format<'b>(buf: &'b mut [u8], args: core::fmt::Arguments<'_>) -> Result<&'b str, XenbusError> {
    let mut text = Text::<32> {
        buf: [0; 32],
        len: 0,
    };
    core::fmt::Write::write_fmt(&mut text, args).map_err(|_| XenbusError::Protocol)?;
    let out = buf.get_mut(..text.len).ok_or(XenbusError::Protocol)?;
    out.copy_from_slice(&text.buf[..text.len]);
    core::str::from_utf8(out).map_err(|_| XenbusError::Protocol)
}

fn parse<T: core::str::FromStr>(text: &[u8]) -> Result<T, XenbusError> {
    core::str::from_utf8(text)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or(XenbusError::Protocol)
}
