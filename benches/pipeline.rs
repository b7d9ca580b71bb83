//! Criterion benches of the pipeline's own (non-ONNX) work: SSD decoding + NMS, frame resize into
//! the input tensor, and catalog search. `cargo bench --bench pipeline`.

use criterion::{BenchmarkId, Criterion, black_box, criterion_group, criterion_main};
use image::RgbImage;

use vitrine::catalog::{GroupIndex, IndexParams};
use vitrine::config::model::ScoreFn;
use vitrine::vision::anchors::AnchorParams;
use vitrine::vision::detector::ssd_candidates;
use vitrine::vision::geometry::NmsParams;
use vitrine::vision::preprocess::{
    Channels, DType, InputSpec, Layout, Preprocessor, ResizeMode, TensorSlot,
};

/// Deterministic pseudo-random numbers in [0, 1) (xorshift), so runs compare.
fn rng(seed: u64) -> impl FnMut() -> f32 {
    let mut s = seed;
    move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32
    }
}

fn ssd_params() -> AnchorParams {
    AnchorParams {
        num_layers: 6,
        min_scale: 0.2,
        max_scale: 0.95,
        aspect_ratios: vec![1.0, 2.0, 0.5, 3.0, 1.0 / 3.0],
        feature_map_sizes: vec![19, 10, 5, 3, 2, 1],
        reduce_boxes_in_lowest_layer: true,
        interpolated_scale_aspect_ratio: 1.0,
    }
}

fn decode_nms(c: &mut Criterion) {
    let anchors = ssd_params().generate();
    let columns = 24;
    let mut r = rng(7);
    let boxes: Vec<f32> = (0..anchors.len() * 4).map(|_| r() - 0.5).collect();
    // Mostly confident background, a crowd's worth of anchors above threshold (as on vtest).
    let scores: Vec<f32> = (0..anchors.len() * columns)
        .map(|i| if i % 97 == 0 { 1.0 + r() } else { -4.0 - r() })
        .collect();
    let params = NmsParams {
        score_threshold: 0.4,
        iou_threshold: 0.5,
        max_detections: 50,
    };
    c.bench_function("ssd decode + NMS (1917 anchors, 24 classes)", |b| {
        b.iter(|| {
            ssd_candidates(
                black_box(&boxes),
                black_box(&scores),
                &anchors,
                columns,
                true,
                ScoreFn::Sigmoid,
                &[10.0, 10.0, 5.0, 5.0],
                &params,
            )
        })
    });
}

fn resize(c: &mut Criterion) {
    let mut r = rng(3);
    let frame = RgbImage::from_fn(768, 576, |_, _| {
        image::Rgb([
            (r() * 255.0) as u8,
            (r() * 255.0) as u8,
            (r() * 255.0) as u8,
        ])
    });
    let mut pre = Preprocessor::new();
    for (mode, name) in [
        (ResizeMode::Stretch, "stretch"),
        (ResizeMode::Letterbox, "letterbox"),
    ] {
        let spec = InputSpec {
            name: "x".into(),
            width: 300,
            height: 300,
            layout: Layout::Nhwc,
            dtype: DType::F32,
            channels: Channels::Rgb,
            mean: [127.5; 3],
            std: [127.5; 3],
        };
        let mut buf = vec![0f32; spec.elements()];
        c.bench_with_input(
            BenchmarkId::new("frame 768x576 -> 300x300 f32", name),
            &mode,
            |b, &mode| {
                b.iter(|| pre.frame_into(black_box(&frame), &spec, mode, TensorSlot::F32(&mut buf)))
            },
        );
    }
    let spec = InputSpec {
        name: "x".into(),
        width: 224,
        height: 224,
        layout: Layout::Nchw,
        dtype: DType::F32,
        channels: Channels::Rgb,
        mean: [127.0; 3],
        std: [128.0; 3],
    };
    let mut buf = vec![0f32; spec.elements()];
    c.bench_function("garment crop 40x60 -> 224x224 NCHW", |b| {
        b.iter(|| {
            pre.crop_into(
                black_box(&frame),
                (300, 200, 40, 60),
                &spec,
                TensorSlot::F32(&mut buf),
            )
        })
    });
}

fn search(c: &mut Criterion) {
    let dim = 256;
    for n in [1_000usize, 10_000] {
        let mut r = rng(11);
        let vecs: Vec<Vec<f32>> = (0..n + 100)
            .map(|_| {
                let mut v: Vec<f32> = (0..dim).map(|_| r() - 0.5).collect();
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                v.iter_mut().for_each(|x| *x /= norm);
                v
            })
            .collect();
        let (data, queries) = vecs.split_at(n);
        let idx = GroupIndex::build((0..n).collect(), data.to_vec(), &IndexParams::default());
        let mut q = 0;
        c.bench_with_input(
            BenchmarkId::new("hnsw top-6 search, 256-d", n),
            &n,
            |b, _| {
                b.iter(|| {
                    q = (q + 1) % queries.len();
                    idx.search(black_box(&queries[q]), 6, 64)
                })
            },
        );
    }
}

criterion_group!(benches, decode_nms, resize, search);
criterion_main!(benches);
