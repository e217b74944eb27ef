//! A small pseudo-random generator (xorshift64) for test guests that pick
//! sectors, lengths and patterns: not for anything secret.

#![forbid(unsafe_code)]

/// xorshift64 state; never zero.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed` (0 is replaced, it would stay 0).
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn xorshift64_sequence_and_zero_seed() {
        let mut rng = Rng::new(1);
        assert_eq!(rng.next_u64(), 0x4082_2041);
        let mut zero = Rng::new(0);
        assert_ne!(zero.next_u64(), 0);
    }
}
