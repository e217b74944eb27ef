//! `io_pit`: the PIT's channel 2 and port 0x61 from dom0, which Linux
//! uses to measure the TSC at boot (`quick_pit_calibrate`). Xen 4.17
//! gives the hardware domain channel 2 while it does not use the PIT
//! itself; so does this hypervisor (it uses it only at boot).
//!
//! Checks: port 0x61's gate and speaker bits read back as written (the
//! others are kept); a count of 0xffff loaded in mode 0 counts down
//! (two latched reads, the second lower); a read-back command gives
//! channel 2's status (access lo/hi, mode 0, binary); a control word for
//! channel 0 (the hypervisor's) does not change channel 2.

use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::hypercall as hc;
use guest_pv_shim::io::{self, Width};
use guest_pv_shim::report;

const PIT_CH2: u16 = 0x42;
const PIT_MODE: u16 = 0x43;
const PORT_B: u16 = 0x61;

fn inb(port: u16) -> u8 {
    io::port_in(port, Width::Byte).map_or(0xee, |v| v.to_le_bytes()[0])
}

fn outb(port: u16, value: u8) {
    if io::port_out(port, Width::Byte, u32::from(value)).is_err() {
        report::error("outb", format_args!("port {port:#x} faulted"));
    }
}

/// Channel 2's count, latched.
fn count() -> u16 {
    outb(PIT_MODE, 0x80);
    let low = inb(PIT_CH2);
    let high = inb(PIT_CH2);
    u16::from_le_bytes([low, high])
}

pub fn run(_start_info: &'static StartInfo) {
    report::check_ret("set_iopl 1", io::set_iopl(1), 0);
    let kept = inb(PORT_B) & 0x0c;
    outb(PORT_B, kept | 0x01);
    report::check_eq(
        "port 0x61: gate on, speaker off",
        inb(PORT_B) & 0x0f,
        kept | 0x01,
    );
    outb(PIT_MODE, 0xb0);
    outb(PIT_CH2, 0xff);
    outb(PIT_CH2, 0xff);
    let first = count();
    for _ in 0..200 {
        hc::xenver_version();
    }
    let second = count();
    report::check(
        "channel 2 counts down from 0xffff",
        second < first,
        format_args!("{first:#x} then {second:#x}"),
    );
    outb(PIT_MODE, 0xe8);
    report::check_eq(
        "read-back status of channel 2: lo/hi, mode 0, binary",
        inb(PIT_CH2) & 0x3f,
        0x30,
    );
    outb(PIT_MODE, 0x34);
    outb(PIT_MODE, 0xe8);
    report::check_eq(
        "a control word for channel 0 leaves channel 2's mode",
        inb(PIT_CH2) & 0x3f,
        0x30,
    );
    outb(PORT_B, kept);
    report::check_eq("port 0x61: gate off", inb(PORT_B) & 0x0f, kept);
}
