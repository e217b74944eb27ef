//! `console_io`: dom0's raw line to the hypervisor console.
#![forbid(unsafe_code)]

use dom0_abi::Errno;
use dom0_abi::console::ConsoleIoCmd;

use super::Env;

/// Bytes copied from the guest per step (bounds hypervisor stack use).
const CHUNK: usize = 128;
/// Bytes written per invocation: a longer write is continued with the
/// rest, so one call holds the CPU for a bounded time (as on Xen).
pub const WRITE_LIMIT: u64 = 4096;

/// `console_io(cmd, count, buffer)`.
///
/// - `CONSOLEIO_write`: writes `count` bytes from `buffer` to the console,
///   unprefixed, and returns 0; `-EFAULT` if any part of the buffer cannot be
///   read (bytes before the bad part have been written, as on Xen).
/// - `CONSOLEIO_read`: copies at most `count` bytes of pending console input
///   into `buffer` and returns how many (0 with nothing pending, whatever
///   the buffer); `-E2BIG` if `count` does not fit in a non-negative `int`
///   (the result would be ambiguous), `-EFAULT` if a piece of the input
///   cannot be written (it stays pending; see `crate::console`).
/// - anything else: `-ENOSYS`.
///
/// Only a privileged domain may use it; others get `-EPERM` (Xen's release
/// builds do the same).
pub fn console_io(env: &mut impl Env, cmd: u64, count: u64, buffer: u64) -> Result<u64, Errno> {
    if !env.domain().is_privileged() {
        return Err(Errno::EPERM);
    }
    // The ABI's `cmd` and `count` are C `unsigned int`s: the upper halves of
    // the registers are not part of them.
    let count = count & 0xffff_ffff;
    match ConsoleIoCmd::from_number(cmd & 0xffff_ffff) {
        Some(ConsoleIoCmd::Write) => write(env, cmd, count, buffer),
        Some(ConsoleIoCmd::Read) => read(env, count, buffer),
        None => Err(Errno::ENOSYS),
    }
}

fn write(env: &mut impl Env, cmd: u64, count: u64, buffer: u64) -> Result<u64, Errno> {
    let mut chunk = [0u8; CHUNK];
    let mut done = 0u64;
    while done < count {
        if done == WRITE_LIMIT {
            env.preempt([cmd, count - done, buffer.wrapping_add(done), 0, 0]);
            return Ok(0);
        }
        let n = usize::try_from((count - done).min(CHUNK as u64)).unwrap_or(CHUNK);
        let va = buffer.checked_add(done).ok_or(Errno::EFAULT)?;
        env.copy_from_guest(va, &mut chunk[..n])?;
        env.console_write(&chunk[..n]);
        done += n as u64;
    }
    Ok(0)
}

fn read(env: &mut impl Env, count: u64, buffer: u64) -> Result<u64, Errno> {
    let count = u32::try_from(count)
        .ok()
        .filter(|&c| c <= i32::MAX.cast_unsigned())
        .ok_or(Errno::E2BIG)?;
    env.console_read(count, buffer).map(u64::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mm::fake::{BASE, FakeMachine};

    #[test]
    fn write_copies_in_chunks() {
        let mut env = FakeMachine::new(16);
        for (b, letter) in env.guest.iter_mut().take(300).zip((b'a'..=b'z').cycle()) {
            *b = letter;
        }
        assert_eq!(console_io(&mut env, 0, 300, BASE), Ok(0));
        assert_eq!(env.console, env.guest[..300].to_vec());
        assert_eq!(console_io(&mut env, 0, 0, 0), Ok(0));
    }

    #[test]
    fn long_writes_are_continued() {
        let mut env = FakeMachine::new(16);
        let n = WRITE_LIMIT + 100;
        assert_eq!(console_io(&mut env, 0, n, BASE), Ok(0));
        assert_eq!(env.console.len() as u64, WRITE_LIMIT);
        let args = env.take_preempted().expect("the rest is continued");
        assert_eq!(args[..3], [0, 100, BASE + WRITE_LIMIT]);
        assert_eq!(console_io(&mut env, args[0], args[1], args[2]), Ok(0));
        assert!(env.take_preempted().is_none());
        assert_eq!(
            env.console,
            env.guest[..usize::try_from(n).unwrap()].to_vec()
        );
    }

    #[test]
    fn write_bad_pointer_is_efault() {
        let mut env = FakeMachine::new(16);
        assert_eq!(console_io(&mut env, 0, 16, 0x10), Err(Errno::EFAULT));
        assert_eq!(
            console_io(&mut env, 0, 16, u64::MAX - 4),
            Err(Errno::EFAULT)
        );
    }

    fn typed(env: &mut FakeMachine, text: &[u8]) {
        for &b in text {
            env.input.receive(b);
        }
    }

    #[test]
    fn read_returns_pending_input() {
        let mut env = FakeMachine::new(16);
        typed(&mut env, b"hello");
        assert_eq!(console_io(&mut env, 1, 3, BASE), Ok(3));
        assert_eq!(&env.guest[..3], b"hel");
        assert_eq!(console_io(&mut env, 1, 16, BASE + 3), Ok(2));
        assert_eq!(&env.guest[..5], b"hello");
        assert_eq!(console_io(&mut env, 1, 16, BASE), Ok(0));
    }

    #[test]
    fn read_counts_above_int_max_are_e2big() {
        let mut env = FakeMachine::new(16);
        typed(&mut env, b"x");
        for count in [0x8000_0000, 0xffff_ffff] {
            assert_eq!(console_io(&mut env, 1, count, BASE), Err(Errno::E2BIG));
        }
        // The upper half of the register is not part of the count.
        assert_eq!(console_io(&mut env, 1, 1 << 32, BASE), Ok(0));
        assert_eq!(console_io(&mut env, 1, (1 << 32) | 1, BASE), Ok(1));
        assert_eq!(env.guest[0], b'x');
    }

    #[test]
    fn read_into_a_bad_buffer_is_efault_only_with_input_pending() {
        let mut env = FakeMachine::new(16);
        assert_eq!(console_io(&mut env, 1, 16, 0x10), Ok(0));
        assert_eq!(console_io(&mut env, 1, 0x7fff_ffff, 0x10), Ok(0));
        typed(&mut env, b"kept");
        assert_eq!(console_io(&mut env, 1, 16, 0x10), Err(Errno::EFAULT));
        assert_eq!(
            console_io(&mut env, 1, 16, u64::MAX - 1),
            Err(Errno::EFAULT)
        );
        assert_eq!(console_io(&mut env, 1, 0, 0x10), Ok(0));
        assert_eq!(console_io(&mut env, 1, 16, BASE), Ok(4));
        assert_eq!(&env.guest[..4], b"kept");
    }

    #[test]
    fn unknown_command_and_unprivileged_caller() {
        let mut env = FakeMachine::new(16);
        assert_eq!(console_io(&mut env, 7, 0, 0), Err(Errno::ENOSYS));
        env.domain.mm.privilege = None;
        assert_eq!(console_io(&mut env, 0, 0, 0), Err(Errno::EPERM));
    }
}
