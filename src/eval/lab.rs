//! Colour measurement for the relevance evaluation: sRGB → CIELAB (D65), the median colour of a
//! set of pixels, and the CIEDE2000 colour difference.
//!
//! Kept apart from the pipeline's colour descriptor (src/vision/colour.rs), whose sRGB → Lab
//! conversion it shares: the metric must not move when the descriptor is tuned, or the tuning
//! would grade itself.
//!
//! ΔE is CIEDE2000 rather than CIE76: CIE76 (plain Euclidean Lab distance) overstates differences
//! between saturated colours and understates them among greys and blues, and the demo catalog is
//! mostly saturated tints next to blacks and greys — exactly where the two disagree. CIEDE2000's
//! values follow perceived difference (≈ 1 just noticeable, > 10 clearly another colour).

/// sRGB (8 bit, IEC 61966-2-1 transfer curve) to CIELAB under D65, `[L, a, b]`. The conversion
/// is the standard's and shared with the descriptor; what the metric keeps to itself is how it
/// selects and compares colours (median, CIEDE2000).
pub fn srgb_to_lab(r: u8, g: u8, b: u8) -> [f32; 3] {
    let lab = crate::vision::colour::srgb_to_lab([r, g, b]);
    [lab.l as f32, lab.a as f32, lab.b as f32]
}

/// Lab back to 8-bit sRGB (clipped), for drawing swatches on the contact sheet.
pub fn lab_to_srgb(lab: [f32; 3]) -> [u8; 3] {
    let fy = (lab[0] as f64 + 16.0) / 116.0;
    let fx = fy + lab[1] as f64 / 500.0;
    let fz = fy - lab[2] as f64 / 200.0;
    let inv = |t: f64| {
        const D: f64 = 6.0 / 29.0;
        if t > D {
            t * t * t
        } else {
            3.0 * D * D * (t - 4.0 / 29.0)
        }
    };
    let (x, y, z) = (inv(fx) * 0.95047, inv(fy), inv(fz) * 1.08883);
    let r = 3.2404542 * x - 1.5371385 * y - 0.4985314 * z;
    let g = -0.9692660 * x + 1.8760108 * y + 0.0415560 * z;
    let b = 0.0556434 * x - 0.2040259 * y + 1.0572252 * z;
    let enc = |c: f64| {
        let c = c.clamp(0.0, 1.0);
        let v = if c <= 0.0031308 {
            12.92 * c
        } else {
            1.055 * c.powf(1.0 / 2.4) - 0.055
        };
        (v * 255.0).round() as u8
    };
    [enc(r), enc(g), enc(b)]
}

/// The per-channel median Lab of `pixels`; `None` for no pixels. A marginal median: robust to
/// the background and shadows that stay in a garment's region, which a mean would blend in.
pub fn median_lab(pixels: impl IntoIterator<Item = [u8; 3]>) -> Option<[f32; 3]> {
    let mut ch: [Vec<f32>; 3] = Default::default();
    for p in pixels {
        let lab = srgb_to_lab(p[0], p[1], p[2]);
        for (c, v) in ch.iter_mut().zip(lab) {
            c.push(v);
        }
    }
    if ch[0].is_empty() {
        return None;
    }
    let mut out = [0.0; 3];
    for (o, c) in out.iter_mut().zip(ch.iter_mut()) {
        let mid = c.len() / 2;
        let (_, m, _) = c.select_nth_unstable_by(mid, f32::total_cmp);
        *o = *m;
    }
    Some(out)
}

/// CIEDE2000 colour difference (Sharma, Wu & Dalal 2005, with kL = kC = kH = 1).
pub fn ciede2000(lab1: [f32; 3], lab2: [f32; 3]) -> f32 {
    let [l1, a1, b1] = lab1.map(f64::from);
    let [l2, a2, b2] = lab2.map(f64::from);
    let pow7 = |c: f64| c.powi(7);
    let c_bar = (a1.hypot(b1) + a2.hypot(b2)) / 2.0;
    let g = 0.5 * (1.0 - (pow7(c_bar) / (pow7(c_bar) + pow7(25.0))).sqrt());
    let (a1p, a2p) = ((1.0 + g) * a1, (1.0 + g) * a2);
    let (c1p, c2p) = (a1p.hypot(b1), a2p.hypot(b2));
    let hue = |b: f64, a: f64| {
        if a == 0.0 && b == 0.0 {
            0.0
        } else {
            b.atan2(a).to_degrees().rem_euclid(360.0)
        }
    };
    let (h1p, h2p) = (hue(b1, a1p), hue(b2, a2p));
    let chroma_zero = c1p * c2p == 0.0;
    let dh = if chroma_zero {
        0.0
    } else {
        let d = h2p - h1p;
        if d > 180.0 {
            d - 360.0
        } else if d < -180.0 {
            d + 360.0
        } else {
            d
        }
    };
    let dl = l2 - l1;
    let dc = c2p - c1p;
    let d_h = 2.0 * (c1p * c2p).sqrt() * (dh / 2.0).to_radians().sin();
    let l_bar = (l1 + l2) / 2.0;
    let cp_bar = (c1p + c2p) / 2.0;
    let h_bar = if chroma_zero {
        h1p + h2p
    } else if (h1p - h2p).abs() <= 180.0 {
        (h1p + h2p) / 2.0
    } else if h1p + h2p < 360.0 {
        (h1p + h2p + 360.0) / 2.0
    } else {
        (h1p + h2p - 360.0) / 2.0
    };
    let cos = |deg: f64| deg.to_radians().cos();
    let t =
        1.0 - 0.17 * cos(h_bar - 30.0) + 0.24 * cos(2.0 * h_bar) + 0.32 * cos(3.0 * h_bar + 6.0)
            - 0.20 * cos(4.0 * h_bar - 63.0);
    let d_theta = 30.0 * (-((h_bar - 275.0) / 25.0).powi(2)).exp();
    let r_c = 2.0 * (pow7(cp_bar) / (pow7(cp_bar) + pow7(25.0))).sqrt();
    let s_l = 1.0 + 0.015 * (l_bar - 50.0).powi(2) / (20.0 + (l_bar - 50.0).powi(2)).sqrt();
    let s_c = 1.0 + 0.045 * cp_bar;
    let s_h = 1.0 + 0.015 * cp_bar * t;
    let r_t = -(2.0 * d_theta).to_radians().sin() * r_c;
    let (tl, tc, th) = (dl / s_l, dc / s_c, d_h / s_h);
    (tl * tl + tc * tc + th * th + r_t * tc * th)
        .max(0.0)
        .sqrt() as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ciede2000_matches_sharmas_published_pairs() {
        // Pairs 1, 7, 17 and 25 of Sharma, Wu & Dalal's test data (4 decimals published).
        let cases = [
            ([50.0, 2.6772, -79.7751], [50.0, 0.0, -82.7485], 2.0425),
            ([50.0, 0.0, 0.0], [50.0, -1.0, 2.0], 2.3669),
            ([50.0, 2.5, 0.0], [73.0, 25.0, -18.0], 27.1492),
            (
                [60.2574, -34.0099, 36.2677],
                [60.4626, -34.1751, 39.4387],
                1.2644,
            ),
        ];
        for (a, b, want) in cases {
            let got = ciede2000(a, b);
            assert!((got - want).abs() < 1e-3, "{a:?} {b:?}: {got} ≠ {want}");
            assert!((ciede2000(b, a) - want).abs() < 1e-3, "not symmetric");
        }
        assert_eq!(ciede2000([40.0, 10.0, -5.0], [40.0, 10.0, -5.0]), 0.0);
    }

    #[test]
    fn srgb_to_lab_matches_the_standard_values() {
        let close =
            |got: [f32; 3], want: [f32; 3]| got.iter().zip(want).all(|(g, w)| (g - w).abs() < 0.02);
        assert!(close(srgb_to_lab(255, 255, 255), [100.0, 0.0, 0.0]));
        assert!(close(srgb_to_lab(0, 0, 0), [0.0, 0.0, 0.0]));
        // CIE-published D65 values for the sRGB primaries.
        assert!(close(srgb_to_lab(255, 0, 0), [53.24, 80.09, 67.20]));
        assert!(close(srgb_to_lab(0, 0, 255), [32.30, 79.19, -107.86]));
        for c in [[12, 200, 99], [255, 128, 0], [40, 40, 41]] {
            assert_eq!(lab_to_srgb(srgb_to_lab(c[0], c[1], c[2])), c);
        }
    }

    #[test]
    fn median_ignores_a_minority_of_outliers() {
        let red = [200u8, 30, 30];
        let mut px = vec![red; 7];
        px.extend([[255, 255, 255]; 3]);
        let m = median_lab(px).unwrap();
        assert!(ciede2000(m, srgb_to_lab(red[0], red[1], red[2])) < 1e-3);
        assert_eq!(median_lab(Vec::<[u8; 3]>::new()), None);
    }
}
