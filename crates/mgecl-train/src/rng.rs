//! A small seeded random number generator (SplitMix64 seeding xoshiro256**) whose streams
//! never change with a dependency upgrade: training runs and resumed runs depend on that.

/// Deterministic pseudo-random generator.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Rng {
    /// A generator for `seed`; `stream` separates independent uses (epoch, episode, ...).
    pub fn new(seed: u64, stream: u64) -> Self {
        let mut state = seed ^ stream.wrapping_mul(0xd134_2543_de82_ef95);
        Rng {
            s: [
                splitmix(&mut state),
                splitmix(&mut state),
                splitmix(&mut state),
                splitmix(&mut state),
            ],
        }
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// Uniform integer in [0, n) (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Gamma(shape, 1), shape > 0 (Marsaglia and Tsang 2000; below 1 through
    /// Gamma(shape + 1) x U^(1/shape)).
    pub fn gamma(&mut self, shape: f64) -> f64 {
        if shape < 1.0 {
            let u = 1.0 - self.uniform();
            return self.gamma(shape + 1.0) * u.powf(1.0 / shape);
        }
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.normal();
            let v = (1.0 + c * x).powi(3);
            if v <= 0.0 {
                continue;
            }
            let u = 1.0 - self.uniform();
            if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
                return d * v;
            }
        }
    }

    /// Proportions of `k` categories from a symmetric Dirichlet(alpha), alpha > 0.
    pub fn dirichlet(&mut self, alpha: f64, k: usize) -> Vec<f64> {
        let draws: Vec<f64> = (0..k).map(|_| self.gamma(alpha)).collect();
        let sum: f64 = draws.iter().sum();
        if sum > 0.0 {
            draws.iter().map(|g| g / sum).collect()
        } else {
            vec![1.0 / k as f64; k]
        }
    }

    /// An index drawn with probability proportional to `weights` (not all zero, none
    /// negative).
    pub fn categorical(&mut self, weights: &[f64]) -> usize {
        let total: f64 = weights.iter().sum();
        let mut left = self.uniform() * total;
        for (i, &w) in weights.iter().enumerate() {
            if left < w {
                return i;
            }
            left -= w;
        }
        // Rounding: the last category with weight.
        weights.iter().rposition(|&w| w > 0.0).unwrap_or(0)
    }

    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }

    /// `k` distinct indices from `0..n`, in random order (k <= n).
    pub fn choose(&mut self, n: usize, k: usize) -> Vec<usize> {
        let mut all: Vec<usize> = (0..n).collect();
        for i in 0..k.min(n) {
            let j = i + self.below(n - i);
            all.swap(i, j);
        }
        all.truncate(k.min(n));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn reproducible_and_roughly_uniform() {
        let a: Vec<u64> = (0..5)
            .map({
                let mut r = Rng::new(7, 1);
                move |_| r.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..5)
            .map({
                let mut r = Rng::new(7, 1);
                move |_| r.next_u64()
            })
            .collect();
        assert_eq!(a, b);
        assert_ne!(Rng::new(7, 1).next_u64(), Rng::new(7, 2).next_u64());
        let mut r = Rng::new(1, 0);
        let mean: f64 = (0..100_000).map(|_| r.uniform()).sum::<f64>() / 1e5;
        assert!((mean - 0.5).abs() < 0.01);
        let normals: Vec<f64> = (0..100_000).map(|_| r.normal()).collect();
        let m = normals.iter().sum::<f64>() / 1e5;
        let v = normals.iter().map(|x| (x - m).powi(2)).sum::<f64>() / 1e5;
        assert!(m.abs() < 0.02 && (v - 1.0).abs() < 0.02, "{m} {v}");
        let picked = r.choose(10, 4);
        let mut sorted = picked.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 4);
    }

    /// The moments of Gamma(k, 1) (mean k, variance k) and of a symmetric Dirichlet(alpha)
    /// over K categories (mean 1/K, variance (K - 1) / (K^2 (K alpha + 1))), for shapes below
    /// and above 1.
    #[test]
    fn gamma_and_dirichlet_moments() {
        let mut r = Rng::new(3, 9);
        let n = 200_000;
        for shape in [0.5, 2.0, 7.5] {
            let draws: Vec<f64> = (0..n).map(|_| r.gamma(shape)).collect();
            let m = draws.iter().sum::<f64>() / n as f64;
            let v = draws.iter().map(|x| (x - m).powi(2)).sum::<f64>() / n as f64;
            assert!((m - shape).abs() < 0.02 * shape, "shape {shape}: mean {m}");
            assert!(
                (v - shape).abs() < 0.05 * shape,
                "shape {shape}: variance {v}"
            );
        }
        let (k, alpha) = (5usize, 2.0);
        let draws: Vec<Vec<f64>> = (0..n / 4).map(|_| r.dirichlet(alpha, k)).collect();
        let first: Vec<f64> = draws.iter().map(|p| p[0]).collect();
        let m = first.iter().sum::<f64>() / first.len() as f64;
        let v = first.iter().map(|x| (x - m).powi(2)).sum::<f64>() / first.len() as f64;
        let kf = k as f64;
        let expected_v = (kf - 1.0) / (kf * kf * (kf * alpha + 1.0));
        assert!((m - 0.2).abs() < 0.003, "mean {m}");
        assert!(
            (v - expected_v).abs() < 0.05 * expected_v,
            "variance {v} vs {expected_v}"
        );
        assert!(draws
            .iter()
            .all(|p| (p.iter().sum::<f64>() - 1.0).abs() < 1e-12));
        let mut counts = [0usize; 3];
        for _ in 0..30_000 {
            counts[r.categorical(&[0.2, 0.0, 0.8])] += 1;
        }
        assert_eq!(counts[1], 0);
        assert!(
            (counts[0] as f64 / 30_000.0 - 0.2).abs() < 0.01,
            "{counts:?}"
        );
    }
}
