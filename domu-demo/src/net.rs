//! The demo domU on the network (command-line word `net`): its vif
//! (`guest_pv_shim::netfront`) under smoltcp, the network stack, with the
//! address dom0's toolstack published from `vif = ['mac=..,ip=..']`.
//!
//! smoltcp is a maintained `no_std` TCP/IP stack that runs without a
//! heap (sockets over caller-provided buffers), which a 8 MiB PV kernel
//! without an allocator needs; only Ethernet, IPv4, ARP, ICMP and TCP are
//! compiled in.
//!
//! - `serve`: answers pings (smoltcp does) and serves one TCP echo
//!   exchange on port 7: it reads a line and answers `echo: <line>`;
//! - `peer=<a.b.c.d>`: pings the peer until it answers, then sends
//!   `hello from <own address>` over TCP and reads the echo;
//! - `hostile`: a front end that breaks the protocol on purpose (bad
//!   grant references, a slot past its page), see [`hostile`];
//! - `overrun`: a front end whose TX ring index runs past the ring;
//! - `web gw=<a.b.c.d>`: the web server of the default scenario
//!   (`crate::web`), reached from the host through dom0's uplink; with
//!   `netbench`, the receiving end of the network benchmark instead.
//!
//! Each outcome is a `check:` line (dom0 makes them its checks, compared
//! with Xen 4.17).

use core::fmt::Write;

use guest_pv_shim::dom0_abi::netif::{NetifTxRequest, parse_mac};
use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::dom0_abi::xenstore::XenbusState;
use guest_pv_shim::netfront::{Connected, NetfrontError, StaticPages, connect};
use guest_pv_shim::take_once::TakeOnce;
use guest_pv_shim::xenbus::{WindowRing, Xenbus};
use guest_pv_shim::{cmdline, hypercall, shared};
use smoltcp::iface::{Config, Interface, SocketSet, SocketStorage};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::socket::{icmp, tcp};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{EthernetAddress, Icmpv4Packet, Icmpv4Repr, IpAddress, IpCidr, Ipv4Address};

use crate::Console;
use crate::xenstore::format_into;

/// Windows: the store ring, the grant table, the two rings.
const STORE_WINDOW: usize = 2;
const TABLE_WINDOW: usize = 8;
const RING_WINDOWS: [usize; 2] = [9, 10];
/// The echo service's port.
const ECHO_PORT: u16 = 7;
/// How long the exchange may take.
const DEADLINE: Duration = Duration::from_secs(30);
/// Largest Ethernet frame (no FCS).
const FRAME: usize = 1514;
/// Frames queued between the rings and smoltcp.
const QUEUE: usize = guest_pv_shim::netfront::RX_PAGES;

/// Frames received and not yet given to smoltcp.
pub(crate) struct RxQueue {
    frames: [[u8; FRAME]; QUEUE],
    lens: [usize; QUEUE],
    head: usize,
    len: usize,
}

impl RxQueue {
    fn push(&mut self, frame: &[u8]) {
        if self.len == QUEUE || frame.len() > FRAME {
            return;
        }
        let at = (self.head + self.len) % QUEUE;
        self.frames[at][..frame.len()].copy_from_slice(frame);
        self.lens[at] = frame.len();
        self.len += 1;
    }
}

/// Every buffer of the network path, in `.bss`.
struct Memory {
    pages: StaticPages,
    rxq: RxQueue,
    tcp_rx: [u8; 2048],
    tcp_tx: [u8; 2048],
    icmp_rx: [u8; 1024],
    icmp_tx: [u8; 1024],
    icmp_rx_meta: [icmp::PacketMetadata; 4],
    icmp_tx_meta: [icmp::PacketMetadata; 4],
    sockets: [SocketStorage<'static>; 2],
}

static MEMORY: TakeOnce<Memory> = TakeOnce::new(Memory {
    pages: StaticPages::new(),
    rxq: RxQueue {
        frames: [[0; FRAME]; QUEUE],
        lens: [0; QUEUE],
        head: 0,
        len: 0,
    },
    tcp_rx: [0; 2048],
    tcp_tx: [0; 2048],
    icmp_rx: [0; 1024],
    icmp_tx: [0; 1024],
    icmp_rx_meta: [icmp::PacketMetadata::EMPTY; 4],
    icmp_tx_meta: [icmp::PacketMetadata::EMPTY; 4],
    sockets: [SocketStorage::EMPTY; 2],
});

/// The vif as a smoltcp device.
pub(crate) struct Vif<'a> {
    conn: Connected,
    rxq: &'a mut RxQueue,
    fault: Option<NetfrontError>,
}

impl Vif<'_> {
    /// Moves received frames into the queue and reaps sent ones.
    fn pump(&mut self) {
        let rxq = &mut *self.rxq;
        let result = self.conn.net.reap_tx().and_then(|()| {
            if rxq.len == 0 {
                self.conn.net.receive(|frame| rxq.push(frame))
            } else {
                Ok(false)
            }
        });
        match result {
            Ok(true) => {
                hypercall::evtchn_send(self.conn.port);
            }
            Ok(false) => {}
            Err(e) => self.fault = Some(e),
        }
    }
}

pub(crate) struct RxToken<'a>(&'a mut RxQueue);

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let q = self.0;
        let head = q.head;
        q.head = (q.head + 1) % QUEUE;
        q.len -= 1;
        f(&q.frames[head][..q.lens[head]])
    }
}

pub(crate) struct TxToken<'a>(&'a mut Connected);

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = [0u8; FRAME];
        let len = len.min(FRAME);
        let r = f(&mut buf[..len]);
        if self.0.net.transmit(&buf[..len]) == Ok(true) {
            hypercall::evtchn_send(self.0.port);
        }
        r
    }
}

impl Device for Vif<'_> {
    type RxToken<'a>
        = RxToken<'a>
    where
        Self: 'a;
    type TxToken<'a>
        = TxToken<'a>
    where
        Self: 'a;

    fn receive(&mut self, _: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        self.pump();
        if self.rxq.len == 0 {
            return None;
        }
        Some((RxToken(self.rxq), TxToken(&mut self.conn)))
    }

    fn transmit(&mut self, _: Instant) -> Option<TxToken<'_>> {
        self.pump();
        self.conn
            .net
            .can_transmit()
            .then_some(TxToken(&mut self.conn))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = FRAME;
        caps.max_burst_size = Some(guest_pv_shim::netfront::TX_PAGES);
        caps
    }
}

/// The current time for smoltcp.
pub(crate) fn now() -> Instant {
    let ns = shared::system_time_of(0).unwrap_or(0);
    Instant::from_micros(i64::try_from(ns / 1000).unwrap_or(i64::MAX))
}

pub(crate) fn check(console: &mut Console, what: &str, value: core::fmt::Arguments<'_>) {
    let _ = write!(console, "check: {what} = {value}\r\n");
}

/// What this domU does on the network.
enum Role {
    Serve,
    Peer(Ipv4Address),
    Hostile,
    Overrun,
    /// The web server, or with `netbench` the network benchmark's sink.
    Web(Ipv4Address, bool),
}

/// Runs the network mode its command line asks for.
pub fn run(console: &mut Console, si: &StartInfo) {
    let line = si.cmdline();
    let role = if cmdline::has_flag(line, b"serve") {
        Role::Serve
    } else if cmdline::has_flag(line, b"hostile") {
        Role::Hostile
    } else if cmdline::has_flag(line, b"overrun") {
        Role::Overrun
    } else if let Some(gateway) = cmdline::has_flag(line, b"web")
        .then(|| cmdline::option(line, b"gw"))
        .flatten()
        .and_then(|p| core::str::from_utf8(p).ok())
        .and_then(|p| p.parse().ok())
    {
        Role::Web(gateway, cmdline::has_flag(line, b"netbench"))
    } else if let Some(peer) = cmdline::option(line, b"peer")
        .and_then(|p| core::str::from_utf8(p).ok())
        .and_then(|p| p.parse().ok())
    {
        Role::Peer(peer)
    } else {
        check(console, "net role", format_args!("none given"));
        return;
    };
    let Some(memory) = MEMORY.take() else { return };
    if shared::map() != 0 {
        check(console, "net shared_info", format_args!("not mapped"));
        return;
    }
    let ring = match WindowRing::map(
        STORE_WINDOW,
        si.store_mfn,
        si.store_evtchn,
        crate::PATIENCE_NS,
    ) {
        Ok(ring) => ring,
        Err(e) => return check(console, "net store ring", format_args!("{e}")),
    };
    let mut xb = Xenbus::new(ring);
    let conn = match connect(&mut xb, 0, &mut memory.pages, TABLE_WINDOW, RING_WINDOWS) {
        Ok(conn) => conn,
        Err(e) => return check(console, "vif connected", format_args!("{}", e.name())),
    };
    check(console, "vif connected", format_args!("yes"));
    match role {
        Role::Hostile => return hostile(console, conn, &mut xb),
        Role::Overrun => return overrun(console, &conn, &mut xb),
        Role::Serve | Role::Peer(_) | Role::Web(..) => {}
    }
    let mac = core::str::from_utf8(&conn.mac).ok().and_then(parse_mac);
    let ip = core::str::from_utf8(&conn.ip.0[..conn.ip.1])
        .ok()
        .and_then(|ip| ip.parse::<Ipv4Address>().ok());
    let (Some(mac), Some(ip)) = (mac, ip) else {
        return check(console, "vif mac and ip", format_args!("unusable"));
    };
    check(console, "vif ip", format_args!("{ip}"));
    let mut vif = Vif {
        conn,
        rxq: &mut memory.rxq,
        fault: None,
    };
    let mut config = Config::new(EthernetAddress(mac).into());
    config.random_seed = u64::from(mac[5]);
    let mut iface = Interface::new(config, &mut vif, now());
    iface.update_ip_addrs(|addrs| {
        let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(ip), 24));
    });
    if let Role::Web(gateway, netbench) = role {
        return crate::web::serve(console, &mut vif, &mut iface, &mut xb, (gateway, netbench));
    }
    let mut sockets = SocketSet::new(&mut memory.sockets[..]);
    let tcp = sockets.add(tcp::Socket::new(
        tcp::SocketBuffer::new(&mut memory.tcp_rx[..]),
        tcp::SocketBuffer::new(&mut memory.tcp_tx[..]),
    ));
    let icmp = sockets.add(icmp::Socket::new(
        icmp::PacketBuffer::new(&mut memory.icmp_rx_meta[..], &mut memory.icmp_rx[..]),
        icmp::PacketBuffer::new(&mut memory.icmp_tx_meta[..], &mut memory.icmp_tx[..]),
    ));
    let mut app = match role {
        Role::Peer(peer) => App::Ping(Pinger::new(peer, ICMP_IDENT, Duration::from_millis(250))),
        _ => {
            // Listening before the first poll: the peer's SYN can arrive
            // within it (the peer connects as soon as its ping is
            // answered, and that answer leaves during the same poll when
            // this vCPU is descheduled in it); a closed port would reset it.
            if let Err(e) = sockets.get_mut::<tcp::Socket>(tcp).listen(ECHO_PORT) {
                return check(console, "tcp listen", format_args!("{e}"));
            }
            App::Listen
        }
    };
    let deadline = now() + DEADLINE;
    let mut linger = None;
    loop {
        let t = now();
        iface.poll(t, &mut vif, &mut sockets);
        if let Some(e) = vif.fault {
            return check(console, "netfront", format_args!("{e}"));
        }
        if linger.is_none() {
            let mut cx = Cx {
                console,
                iface: &mut iface,
                sockets: &mut sockets,
                tcp,
                icmp,
                own: ip,
            };
            if app.step(&mut cx, t) {
                linger = Some(t + Duration::from_millis(500));
            }
        }
        if linger.is_some_and(|l| t >= l) {
            return;
        }
        if t >= deadline {
            return check(
                console,
                "net exchange",
                format_args!(
                    "timed out in {} (TCP {})",
                    app.name(),
                    sockets.get::<tcp::Socket>(tcp).state()
                ),
            );
        }
        vif.idle(iface.poll_delay(t, &sockets));
    }
}

impl Vif<'_> {
    /// Sleeps until the back end sends an event or `delay` (at most
    /// 100 ms) passes; not at all while frames are waiting.
    pub(crate) fn idle(&mut self, delay: Option<Duration>) {
        let delay = delay
            .unwrap_or(Duration::from_millis(100))
            .min(Duration::from_millis(100));
        if self.rxq.len == 0 && self.conn.net.arm() == Ok(false) {
            let wake = shared::system_time_of(0)
                .unwrap_or(0)
                .saturating_add(delay.total_micros() * 1000);
            hypercall::sched_poll(&[self.conn.port], wake);
            shared::clear_evtchn_pending(self.conn.port);
        }
    }

    /// The fault that stopped the front end, if any.
    pub(crate) fn fault(&self) -> Option<NetfrontError> {
        self.fault
    }
}

/// What an application step works with.
struct Cx<'c, 's> {
    console: &'c mut Console,
    iface: &'c mut Interface,
    sockets: &'c mut SocketSet<'s>,
    tcp: smoltcp::iface::SocketHandle,
    icmp: smoltcp::iface::SocketHandle,
    own: Ipv4Address,
}

/// Where the exchange is.
enum App {
    /// Server: waiting for the connection and its line.
    Listen,
    /// Server: echoed, closing.
    Echoed,
    /// Client: pinging until the peer answers.
    Ping(Pinger),
    /// Client: connected (or connecting), sending, reading the echo.
    Talk {
        peer: Ipv4Address,
        sent: bool,
        got: [u8; 64],
        len: usize,
    },
}

const ICMP_IDENT: u16 = 0x4242;

/// Pings one peer: an echo request every `every` until it answers.
pub(crate) struct Pinger {
    /// Whom it pings.
    pub(crate) peer: Ipv4Address,
    ident: u16,
    every: Duration,
    next: Instant,
    seq: u16,
}

impl Pinger {
    pub(crate) fn new(peer: Ipv4Address, ident: u16, every: Duration) -> Pinger {
        Pinger {
            peer,
            ident,
            every,
            next: now(),
            seq: 0,
        }
    }

    /// One step at time `t` on `socket` (bound to its identifier first):
    /// `true` once an echo reply from the peer arrived; else the next
    /// request is sent when it is due.
    pub(crate) fn step(&mut self, socket: &mut icmp::Socket<'_>, t: Instant) -> bool {
        if !socket.is_open() {
            let _ = socket.bind(icmp::Endpoint::Ident(self.ident));
        }
        while socket.can_recv() {
            let replied = socket.recv().ok().is_some_and(|(payload, from)| {
                from == IpAddress::Ipv4(self.peer)
                    && Icmpv4Packet::new_checked(payload)
                        .ok()
                        .and_then(|p| Icmpv4Repr::parse(&p, &Default::default()).ok())
                        .is_some_and(|r| matches!(r, Icmpv4Repr::EchoReply { .. }))
            });
            if replied {
                return true;
            }
        }
        if t >= self.next && socket.can_send() {
            let repr = Icmpv4Repr::EchoRequest {
                ident: self.ident,
                seq_no: self.seq,
                data: b"oxen",
            };
            if let Ok(buf) = socket.send(repr.buffer_len(), IpAddress::Ipv4(self.peer)) {
                repr.emit(&mut Icmpv4Packet::new_unchecked(buf), &Default::default());
            }
            self.seq = self.seq.wrapping_add(1);
            self.next = t + self.every;
        }
        false
    }
}

impl App {
    fn name(&self) -> &'static str {
        match self {
            App::Listen => "listen",
            App::Echoed => "echoed",
            App::Ping(_) => "ping",
            App::Talk { .. } => "talk",
        }
    }

    /// One step; `true` once the exchange is over.
    fn step(&mut self, cx: &mut Cx<'_, '_>, t: Instant) -> bool {
        match self {
            App::Listen => {
                let socket = cx.sockets.get_mut::<tcp::Socket>(cx.tcp);
                let mut line = [0u8; 64];
                let n = socket.recv_slice(&mut line).unwrap_or(0);
                if n > 0 {
                    let text = core::str::from_utf8(&line[..n]).unwrap_or("?");
                    check(cx.console, "tcp echo served", format_args!("{text:?}"));
                    let _ = socket.send_slice(b"echo: ");
                    let _ = socket.send_slice(&line[..n]);
                    socket.close();
                    *self = App::Echoed;
                }
                false
            }
            App::Echoed => {
                let state = cx.sockets.get_mut::<tcp::Socket>(cx.tcp).state();
                matches!(state, tcp::State::TimeWait | tcp::State::Closed)
            }
            App::Ping(pinger) => {
                let peer = pinger.peer;
                if pinger.step(cx.sockets.get_mut::<icmp::Socket>(cx.icmp), t) {
                    check(cx.console, "ping", format_args!("{peer} answered"));
                    let socket = cx.sockets.get_mut::<tcp::Socket>(cx.tcp);
                    if socket
                        .connect(
                            cx.iface.context(),
                            (IpAddress::Ipv4(peer), ECHO_PORT),
                            49152,
                        )
                        .is_err()
                    {
                        check(cx.console, "tcp connect", format_args!("refused locally"));
                        return true;
                    }
                    *self = App::Talk {
                        peer,
                        sent: false,
                        got: [0; 64],
                        len: 0,
                    };
                }
                false
            }
            App::Talk {
                peer,
                sent,
                got,
                len,
            } => {
                let socket = cx.sockets.get_mut::<tcp::Socket>(cx.tcp);
                if socket.may_send() && !*sent {
                    let mut buf = [0u8; 32];
                    let hello = format_into(&mut buf, format_args!("hello from {}", cx.own));
                    if socket.send_slice(hello.as_bytes()) == Ok(hello.len()) {
                        *sent = true;
                    }
                }
                if let Some(room) = got.get_mut(*len..) {
                    *len += socket.recv_slice(room).unwrap_or(0);
                }
                if *sent && !socket.may_recv() && socket.state() != tcp::State::SynSent {
                    socket.close();
                    let text = core::str::from_utf8(&got[..*len]).unwrap_or("?");
                    check(cx.console, "tcp echo", format_args!("{text:?} from {peer}"));
                    return true;
                }
                false
            }
        }
    }
}

/// The hostile front end: a TX request naming a grant that does not
/// exist (the back end answers `NETIF_RSP_ERROR`), then one whose data
/// runs past its page (the back end disconnects the vif and sets its
/// state Closing). Each step is a check.
fn hostile(console: &mut Console, mut conn: Connected, xb: &mut Xenbus<WindowRing>) {
    let send = |conn: &mut Connected, req: NetifTxRequest| {
        if conn.net.push_tx(&req) == Ok(true) {
            hypercall::evtchn_send(conn.port);
        }
    };
    send(
        &mut conn,
        NetifTxRequest {
            gref: 4000,
            offset: 0,
            flags: 0,
            id: 0,
            size: 60,
        },
    );
    let answered = wait(&mut conn, |c| {
        c.net.reap_tx().is_ok() && c.net.can_transmit() && c.net.stats.tx_errors > 0
    });
    check(
        console,
        "bad grant reference answered",
        format_args!("{answered} (errors {})", conn.net.stats.tx_errors),
    );
    send(
        &mut conn,
        NetifTxRequest {
            gref: guest_pv_shim::netfront::FIRST_GREF,
            offset: 4000,
            flags: 0,
            id: 1,
            size: 200,
        },
    );
    report_closing(console, &conn, xb, "a slot past its page");
}

/// The overrunning front end: its TX ring's `req_prod` jumps 1000
/// requests ahead (the back end disconnects it).
fn overrun(console: &mut Console, conn: &Connected, xb: &mut Xenbus<WindowRing>) {
    guest_pv_shim::mm::window_write_u32(RING_WINDOWS[0], 0, 1000);
    hypercall::evtchn_send(conn.port);
    report_closing(console, conn, xb, "an overrun TX ring");
}

/// Waits (up to 5 s) for the back end to leave Connected and reports the
/// state it reached `after` what this domain did.
fn report_closing(
    console: &mut Console,
    conn: &Connected,
    xb: &mut Xenbus<WindowRing>,
    after: &str,
) {
    let mut backend = [0u8; 64];
    let n = xb
        .read(0, "device/vif/0/backend", &mut backend)
        .unwrap_or(0);
    let backend = core::str::from_utf8(&backend[..n]).unwrap_or("");
    let mut state = xb.state(0, backend);
    for _ in 0..500 {
        if state != Ok(XenbusState::Connected) {
            break;
        }
        let t = shared::system_time_of(0).unwrap_or(0);
        hypercall::sched_poll(&[conn.port], t + 10_000_000);
        state = xb.state(0, backend);
    }
    let shown = state.map_or("unreadable", XenbusState::name);
    let _ = write!(console, "check: back end state after {after} = {shown}\r\n");
}

/// Polls `done` on each event (or every 10 ms) for up to 5 s.
fn wait(conn: &mut Connected, mut done: impl FnMut(&mut Connected) -> bool) -> bool {
    let start = shared::system_time_of(0).unwrap_or(0);
    loop {
        if done(conn) {
            return true;
        }
        let t = shared::system_time_of(0).unwrap_or(0);
        if t.saturating_sub(start) > 5_000_000_000 {
            return false;
        }
        let _ = conn.net.arm();
        hypercall::sched_poll(&[conn.port], t + 10_000_000);
        shared::clear_evtchn_pending(conn.port);
    }
}
