//! Metric kinds that prometheus-client lacks in the shape the daemon needs, each a value the
//! registry encodes (`EncodeMetric`): cheap to clone (an `Arc`, so the registry and the field
//! that updates it share one cell) and, where the frame path updates it, atomics only.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// A histogram of durations over fixed bounds whose every observation is three atomic adds. prometheus-client's
/// own `Histogram` takes a mutex per `observe` (its source carries a TODO to move to atomics), and
/// the inference thread observes six stage latencies a frame.
#[derive(Debug, Clone)]
pub struct Histogram(Arc<HistogramCells>);

#[derive(Debug)]
struct HistogramCells {
    /// Upper bounds in seconds, ascending.
    bounds: &'static [f64],
    /// Observations per bucket, not cumulative (the encoder sums them); one above the last bound
    /// lands in none and shows only in the `+Inf` bucket, which is `count`.
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    /// The sum in nanoseconds: a plain add (an f64 sum would need a compare-and-swap loop);
    /// 2^64 ns is 584 years of latency.
    sum_ns: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        debug_assert!(bounds.is_sorted(), "histogram bounds must ascend");
        Self(Arc::new(HistogramCells {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
        }))
    }

    pub fn observe(&self, d: Duration) {
        let c = &self.0;
        let s = d.as_secs_f64();
        // The count goes up before the bucket (Release), and a scrape reads the buckets (Acquire)
        // before the count: a scrape never sees a bucket ahead of `+Inf`, which promtool and
        // `histogram_quantile` would take for a broken histogram.
        c.count.fetch_add(1, Ordering::Relaxed);
        if let Some(i) = c.bounds.iter().position(|&b| s <= b) {
            c.buckets[i].fetch_add(1, Ordering::Release);
        }
        c.sum_ns.fetch_add(
            d.as_nanos().min(u128::from(u64::MAX)) as u64,
            Ordering::Relaxed,
        );
    }

    pub fn count(&self) -> u64 {
        self.0.count.load(Ordering::Relaxed)
    }

    /// Sum of the observations, in seconds.
    pub fn sum(&self) -> f64 {
        self.0.sum_ns.load(Ordering::Relaxed) as f64 / 1e9
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> fmt::Result {
        let c = &self.0;
        let buckets: Vec<(f64, u64)> = c
            .bounds
            .iter()
            .zip(c.buckets.iter())
            .map(|(&b, n)| (b, n.load(Ordering::Acquire)))
            .collect();
        encoder.encode_histogram::<NoLabelSet>(self.sum(), self.count(), &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// A running count and sum of values (a share, a ratio) whose mean is what matters: exported as a
/// histogram with the `+Inf` bucket only, which gives exactly the `_sum` and `_count` series a
/// summary without quantiles has (prometheus-client has no summary type).
#[derive(Debug, Clone, Default)]
pub struct SumCount(Arc<[AtomicU64; 2]>);

impl SumCount {
    /// Adds `count` values that sum to `sum`.
    pub fn add(&self, count: u64, sum: f64) {
        if count == 0 {
            return;
        }
        self.0[0].fetch_add(count, Ordering::Relaxed);
        add_f64(&self.0[1], sum);
    }

    pub fn count(&self) -> u64 {
        self.0[0].load(Ordering::Relaxed)
    }

    pub fn sum(&self) -> f64 {
        f64::from_bits(self.0[1].load(Ordering::Relaxed))
    }
}

impl TypedMetric for SumCount {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for SumCount {
    fn encode(&self, mut encoder: MetricEncoder) -> fmt::Result {
        encoder.encode_histogram::<NoLabelSet>(self.sum(), self.count(), &[], None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// A family whose label sets are all known when it is declared (the pipeline's stages, the
/// camera's states). Members are reached by position, so an update takes no lock and no hash, and
/// `/metrics` lists them in declaration order. Families that grow while the daemon runs (HTTP
/// routes, catalog groups) are prometheus-client's `Family`.
#[derive(Debug)]
pub struct FixedFamily<L, M>(Arc<[(L, M)]>);

// Not derived: a derive would ask `L: Clone` and `M: Clone`, and only the `Arc` is cloned.
impl<L, M> Clone for FixedFamily<L, M> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<L, M> FixedFamily<L, M> {
    pub fn new(members: impl IntoIterator<Item = (L, M)>) -> Self {
        Self(members.into_iter().collect())
    }

    /// The member declared at position `i`.
    pub fn get(&self, i: usize) -> &M {
        &self.0[i].1
    }

    pub fn iter(&self) -> impl Iterator<Item = &(L, M)> {
        self.0.iter()
    }
}

impl<L: EncodeLabelSet, M: EncodeMetric + TypedMetric> TypedMetric for FixedFamily<L, M> {
    const TYPE: MetricType = M::TYPE;
}

impl<L: EncodeLabelSet, M: EncodeMetric + TypedMetric> EncodeMetric for FixedFamily<L, M> {
    fn encode(&self, mut encoder: MetricEncoder) -> fmt::Result {
        for (labels, metric) in self.0.iter() {
            metric.encode(encoder.encode_family(labels)?)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        M::TYPE
    }
}

/// A gauge that is always 1 and whose labels carry a fact that changes now and then (the active
/// catalog's version): the label set is replaced as a whole, so a scrape sees either the old or
/// the new one, never both or neither. Written on a catalog swap, read on a scrape.
#[derive(Debug)]
pub struct InfoGauge<L>(Arc<RwLock<L>>);

impl<L> Clone for InfoGauge<L> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<L> InfoGauge<L> {
    pub fn new(labels: L) -> Self {
        Self(Arc::new(RwLock::new(labels)))
    }

    pub fn set(&self, labels: L) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = labels;
    }

    /// Changes the labels in place.
    pub fn update(&self, f: impl FnOnce(&mut L)) {
        f(&mut self.0.write().unwrap_or_else(|p| p.into_inner()));
    }

    pub fn get(&self) -> L
    where
        L: Clone,
    {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl<L: EncodeLabelSet> TypedMetric for InfoGauge<L> {
    const TYPE: MetricType = MetricType::Gauge;
}

impl<L: EncodeLabelSet> EncodeMetric for InfoGauge<L> {
    fn encode(&self, mut encoder: MetricEncoder) -> fmt::Result {
        let labels = self.0.read().unwrap_or_else(|p| p.into_inner());
        encoder.encode_family(&*labels)?.encode_gauge(&1i64)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Adds `v` to the f64 whose bits `cell` holds. A compare-and-swap loop, which on the one thread
/// that writes these cells succeeds the first time.
fn add_f64(cell: &AtomicU64, v: f64) {
    let _ = cell.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
        Some((f64::from_bits(b) + v).to_bits())
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::prometheus_text::encode;
    use prometheus_client::registry::Registry;

    fn text(f: impl FnOnce(&mut Registry)) -> String {
        let mut r = Registry::default();
        f(&mut r);
        let mut out = String::new();
        encode(&mut out, &r).expect("encode");
        out
    }

    #[test]
    fn histogram_buckets_are_cumulative_with_overflow_only_in_inf() {
        const B: [f64; 3] = [0.01, 0.1, 1.0];
        let h = Histogram::new(&B);
        for ms in [3, 30, 40, 5000] {
            h.observe(Duration::from_millis(ms));
        }
        let t = text(|r| r.register("h_seconds", "A histogram", h.clone()));
        for line in [
            "h_seconds_bucket{le=\"0.01\"} 1",
            "h_seconds_bucket{le=\"0.1\"} 3",
            "h_seconds_bucket{le=\"1\"} 3",
            "h_seconds_bucket{le=\"+Inf\"} 4",
            "h_seconds_count 4",
        ] {
            assert!(t.lines().any(|l| l == line), "missing {line} in\n{t}");
        }
        let sum: f64 = t
            .lines()
            .find_map(|l| l.strip_prefix("h_seconds_sum "))
            .and_then(|v| v.parse().ok())
            .expect("sum");
        assert!((sum - 5.073).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn sum_count_is_a_histogram_with_only_the_inf_bucket() {
        let s = SumCount::default();
        s.add(0, 0.0);
        s.add(4, 2.5);
        s.add(1, 0.5);
        let t = text(|r| r.register("share", "A share", s.clone()));
        assert_eq!(
            t,
            "# HELP share A share.\n# TYPE share histogram\nshare_bucket{le=\"+Inf\"} 5\nshare_sum 3.0\nshare_count 5\n"
        );
    }

    #[test]
    fn info_gauge_shows_one_label_set_at_a_time() {
        #[derive(Clone, Debug, prometheus_client::encoding::EncodeLabelSet)]
        struct V {
            version: String,
        }
        let g = InfoGauge::new(V {
            version: "v1".into(),
        });
        let reg = g.clone();
        g.set(V {
            version: "v2".into(),
        });
        let t = text(|r| r.register("x_info", "X", reg));
        assert!(t.contains("\nx_info{version=\"v2\"} 1\n"), "{t}");
        assert!(!t.contains("v1"), "{t}");
    }
}
