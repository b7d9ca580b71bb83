//! Garment colour: sRGB → CIELAB (D65) and a colour descriptor whose dot product follows the
//! perceived colour difference, so it can join the CNN embedding in one cosine search.
//!
//! The descriptor (`lab-soft-hist/1`) is a soft-assigned histogram of the garment's pixels over a
//! fixed Lab grid (4 lightness × 6 × 6 a*b* centres = 144 bins): each pixel spreads one unit of
//! weight over the centres with a separable Gaussian kernel, and the histogram is L2-normalised.
//! For two single-coloured garments the dot product of their descriptors is then close to
//! `exp(-ΔE² / 4σ²)`, a smooth similarity that falls with the CIE76 distance (1 = same colour, ≈0.4
//! at ΔE 40 on a*b*), and a two-coloured garment keeps both colours instead of averaging them into
//! a third. Why a histogram rather than the median colour scaled to ΔE: a unit vector whose dot
//! product is a similarity is what the HNSW index searches (dot product on unit vectors); a raw
//! Lab vector inside the fused vector would make the normalisation depend on the colour's chroma.
//!
//! Lightness is the least reliable part of a camera crop (shade, street light, exposure) while
//! the catalog's photos are flat tints, so the lightness kernel is wider (σ 25 over a 100 range,
//! 4 centres) than the chroma kernel (σ 20 over ±75, 6 centres per axis): a navy top in shade
//! still lands on navy, not on black-or-grey.
//!
//! Which pixels count: the person mask's pixels (> 127) when there is one; for catalog photos,
//! those not close to the photo's background colour (CIE76 ΔE above a threshold); otherwise the
//! central half of the crop (the garment's middle, least likely to be street). Pixels are sampled
//! on a stride grid so a large crop costs no more than a 64-pixel one. `models/prepare/colour_ref.py`
//! computes the same descriptor with numpy (golden parity test `tests/colour_golden.rs`).

use image::RgbImage;

use super::garment::CropMask;

/// The descriptor's name and version, part of the catalog's recipe fingerprint: change it with
/// any change to the computation below.
pub const DESCRIPTOR: &str = "lab-soft-hist/1";
/// Lightness centres and kernel width.
pub const L_CENTRES: [f64; 4] = [12.5, 37.5, 62.5, 87.5];
pub const L_SIGMA: f64 = 25.0;
/// a* and b* centres (the same for both axes) and kernel width.
pub const AB_CENTRES: [f64; 6] = [-75.0, -45.0, -15.0, 15.0, 45.0, 75.0];
pub const AB_SIGMA: f64 = 20.0;
/// Length of the descriptor.
pub const DIM: usize = L_CENTRES.len() * AB_CENTRES.len() * AB_CENTRES.len();
/// Pixels sampled along the crop's longer side at most.
pub const SAMPLES_PER_SIDE: u32 = 64;
/// Fewer selected pixels than this and the selection is not trusted: the central half is used.
pub const MIN_PIXELS: usize = 8;

/// A colour in CIELAB (D65 white).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lab {
    pub l: f64,
    pub a: f64,
    pub b: f64,
}

impl Lab {
    /// CIE76 colour difference.
    pub fn delta_e(&self, o: &Lab) -> f64 {
        ((self.l - o.l).powi(2) + (self.a - o.a).powi(2) + (self.b - o.b).powi(2)).sqrt()
    }
}

/// sRGB (8-bit, IEC 61966-2-1 transfer curve) → CIELAB under D65.
pub fn srgb_to_lab(rgb: [u8; 3]) -> Lab {
    // The transfer curve's `powf` was most of a descriptor's time; 256 values cover every input.
    static LINEAR: std::sync::OnceLock<[f64; 256]> = std::sync::OnceLock::new();
    let lut = LINEAR.get_or_init(|| {
        std::array::from_fn(|v| {
            let c = v as f64 / 255.0;
            if c <= 0.04045 {
                c / 12.92
            } else {
                ((c + 0.055) / 1.055).powf(2.4)
            }
        })
    });
    let [r, g, b] = rgb.map(|v| lut[usize::from(v)]);
    let x = 0.412_456_4 * r + 0.357_576_1 * g + 0.180_437_5 * b;
    let y = 0.212_672_9 * r + 0.715_152_2 * g + 0.072_175_0 * b;
    let z = 0.019_333_9 * r + 0.119_192_0 * g + 0.950_304_1 * b;
    let f = |t: f64| {
        const D: f64 = 6.0 / 29.0;
        if t > D * D * D {
            t.cbrt()
        } else {
            t / (3.0 * D * D) + 4.0 / 29.0
        }
    };
    let (fx, fy, fz) = (f(x / 0.950_47), f(y), f(z / 1.088_83));
    Lab {
        l: 116.0 * fy - 16.0,
        a: 500.0 * (fx - fy),
        b: 200.0 * (fy - fz),
    }
}

/// Which of a crop's pixels are the garment.
#[derive(Debug, Clone, Copy)]
pub enum Selection<'a> {
    /// The person mask, the crop's size (255 = shopper).
    Mask(&'a CropMask),
    /// A product photo: pixels farther than `min_delta_e` (CIE76) from the background colour.
    Background { rgb: [u8; 3], min_delta_e: f64 },
    /// Neither: the central half of the crop.
    Central,
}

/// The stride that samples at most [`SAMPLES_PER_SIDE`] pixels along the longer side.
pub fn stride(w: u32, h: u32) -> u32 {
    w.max(h).div_ceil(SAMPLES_PER_SIDE).max(1)
}

/// The garment pixels of the crop `(x, y, w, h)` of `img`, sampled on the stride grid, in Lab.
pub fn garment_pixels(img: &RgbImage, rect: (u32, u32, u32, u32), sel: Selection) -> Vec<Lab> {
    let (x0, y0, w, h) = clamp_rect(img, rect);
    if w == 0 || h == 0 {
        return Vec::new();
    }
    let s = stride(w, h);
    let at = |dx: u32, dy: u32| srgb_to_lab(img.get_pixel(x0 + dx, y0 + dy).0);
    let mut out = Vec::new();
    match sel {
        Selection::Mask(m) if m.width == w && m.height == h => {
            for dy in (0..h).step_by(s as usize) {
                for dx in (0..w).step_by(s as usize) {
                    if m.data[(dy * w + dx) as usize] > 127 {
                        out.push(at(dx, dy));
                    }
                }
            }
        }
        Selection::Background { rgb, min_delta_e } => {
            let bg = srgb_to_lab(rgb);
            for dy in (0..h).step_by(s as usize) {
                for dx in (0..w).step_by(s as usize) {
                    let p = at(dx, dy);
                    if p.delta_e(&bg) > min_delta_e {
                        out.push(p);
                    }
                }
            }
        }
        // A mask of another size than the crop is a caller's bug; the central half is a safe answer.
        Selection::Mask(_) | Selection::Central => {}
    }
    if out.len() < MIN_PIXELS {
        out.clear();
        let (cx, cw) = (w / 4, (w / 2).max(1));
        let (cy, ch) = (h / 4, (h / 2).max(1));
        for dy in (cy..cy + ch).step_by(s as usize) {
            for dx in (cx..cx + cw).step_by(s as usize) {
                out.push(at(dx, dy));
            }
        }
    }
    out
}

fn clamp_rect(img: &RgbImage, (x, y, w, h): (u32, u32, u32, u32)) -> (u32, u32, u32, u32) {
    let x = x.min(img.width());
    let y = y.min(img.height());
    (x, y, w.min(img.width() - x), h.min(img.height() - y))
}

/// Normalised Gaussian weights of `v` over `centres`.
fn kernel<const N: usize>(v: f64, centres: &[f64; N], sigma: f64) -> [f64; N] {
    let mut k = [0.0; N];
    for (k, c) in k.iter_mut().zip(centres) {
        *k = (-(v - c).powi(2) / (2.0 * sigma * sigma)).exp();
    }
    let sum: f64 = k.iter().sum();
    if sum > 0.0 {
        k.iter_mut().for_each(|x| *x /= sum);
    }
    k
}

/// The `lab-soft-hist/1` descriptor of these pixels: [`DIM`] values, L2-normalised (all zeros
/// for no pixels). Bin order: lightness outermost, then a*, then b*.
pub fn descriptor(pixels: &[Lab]) -> Vec<f32> {
    let mut hist = [0.0f64; DIM];
    let n_ab = AB_CENTRES.len();
    for p in pixels {
        let kl = kernel(p.l, &L_CENTRES, L_SIGMA);
        let ka = kernel(p.a, &AB_CENTRES, AB_SIGMA);
        let kb = kernel(p.b, &AB_CENTRES, AB_SIGMA);
        for (i, wl) in kl.iter().enumerate() {
            for (j, wa) in ka.iter().enumerate() {
                let row = &mut hist[(i * n_ab + j) * n_ab..(i * n_ab + j + 1) * n_ab];
                for (h, wb) in row.iter_mut().zip(&kb) {
                    *h += wl * wa * wb;
                }
            }
        }
    }
    let norm = hist.iter().map(|x| x * x).sum::<f64>().sqrt();
    hist.iter()
        .map(|x| if norm > 0.0 { (x / norm) as f32 } else { 0.0 })
        .collect()
}

/// The descriptor of one crop: [`garment_pixels`] then [`descriptor`].
pub fn crop_descriptor(img: &RgbImage, rect: (u32, u32, u32, u32), sel: Selection) -> Vec<f32> {
    descriptor(&garment_pixels(img, rect, sel))
}

/// The per-channel median Lab colour of these pixels (the relevance measure's garment colour);
/// `None` for no pixels.
pub fn median_lab(pixels: &[Lab]) -> Option<Lab> {
    if pixels.is_empty() {
        return None;
    }
    let med = |f: fn(&Lab) -> f64| {
        let mut v: Vec<f64> = pixels.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    };
    Some(Lab {
        l: med(|p| p.l),
        a: med(|p| p.a),
        b: med(|p| p.b),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dot(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn lab_matches_published_values() {
        // Reference values: CIE D65, sRGB (e.g. Bruce Lindbloom's calculator).
        let cases = [
            ([255, 255, 255], (100.0, 0.0, 0.0)),
            ([0, 0, 0], (0.0, 0.0, 0.0)),
            ([255, 0, 0], (53.2408, 80.0925, 67.2032)),
            ([0, 255, 0], (87.7347, -86.1827, 83.1793)),
            ([0, 0, 255], (32.2970, 79.1875, -107.8602)),
            ([128, 128, 128], (53.5850, 0.0, 0.0)),
        ];
        for (rgb, (l, a, b)) in cases {
            let lab = srgb_to_lab(rgb);
            assert!(
                (lab.l - l).abs() < 0.01 && (lab.a - a).abs() < 0.01 && (lab.b - b).abs() < 0.01,
                "{rgb:?}: {lab:?}"
            );
        }
    }

    fn flat(rgb: [u8; 3]) -> Vec<f32> {
        let img = RgbImage::from_pixel(40, 40, image::Rgb(rgb));
        crop_descriptor(&img, (0, 0, 40, 40), Selection::Central)
    }

    #[test]
    fn similarity_falls_with_colour_difference() {
        let navy = flat([28, 42, 96]);
        assert_eq!(navy.len(), DIM);
        assert!((dot(&navy, &navy) - 1.0).abs() < 1e-5);
        let royal = flat([40, 80, 190]);
        let red = flat([196, 30, 40]);
        let orange = flat([230, 110, 30]);
        let shaded_navy = flat([18, 28, 70]);
        assert!(dot(&navy, &shaded_navy) > dot(&navy, &royal));
        assert!(dot(&navy, &royal) > dot(&navy, &red));
        assert!(dot(&red, &orange) > dot(&red, &royal));
    }

    #[test]
    fn selection_picks_the_garment_pixels() {
        // A red square on white, framed by a green border that is "street".
        let mut img = RgbImage::from_pixel(64, 64, image::Rgb([255, 255, 255]));
        for (x, y, p) in img.enumerate_pixels_mut() {
            if (20..44).contains(&x) && (20..44).contains(&y) {
                *p = image::Rgb([196, 30, 40]);
            }
        }
        let red = flat([196, 30, 40]);
        let on_white = crop_descriptor(
            &img,
            (0, 0, 64, 64),
            Selection::Background {
                rgb: [255, 255, 255],
                min_delta_e: 12.0,
            },
        );
        assert!(dot(&on_white, &red) > 0.999, "{}", dot(&on_white, &red));
        let mut data = vec![0u8; 64 * 64];
        for y in 20..44 {
            for x in 20..44 {
                data[y * 64 + x] = 255;
            }
        }
        let mask = CropMask {
            width: 64,
            height: 64,
            data,
        };
        let masked = crop_descriptor(&img, (0, 0, 64, 64), Selection::Mask(&mask));
        assert!(dot(&masked, &red) > 0.999);
        // An all-white photo (a white shirt on white) falls back to its central half.
        let white = RgbImage::from_pixel(64, 64, image::Rgb([255, 255, 255]));
        let bg = Selection::Background {
            rgb: [255, 255, 255],
            min_delta_e: 12.0,
        };
        assert_eq!(garment_pixels(&white, (0, 0, 64, 64), bg).len(), 32 * 32);
        // A rect past the image is clamped, never a panic.
        assert!(!garment_pixels(&img, (60, 60, 50, 50), Selection::Central).is_empty());
        assert!(descriptor(&[]).iter().all(|x| *x == 0.0));
    }

    #[test]
    fn median_is_per_channel() {
        let px: Vec<Lab> = [10.0, 30.0, 20.0]
            .iter()
            .map(|&l| Lab { l, a: -l, b: 1.0 })
            .collect();
        let m = median_lab(&px).expect("median");
        assert_eq!((m.l, m.a, m.b), (20.0, -20.0, 1.0));
        assert!(median_lab(&[]).is_none());
    }
}
