use super::*;

#[test]
fn capabilities_decode_with_the_notify_multiplier() {
    let notify = Capability::decode([0x0214_0009, 4, 0x3000, 0x1000, 4]);
    assert_eq!(
        notify,
        Capability {
            cfg_type: CAP_NOTIFY,
            bar: 4,
            offset: 0x3000,
            length: 0x1000,
            notify_multiplier: 4
        }
    );
    let common = Capability::decode([0x0110_7009, 4, 0, 0x1000, 0xDEAD]);
    assert_eq!(common.cfg_type, CAP_COMMON);
    assert_eq!(common.notify_multiplier, 0);
}

#[test]
fn a_structure_must_lie_in_its_bar_and_one_page() {
    let cap = |offset, length| Capability {
        cfg_type: CAP_ISR,
        bar: 4,
        offset,
        length,
        notify_multiplier: 0,
    };
    assert_eq!(
        cap(0x1000, 0x1000).page(0xFE00_0000, 0x4000),
        Some((0xFE00_1000, 0))
    );
    assert_eq!(
        cap(0x2010, 0x20).page(0xFE00_0000, 0x4000),
        Some((0xFE00_2000, 0x10))
    );
    assert_eq!(cap(0x0FF0, 0x20).page(0xFE00_0000, 0x4000), None);
    assert_eq!(cap(0x3000, 0x2000).page(0xFE00_0000, 0x4000), None);
    assert_eq!(cap(0x1000, 0).page(0xFE00_0000, 0x4000), None);
    assert_eq!(cap(u32::MAX, 2).page(0xFE00_0000, u64::MAX), None);
}

#[test]
fn negotiation_needs_version_1_and_the_required_bits() {
    let offered = F_VERSION_1 | 1 << 5 | 1 << 9 | 1 << 40;
    assert_eq!(
        negotiated_features(offered, 1 << 9, 0),
        Some(F_VERSION_1 | 1 << 9)
    );
    assert_eq!(
        negotiated_features(offered, 1 << 9 | 1 << 3, 1 << 5),
        Some(F_VERSION_1 | 1 << 5 | 1 << 9)
    );
    assert_eq!(negotiated_features(offered, 0, 1 << 6), None);
    assert_eq!(negotiated_features(1 << 5, 1 << 5, 0), None);
}

#[test]
fn notify_offsets_stay_in_the_page() {
    assert_eq!(notify_offset(0, 3, 4), Some(12));
    assert_eq!(notify_offset(0x10, 0, 0), Some(0x10));
    assert_eq!(notify_offset(0, 0x400, 4), None);
    assert_eq!(notify_offset(0, u16::MAX, u32::MAX), None);
}

#[test]
fn device_types_of_modern_ids_only() {
    assert_eq!(device_type(VENDOR, 0x1041), Some(TYPE_NET));
    assert_eq!(device_type(VENDOR, 0x1042), Some(TYPE_BLOCK));
    assert_eq!(device_type(VENDOR, 0x1001), None);
    assert_eq!(device_type(0x8086, 0x1042), None);
}
