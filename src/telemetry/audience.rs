//! Audience figures, what a chain asks for to judge its displays and compare stores and catalog
//! versions: shoppers seen, how long they stayed in view, garments recommended for, items shown.
//! Counts only: nothing here holds an image, a position or a track id.
//!
//! The tracker notes what happened in a frame in an [`AudienceEvents`] (on most frames nothing),
//! and the inference thread hands it to [`Audience::record`] after the frame. Items shown are
//! counted per catalog group in `/metrics` (a handful of series, never one per item); the items
//! themselves are tallied for `/api/status`'s top list, for the active catalog version only.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::kinds::Histogram;
use super::{Declaration, declare};

pub const SHOPPERS_SEEN: Declaration = Declaration {
    name: "vitrine_shoppers_seen_total",
    help: "People who came into view (a person the tracker followed counts once)",
};
pub const SHOPPER_DWELL_SECONDS: Declaration = Declaration {
    name: "vitrine_shopper_dwell_seconds",
    help: "Time each shopper stayed in view, observed when they are gone",
};
pub const GARMENTS_RECOMMENDED: Declaration = Declaration {
    name: "vitrine_garments_recommended_total",
    help: "Shoppers' garments the display showed similar items for (each garment once)",
};
pub const ITEMS_SHOWN: Declaration = Declaration {
    name: "vitrine_items_shown_total",
    help: "Catalog items put on display by catalog group (an item counts each time it enters a garment's list)",
};

/// Upper bounds (seconds) of the dwell histogram: a passer-by is in view a second or two, a
/// shopper who stops to look half a minute, one who lingers minutes.
const DWELL_BUCKETS: [f64; 10] = [1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0];

/// How many items `/api/status` lists, most shown first.
pub const TOP_ITEMS: usize = 10;

/// What the tracker saw happen since the inference thread last asked.
#[derive(Debug, Default, PartialEq)]
pub struct AudienceEvents {
    /// People who came into view.
    pub shoppers_seen: u64,
    /// Time in view of each shopper who has gone.
    pub dwell: Vec<Duration>,
    /// Garments that got their first list.
    pub garments_recommended: u64,
    /// Lists put on display: the catalog group and the items (positions in the catalog the
    /// tracker searched).
    pub shown: Vec<(String, Vec<usize>)>,
}

impl AudienceEvents {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabels {
    group: String,
}

/// Items shown under one catalog version: counts by position in that catalog. At most one entry
/// per catalog item, and only the items actually shown.
#[derive(Debug)]
struct ShownTally {
    version: String,
    since: SystemTime,
    counts: HashMap<usize, u64>,
}

/// The most shown items of one catalog version, for `/api/status`.
#[derive(Debug, Clone, PartialEq)]
pub struct TopItems {
    /// The catalog version the positions refer to (`Catalog::version`).
    pub version: String,
    /// When that version became active (or the daemon started).
    pub since: SystemTime,
    /// `(position in the catalog, times shown)`, most shown first.
    pub items: Vec<(usize, u64)>,
}

#[derive(Debug)]
pub struct Audience {
    pub shoppers_seen: Counter,
    pub dwell_seconds: Histogram,
    pub garments_recommended: Counter,
    items_shown: Family<GroupLabels, Counter>,
    tally: Mutex<ShownTally>,
}

impl Audience {
    pub(super) fn new(registry: &mut Registry) -> Self {
        Self {
            shoppers_seen: declare(registry, &SHOPPERS_SEEN, Counter::default()),
            dwell_seconds: declare(
                registry,
                &SHOPPER_DWELL_SECONDS,
                Histogram::new(&DWELL_BUCKETS),
            ),
            garments_recommended: declare(registry, &GARMENTS_RECOMMENDED, Counter::default()),
            items_shown: declare(registry, &ITEMS_SHOWN, Family::default()),
            tally: Mutex::new(ShownTally {
                version: String::new(),
                since: SystemTime::now(),
                counts: HashMap::new(),
            }),
        }
    }

    /// Takes one frame's events; `version` is the catalog the shown items' positions refer to.
    pub fn record(&self, events: AudienceEvents, version: &str) {
        self.shoppers_seen.inc_by(events.shoppers_seen);
        for d in events.dwell {
            self.dwell_seconds.observe(d);
        }
        self.garments_recommended
            .inc_by(events.garments_recommended);
        if events.shown.is_empty() {
            return;
        }
        for (group, items) in &events.shown {
            self.items_shown
                .get_or_create(&GroupLabels {
                    group: group.clone(),
                })
                .inc_by(items.len() as u64);
        }
        let mut tally = self.tally.lock().unwrap_or_else(|p| p.into_inner());
        // Lists searched in the catalog before a swap name positions in the old one.
        if tally.version != version {
            return;
        }
        for item in events.shown.iter().flat_map(|(_, items)| items) {
            *tally.counts.entry(*item).or_default() += 1;
        }
    }

    /// Starts the item tally over for a newly active catalog version.
    pub fn catalog_changed(&self, version: &str) {
        let mut tally = self.tally.lock().unwrap_or_else(|p| p.into_inner());
        if tally.version != version {
            *tally = ShownTally {
                version: version.to_string(),
                since: SystemTime::now(),
                counts: HashMap::new(),
            };
        }
    }

    /// The `n` most shown items of the active catalog version (ties: catalog order).
    pub fn top_items(&self, n: usize) -> TopItems {
        let tally = self.tally.lock().unwrap_or_else(|p| p.into_inner());
        let mut items: Vec<(usize, u64)> = tally.counts.iter().map(|(&i, &c)| (i, c)).collect();
        items.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        items.truncate(n);
        TopItems {
            version: tally.version.clone(),
            since: tally.since,
            items,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(shown: &[(&str, &[usize])]) -> AudienceEvents {
        AudienceEvents {
            shown: shown
                .iter()
                .map(|(g, items)| (g.to_string(), items.to_vec()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn items_are_tallied_for_the_active_version_and_counted_per_group() {
        let mut r = Registry::default();
        let a = Audience::new(&mut r);
        a.catalog_changed("v1");
        a.record(events(&[("top", &[3, 1, 2]), ("shoes", &[7])]), "v1");
        a.record(events(&[("top", &[1, 4])]), "v1");
        // A list searched in the previous catalog: counted per group, not tallied by position.
        a.record(events(&[("top", &[9])]), "v0");
        let top = a.top_items(3);
        assert_eq!(top.version, "v1");
        assert_eq!(top.items, vec![(1, 2), (2, 1), (3, 1)]);

        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &r).expect("encode");
        assert!(
            text.contains("vitrine_items_shown_total{group=\"top\"} 6\n"),
            "{text}"
        );
        assert!(text.contains("vitrine_items_shown_total{group=\"shoes\"} 1\n"));

        a.catalog_changed("v2");
        let top = a.top_items(3);
        assert_eq!((top.version.as_str(), top.items.len()), ("v2", 0));
    }

    #[test]
    fn shoppers_dwell_and_garments_are_counted() {
        let mut r = Registry::default();
        let a = Audience::new(&mut r);
        a.record(
            AudienceEvents {
                shoppers_seen: 2,
                dwell: vec![Duration::from_secs(3), Duration::from_secs(40)],
                garments_recommended: 3,
                shown: vec![],
            },
            "v1",
        );
        assert_eq!(a.shoppers_seen.get(), 2);
        assert_eq!(a.garments_recommended.get(), 3);
        assert_eq!(a.dwell_seconds.count(), 2);
        assert_eq!(a.dwell_seconds.sum(), 43.0);
        assert!(AudienceEvents::default().is_empty());
    }
}
