//! Percentiles and summaries of a sample (latencies, stage times, gaps).

use serde::Serialize;

/// The nearest-rank percentile `q` (0 < q <= 1) of `sorted` (ascending): the smallest
/// value with at least `q` of the sample at or below it. `None` for an empty sample.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Count, mean and order statistics of one quantity, in its own unit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    pub count: usize,
    pub min: f64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Summary {
    /// `None` when there is nothing to summarise (so the report says so rather than
    /// printing zeros). NaNs are dropped.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Summary> {
        let mut v: Vec<f64> = values.into_iter().filter(|x| !x.is_nan()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let p = |q| percentile(&v, q).unwrap_or(f64::NAN);
        Some(Summary {
            count: v.len(),
            min: v[0],
            mean: v.iter().sum::<f64>() / v.len() as f64,
            p50: p(0.50),
            p90: p(0.90),
            p99: p(0.99),
            max: v[v.len() - 1],
        })
    }
}

/// Which of `n` consecutive buckets of `width` (the first starting at 0) holds time
/// `t`; the end of the last bucket belongs to it. `None` outside `[0, n * width]`.
pub fn bucket_of(t: f64, width: f64, n: usize) -> Option<usize> {
    if n == 0 || width <= 0.0 || !(0.0..=width * n as f64).contains(&t) {
        return None;
    }
    Some(((t / width) as usize).min(n - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(50.0));
        assert_eq!(percentile(&v, 0.9), Some(90.0));
        assert_eq!(percentile(&v, 0.99), Some(99.0));
        assert_eq!(percentile(&v, 1.0), Some(100.0));
        assert_eq!(percentile(&v, 0.001), Some(1.0));
        assert_eq!(percentile(&[7.0], 0.5), Some(7.0));
        assert_eq!(percentile(&[1.0, 2.0], 0.5), Some(1.0));
        assert_eq!(percentile(&[1.0, 2.0], 0.51), Some(2.0));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn summary_of_an_unsorted_sample() {
        let s = Summary::of([5.0, 1.0, 4.0, 2.0, 3.0, f64::NAN]).unwrap();
        assert_eq!(s.count, 5);
        assert_eq!((s.min, s.max), (1.0, 5.0));
        assert_eq!(s.mean, 3.0);
        assert_eq!((s.p50, s.p90, s.p99), (3.0, 5.0, 5.0));
        assert!(Summary::of([]).is_none());
        assert!(Summary::of([f64::NAN]).is_none());
    }

    #[test]
    fn summary_is_ordered() {
        // A skewed sample: a long tail must not reorder the percentiles.
        let v = (0..1000).map(|i| {
            if i % 97 == 0 {
                10_000.0
            } else {
                f64::from(i % 13)
            }
        });
        let s = Summary::of(v).unwrap();
        assert!(s.min <= s.p50 && s.p50 <= s.p90 && s.p90 <= s.p99 && s.p99 <= s.max);
        assert!(s.min <= s.mean && s.mean <= s.max);
        assert_eq!(s.max, 10_000.0);
        assert_eq!(s.p50, 6.0);
    }

    #[test]
    fn buckets_cover_the_whole_span() {
        let of = |t| bucket_of(t, 1.0, 3);
        assert_eq!(
            [of(0.0), of(0.5), of(1.0), of(1.9)],
            [Some(0), Some(0), Some(1), Some(1)]
        );
        assert_eq!([of(2.0), of(2.5), of(3.0)], [Some(2), Some(2), Some(2)]);
        assert_eq!([of(-1.0), of(3.1), of(f64::NAN)], [None, None, None]);
        assert_eq!(bucket_of(0.0, 0.0, 3), None);
        assert_eq!(bucket_of(0.0, 1.0, 0), None);
        // Widths that do not divide the span exactly still put its end in the last.
        let w = 14.013 / 7.0;
        assert_eq!(bucket_of(14.013, w, 7), Some(6));
    }
}
