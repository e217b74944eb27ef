//! A xenstore client over the store ring (`start_info.store_mfn`,
//! `store_evtchn`): read, write, directory, permissions, watches and
//! transactions, plus the XenbusState handshake of split drivers.
//!
//! The protocol logic here is pure and host-tested; the ring's memory,
//! notification and waiting belong to the [`ClientRing`] implementation
//! ([`WindowRing`] on the bare-metal target: the page mapped in one of the
//! shim's windows, waiting in `SCHEDOP_poll` on the store port). One request is outstanding at a
//! time; watch events that arrive before its reply are kept (up to
//! [`EVENTS_KEPT`], the oldest first) for [`Xenbus::next_event`].
//! Nothing here allocates: replies go into caller-supplied buffers.

#![forbid(unsafe_code)]

use dom0_abi::wire::Wire;
use dom0_abi::xenstore::{
    XENSTORE_PAYLOAD_MAX, XENSTORE_RING_SIZE, XSD_ERRORS, XenbusState, XsType, XsdSockmsg,
};

#[allow(clippy::cast_possible_truncation, reason = "the ring is 1024 bytes")]
const SIZE: u32 = XENSTORE_RING_SIZE as u32;

/// Of `count` ring bytes from `index` on, how many lie before the ring's
/// end.
fn contiguous(index: u32, count: usize) -> u32 {
    let room = SIZE - index % SIZE;
    u32::try_from(count).map_or(room, |count| count.min(room))
}

/// Watch events kept while a reply is awaited.
pub const EVENTS_KEPT: usize = 8;
/// Bytes of one kept watch event (path, NUL, token, NUL).
pub const EVENT_BYTES: usize = 256;

/// The guest's side of a store ring.
pub trait ClientRing {
    /// `req_prod` (ours).
    fn req_prod(&self) -> u32;
    /// `req_cons`, read with acquire semantics.
    fn req_cons(&self) -> u32;
    /// Writes `bytes` to `req` from `index % 1024` on; they do not run
    /// past the ring's end.
    fn set_req_bytes(&mut self, index: u32, bytes: &[u8]);
    /// Publishes `req_prod` with release semantics (after the bytes).
    fn set_req_prod(&mut self, prod: u32);
    /// `rsp_prod`, read with acquire semantics.
    fn rsp_prod(&self) -> u32;
    /// `rsp_cons` (ours).
    fn rsp_cons(&self) -> u32;
    /// Reads `out.len()` bytes of `rsp` from `index % 1024` on; they do
    /// not run past the ring's end.
    fn rsp_bytes(&self, index: u32, out: &mut [u8]);
    /// Publishes `rsp_cons` with release semantics.
    fn set_rsp_cons(&mut self, cons: u32);
    /// Notifies the server (the store event channel).
    fn notify(&mut self);
    /// Waits a little for the server; `false` once patience runs out.
    fn wait(&mut self) -> bool;
}

/// Why a request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XenbusError {
    /// The server's `ERROR` reply, as an index into [`XSD_ERRORS`] (an
    /// unknown name counts as `EINVAL`, as Xen's clients take it).
    Store(usize),
    /// The server did not answer in time.
    Timeout,
    /// The reply does not fit the buffer (it was consumed).
    TooBig,
    /// The request is larger than a message may be.
    RequestTooBig,
    /// The reply is malformed.
    Protocol,
}

impl XenbusError {
    /// `EACCES`, `ENOENT`, ... for server errors; a description otherwise.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            XenbusError::Store(i) => XSD_ERRORS.get(*i).copied().unwrap_or("EINVAL"),
            XenbusError::Timeout => "timeout",
            XenbusError::TooBig => "reply too big",
            XenbusError::RequestTooBig => "request too big",
            XenbusError::Protocol => "malformed reply",
        }
    }

    /// The server error named `name`.
    #[must_use]
    pub fn store(name: &str) -> XenbusError {
        XenbusError::Store(XSD_ERRORS.iter().position(|e| *e == name).unwrap_or(0))
    }
}

impl core::fmt::Display for XenbusError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// A watch event as returned: `(path, token)`.
pub type WatchEvent<'b> = (&'b [u8], &'b [u8]);

/// A kept watch event: the path and token, in one buffer.
#[derive(Clone, Copy)]
struct Event {
    bytes: [u8; EVENT_BYTES],
    len: usize,
}

/// A xenstore connection.
pub struct Xenbus<R: ClientRing> {
    ring: R,
    req_id: u32,
    events: [Event; EVENTS_KEPT],
    kept: usize,
    /// Watch events lost because [`EVENTS_KEPT`] were waiting.
    pub dropped_events: u32,
}

/// A reply's type and length.
struct Reply {
    ty: u32,
    len: usize,
}

impl<R: ClientRing> Xenbus<R> {
    /// A client on `ring`.
    pub const fn new(ring: R) -> Xenbus<R> {
        Xenbus {
            ring,
            req_id: 0,
            events: [Event {
                bytes: [0; EVENT_BYTES],
                len: 0,
            }; EVENTS_KEPT],
            kept: 0,
            dropped_events: 0,
        }
    }

    /// The ring.
    pub fn ring(&mut self) -> &mut R {
        &mut self.ring
    }

    fn put(&mut self, mut bytes: &[u8]) -> Result<(), XenbusError> {
        let mut prod = self.ring.req_prod();
        while !bytes.is_empty() {
            let used = prod.wrapping_sub(self.ring.req_cons());
            if used >= SIZE {
                self.ring.set_req_prod(prod);
                self.ring.notify();
                if !self.ring.wait() {
                    return Err(XenbusError::Timeout);
                }
                continue;
            }
            let n = contiguous(prod, bytes.len()).min(SIZE - used);
            let (now, rest) = bytes.split_at(n as usize);
            self.ring.set_req_bytes(prod, now);
            prod = prod.wrapping_add(n);
            bytes = rest;
        }
        self.ring.set_req_prod(prod);
        Ok(())
    }

    /// Takes `out.len()` reply bytes, waiting for them; `None` while
    /// nothing at all has arrived and `block` is false.
    fn take(&mut self, out: &mut [u8], block: bool) -> Result<Option<()>, XenbusError> {
        let mut got = 0;
        while got < out.len() {
            let cons = self.ring.rsp_cons();
            let avail = self.ring.rsp_prod().wrapping_sub(cons);
            if avail == 0 || avail > SIZE {
                if got == 0 && !block {
                    return Ok(None);
                }
                if !self.ring.wait() {
                    return Err(XenbusError::Timeout);
                }
                continue;
            }
            let n = contiguous(cons, out.len() - got).min(avail);
            let end = got + n as usize;
            self.ring.rsp_bytes(cons, &mut out[got..end]);
            got = end;
            self.ring.set_rsp_cons(cons.wrapping_add(n));
            // The server waits for room only when the ring was full.
            if avail == SIZE {
                self.ring.notify();
            }
        }
        Ok(Some(()))
    }

    /// Reads one message into `payload`; the excess of a longer one is
    /// consumed and reported as `TooBig`.
    fn message(
        &mut self,
        payload: &mut [u8],
        block: bool,
    ) -> Result<Option<(Reply, u32)>, XenbusError> {
        let Some((reply, req_id)) = self.header(block)? else {
            return Ok(None);
        };
        self.body(reply.len, payload)?;
        Ok(Some((reply, req_id)))
    }

    /// Reads the next message's header (`None` while nothing at all has
    /// arrived and `block` is false).
    fn header(&mut self, block: bool) -> Result<Option<(Reply, u32)>, XenbusError> {
        let mut raw = [0u8; XsdSockmsg::SIZE];
        if self.take(&mut raw, block)?.is_none() {
            return Ok(None);
        }
        let header = XsdSockmsg::from_wire(&raw).ok_or(XenbusError::Protocol)?;
        let len = header.len as usize;
        if len > XENSTORE_PAYLOAD_MAX {
            return Err(XenbusError::Protocol);
        }
        Ok(Some((Reply { ty: header.ty, len }, header.req_id)))
    }

    /// Reads a body of `len` bytes: as much as fits into `out`, the rest
    /// consumed and dropped.
    fn body(&mut self, len: usize, out: &mut [u8]) -> Result<(), XenbusError> {
        let fits = len.min(out.len());
        self.take(&mut out[..fits], true)?;
        let mut rest = [0u8; 64];
        let mut left = len - fits;
        while left > 0 {
            let n = left.min(rest.len());
            self.take(&mut rest[..n], true)?;
            left -= n;
        }
        Ok(())
    }

    fn keep_event(&mut self, payload: &[u8]) {
        if self.kept == EVENTS_KEPT || payload.len() > EVENT_BYTES {
            self.dropped_events += 1;
            return;
        }
        let slot = &mut self.events[self.kept];
        slot.bytes[..payload.len()].copy_from_slice(payload);
        slot.len = payload.len();
        self.kept += 1;
    }

    /// Sends a request of `parts`, each followed by a NUL except the last
    /// when `raw_last` (WRITE's value), and waits for its reply in
    /// `reply`. Returns the reply's length.
    pub fn request(
        &mut self,
        ty: XsType,
        tx: u32,
        parts: &[&[u8]],
        raw_last: bool,
        reply: &mut [u8],
    ) -> Result<usize, XenbusError> {
        let nuls = parts.len() - usize::from(raw_last && !parts.is_empty());
        let len = parts.iter().map(|p| p.len()).sum::<usize>() + nuls;
        if len > XENSTORE_PAYLOAD_MAX {
            return Err(XenbusError::RequestTooBig);
        }
        self.req_id = self.req_id.wrapping_add(1);
        let header = XsdSockmsg {
            ty: ty as u32,
            req_id: self.req_id,
            tx_id: tx,
            len: u32::try_from(len).map_err(|_| XenbusError::RequestTooBig)?,
        };
        let mut raw = [0u8; XsdSockmsg::SIZE];
        header.to_wire(&mut raw).ok_or(XenbusError::Protocol)?;
        self.put(&raw)?;
        for (i, part) in parts.iter().enumerate() {
            self.put(part)?;
            if !(raw_last && i + 1 == parts.len()) {
                self.put(&[0])?;
            }
        }
        self.ring.notify();
        self.reply(reply)
    }

    /// Sends raw bytes (a hostile client's malformed request, its header
    /// included) and waits for the next reply, which must echo the
    /// header's `req_id`.
    pub fn raw_request(&mut self, bytes: &[u8], reply: &mut [u8]) -> Result<usize, XenbusError> {
        if let Some(header) = XsdSockmsg::from_wire(bytes) {
            self.req_id = header.req_id;
        }
        self.put(bytes)?;
        self.ring.notify();
        self.reply(reply)
    }

    fn reply(&mut self, reply: &mut [u8]) -> Result<usize, XenbusError> {
        loop {
            let (r, req_id) = self.header(true)?.ok_or(XenbusError::Timeout)?;
            if r.ty == XsType::WatchEvent as u32 {
                let mut event = [0u8; EVENT_BYTES];
                self.body(r.len, &mut event)?;
                match event.get(..r.len) {
                    Some(event) => self.keep_event(event),
                    None => self.dropped_events += 1,
                }
                continue;
            }
            if r.ty == XsType::Error as u32 {
                // Every name in `XSD_ERRORS` fits; a longer one is no name.
                let mut name = [0u8; 16];
                self.body(r.len, &mut name)?;
                let name = name[..r.len.min(name.len())]
                    .split(|&b| b == 0)
                    .next()
                    .unwrap_or(&[]);
                if req_id != self.req_id {
                    return Err(XenbusError::Protocol);
                }
                return Err(XenbusError::store(
                    core::str::from_utf8(name).unwrap_or("EINVAL"),
                ));
            }
            // Straight into the caller's buffer: no page-sized staging
            // buffer to clear per reply.
            self.body(r.len, reply)?;
            if req_id != self.req_id {
                return Err(XenbusError::Protocol);
            }
            return if r.len <= reply.len() {
                Ok(r.len)
            } else {
                Err(XenbusError::TooBig)
            };
        }
    }

    /// The next watch event, `(path, token)` in `buf`, without waiting
    /// (`None`: none yet).
    pub fn next_event<'b>(
        &mut self,
        buf: &'b mut [u8],
    ) -> Result<Option<WatchEvent<'b>>, XenbusError> {
        let len = if self.kept > 0 {
            let first = self.events[0];
            self.events.copy_within(1..self.kept, 0);
            self.kept -= 1;
            let out = buf.get_mut(..first.len).ok_or(XenbusError::TooBig)?;
            out.copy_from_slice(&first.bytes[..first.len]);
            first.len
        } else {
            match self.message(buf, false)? {
                None => return Ok(None),
                Some((r, _)) if r.ty == XsType::WatchEvent as u32 && r.len <= buf.len() => r.len,
                Some(_) => return Err(XenbusError::Protocol),
            }
        };
        let mut parts = buf[..len].split(|&b| b == 0);
        match (parts.next(), parts.next()) {
            (Some(path), Some(token)) => Ok(Some((path, token))),
            _ => Err(XenbusError::Protocol),
        }
    }

    /// Waits for the next watch event.
    pub fn wait_event<'b>(&mut self, buf: &'b mut [u8]) -> Result<WatchEvent<'b>, XenbusError> {
        loop {
            // Borrow checking: look first, then re-borrow for the result.
            if self.kept > 0 || self.ring.rsp_prod() != self.ring.rsp_cons() {
                return self.next_event(buf)?.ok_or(XenbusError::Protocol);
            }
            if !self.ring.wait() {
                return Err(XenbusError::Timeout);
            }
        }
    }

    /// READ: the value of `path` into `buf`; its length.
    pub fn read(&mut self, tx: u32, path: &str, buf: &mut [u8]) -> Result<usize, XenbusError> {
        self.request(XsType::Read, tx, &[path.as_bytes()], false, buf)
    }

    /// WRITE `value` to `path`.
    pub fn write(&mut self, tx: u32, path: &str, value: &[u8]) -> Result<(), XenbusError> {
        self.request(
            XsType::Write,
            tx,
            &[path.as_bytes(), value],
            true,
            &mut [0; 3],
        )
        .map(|_| ())
    }

    /// MKDIR `path`.
    pub fn mkdir(&mut self, tx: u32, path: &str) -> Result<(), XenbusError> {
        self.request(XsType::Mkdir, tx, &[path.as_bytes()], false, &mut [0; 3])
            .map(|_| ())
    }

    /// RM `path` and everything below it.
    pub fn rm(&mut self, tx: u32, path: &str) -> Result<(), XenbusError> {
        self.request(XsType::Rm, tx, &[path.as_bytes()], false, &mut [0; 3])
            .map(|_| ())
    }

    /// DIRECTORY: the children of `path`, each followed by a NUL, into
    /// `buf`; the length.
    pub fn directory(&mut self, tx: u32, path: &str, buf: &mut [u8]) -> Result<usize, XenbusError> {
        self.request(XsType::Directory, tx, &[path.as_bytes()], false, buf)
    }

    /// GET_PERMS: `n0\0r1\0...` into `buf`; the length.
    pub fn get_perms(&mut self, tx: u32, path: &str, buf: &mut [u8]) -> Result<usize, XenbusError> {
        self.request(XsType::GetPerms, tx, &[path.as_bytes()], false, buf)
    }

    /// SET_PERMS: `perms` such as `["n1", "r0"]`.
    pub fn set_perms(&mut self, tx: u32, path: &str, perms: &[&str]) -> Result<(), XenbusError> {
        let mut parts: [&[u8]; 8] = [&[]; 8];
        let n = perms.len().min(7);
        parts[0] = path.as_bytes();
        for (slot, p) in parts[1..=n].iter_mut().zip(perms) {
            *slot = p.as_bytes();
        }
        self.request(XsType::SetPerms, tx, &parts[..=n], false, &mut [0; 3])
            .map(|_| ())
    }

    /// WATCH `path` with `token` (the server fires one event at once).
    pub fn watch(&mut self, path: &str, token: &str) -> Result<(), XenbusError> {
        self.request(
            XsType::Watch,
            0,
            &[path.as_bytes(), token.as_bytes()],
            false,
            &mut [0; 3],
        )
        .map(|_| ())
    }

    /// UNWATCH `path` with `token`.
    pub fn unwatch(&mut self, path: &str, token: &str) -> Result<(), XenbusError> {
        self.request(
            XsType::Unwatch,
            0,
            &[path.as_bytes(), token.as_bytes()],
            false,
            &mut [0; 3],
        )
        .map(|_| ())
    }

    /// TRANSACTION_START: the new transaction's id.
    pub fn transaction_start(&mut self) -> Result<u32, XenbusError> {
        let mut buf = [0u8; 16];
        let n = self.request(XsType::TransactionStart, 0, &[&[]], false, &mut buf)?;
        let digits = buf[..n].strip_suffix(&[0]).unwrap_or(&buf[..n]);
        core::str::from_utf8(digits)
            .ok()
            .and_then(|d| d.parse().ok())
            .ok_or(XenbusError::Protocol)
    }

    /// TRANSACTION_END: commit (`EAGAIN` on a conflict) or abort.
    pub fn transaction_end(&mut self, tx: u32, commit: bool) -> Result<(), XenbusError> {
        let arg: &[u8] = if commit { b"T" } else { b"F" };
        self.request(XsType::TransactionEnd, tx, &[arg], false, &mut [0; 3])
            .map(|_| ())
    }

    /// GET_DOMAIN_PATH of `domid` (NUL-terminated) into `buf`.
    pub fn domain_path(&mut self, domid: u16, buf: &mut [u8]) -> Result<usize, XenbusError> {
        let mut digits = [0u8; 5];
        let text = decimal(u32::from(domid), &mut digits);
        self.request(XsType::GetDomainPath, 0, &[text], false, buf)
    }

    /// Writes `state` (decimal) to `<dir>/state`.
    pub fn set_state(&mut self, tx: u32, dir: &str, state: XenbusState) -> Result<(), XenbusError> {
        let mut path = [0u8; 256];
        let path = join(dir, "state", &mut path).ok_or(XenbusError::RequestTooBig)?;
        let mut digits = [0u8; 5];
        self.write(tx, path, decimal(state as u32, &mut digits))
    }

    /// Reads `<dir>/state` (`Unknown` if missing, as xenbus does).
    pub fn state(&mut self, tx: u32, dir: &str) -> Result<XenbusState, XenbusError> {
        let mut path = [0u8; 256];
        let path = join(dir, "state", &mut path).ok_or(XenbusError::RequestTooBig)?;
        let mut buf = [0u8; 16];
        match self.read(tx, path, &mut buf) {
            Ok(n) => Ok(parse_state(&buf[..n]).unwrap_or(XenbusState::Unknown)),
            Err(XenbusError::Store(4)) => Ok(XenbusState::Unknown),
            Err(e) => Err(e),
        }
    }

    /// Waits, watching `<dir>/state` with `token`, until the state there
    /// satisfies `done`, and returns it; re-read on every watch event,
    /// so events of other watches only cost a read.
    ///
    /// # Errors
    /// A request failed, or no event came within the ring's patience
    /// ([`XenbusError::Timeout`]).
    pub fn wait_state(
        &mut self,
        dir: &str,
        token: &str,
        mut done: impl FnMut(XenbusState) -> bool,
    ) -> Result<XenbusState, XenbusError> {
        let mut path = [0u8; 256];
        let path = join(dir, "state", &mut path).ok_or(XenbusError::RequestTooBig)?;
        self.watch(path, token)?;
        let result = loop {
            match self.state(0, dir) {
                Ok(s) if done(s) => break Ok(s),
                Ok(_) => {}
                Err(e) => break Err(e),
            }
            let mut event = [0u8; EVENT_BYTES];
            if let Err(e) = self.wait_event(&mut event) {
                break Err(e);
            }
        };
        let _ = self.unwatch(path, token);
        result
    }
}

/// `<dir>/<leaf>` in `buf`.
pub(crate) fn join<'b>(dir: &str, leaf: &str, buf: &'b mut [u8]) -> Option<&'b str> {
    let len = dir.len() + 1 + leaf.len();
    let out = buf.get_mut(..len)?;
    out[..dir.len()].copy_from_slice(dir.as_bytes());
    out[dir.len()] = b'/';
    out[dir.len() + 1..].copy_from_slice(leaf.as_bytes());
    core::str::from_utf8(out).ok()
}

/// `value` in decimal, in `buf` (its last digits if `buf` is too short:
/// 5 hold a u16 or a state, 10 any u32).
pub(crate) fn decimal<const N: usize>(mut value: u32, buf: &mut [u8; N]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        #[allow(clippy::cast_possible_truncation, reason = "a digit")]
        let digit = (value % 10) as u8;
        buf[at] = b'0' + digit;
        value /= 10;
        if value == 0 || at == 0 {
            return &buf[at..];
        }
    }
}

/// A `state` node's value as a [`XenbusState`].
#[must_use]
pub fn parse_state(value: &[u8]) -> Option<XenbusState> {
    let text = core::str::from_utf8(value).ok()?;
    XenbusState::from_number(text.trim_end_matches('\0').parse().ok()?)
}

/// A front end's next state given the back end's, in the handshake
/// Initialising → (back end InitWait) → Initialised → (back end
/// Connected) → Connected, and Closing → Closed when the back end
/// closes; `None`: nothing to do yet.
#[must_use]
pub fn frontend_step(front: XenbusState, back: XenbusState) -> Option<XenbusState> {
    use XenbusState::{Closed, Closing, Connected, InitWait, Initialised, Initialising};
    match (front, back) {
        (Initialising, InitWait | Connected) => Some(Initialised),
        (Initialised, Connected) => Some(Connected),
        (Initialising | Initialised | Connected, Closing) => Some(Closing),
        (Closing, Closing | Closed) | (Initialising | Initialised | Connected, Closed) => {
            Some(Closed)
        }
        _ => None,
    }
}

/// The store ring of this domain, mapped in one of the shim's windows;
/// waiting sleeps on the store event channel.
#[cfg(target_os = "none")]
pub struct WindowRing {
    window: usize,
    port: u32,
    patience_ns: u64,
    /// System time after which a wait gives up; `None` until the first
    /// wait after progress (so progress costs no clock read).
    deadline: Option<u64>,
}

#[cfg(target_os = "none")]
mod window_ring {
    use core::sync::atomic::{Ordering, fence};

    use dom0_abi::xenstore::{XENSTORE_RING_SIZE, XenstoreDomainInterface};

    use super::{ClientRing, WindowRing};
    use crate::{hypercall, mm, shared};

    macro_rules! offset {
        ($field:ident) => {
            core::mem::offset_of!(XenstoreDomainInterface, $field)
        };
    }

    impl WindowRing {
        /// Maps the store page `mfn` (from `start_info`) in `window`; the
        /// server is notified on `port`. A wait sleeps in `SCHEDOP_poll`
        /// on `port` (the server notifies it whenever the ring moves), and
        /// a request gives up once `patience_ns` of system time pass
        /// without progress. Maps `shared_info` too (for the clock).
        pub fn map(
            window: usize,
            mfn: u64,
            port: u32,
            patience_ns: u64,
        ) -> Result<WindowRing, i64> {
            // The waits read the clock in shared_info.
            match shared::map() {
                0 => {}
                e => return Err(e),
            }
            match mm::map_window(window, mfn, mm::PTE_RW) {
                0 => Ok(WindowRing {
                    window,
                    port,
                    patience_ns,
                    deadline: None,
                }),
                e => Err(e),
            }
        }

        fn read(&self, offset: usize) -> u32 {
            mm::window_read_u32(self.window, offset as u64)
        }

        fn write(&mut self, offset: usize, value: u32) {
            mm::window_write_u32(self.window, offset as u64, value);
        }
    }

    impl ClientRing for WindowRing {
        fn req_prod(&self) -> u32 {
            self.read(offset!(req_prod))
        }
        fn req_cons(&self) -> u32 {
            let cons = self.read(offset!(req_cons));
            fence(Ordering::Acquire);
            cons
        }
        fn set_req_bytes(&mut self, index: u32, bytes: &[u8]) {
            let at = offset!(req) + index as usize % XENSTORE_RING_SIZE;
            mm::window_write_bytes(self.window, at, bytes);
        }
        fn set_req_prod(&mut self, prod: u32) {
            fence(Ordering::Release);
            self.write(offset!(req_prod), prod);
            self.deadline = None;
        }
        fn rsp_prod(&self) -> u32 {
            let prod = self.read(offset!(rsp_prod));
            fence(Ordering::Acquire);
            prod
        }
        fn rsp_cons(&self) -> u32 {
            self.read(offset!(rsp_cons))
        }
        fn rsp_bytes(&self, index: u32, out: &mut [u8]) {
            let at = offset!(rsp) + index as usize % XENSTORE_RING_SIZE;
            mm::window_read_bytes(self.window, at, out);
        }
        fn set_rsp_cons(&mut self, cons: u32) {
            fence(Ordering::Release);
            self.write(offset!(rsp_cons), cons);
            self.deadline = None;
        }
        fn notify(&mut self) {
            hypercall::evtchn_send(self.port);
        }
        fn wait(&mut self) -> bool {
            // A notification since the caller last looked: look again.
            // Cleared before the caller's next look, so one arriving
            // after that look leaves the port pending and the poll
            // below returns at once: no wake-up is lost.
            if shared::clear_evtchn_pending(self.port) == Some(true) {
                return true;
            }
            let Some(now) = shared::system_time_of(0) else {
                return false;
            };
            let deadline = *self
                .deadline
                .get_or_insert(now.saturating_add(self.patience_ns));
            if now >= deadline {
                return false;
            }
            hypercall::sched_poll(&[self.port], deadline);
            true
        }
    }
}

#[cfg(not(target_os = "none"))]
pub mod loopback;
#[cfg(test)]
mod tests;
