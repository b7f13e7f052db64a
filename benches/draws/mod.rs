//! The seeded draws of the fleet simulations (`offload`, `day`): a Zipf law over ranked
//! configurations, uniform numbers and shuffles, the same on every run.

use rand_chacha::ChaCha8Rng;
use rand_core::RngCore;

/// Exponent of the Zipf law over configurations: a few are common, most are rare.
pub const ZIPF_EXPONENT: f64 = 1.1;

/// A Zipf law over ranks `0..len`: rank 0 the most likely.
#[derive(Debug)]
pub struct Zipf {
    /// The probability of each rank and every rank before it.
    cumulative: Vec<f64>,
}

impl Zipf {
    pub fn new(len: usize) -> Self {
        let weights: Vec<f64> = (1..=len)
            .map(|rank| 1.0 / (rank as f64).powf(ZIPF_EXPONENT))
            .collect();
        let total: f64 = weights.iter().sum();
        let cumulative = weights
            .iter()
            .scan(0.0, |sum, weight| {
                *sum += weight / total;
                Some(*sum)
            })
            .collect();
        Zipf { cumulative }
    }

    /// One rank, drawn with one uniform number from `rng`.
    pub fn draw(&self, rng: &mut ChaCha8Rng) -> usize {
        let draw = uniform(rng);
        self.cumulative
            .partition_point(|&edge| edge < draw)
            .min(self.cumulative.len() - 1)
    }
}

/// A uniform draw in [0, 1).
pub fn uniform(rng: &mut ChaCha8Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

pub fn shuffle<T>(rng: &mut ChaCha8Rng, items: &mut [T]) {
    for at in (1..items.len()).rev() {
        let other = (rng.next_u64() % (at as u64 + 1)) as usize;
        items.swap(at, other);
    }
}
