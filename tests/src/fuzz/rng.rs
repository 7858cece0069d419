//! The fuzzer's seeded PRNG: every frame of a run follows from one printed seed, so a
//! failure replays exactly with `XDPLB_FUZZ_SEED`.

use std::time::{SystemTime, UNIX_EPOCH};

/// Environment variable that fixes the seed of a run.
pub const SEED_VAR: &str = "XDPLB_FUZZ_SEED";

/// SplitMix64 (Steele, Lea, Flood 2014): one 64-bit state, full period, good enough
/// spread for test inputs, and trivially reproducible.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub const fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The seed from [`SEED_VAR`] (decimal or `0x` hex), or one from the clock.
    pub fn seed_from_env() -> anyhow::Result<u64> {
        match std::env::var(SEED_VAR) {
            Ok(text) => parse_seed(&text),
            Err(_) => Ok(SystemTime::now()
                .duration_since(UNIX_EPOCH)?
                .as_nanos()
                .try_into()
                .unwrap_or(u64::MAX)),
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    pub fn next_u16(&mut self) -> u16 {
        (self.next_u64() >> 48) as u16
    }

    pub fn next_u8(&mut self) -> u8 {
        (self.next_u64() >> 56) as u8
    }

    /// Uniform in `0..bound` (`bound` > 0); the modulo bias is irrelevant here.
    pub fn below(&mut self, bound: usize) -> usize {
        (self.next_u64() % bound as u64) as usize
    }

    /// True with probability `1 / n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u8()).collect()
    }
}

fn parse_seed(text: &str) -> anyhow::Result<u64> {
    let text = text.trim();
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.map_err(|error| anyhow::anyhow!("{SEED_VAR}={text:?} is not a u64: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream() {
        let mut a = Rng::new(42);
        let mut b = Rng::new(42);
        let first: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let mut other = Rng::new(43);
        assert_eq!(first, (0..8).map(|_| b.next_u64()).collect::<Vec<_>>());
        assert_ne!(first, (0..8).map(|_| other.next_u64()).collect::<Vec<_>>());
    }

    #[test]
    fn seeds_parse_in_decimal_and_hex() {
        assert_eq!(parse_seed("0x2a").ok(), Some(42));
        assert_eq!(parse_seed(" 42 ").ok(), Some(42));
        assert!(parse_seed("x").is_err());
    }
}
