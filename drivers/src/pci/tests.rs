use super::*;
use crate::fake::Machine;

fn at(bus: u8, device: u8, function: u8) -> Address {
    Address {
        bus,
        device,
        function,
    }
}

fn add(machine: &mut Machine, address: Address, vendor: u16, device: u16, header: u32) {
    machine.config.insert(
        (address, REG_ID),
        u32::from(device) << 16 | u32::from(vendor),
    );
    machine.config.insert((address, REG_CLASS), 0x0100_0000);
    machine.config.insert((address, REG_HEADER), header << 16);
}

#[test]
fn cf8_selects_bus_device_function_and_dword() {
    assert_eq!(at(0, 0, 0).cf8(0), 0x8000_0000);
    assert_eq!(at(1, 2, 3).cf8(0x3F), 0x8001_133C);
    assert_eq!(at(0xFF, 31, 7).cf8(0xFC), 0x80FF_FFFC);
    assert_eq!(at(0, 3, 0).to_string(), "00:03.0");
}

#[test]
fn enumeration_follows_bridges_and_functions_once() {
    let mut m = Machine::default();
    add(&mut m, at(0, 0, 0), 0x8086, 0x29C0, 0);
    add(&mut m, at(0, 2, 0), 0x1AF4, 0x1042, 0x80);
    add(&mut m, at(0, 2, 3), 0x1AF4, 0x1041, 0);
    // Function 1 of a single-function device is not looked at.
    add(&mut m, at(0, 0, 1), 0x1234, 0x5678, 0);
    // A bridge to bus 1, and one on bus 1 pointing back at bus 0.
    add(&mut m, at(0, 5, 0), 0x1B36, 0x000C, 1);
    m.config
        .insert((at(0, 5, 0), REG_BRIDGE_BUSES), 0x0001_0100);
    add(&mut m, at(1, 0, 0), 0x1B36, 0x000C, 1);
    m.config
        .insert((at(1, 0, 0), REG_BRIDGE_BUSES), 0x0000_0001);
    add(&mut m, at(1, 4, 0), 0x1AF4, 0x1042, 0);
    let mut seen = Vec::new();
    enumerate(&mut m, |_, f| {
        seen.push((f.address, f.vendor, f.device, f.header_type))
    });
    assert_eq!(
        seen,
        [
            (at(0, 0, 0), 0x8086, 0x29C0, 0),
            (at(0, 2, 0), 0x1AF4, 0x1042, 0),
            (at(0, 2, 3), 0x1AF4, 0x1041, 0),
            (at(0, 5, 0), 0x1B36, 0x000C, 1),
            (at(1, 0, 0), 0x1B36, 0x000C, 1),
            (at(1, 4, 0), 0x1AF4, 0x1042, 0),
        ]
    );
}

#[test]
fn bars_decode_memory_io_and_64_bit() {
    assert_eq!(decode_bar(0, 0, 0, 0), Some(Bar::None));
    assert_eq!(
        decode_bar(0xC001, 0, 0xFFFF_FFE1, 0),
        Some(Bar::Io {
            port: 0xC000,
            size: 0x20
        })
    );
    assert_eq!(
        decode_bar(0xFEB0_0000, 0, 0xFFFF_F000, 0),
        Some(Bar::Memory {
            address: 0xFEB0_0000,
            size: 0x1000,
            prefetchable: false,
            wide: false
        })
    );
    assert_eq!(
        decode_bar(0xFE00_000C, 0x1, 0xFFFF_C00C, 0xFFFF_FFFF),
        Some(Bar::Memory {
            address: 0x1_FE00_0000,
            size: 0x4000,
            prefetchable: true,
            wide: true
        })
    );
    // A read-back that is not a size.
    assert_eq!(decode_bar(0xFEB0_0000, 0, 0xFFF0_F000, 0), None);
}

#[test]
fn read_bar_sizes_and_restores() {
    let mut m = Machine::default();
    let f = at(0, 3, 0);
    m.config.insert((f, REG_COMMAND), 0x0010_0007);
    m.config.insert((f, REG_BAR0 + 16), 0xFE00_000C);
    m.config.insert((f, REG_BAR0 + 20), 0);
    m.bar_sizes.insert((f, REG_BAR0 + 16), 0xFFFF_C000);
    m.bar_sizes.insert((f, REG_BAR0 + 20), 0xFFFF_FFFF);
    assert_eq!(
        read_bar(&mut m, f, 4),
        Some(Bar::Memory {
            address: 0xFE00_0000,
            size: 0x4000,
            prefetchable: true,
            wide: true
        })
    );
    assert_eq!(m.config[&(f, REG_BAR0 + 16)], 0xFE00_000C);
    assert_eq!(m.config[&(f, REG_BAR0 + 20)], 0);
    assert_eq!(m.config[&(f, REG_COMMAND)], 0x0010_0007);
    assert_eq!(read_bar(&mut m, f, 6), None);
}

#[test]
fn capability_walk_stops_on_loops_and_low_pointers() {
    let mut m = Machine::default();
    let f = at(0, 3, 0);
    m.config
        .insert((f, REG_COMMAND), u32::from(STATUS_CAP_LIST) << 16);
    m.config.insert((f, REG_CAP_PTR), 0x40);
    m.config.insert((f, 0x40), 0x5009);
    m.config.insert((f, 0x50), 0x4011); // back to 0x40: a loop
    let mut seen = Vec::new();
    capabilities(&mut m, f, |_, offset, id| seen.push((offset, id)));
    assert_eq!(seen.len(), 48);
    assert_eq!(seen[..3], [(0x40, 9), (0x50, 0x11), (0x40, 9)]);
    m.config.insert((f, 0x50), 0x0011);
    seen.clear();
    capabilities(&mut m, f, |_, offset, id| seen.push((offset, id)));
    assert_eq!(seen, [(0x40, 9), (0x50, 0x11)]);
    m.config.insert((f, REG_COMMAND), 0);
    seen.clear();
    capabilities(&mut m, f, |_, offset, id| seen.push((offset, id)));
    assert!(seen.is_empty());
}

#[test]
fn q35_routes_int_a_to_d_onto_gsi_20_to_23() {
    assert_eq!(q35_gsi(at(0, 2, 0), 1), Some(22));
    assert_eq!(q35_gsi(at(0, 3, 0), 1), Some(23));
    assert_eq!(q35_gsi(at(0, 4, 0), 1), Some(20));
    assert_eq!(q35_gsi(at(0, 4, 0), 2), Some(21));
    assert_eq!(q35_gsi(at(0, 4, 0), 0), None);
    assert_eq!(q35_gsi(at(0, 4, 0), 5), None);
    assert_eq!(q35_gsi(at(1, 4, 0), 1), None);
    assert_eq!(q35_gsi(at(0, 25, 0), 1), None);
}
