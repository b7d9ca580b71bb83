//! Recall@10 of the catalog index against exact search, with the shipped index parameters, on
//! clustered vectors of the shipped embedder's size — before and after a dump and reload, which
//! must answer identically. The seed is fixed and printed so a failure can be replayed.

use vitrine::catalog::index::exact_top_k;
use vitrine::catalog::items::EmbedderFingerprint;
use vitrine::catalog::store::{ImageSource, Store, VersionInfo};
use vitrine::catalog::synth::{self, Rng};
use vitrine::catalog::{Catalog, CatalogMeta, IndexParams, Item};

#[test]
fn recall_at_10_against_exact_search_before_and_after_reload() {
    let seed: u64 = 20_261_126;
    let (n, dim, queries) = (20_000, 256, 100);
    println!("recall test: seed {seed}, {n} items × {dim}, {queries} queries");
    let vectors = synth::clustered_vectors(n, dim, 400, seed);
    let items: Vec<Item> = (0..n)
        .map(|i| Item {
            id: format!("r-{i}"),
            name: "x".into(),
            group: synth::group_for(i, n).into(),
            category: String::new(),
            price: 1.0,
            currency: "EUR".into(),
            image: "images/x.jpg".into(),
            attributes: Default::default(),
        })
        .collect();
    let params = IndexParams::default();
    let data = tempfile::tempdir().expect("tmp");
    let img = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(img.path().join("images")).expect("mkdir");
    std::fs::write(img.path().join("images/x.jpg"), b"x").expect("img");
    let store = Store::open(data.path(), true).expect("store");
    let meta = CatalogMeta {
        version: "v0001".into(),
        label: "recall".into(),
        root: store.version_dir("v0001"),
        dim,
        embedder: None,
    };
    let built = Catalog::build(meta, items.clone(), vectors.clone(), &params, &|_, _| {});
    let info = VersionInfo {
        format: String::new(),
        id: "v0001".into(),
        label: "recall".into(),
        created: String::new(),
        source: "test".into(),
        parent: None,
        item_count: n,
        embedder: EmbedderFingerprint {
            sha256: "s".into(),
            dim,
            recipe: "cnn".into(),
        },
        index: params,
        groups: vec![],
        warnings: vec![],
    };
    store
        .write_version(
            &built,
            info,
            ImageSource::Bundle {
                dir: img.path(),
                owned: false,
            },
        )
        .expect("write");
    let reloaded = store.load("v0001").expect("reload");

    let mut rng = Rng::new(seed);
    let mut found = 0;
    for _ in 0..queries {
        let i = rng.below(n);
        let group = synth::group_for(i, n);
        let q = synth::perturbed(&vectors[i], 0.75, &mut rng);
        let members: Vec<(usize, Vec<f32>)> = (0..n)
            .filter(|&j| synth::group_for(j, n) == group)
            .map(|j| (j, vectors[j].clone()))
            .collect();
        let exact: Vec<usize> = exact_top_k(&members, &q, 10)
            .iter()
            .map(|h| h.item)
            .collect();
        let approx = built.search(group, &q, 10, params.ef_search);
        assert_eq!(
            approx,
            reloaded.search(group, &q, 10, params.ef_search),
            "a reloaded index must answer exactly like the one that was dumped"
        );
        found += approx.iter().filter(|h| exact.contains(&h.item)).count();
    }
    let recall = found as f64 / (queries * 10) as f64;
    println!("recall@10 = {recall:.4} (seed {seed})");
    assert!(recall >= 0.98, "recall@10 {recall:.4} < 0.98 (seed {seed})");
}
