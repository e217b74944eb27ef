//! `stats_op`: the benchmark counters (see `dom0_abi::stats`).
#![forbid(unsafe_code)]

use dom0_abi::Errno;
use dom0_abi::stats::{Counter, STATS_INTERFACE_VERSION, STATSOP_READ_VCPU};

use super::{Env, read_u32};
use crate::stats::Stats;

/// `stats_op(cmd, arg)`: `-ENOSYS` unless built with the `stats` feature.
pub fn stats_op(env: &mut impl Env, cmd: u64, arg: u64) -> Result<u64, Errno> {
    if !Stats::ENABLED || cmd != STATSOP_READ_VCPU {
        return Err(Errno::ENOSYS);
    }
    if read_u32(env, arg)? != STATS_INTERFACE_VERSION {
        return Err(Errno::EINVAL);
    }
    let room = read_u32(env, arg.wrapping_add(4))?;
    let count = Counter::ALL.len().min(room as usize);
    let mut values = [0u8; 8 * 16];
    for (chunk, counter) in values.chunks_exact_mut(8).zip(&Counter::ALL[..count]) {
        chunk.copy_from_slice(&env.stats().get(*counter).to_le_bytes());
    }
    env.copy_to_guest(arg.wrapping_add(8), &values[..count * 8])?;
    #[allow(clippy::cast_possible_truncation, reason = "at most 16 counters")]
    env.copy_to_guest(arg.wrapping_add(4), &(count as u32).to_le_bytes())?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mm::fake::{BASE, FakeMachine};

    #[test]
    fn answers_enosys_or_the_counters() {
        let mut env = FakeMachine::new(16);
        env.guest[..4].copy_from_slice(&1u32.to_le_bytes());
        env.guest[4..8].copy_from_slice(&16u32.to_le_bytes());
        if Stats::ENABLED {
            env.stats.add(Counter::Entries, 3);
            assert_eq!(stats_op(&mut env, 0, BASE), Ok(0));
            assert_eq!(u32::from_le_bytes(env.guest[4..8].try_into().unwrap()), 12);
            assert_eq!(u64::from_le_bytes(env.guest[8..16].try_into().unwrap()), 3);
            env.guest[..4].copy_from_slice(&2u32.to_le_bytes());
            assert_eq!(stats_op(&mut env, 0, BASE), Err(Errno::EINVAL));
            assert_eq!(stats_op(&mut env, 0, 0x10), Err(Errno::EFAULT));
        } else {
            assert_eq!(stats_op(&mut env, 0, BASE), Err(Errno::ENOSYS));
        }
        assert_eq!(stats_op(&mut env, 1, BASE), Err(Errno::ENOSYS));
    }
}
