//! The wire form of ABI structures: each `#[repr(C)]` structure of this
//! crate, read from and written to the little-endian bytes a guest and the
//! hypervisor exchange, field by field at the offsets its compile-time
//! layout assertions check.
//!
//! The implementations come from the same field list as those assertions
//! (`assert_layout!`), so a field missing from the list is a compile error
//! rather than a silently unread field. Reading needs no `unsafe` and
//! cannot fail on a buffer of [`Wire::SIZE`] bytes; a shorter buffer gives
//! `None`.

/// A value with a fixed little-endian byte form of [`Wire::SIZE`] bytes.
pub trait Wire: Sized {
    /// Bytes of the wire form (the type's `size_of`).
    const SIZE: usize;
    /// Reads a value from the first [`Wire::SIZE`] bytes of `bytes`;
    /// `None` if there are fewer.
    fn from_wire(bytes: &[u8]) -> Option<Self>;
    /// Writes the value into the first [`Wire::SIZE`] bytes of `out`;
    /// `None` (and nothing guaranteed written) if there are fewer.
    fn to_wire(&self, out: &mut [u8]) -> Option<()>;
}

macro_rules! wire_int {
    ($($t:ty),*) => {$(
        impl Wire for $t {
            const SIZE: usize = size_of::<$t>();
            #[inline]
            fn from_wire(bytes: &[u8]) -> Option<Self> {
                Some(<$t>::from_le_bytes(bytes.get(..Self::SIZE)?.try_into().ok()?))
            }
            #[inline]
            fn to_wire(&self, out: &mut [u8]) -> Option<()> {
                out.get_mut(..Self::SIZE)?.copy_from_slice(&self.to_le_bytes());
                Some(())
            }
        }
    )*};
}
wire_int!(u8, u16, u32, u64, i8, i16, i32, i64);

impl<T: Wire + Copy + Default, const N: usize> Wire for [T; N] {
    const SIZE: usize = T::SIZE * N;
    fn from_wire(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < Self::SIZE {
            return None;
        }
        let mut out = [T::default(); N];
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = T::from_wire(bytes.get(i * T::SIZE..)?)?;
        }
        Some(out)
    }
    fn to_wire(&self, out: &mut [u8]) -> Option<()> {
        if out.len() < Self::SIZE {
            return None;
        }
        for (i, value) in self.iter().enumerate() {
            value.to_wire(out.get_mut(i * T::SIZE..)?)?;
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::{TrapInfo, VcpuGuestContext};
    use crate::vcpu::VcpuRunstateInfo;

    #[test]
    fn integers_are_little_endian() {
        assert_eq!(u32::from_wire(&[1, 2, 3, 4, 5]), Some(0x0403_0201));
        assert_eq!(u32::from_wire(&[1, 2, 3]), None);
        let mut out = [0u8; 8];
        assert_eq!((-2i32).to_wire(&mut out), Some(()));
        assert_eq!(out[..4], [0xfe, 0xff, 0xff, 0xff]);
        assert_eq!(7u64.to_wire(&mut out[..7]), None);
    }

    #[test]
    fn structures_round_trip_at_their_offsets() {
        let info = VcpuRunstateInfo {
            state: 2,
            pad: 0,
            state_entry_time: 0x1122_3344_5566_7788,
            time: [1, 2, 3, 4],
        };
        let mut bytes = [0u8; 48];
        info.to_wire(&mut bytes).unwrap();
        assert_eq!(bytes[0], 2);
        assert_eq!(bytes[8], 0x88);
        assert_eq!(bytes[40], 4);
        assert_eq!(VcpuRunstateInfo::from_wire(&bytes), Some(info));
        assert_eq!(VcpuRunstateInfo::from_wire(&bytes[..47]), None);
    }

    #[test]
    fn nested_arrays_of_structures() {
        let mut bytes = [0u8; VcpuGuestContext::SIZE];
        // trap_ctxt[3] = { vector 3, flags 7, cs 0xe033, address }.
        let at = 720 + 3 * TrapInfo::SIZE;
        bytes[at] = 3;
        bytes[at + 1] = 7;
        bytes[at + 2..at + 4].copy_from_slice(&0xe033u16.to_le_bytes());
        bytes[at + 8..at + 16].copy_from_slice(&0xffff_8000_0000_1000u64.to_le_bytes());
        bytes[5160..5168].copy_from_slice(&42u64.to_le_bytes());
        let ctxt = VcpuGuestContext::from_wire(&bytes).unwrap();
        assert_eq!(ctxt.trap_ctxt[3].vector, 3);
        assert_eq!(ctxt.trap_ctxt[3].flags, 7);
        assert_eq!(ctxt.trap_ctxt[3].cs, 0xe033);
        assert_eq!(ctxt.trap_ctxt[3].address, 0xffff_8000_0000_1000);
        assert_eq!(ctxt.gs_base_user, 42);
        let mut again = [0u8; VcpuGuestContext::SIZE];
        ctxt.to_wire(&mut again).unwrap();
        assert_eq!(again[..], bytes[..]);
    }
}
