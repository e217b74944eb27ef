//! The receiving end of the network benchmarks (`net_recv_dom0`,
//! `net_recv_domu`): a TCP socket that takes [`NET_RECV_PASSES`] streams
//! from the host one after another, each counted to the sender's FIN, and
//! says when to time. dom0 (on its own NIC) and the demo domU (on its
//! vif) run the same sink, so the two rows differ only in the path the
//! bytes take.
//!
//! The caller polls its smoltcp interface, then calls [`Sink::step`] and
//! acts on the event: prints [`NET_RECV_LISTENING`] (the host's sender
//! waits for it), starts its meter at [`Event::Start`], stops it at
//! [`Event::Done`].
//!
//! [`NET_RECV_PASSES`]: crate::catalogue::NET_RECV_PASSES
//! [`NET_RECV_LISTENING`]: crate::catalogue::NET_RECV_LISTENING

use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::tcp;

use crate::catalogue::{NET_RECV_MIB, NET_RECV_PASSES};

/// What a step of the sink saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// It listens for the next stream.
    Listening,
    /// The first bytes of a stream arrived.
    Start,
    /// The sender closed; the stream's byte count.
    Done(u64),
    /// Every stream was taken.
    Finished,
}

/// Bytes one stream must carry.
pub const STREAM_BYTES: u64 = (NET_RECV_MIB as u64) << 20;

/// The sink's socket and where it stands.
pub struct Sink {
    handle: SocketHandle,
    port: u16,
    streams: u32,
    started: bool,
    bytes: u64,
}

impl Sink {
    /// A sink on `port` whose socket (made by the caller, with its
    /// buffers) is `handle` in the caller's socket set.
    #[must_use]
    pub fn new(handle: SocketHandle, port: u16) -> Sink {
        Sink {
            handle,
            port,
            streams: 0,
            started: false,
            bytes: 0,
        }
    }

    /// Moves the sink on after the interface was polled: at most one
    /// event per step (`None`: nothing to report).
    pub fn step(&mut self, sockets: &mut SocketSet<'_>) -> Option<Event> {
        let socket = sockets.get_mut::<tcp::Socket>(self.handle);
        if !socket.is_open() {
            if self.streams == NET_RECV_PASSES {
                return Some(Event::Finished);
            }
            return socket.listen(self.port).ok().map(|()| Event::Listening);
        }
        let mut got = 0;
        while socket.can_recv() {
            match socket.recv(|bytes| (bytes.len(), bytes.len())) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n as u64,
            }
        }
        self.bytes += got;
        if got > 0 && !self.started {
            self.started = true;
            return Some(Event::Start);
        }
        if self.started && !socket.may_recv() {
            socket.close();
            self.started = false;
            self.streams += 1;
            return Some(Event::Done(core::mem::take(&mut self.bytes)));
        }
        None
    }
}
