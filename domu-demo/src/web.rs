//! The web domU of the default scenario (command line `net web
//! gw=<a.b.c.d>`): an HTTP/1.0 server on port 80 under smoltcp, on the
//! vif whose frames dom0's bridge carries to the machine's NIC (the
//! uplink), so that the host reaches it through QEMU's port forward.
//!
//! It first pings the gateway (QEMU's user network answers ARP and ICMP
//! echo at 10.0.2.2): the whole path through dom0 in both directions,
//! reported as a check. Then it prints `web: serving http://<ip>/` and
//! serves until its domain is destroyed. The page (plain text) shows its
//! domain id and name, its uptime, the requests served so far and the
//! domains it can learn from xenstore: listing `/local/domain` is refused
//! to a domU (as on Xen, where only dom0 may read it), so what it shows
//! is itself and the back-end domains its devices name.
//!
//! [`SOCKETS`] connections are served at once; each must send its request
//! within [`REQUEST_TIMEOUT`] of connecting, or it is aborted, so a
//! half-open or silent client cannot wedge the server.

use core::fmt::Write;

use guest_pv_shim::dom0_abi::vcpu::VcpuRunstateInfo;
use guest_pv_shim::xenbus::{WindowRing, Xenbus, XenbusError};
use guest_pv_shim::{hypercall, shared};
use smoltcp::iface::{Interface, SocketHandle, SocketSet, SocketStorage};
use smoltcp::socket::{icmp, tcp};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{IpAddress, Ipv4Address};

use pv_bench::catalogue::{NET_RECV_DONE, NET_RECV_LISTENING, NET_RECV_START};
use pv_bench::sink::{Event, STREAM_BYTES, Sink};

use crate::Console;
use crate::net::{Pinger, Vif, check, now};

/// Connections served at once.
pub const SOCKETS: usize = 4;
/// The HTTP port.
const HTTP_PORT: u16 = 80;
/// How long a connection may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the gateway is pinged before the server starts anyway.
const PING_PATIENCE: Duration = Duration::from_secs(10);
/// Bytes of a request kept (the request line and headers; the rest is
/// ignored).
const REQUEST_BYTES: usize = 512;
/// Bytes of a response.
const RESPONSE_BYTES: usize = 2048;
/// The ICMP identifier of the gateway pings.
const ICMP_IDENT: u16 = 0x5745;

/// The sockets' buffers, in `.bss`.
struct Memory {
    tcp_rx: [[u8; REQUEST_BYTES]; SOCKETS],
    tcp_tx: [[u8; RESPONSE_BYTES]; SOCKETS],
    icmp_rx: [u8; 512],
    icmp_tx: [u8; 512],
    icmp_rx_meta: [icmp::PacketMetadata; 2],
    icmp_tx_meta: [icmp::PacketMetadata; 2],
    sockets: [SocketStorage<'static>; SOCKETS + 1],
}

static MEMORY: guest_pv_shim::take_once::TakeOnce<Memory> =
    guest_pv_shim::take_once::TakeOnce::new(Memory {
        tcp_rx: [[0; REQUEST_BYTES]; SOCKETS],
        tcp_tx: [[0; RESPONSE_BYTES]; SOCKETS],
        icmp_rx: [0; 512],
        icmp_tx: [0; 512],
        icmp_rx_meta: [icmp::PacketMetadata::EMPTY; 2],
        icmp_tx_meta: [icmp::PacketMetadata::EMPTY; 2],
        sockets: [SocketStorage::EMPTY; SOCKETS + 1],
    });

/// Text written into a fixed buffer (what does not fit is cut).
struct Text<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> Text<N> {
    const fn new() -> Self {
        Text {
            buf: [0; N],
            len: 0,
        }
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl<const N: usize> Write for Text<N> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(N - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// What the server knows of itself.
struct Server<'x> {
    xb: &'x mut Xenbus<WindowRing>,
    own: Ipv4Address,
    started: Instant,
    served: u64,
}

/// One connection slot.
struct Slot {
    handle: SocketHandle,
    /// When its connection began (`None` while listening).
    since: Option<Instant>,
    request: [u8; REQUEST_BYTES],
    len: usize,
    answered: bool,
}

/// How long this domain has existed, in ms: what its vCPU 0's runstate
/// accounts (every state since the vCPU was made, with the domain) plus
/// the time in its current state.
fn uptime_ms() -> Option<u64> {
    let mut info = VcpuRunstateInfo::default();
    if hypercall::vcpu_get_runstate_info(0, &mut info) != 0 {
        return None;
    }
    let now = shared::system_time_of(0)?;
    let ns = info.time.iter().sum::<u64>() + now.saturating_sub(info.state_entry_time);
    Some(ns / 1_000_000)
}

/// Reads `path` from the store as text into `buf`.
fn read<'b>(
    xb: &mut Xenbus<WindowRing>,
    path: &str,
    buf: &'b mut [u8; 64],
) -> Result<&'b str, XenbusError> {
    let n = xb.read(0, path, buf)?;
    Ok(core::str::from_utf8(&buf[..n]).unwrap_or("?"))
}

impl Server<'_> {
    /// The page's body.
    fn page(&mut self, t: Instant) -> Text<1536> {
        let mut body = Text::new();
        let mut id = [0u8; 64];
        let mut name = [0u8; 64];
        let mut vif = [0u8; 64];
        let mut console = [0u8; 64];
        let id = read(self.xb, "domid", &mut id).unwrap_or("?");
        let name = read(self.xb, "name", &mut name).unwrap_or("?");
        let uptime = uptime_ms().unwrap_or_else(|| (t - self.started).total_millis());
        let _ = write!(
            body,
            "oxen: a web page served by a PV domU\n\
             domain id: {id}\n\
             name: {name}\n\
             address: {}\n\
             uptime: {}.{:03} s\n\
             requests served: {}\n\
             path: netfront -> dom0 netback -> dom0 bridge -> virtio-net -> QEMU user network\n\
             domains this domain can learn from xenstore:\n\
             \x20 {id} {name} (this domain: domid, name)\n",
            self.own,
            uptime / 1000,
            uptime % 1000,
            self.served + 1,
        );
        let vif = read(self.xb, "device/vif/0/backend-id", &mut vif);
        let console = read(self.xb, "console/backend-id", &mut console);
        match (vif, console) {
            (Ok(v), Ok(c)) if v == c => {
                let _ = writeln!(body, "  {v} back end of vif 0 and the console");
            }
            (v, c) => {
                for (what, d) in [("vif 0", v), ("the console", c)] {
                    if let Ok(d) = d {
                        let _ = writeln!(body, "  {d} back end of {what}");
                    }
                }
            }
        }
        let mut listing = [0u8; 256];
        match self.xb.directory(0, "/local/domain", &mut listing) {
            Ok(n) => {
                let _ = write!(body, "  /local/domain lists:");
                for entry in listing[..n].split(|&b| b == 0).filter(|e| !e.is_empty()) {
                    let _ = write!(body, " {}", core::str::from_utf8(entry).unwrap_or("?"));
                }
                let _ = writeln!(body);
            }
            Err(e) => {
                let _ = writeln!(
                    body,
                    "  (listing /local/domain: {}; only dom0 may read it)",
                    e.name()
                );
            }
        }
        body
    }

    /// The whole response to `request`.
    fn respond(&mut self, request: &[u8], t: Instant) -> (Text<RESPONSE_BYTES>, u16) {
        let (status, reason) = if !request.starts_with(b"GET ") {
            (400, "Bad Request")
        } else if request.starts_with(b"GET / ") {
            (200, "OK")
        } else {
            (404, "Not Found")
        };
        let body = if status == 200 {
            self.page(t)
        } else {
            let mut text = Text::new();
            let _ = writeln!(text, "{status} {reason}");
            text
        };
        let mut response = Text::new();
        let _ = write!(
            response,
            "HTTP/1.0 {status} {reason}\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\
             Content-Length: {}\r\n\
             Connection: close\r\n\r\n",
            body.len
        );
        let _ = response.write_str(core::str::from_utf8(body.bytes()).unwrap_or(""));
        (response, status)
    }
}

impl Slot {
    /// One step of this connection: listen again once closed, read the
    /// request, answer it once, abort it if it takes too long. The socket
    /// has no smoltcp timeout of its own: it would close a silent
    /// connection in the same poll as this deadline, without a word.
    fn step(
        &mut self,
        console: &mut Console,
        sockets: &mut SocketSet<'_>,
        server: &mut Server<'_>,
        t: Instant,
    ) {
        let socket = sockets.get_mut::<tcp::Socket>(self.handle);
        if !socket.is_open() {
            self.since = None;
            self.len = 0;
            self.answered = false;
            let _ = socket.listen(HTTP_PORT);
            return;
        }
        if socket.state() == tcp::State::Listen {
            return;
        }
        let since = *self.since.get_or_insert(t);
        if !self.answered {
            if let Some(room) = self.request.get_mut(self.len..) {
                self.len += socket.recv_slice(room).unwrap_or(0);
            }
            let request = &self.request[..self.len];
            let complete = request.windows(4).any(|w| w == b"\r\n\r\n")
                || request.windows(2).any(|w| w == b"\n\n")
                || self.len == REQUEST_BYTES;
            if complete {
                let (response, status) = server.respond(request, t);
                let _ = socket.send_slice(response.bytes());
                socket.close();
                self.answered = true;
                if status == 200 {
                    server.served += 1;
                }
                let line = request.split(|&b| b == b'\r' || b == b'\n').next();
                let _ = write!(
                    console,
                    "web: {:?} from {} -> {status}\r\n",
                    core::str::from_utf8(line.unwrap_or_default()).unwrap_or("?"),
                    socket
                        .remote_endpoint()
                        .map_or(IpAddress::v4(0, 0, 0, 0), |e| e.addr),
                );
                return;
            }
            if socket.state() == tcp::State::CloseWait {
                // The client closed without a whole request.
                socket.close();
                self.answered = true;
                return;
            }
        }
        if t >= since + REQUEST_TIMEOUT {
            socket.abort();
            let _ = write!(
                console,
                "web: a connection idle for {} s was aborted\r\n",
                REQUEST_TIMEOUT.secs()
            );
        }
    }
}

/// Pings `gateway` until it answers or [`PING_PATIENCE`] passes; whether
/// it answered.
fn ping_gateway(
    vif: &mut Vif<'_>,
    iface: &mut Interface,
    sockets: &mut SocketSet<'_>,
    handle: SocketHandle,
    gateway: Ipv4Address,
) -> bool {
    let start = now();
    let mut pinger = Pinger::new(gateway, ICMP_IDENT, Duration::from_millis(500));
    loop {
        let t = now();
        iface.poll(t, vif, sockets);
        if vif.fault().is_some() || t >= start + PING_PATIENCE {
            return false;
        }
        if pinger.step(sockets.get_mut::<icmp::Socket>(handle), t) {
            return true;
        }
        vif.idle(iface.poll_delay(t, sockets));
    }
}

/// Serves HTTP on port 80 until the domain is destroyed (or its front end
/// fails); with `netbench`, takes the network benchmark's streams on it
/// instead ([`receive`]) and returns.
pub fn serve(
    console: &mut Console,
    vif: &mut Vif<'_>,
    iface: &mut Interface,
    xb: &mut Xenbus<WindowRing>,
    (gateway, netbench): (Ipv4Address, bool),
) {
    let Some(memory) = MEMORY.take() else { return };
    let started = now();
    if iface.routes_mut().add_default_ipv4_route(gateway).is_err() {
        return check(console, "web default route", format_args!("refused"));
    }
    let own = iface.ipv4_addr().unwrap_or(Ipv4Address::UNSPECIFIED);
    let mut sockets = SocketSet::new(&mut memory.sockets[..]);
    let ping = sockets.add(icmp::Socket::new(
        icmp::PacketBuffer::new(&mut memory.icmp_rx_meta[..], &mut memory.icmp_rx[..]),
        icmp::PacketBuffer::new(&mut memory.icmp_tx_meta[..], &mut memory.icmp_tx[..]),
    ));
    let answered = ping_gateway(vif, iface, &mut sockets, ping, gateway);
    check(
        console,
        "web gateway ping",
        format_args!("{gateway} {}", if answered { "answered" } else { "silent" }),
    );
    sockets.remove(ping);
    if netbench {
        return receive(console, vif, iface, &mut sockets);
    }
    let mut slots: [Option<Slot>; SOCKETS] = [const { None }; SOCKETS];
    for ((slot, rx), tx) in slots
        .iter_mut()
        .zip(memory.tcp_rx.iter_mut())
        .zip(memory.tcp_tx.iter_mut())
    {
        *slot = Some(Slot {
            handle: sockets.add(tcp::Socket::new(
                tcp::SocketBuffer::new(&mut rx[..]),
                tcp::SocketBuffer::new(&mut tx[..]),
            )),
            since: None,
            request: [0; REQUEST_BYTES],
            len: 0,
            answered: false,
        });
    }
    let mut server = Server {
        xb,
        own,
        started,
        served: 0,
    };
    let _ = write!(
        console,
        "web: serving http://{own}:{HTTP_PORT}/ ({SOCKETS} connections at once)\r\n"
    );
    loop {
        let t = now();
        iface.poll(t, vif, &mut sockets);
        if let Some(e) = vif.fault() {
            return check(console, "netfront", format_args!("{e}"));
        }
        for slot in slots.iter_mut().flatten() {
            slot.step(console, &mut sockets, &mut server, t);
        }
        iface.poll(t, vif, &mut sockets);
        vif.idle(iface.poll_delay(t, &sockets));
    }
}

/// The sink's receive window.
const SINK_WINDOW: usize = 64 << 10;

/// The sink socket's buffers (receive, send), in `.bss`.
static SINK_MEMORY: guest_pv_shim::take_once::TakeOnce<([u8; SINK_WINDOW], [u8; 1024])> =
    guest_pv_shim::take_once::TakeOnce::new(([0; SINK_WINDOW], [0; 1024]));

/// `netbench`: takes the host's streams on port 80 with the benchmark
/// sink (`pv_bench::sink`), printing the lines the host's sender waits
/// for and dom0 times the streams by.
fn receive(
    console: &mut Console,
    vif: &mut Vif<'_>,
    iface: &mut Interface,
    sockets: &mut SocketSet<'static>,
) {
    let Some((rx, tx)) = SINK_MEMORY.take() else {
        return;
    };
    let handle = sockets.add(tcp::Socket::new(
        tcp::SocketBuffer::new(&mut rx[..]),
        tcp::SocketBuffer::new(&mut tx[..]),
    ));
    let own = iface.ipv4_addr().unwrap_or(Ipv4Address::UNSPECIFIED);
    let mut sink = Sink::new(handle, HTTP_PORT);
    loop {
        let t = now();
        iface.poll(t, vif, sockets);
        if let Some(e) = vif.fault() {
            return check(console, "netfront", format_args!("{e}"));
        }
        match sink.step(sockets) {
            Some(Event::Listening) => {
                let _ = write!(console, "{NET_RECV_LISTENING} on {own}:{HTTP_PORT}\r\n");
            }
            Some(Event::Start) => {
                let _ = write!(console, "{NET_RECV_START}\r\n");
            }
            // A short stream gets no `done` line: its pass is never timed,
            // so the benchmark shows as not reached.
            Some(Event::Done(bytes)) if bytes != STREAM_BYTES => {
                check(console, "netbench stream bytes", format_args!("{bytes}"));
            }
            Some(Event::Done(_)) => {
                let _ = write!(console, "{NET_RECV_DONE}\r\n");
            }
            Some(Event::Finished) => return,
            None => vif.idle(iface.poll_delay(t, sockets)),
        }
    }
}
