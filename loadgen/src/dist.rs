//! Index distributions for choosing a tenant or a key: uniform, or Zipf from a
//! pre-computed inverse-CDF table.
//!
//! Rank 0 is the most popular index, so under `zipf` tenant `t0` and key `k0`
//! are the hottest. The table costs 8 bytes per index and is shared by all
//! workers; sampling is one uniform draw and a binary search.

use std::fmt;
use std::sync::Arc;

use rand::Rng;

/// How indices in `0..n` are drawn.
#[derive(Clone)]
pub enum Dist {
    /// Every index equally likely.
    Uniform { n: usize },
    /// Index `i` drawn with probability proportional to `1 / (i + 1)^s`.
    Zipf(Arc<Zipf>),
}

impl Dist {
    /// Builds the sampler for `kind` over `0..n` (`n` ≥ 1), with exponent `s` for Zipf.
    pub fn new(kind: DistKind, n: usize, s: f64) -> Self {
        match kind {
            DistKind::Uniform => Dist::Uniform { n },
            DistKind::Zipf => Dist::Zipf(Arc::new(Zipf::new(n, s))),
        }
    }

    /// Draws one index.
    #[inline]
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> usize {
        match self {
            Dist::Uniform { n } => rng.random_range(0..*n),
            Dist::Zipf(z) => z.sample(rng.random::<f64>()),
        }
    }
}

impl fmt::Debug for Dist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dist::Uniform { n } => write!(f, "uniform(0..{n})"),
            Dist::Zipf(z) => write!(f, "zipf(0..{}, s={})", z.cdf.len(), z.s),
        }
    }
}

/// The name of a distribution, as given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DistKind {
    Uniform,
    Zipf,
}

/// A Zipf sampler over `0..n`: the cumulative distribution, searched with a
/// uniform draw (inverse transform sampling).
pub struct Zipf {
    /// `cdf[i]` = P(index ≤ i); the last entry is 1.0 exactly.
    cdf: Box<[f64]>,
    s: f64,
}

impl Zipf {
    /// Builds the table for `n` ≥ 1 indices and exponent `s` ≥ 0 (0 is uniform).
    pub fn new(n: usize, s: f64) -> Self {
        assert!(n >= 1, "a zipf distribution needs at least one index");
        let mut cdf = Vec::with_capacity(n);
        let mut total = 0.0;
        for i in 0..n {
            total += 1.0 / ((i + 1) as f64).powf(s);
            cdf.push(total);
        }
        for c in &mut cdf {
            *c /= total;
        }
        // Rounding may leave the last entry a hair below 1.0; a draw in that
        // gap must still land on the last index.
        if let Some(last) = cdf.last_mut() {
            *last = 1.0;
        }
        Zipf {
            cdf: cdf.into_boxed_slice(),
            s,
        }
    }

    /// Maps a uniform draw `u` in `[0, 1)` to an index.
    #[inline]
    pub fn sample(&self, u: f64) -> usize {
        let i = self.cdf.partition_point(|&c| c <= u);
        i.min(self.cdf.len() - 1)
    }

    /// The probability of index `i`.
    pub fn probability(&self, i: usize) -> f64 {
        let below = if i == 0 { 0.0 } else { self.cdf[i - 1] };
        self.cdf[i] - below
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    #[test]
    fn probabilities_follow_the_power_law() {
        let z = Zipf::new(4, 1.0);
        // Harmonic number H_4 = 1 + 1/2 + 1/3 + 1/4 = 25/12.
        let h = 25.0 / 12.0;
        for i in 0..4 {
            let expected = 1.0 / (i as f64 + 1.0) / h;
            assert!((z.probability(i) - expected).abs() < 1e-12, "index {i}");
        }
    }

    #[test]
    fn inverse_cdf_maps_boundaries() {
        let z = Zipf::new(4, 1.0);
        assert_eq!(z.sample(0.0), 0);
        // P(0) = 12/25 = 0.48: draws just below go to 0, at or above to 1.
        assert_eq!(z.sample(0.479), 0);
        assert_eq!(z.sample(0.481), 1);
        assert_eq!(z.sample(0.999_999_999), 3);
        // Out-of-range draws are clamped rather than indexing past the end.
        assert_eq!(z.sample(1.0), 3);
    }

    #[test]
    fn exponent_zero_is_uniform_and_one_index_is_constant() {
        let z = Zipf::new(5, 0.0);
        for i in 0..5 {
            assert!((z.probability(i) - 0.2).abs() < 1e-12);
        }
        let one = Zipf::new(1, 1.0);
        assert_eq!(one.sample(0.0), 0);
        assert_eq!(one.sample(0.9), 0);
    }

    #[test]
    fn sampled_frequencies_match_within_five_sigma() {
        let n = 10;
        let draws = 100_000;
        let dist = Dist::new(DistKind::Zipf, n, 1.0);
        let Dist::Zipf(z) = &dist else {
            unreachable!("built as zipf")
        };
        let mut rng = SmallRng::seed_from_u64(7);
        let mut counts = vec![0u32; n];
        for _ in 0..draws {
            counts[dist.sample(&mut rng)] += 1;
        }
        for (i, &c) in counts.iter().enumerate() {
            let p = z.probability(i);
            let mean = p * draws as f64;
            let sigma = (draws as f64 * p * (1.0 - p)).sqrt();
            assert!(
                (c as f64 - mean).abs() < 5.0 * sigma,
                "index {i}: {c} draws, expected {mean:.0} ± {:.0}",
                5.0 * sigma
            );
        }
        assert!(counts[0] > counts[1] && counts[1] > counts[9]);
    }

    #[test]
    fn uniform_stays_in_range() {
        let dist = Dist::new(DistKind::Uniform, 3, 1.0);
        let mut rng = SmallRng::seed_from_u64(1);
        let mut seen = [false; 3];
        for _ in 0..1000 {
            seen[dist.sample(&mut rng)] = true;
        }
        assert_eq!(seen, [true; 3]);
    }
}
