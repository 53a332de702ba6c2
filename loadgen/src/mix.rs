//! The operation mix: which of the guest's routes a request exercises, drawn
//! by weight.
//!
//! Written as `op=weight,...`, e.g. `get=80,set=15,incr=5`. `batch=W` is
//! shorthand for `batch-get`, `batch-set` and `batch-delete` sharing `W`
//! equally.

use std::fmt;
use std::str::FromStr;

use anyhow::{Context, bail, ensure};
use rand::Rng;

/// One kind of request, named after the guest route it drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    /// `GET /hello`: no store access.
    Hello,
    /// `GET /kv/{key}`: 200 with the value, or 404 `key not found`.
    Get,
    /// `PUT /kv/{key}` with the value as body: 204.
    Set,
    /// `DELETE /kv/{key}`: 204.
    Delete,
    /// `POST /incr/{key}?by=N`: 200 with the new value.
    Incr,
    /// `GET /keys`: 200 with the first page of keys.
    List,
    /// `POST /batch/get` with a JSON array of keys: 200 with a JSON object.
    BatchGet,
    /// `POST /batch/set` with a JSON object: 204.
    BatchSet,
    /// `POST /batch/delete` with a JSON array of keys: 204.
    BatchDelete,
}

impl Op {
    /// Every op, in report order; `Op as usize` indexes per-op tables.
    pub const ALL: [Op; 9] = [
        Op::Hello,
        Op::Get,
        Op::Set,
        Op::Delete,
        Op::Incr,
        Op::List,
        Op::BatchGet,
        Op::BatchSet,
        Op::BatchDelete,
    ];

    /// The op's name in `--mix` and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Op::Hello => "hello",
            Op::Get => "get",
            Op::Set => "set",
            Op::Delete => "delete",
            Op::Incr => "incr",
            Op::List => "list",
            Op::BatchGet => "batch-get",
            Op::BatchSet => "batch-set",
            Op::BatchDelete => "batch-delete",
        }
    }

    /// The status a correct server answers with.
    pub fn expected_status(self) -> u16 {
        match self {
            Op::Hello | Op::Get | Op::Incr | Op::List | Op::BatchGet => 200,
            Op::Set | Op::Delete | Op::BatchSet | Op::BatchDelete => 204,
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Weighted choice among ops; parse it from `op=weight,...`.
#[derive(Debug, Clone, PartialEq)]
pub struct Mix {
    /// Ops with a positive weight and their cumulative weight, ascending; the
    /// last entry's is the total.
    cumulative: Vec<(Op, f64)>,
}

impl Mix {
    /// Draws one op.
    #[inline]
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> Op {
        let total = self.cumulative.last().map_or(0.0, |&(_, c)| c);
        let x = rng.random::<f64>() * total;
        // At most nine entries: a linear scan beats a binary search.
        for &(op, c) in &self.cumulative {
            if x < c {
                return op;
            }
        }
        self.cumulative.last().map_or(Op::Hello, |&(op, _)| op)
    }

    /// The share of requests expected for `op`, in `[0, 1]`.
    pub fn fraction(&self, op: Op) -> f64 {
        let total = self.cumulative.last().map_or(0.0, |&(_, c)| c);
        let mut below = 0.0;
        for &(o, c) in &self.cumulative {
            if o == op {
                return (c - below) / total;
            }
            below = c;
        }
        0.0
    }

    /// The ops with a positive weight, in report order.
    pub fn ops(&self) -> impl Iterator<Item = Op> + '_ {
        self.cumulative.iter().map(|&(op, _)| op)
    }
}

impl FromStr for Mix {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        let mut weights = [0.0f64; Op::ALL.len()];
        let mut named = [false; Op::ALL.len() + 1];
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part
                .split_once('=')
                .with_context(|| format!("mix entry {part:?} is not op=weight"))?;
            let name = name.trim();
            let weight: f64 = weight
                .trim()
                .parse()
                .with_context(|| format!("weight of {name:?} is not a number"))?;
            ensure!(
                weight.is_finite() && weight >= 0.0,
                "weight of {name:?} must be a finite number ≥ 0, got {weight}"
            );
            let (slot, ops): (usize, &[Op]) = match name {
                "batch" => (
                    Op::ALL.len(),
                    &[Op::BatchGet, Op::BatchSet, Op::BatchDelete],
                ),
                _ => match Op::ALL.iter().position(|op| op.name() == name) {
                    Some(i) => (i, &Op::ALL[i..=i]),
                    None => bail!(
                        "unknown op {name:?} in mix (known: hello, get, set, delete, incr, list, \
                         batch, batch-get, batch-set, batch-delete)"
                    ),
                },
            };
            ensure!(!named[slot], "op {name:?} appears twice in the mix");
            named[slot] = true;
            for &op in ops {
                weights[op as usize] += weight / ops.len() as f64;
            }
        }
        let mut cumulative = Vec::new();
        let mut total = 0.0;
        for op in Op::ALL {
            let w = weights[op as usize];
            if w > 0.0 {
                total += w;
                cumulative.push((op, total));
            }
        }
        ensure!(
            total > 0.0,
            "the mix {s:?} has no op with a positive weight"
        );
        Ok(Mix { cumulative })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    fn err(s: &str) -> String {
        format!("{:#}", s.parse::<Mix>().expect_err("should be rejected"))
    }

    #[test]
    fn parses_weights_into_fractions() {
        let mix: Mix = "get=80, set=15,incr=5".parse().expect("valid mix");
        assert_eq!(mix.fraction(Op::Get), 0.80);
        assert!((mix.fraction(Op::Set) - 0.15).abs() < 1e-12);
        assert!((mix.fraction(Op::Incr) - 0.05).abs() < 1e-12);
        assert_eq!(mix.fraction(Op::Hello), 0.0);
        assert_eq!(mix.ops().collect::<Vec<_>>(), [Op::Get, Op::Set, Op::Incr]);
    }

    #[test]
    fn batch_splits_its_weight_and_zero_weights_drop_out() {
        let mix: Mix = "hello=0,batch=30,get=70".parse().expect("valid mix");
        assert_eq!(
            mix.ops().collect::<Vec<_>>(),
            [Op::Get, Op::BatchGet, Op::BatchSet, Op::BatchDelete]
        );
        assert!((mix.fraction(Op::BatchSet) - 0.10).abs() < 1e-12);
        let single: Mix = "hello=100".parse().expect("valid mix");
        let mut rng = SmallRng::seed_from_u64(3);
        assert!((0..100).all(|_| single.sample(&mut rng) == Op::Hello));
    }

    #[test]
    fn rejects_bad_mixes() {
        assert!(err("get=80,fetch=20").contains("unknown op \"fetch\""));
        assert!(err("get=0,set=0").contains("no op with a positive weight"));
        assert!(err("").contains("no op with a positive weight"));
        assert!(err("get").contains("not op=weight"));
        assert!(err("get=x").contains("not a number"));
        assert!(err("get=-1").contains("≥ 0"));
        assert!(err("get=1,get=2").contains("twice"));
        assert!(err("batch=1,batch=2").contains("twice"));
    }

    #[test]
    fn samples_in_proportion() {
        let mix: Mix = "get=80,set=20".parse().expect("valid mix");
        let mut rng = SmallRng::seed_from_u64(11);
        let n = 10_000;
        let gets = (0..n).filter(|_| mix.sample(&mut rng) == Op::Get).count();
        // Binomial(10 000, 0.8): σ = 40; five σ is 200.
        assert!((gets as i64 - 8000).abs() < 200, "{gets} gets");
    }
}
