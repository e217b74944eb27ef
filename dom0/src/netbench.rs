//! The network benchmarks, timed by dom0 (`netbench` on its command
//! line, with the NIC).
//!
//! `net_recv_dom0`: before the bridge takes the machine's NIC, dom0 runs
//! smoltcp on it itself, at the address the web domU uses later
//! ([`ADDRESS`], port 80, which `cargo xtask bench` forwards from the
//! host), and takes the host's streams with the shared sink
//! (`pv_bench::sink`). `net_recv_domu`: the `net web netbench` domU takes
//! the same streams through netfront, netback and the bridge; dom0 times
//! each from the domU's console lines (`readbench::on_line`).
//!
//! As in the block benchmarks (`readbench`), a TSC delta counts every
//! instruction of every domain and of the hypervisor plus the time the
//! CPU idled waiting for the host, which is taken out; dom0's periodic
//! timer is stopped, and the sink waits on the card's interrupt with no
//! timeout unless smoltcp has a timer running, so that idling does not
//! make the clock jump for nothing.

use alloc::vec;

use guest_pv_shim::devices::Devices;
use guest_pv_shim::drivers::net::{MAX_FRAME, NetDevice, VirtioNet};
use guest_pv_shim::{println, profile, report};
use pv_bench::catalogue::{self, NET_RECV_LISTENING, NET_RECV_MIB, NET_RECV_PASSES};
use pv_bench::sink::{Event, STREAM_BYTES, Sink};
use pv_bench::stats::Samples;
use smoltcp::iface::{Config, Interface, SocketSet, SocketStorage};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, IpAddress, IpCidr, Ipv4Address};

use crate::domains::now;
use crate::readbench::{Meter, print, stop_periodic_timer};

/// dom0's address while it receives (the web domU's, given up before the
/// domU starts: QEMU's user network learns the domU's MAC when it pings
/// the gateway).
pub const ADDRESS: Ipv4Address = Ipv4Address::new(10, 0, 2, 15);
/// The port the host's streams come to.
pub const PORT: u16 = 80;
/// The socket's receive window.
const WINDOW: usize = 64 << 10;

/// The card as a smoltcp device: one received frame at a time.
struct Card<'a> {
    nic: &'a mut VirtioNet<Devices>,
    frame: [u8; MAX_FRAME],
    fault: Option<drivers::Error>,
}

struct RxToken<'a>(&'a [u8]);

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

struct TxToken<'a> {
    nic: &'a mut VirtioNet<Devices>,
    fault: &'a mut Option<drivers::Error>,
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = [0u8; MAX_FRAME];
        let len = len.min(MAX_FRAME);
        let r = f(&mut frame[..len]);
        if let Err(e) = self.nic.send(&frame[..len]) {
            *self.fault = Some(e);
        }
        r
    }
}

impl Device for Card<'_> {
    type RxToken<'a>
        = RxToken<'a>
    where
        Self: 'a;
    type TxToken<'a>
        = TxToken<'a>
    where
        Self: 'a;

    fn receive(&mut self, _: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        match self.nic.receive(&mut self.frame) {
            Ok(Some(len)) => Some((
                RxToken(&self.frame[..len.min(MAX_FRAME)]),
                TxToken {
                    nic: self.nic,
                    fault: &mut self.fault,
                },
            )),
            Ok(None) => None,
            Err(e) => {
                self.fault = Some(e);
                None
            }
        }
    }

    fn transmit(&mut self, _: Instant) -> Option<TxToken<'_>> {
        Some(TxToken {
            nic: self.nic,
            fault: &mut self.fault,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = MAX_FRAME;
        caps
    }
}

/// smoltcp's clock: system time.
fn instant() -> Instant {
    Instant::from_micros(i64::try_from(now() / 1000).unwrap_or(i64::MAX))
}

/// `net_recv_dom0`: takes [`NET_RECV_PASSES`] streams on `nic` and prints
/// the `BENCH` line.
pub fn run(nic: &mut VirtioNet<Devices>) {
    stop_periodic_timer("netbench");
    let mut card = Card {
        frame: [0; MAX_FRAME],
        fault: None,
        nic,
    };
    let mut config = Config::new(EthernetAddress(card.nic.mac()).into());
    config.random_seed = now();
    let mut iface = Interface::new(config, &mut card, instant());
    iface.update_ip_addrs(|addrs| {
        let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(ADDRESS), 24));
    });
    let (mut rx, mut tx) = (vec![0u8; WINDOW], vec![0u8; 1024]);
    let mut storage = [SocketStorage::EMPTY];
    let mut sockets = SocketSet::new(&mut storage[..]);
    let handle = sockets.add(tcp::Socket::new(
        tcp::SocketBuffer::new(&mut rx[..]),
        tcp::SocketBuffer::new(&mut tx[..]),
    ));
    let mut sink = Sink::new(handle, PORT);
    let mut samples = Samples::new();
    let mut start = None;
    loop {
        let t = instant();
        iface.poll(t, &mut card, &mut sockets);
        if let Some(e) = card.fault {
            report::fail("netbench card", format_args!("{e:?}"));
            return;
        }
        match sink.step(&mut sockets) {
            Some(Event::Listening) => println!("dom0: {NET_RECV_LISTENING} on {ADDRESS}:{PORT}"),
            Some(Event::Start) => {
                start = Meter::now();
                profile::begin::<{ catalogue::tag("net_recv_dom0") }>();
            }
            Some(Event::Done(bytes)) => {
                profile::end::<{ catalogue::tag("net_recv_dom0") }>();
                let end = Meter::now();
                if bytes != STREAM_BYTES {
                    report::fail(
                        "netbench stream received by dom0",
                        format_args!("{bytes} bytes, not {STREAM_BYTES}"),
                    );
                    return;
                }
                if let (Some(start), Some(end)) = (start.take(), end) {
                    samples.record(start.busy_ticks(end, "net_recv_dom0"));
                }
            }
            Some(Event::Finished) => break,
            None => {
                let delay = iface.poll_delay(t, &sockets);
                card.nic.wait(delay.map(|d| d.total_millis().max(1)));
            }
        }
    }
    report::ok_value(
        "netbench MiB received by dom0",
        NET_RECV_MIB * NET_RECV_PASSES,
    );
    print("net_recv_dom0", &samples);
}
