//! `virtio_blk` and `virtio_net`: dom0 drives QEMU's virtio devices with
//! the `drivers` crate through `guest_pv_shim::devices` (ports
//! `0xCF8`/`0xCFC`, BAR pages mapped with `DOMID_IO`, DMA pages by machine
//! address, INTx as a PIRQ event channel).
//!
//! `virtio_blk`: enumerates PCI, finds the disk the harness attached
//! (`pv_tests::disk`), checks its capacity, writes the pattern to one
//! random range (1-80 sectors, so some span two requests) in each of 16
//! slices of the disk, reads every range back, and flushes. Each range is
//! printed (`pv_tests::disk::WROTE`) and the harness checks the image file
//! after the run. A transfer past the end must be refused by the driver.
//!
//! `virtio_net`: brings the NIC up (QEMU's MAC `52:54:00:12:34:56` on user
//! networking), asks for the gateway 10.0.2.2 with ARP and then pings it:
//! the user network answers both, so both cross the real device and its
//! interrupt.
//!
//! Why: dom0's drivers are what every domU's disk and network go through
//! (issue 15); both hypervisors must give dom0 the same ports, memory and
//! interrupts (Xen 4.17 first, ours once it has them).

use guest_pv_shim::devices::{self, Devices};
use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::drivers::blk::{BlockDevice, SECTOR, VirtioBlk};
use guest_pv_shim::drivers::net::{NetDevice, VirtioNet};
use guest_pv_shim::drivers::pci::{self, Function};
use guest_pv_shim::rng::Rng;
use guest_pv_shim::{println, report, shared};
use pv_tests::disk::{self, Written};

/// Sets up what both tests need and returns the virtio function `wanted`
/// picks.
fn find(kind: &str, wanted: fn(&Function) -> bool) -> Option<(Devices, Function)> {
    if !report::check_ret("map shared_info", shared::map(), 0)
        || !report::check_ret("set_iopl(1)", devices::enable_io(), 0)
    {
        return None;
    }
    let mut platform = Devices;
    let mut count = 0u32;
    let mut found = None;
    pci::enumerate(&mut platform, |_, f| {
        println!(
            "pci {} {:04x}:{:04x} class {:06x}",
            f.address, f.vendor, f.device, f.class
        );
        count += 1;
        if found.is_none() && wanted(&f) {
            found = Some(f);
        }
    });
    report::check(
        "PCI enumeration finds functions",
        count > 1,
        format_args!("{count}"),
    );
    match found {
        Some(f) => {
            report::ok_value(format_args!("{kind} found"), f.address);
            Some((platform, f))
        }
        None => {
            report::fail(format_args!("{kind} found"), format_args!("not on the bus"));
            None
        }
    }
}

/// Sectors per slice the disk is cut into (one written range in each).
const SLICE: u64 = disk::SECTORS / 16;
/// Largest range written, in sectors.
const MAX_RUN: usize = 80;

/// Bytes of `count` sectors (at most [`MAX_RUN`]).
fn bytes_of(count: u64) -> usize {
    usize::try_from(count).unwrap_or(MAX_RUN).min(MAX_RUN) * SECTOR
}

/// Finds the `kind` function `wanted` picks and initialises its driver.
fn bring_up<D>(
    kind: &str,
    wanted: fn(&Function) -> bool,
    init: fn(&mut Devices, pci::Address) -> Result<D, drivers::Error>,
) -> Option<D> {
    let (mut platform, f) = find(kind, wanted)?;
    match init(&mut platform, f.address) {
        Ok(driver) => Some(driver),
        Err(e) => {
            report::fail(format_args!("{kind} initialised"), format_args!("{e:?}"));
            None
        }
    }
}

/// 64 KiB: the unit the block benchmark reads in.
const BENCH_UNIT: usize = 64 << 10;
/// The benchmark's buffer (too large for the stack).
static BENCH_BUF: spin::Mutex<[u8; BENCH_UNIT]> = spin::Mutex::new([0; BENCH_UNIT]);

/// The block benchmark's dom0 side (`readbench=<MiB>`): reads `mib` MiB
/// from sector 0 (what a domU on `phy:vda` reads) in 64 KiB reads
/// through the driver and prints the TSC ticks (instructions, under
/// `-icount`).
fn read_bench(blk: &mut VirtioBlk<Devices>, mib: u64) {
    let mut buf = BENCH_BUF.lock();
    let start = guest_pv_shim::shared::tsc();
    for unit in 0..mib * 16 {
        if let Err(e) = blk.read(unit * 128, &mut buf[..]) {
            report::fail("readbench", format_args!("{e:?}"));
            return;
        }
    }
    let ticks = guest_pv_shim::shared::tsc() - start;
    println!(
        "virtio_blk: readbench: {} KiB in 64 KiB units: {ticks} TSC ticks",
        mib * 1024
    );
}

pub fn run_blk(start_info: &'static StartInfo) {
    let Some(mut blk) = bring_up("virtio-blk", drivers::blk::is_virtio_blk, VirtioBlk::new) else {
        return;
    };
    if let Some(mib) = guest_pv_shim::cmdline::option(start_info.cmdline(), b"readbench") {
        let mib = core::str::from_utf8(mib).ok().and_then(|m| m.parse().ok());
        read_bench(&mut blk, mib.unwrap_or(64));
        return;
    }
    report::ok_value("virtio-blk initialised, INTx GSI", blk.transport().gsi);
    report::check_eq("capacity in sectors", blk.sectors(), disk::SECTORS);
    let mut sector_buf = [0u8; SECTOR];
    let past_end = blk.read(disk::SECTORS - 1, &mut [0; 2 * SECTOR]);
    report::check_eq(
        "a read past the end is refused",
        past_end,
        Err(drivers::Error::Invalid),
    );
    let mut rng = Rng::new(shared::system_time_of(0).unwrap_or(1));
    let seed = rng.next_u64();
    let mut ranges = [Written {
        sector: 0,
        count: 0,
        seed,
    }; 16];
    let mut buf = [0u8; MAX_RUN * SECTOR];
    let mut write_errors = 0;
    for (slice, range) in ranges.iter_mut().enumerate() {
        range.count = 1 + rng.next_u64() % MAX_RUN as u64;
        range.sector = slice as u64 * SLICE + rng.next_u64() % (SLICE - range.count);
        let bytes = &mut buf[..bytes_of(range.count)];
        for (i, chunk) in bytes.chunks_mut(SECTOR).enumerate() {
            disk::pattern(range.sector + i as u64, seed, &mut sector_buf);
            chunk.copy_from_slice(&sector_buf);
        }
        match blk.write(range.sector, bytes) {
            Ok(()) => println!("{range}"),
            Err(e) => {
                write_errors += 1;
                println!("virtio_blk: write at {} failed: {e:?}", range.sector);
            }
        }
    }
    report::check_eq("16 random ranges written", write_errors, 0);
    let mut mismatches = 0;
    for range in &ranges {
        let bytes = &mut buf[..bytes_of(range.count)];
        bytes.fill(0);
        if let Err(e) = blk.read(range.sector, bytes) {
            println!("virtio_blk: read at {} failed: {e:?}", range.sector);
            mismatches += 1;
            continue;
        }
        for (i, chunk) in bytes.chunks(SECTOR).enumerate() {
            disk::pattern(range.sector + i as u64, seed, &mut sector_buf);
            if chunk != sector_buf {
                println!("virtio_blk: sector {} differs", range.sector + i as u64);
                mismatches += 1;
            }
        }
    }
    report::check_eq("every range reads back as written", mismatches, 0);
    report::check_eq("flush", blk.flush(), Ok(()));
    check_interrupts(blk.transport().interrupts());
}

/// QEMU's default MAC address, which the harness gives the NIC.
const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
/// The address user networking gives the guest.
const MY_IP: [u8; 4] = [10, 0, 2, 15];
/// User networking's gateway.
const GATEWAY_IP: [u8; 4] = [10, 0, 2, 2];

/// An ARP request for `GATEWAY_IP` from `MY_IP`.
fn arp_request(mac: [u8; 6]) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[..6].fill(0xFF);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&[0x08, 0x06]);
    f[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&MY_IP);
    f[38..42].copy_from_slice(&GATEWAY_IP);
    f
}

/// The Internet checksum of `bytes`.
fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    !u16::try_from(sum).unwrap_or(0xFFFF)
}

/// Payload of the echo request.
const PING_DATA: &[u8; 16] = b"oxen virtio-net!";
/// Identifier and sequence number of the echo request.
const PING_ID: [u8; 4] = [0x0E, 0x0E, 0, 1];

/// An ICMP echo request from `MY_IP` to `GATEWAY_IP` via `gateway`.
fn echo_request(mac: [u8; 6], gateway: [u8; 6]) -> [u8; 58] {
    let mut f = [0u8; 58];
    f[..6].copy_from_slice(&gateway);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut f[14..34];
    ip[..12].copy_from_slice(&[0x45, 0, 0, 44, 0, 1, 0x40, 0, 64, 1, 0, 0]);
    ip[12..16].copy_from_slice(&MY_IP);
    ip[16..20].copy_from_slice(&GATEWAY_IP);
    let sum = checksum(ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    let icmp = &mut f[34..58];
    icmp[0] = 8;
    icmp[4..8].copy_from_slice(&PING_ID);
    icmp[8..].copy_from_slice(PING_DATA);
    let sum = checksum(icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    f
}

/// Waits up to 50 rounds of 100 ms for a frame `matches` accepts (others
/// are dropped); returns its length.
fn await_frame<P: guest_pv_shim::drivers::Platform>(
    net: &mut VirtioNet<P>,
    frame: &mut [u8; 1514],
    matches: impl Fn(&[u8]) -> bool,
) -> Option<usize> {
    for _ in 0..50 {
        while let Ok(Some(len)) = net.receive(frame) {
            if matches(&frame[..len.min(frame.len())]) {
                return Some(len);
            }
        }
        net.wait(Some(100));
    }
    None
}

/// Checks that the device's interrupts ended some of the driver's waits
/// (it blocks on them rather than polling).
fn check_interrupts(count: u64) {
    report::check(
        "the device interrupted",
        count > 0,
        format_args!("no interrupt"),
    );
}

pub fn run_net(_start_info: &'static StartInfo) {
    let Some(mut net) = bring_up("virtio-net", drivers::net::is_virtio_net, VirtioNet::new) else {
        return;
    };
    report::ok_value("virtio-net initialised, INTx GSI", net.transport().gsi);
    let mac = net.mac();
    report::check_eq("MAC address", mac, MAC);
    report::check_eq("ARP request sent", net.send(&arp_request(mac)), Ok(()));
    let mut frame = [0u8; 1514];
    let reply = await_frame(&mut net, &mut frame, |f| {
        f.len() >= 42 && f[12..14] == [0x08, 0x06] && f[20..22] == [0, 2] && f[28..32] == GATEWAY_IP
    });
    if reply.is_none() {
        report::fail("ARP reply from the gateway", format_args!("none in 5 s"));
        return;
    }
    let mut gateway = [0u8; 6];
    gateway.copy_from_slice(&frame[22..28]);
    report::ok_value("ARP reply from the gateway", format_args!("{gateway:02x?}"));
    report::check_eq(
        "echo request sent",
        net.send(&echo_request(mac, gateway)),
        Ok(()),
    );
    let reply = await_frame(&mut net, &mut frame, |f| {
        f.len() >= 58
            && f[12..14] == [0x08, 0x00]
            && f[23] == 1
            && f[34] == 0
            && f[38..42] == PING_ID
    });
    match reply {
        Some(_) => {
            report::check_eq("echo reply payload", &frame[42..58], &PING_DATA[..]);
        }
        None => report::fail("echo reply payload", format_args!("no reply in 5 s")),
    }
    // User networking answers at once, so the driver may never have had
    // to wait; then the interrupt the completions raised is still pending.
    let waited = net.transport().interrupts();
    check_interrupts(waited.max(u64::from(net.transport_mut().wait_interrupt(Some(1000)))));
}
