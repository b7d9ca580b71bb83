//! `vitrine dataset paste-catalog`: retrieval pairs made from the catalog itself, to check that
//! the embedder still finds an item once it is out of its studio photo — scaled, rotated, lit
//! differently and standing in front of a street instead of a white background.
//!
//! Each catalog photo's foreground (pixels not within `tolerance` of the background colour, the
//! same rule the relevance evaluation uses) gets a brightness, contrast and colour-temperature
//! change, is scaled and rotated, and is pasted with bilinear sampling onto a random crop of a
//! random background image. The query's pair names the item, its group, and the pasted
//! foreground's box, so `vitrine eval retrieval --pairs` crops it as the pipeline would crop a
//! garment region. Everything is drawn from a seeded generator, one stream per query, so the same
//! seed gives the same files whatever the thread count or item order.
//!
//! The default backgrounds are the demo frames: a campus path and lawn whose people are small
//! next to a crop, so a crop rarely holds more than a fragment of one.

use std::io::Write;
use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage, imageops};
use serde::Serialize;

use super::EvalError;
use super::formats::RetrievalPair;
use crate::catalog::Item;
use crate::vision::geometry::PixelBox;

/// Side of every query image.
pub const CANVAS: u32 = 256;

#[derive(Debug, Clone)]
pub struct PasteOptions {
    /// Catalog folder: items.jsonl and the photos it names.
    pub catalog: PathBuf,
    /// Folder of background images.
    pub backgrounds: PathBuf,
    pub out: PathBuf,
    pub per_item: usize,
    pub seed: u64,
    pub background: [u8; 3],
    pub tolerance: u8,
}

#[derive(Debug, Clone, Serialize)]
pub struct PasteSummary {
    pub queries: usize,
    pub items: usize,
    pub pairs: PathBuf,
}

/// SplitMix64: tiny, seedable, good enough to draw augmentation parameters.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [lo, hi).
    fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next() >> 40) as f32 / (1u64 << 24) as f32)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// How one query is made.
#[derive(Debug, Clone, Copy)]
struct Look {
    brightness: f32,
    contrast: f32,
    /// −1 = cool (bluish), +1 = warm (reddish).
    temperature: f32,
    /// The item photo's side as a share of the canvas side.
    scale: f32,
    degrees: f32,
    /// Where the item's centre goes, as a share of the canvas.
    centre: (f32, f32),
}

impl Look {
    fn draw(rng: &mut Rng) -> Self {
        Self {
            brightness: rng.range(0.7, 1.3),
            contrast: rng.range(0.7, 1.3),
            temperature: rng.range(-1.0, 1.0),
            scale: rng.range(0.55, 0.9),
            degrees: rng.range(-15.0, 15.0),
            centre: (rng.range(0.4, 0.6), rng.range(0.4, 0.6)),
        }
    }

    fn relight(&self, p: [u8; 3]) -> [f32; 3] {
        let gain = [
            1.0 + 0.12 * self.temperature,
            1.0,
            1.0 - 0.12 * self.temperature,
        ];
        std::array::from_fn(|c| {
            let v = (p[c] as f32 - 128.0) * self.contrast + 128.0;
            (v * self.brightness * gain[c]).clamp(0.0, 255.0)
        })
    }
}

/// Bilinear sample of `img` (and of the foreground mask) at continuous pixel coordinates.
fn sample(img: &RgbImage, fg: &[bool], u: f32, v: f32) -> Option<([f32; 3], f32)> {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let (x0, y0) = ((u - 0.5).floor(), (v - 0.5).floor());
    let (fx, fy) = (u - 0.5 - x0, v - 0.5 - y0);
    let (x0, y0) = (x0 as i64, y0 as i64);
    if x0 < -1 || y0 < -1 || x0 >= w || y0 >= h {
        return None;
    }
    let mut rgb = [0.0; 3];
    let mut alpha = 0.0;
    for (dx, dy, wt) in [
        (0, 0, (1.0 - fx) * (1.0 - fy)),
        (1, 0, fx * (1.0 - fy)),
        (0, 1, (1.0 - fx) * fy),
        (1, 1, fx * fy),
    ] {
        let (x, y) = (x0 + dx, y0 + dy);
        if x < 0 || y < 0 || x >= w || y >= h || !fg[(y * w + x) as usize] {
            continue;
        }
        let p = img.get_pixel(x as u32, y as u32).0;
        for (acc, v) in rgb.iter_mut().zip(p) {
            *acc += wt * v as f32;
        }
        alpha += wt;
    }
    (alpha > 0.0).then(|| (rgb.map(|c| c / alpha), alpha))
}

/// Pastes `item` onto `canvas` as `look` says; returns the pasted foreground's box.
fn paste(canvas: &mut RgbImage, item: &RgbImage, fg: &[bool], look: &Look) -> Option<PixelBox> {
    let side = CANVAS as f32 * look.scale;
    let s = side / item.width().max(item.height()) as f32;
    let (sin, cos) = look.degrees.to_radians().sin_cos();
    let (cx, cy) = (look.centre.0 * CANVAS as f32, look.centre.1 * CANVAS as f32);
    let (ix, iy) = (item.width() as f32 / 2.0, item.height() as f32 / 2.0);
    let mut bbox: Option<PixelBox> = None;
    for y in 0..canvas.height() {
        for x in 0..canvas.width() {
            let (dx, dy) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
            // Inverse of rotate-then-scale: from the canvas back into the item photo.
            let u = (cos * dx + sin * dy) / s + ix;
            let v = (-sin * dx + cos * dy) / s + iy;
            let Some((rgb, alpha)) = sample(item, fg, u, v) else {
                continue;
            };
            let lit = look.relight(rgb.map(|c| c.round() as u8));
            let bg = canvas.get_pixel(x, y).0;
            let out: [u8; 3] = std::array::from_fn(|c| {
                (alpha * lit[c] + (1.0 - alpha) * bg[c] as f32).round() as u8
            });
            canvas.put_pixel(x, y, Rgb(out));
            if alpha >= 0.5 {
                let (fx, fy) = (x as f32, y as f32);
                let b = bbox.get_or_insert(PixelBox {
                    xmin: fx,
                    ymin: fy,
                    xmax: fx + 1.0,
                    ymax: fy + 1.0,
                });
                b.xmin = b.xmin.min(fx);
                b.ymin = b.ymin.min(fy);
                b.xmax = b.xmax.max(fx + 1.0);
                b.ymax = b.ymax.max(fy + 1.0);
            }
        }
    }
    bbox
}

/// A random square crop of a random background, resized to the canvas.
fn background_crop(backgrounds: &[RgbImage], rng: &mut Rng) -> RgbImage {
    let bg = &backgrounds[rng.below(backgrounds.len())];
    let short = bg.width().min(bg.height());
    let side = (rng.range(0.35, 0.7) * short as f32).max(1.0) as u32;
    let x = rng.below((bg.width() - side + 1) as usize) as u32;
    let y = rng.below((bg.height() - side + 1) as usize) as u32;
    let crop = imageops::crop_imm(bg, x, y, side, side).to_image();
    imageops::resize(&crop, CANVAS, CANVAS, imageops::FilterType::Triangle)
}

fn read_items(catalog: &Path) -> Result<Vec<Item>, EvalError> {
    let path = catalog.join("items.jsonl");
    let text = std::fs::read_to_string(&path).map_err(|reason| EvalError::Read {
        path: path.clone(),
        reason,
    })?;
    let mut items = Vec::new();
    let mut problems = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Item>(line) {
            Ok(it) => items.push(it),
            Err(e) => problems.push(format!("line {}: {e}", n + 1)),
        }
    }
    if !problems.is_empty() {
        return Err(EvalError::Invalid { path, problems });
    }
    Ok(items)
}

fn read(path: &Path) -> Result<RgbImage, EvalError> {
    crate::capture::replay::read_image(path).map_err(|message| EvalError::Image {
        path: path.into(),
        message,
    })
}

/// Writes `per_item` queries per catalog item under `out/images/` and their pairs to
/// `out/pairs.jsonl`.
pub fn generate(opts: &PasteOptions) -> Result<PasteSummary, EvalError> {
    if opts.per_item == 0 {
        return Err(EvalError::Usage("--per-item must be at least 1".into()));
    }
    let items = read_items(&opts.catalog)?;
    let bg_files = crate::capture::replay::list_frames(&opts.backgrounds).map_err(|reason| {
        EvalError::Read {
            path: opts.backgrounds.clone(),
            reason,
        }
    })?;
    if bg_files.is_empty() {
        return Err(EvalError::Usage(format!(
            "{} holds no background images (.jpg, .png)",
            opts.backgrounds.display()
        )));
    }
    let backgrounds = bg_files
        .iter()
        .map(PathBuf::as_path)
        .map(read)
        .collect::<Result<Vec<_>, _>>()?;
    let images = opts.out.join("images");
    std::fs::create_dir_all(&images).map_err(|reason| EvalError::Write {
        path: images.clone(),
        reason,
    })?;
    let mut pairs = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let photo = read(&opts.catalog.join(&item.image))?;
        let fg: Vec<bool> = photo
            .pixels()
            .map(|p| {
                p.0.iter()
                    .zip(opts.background)
                    .any(|(c, b)| c.abs_diff(b) > opts.tolerance)
            })
            .collect();
        for k in 0..opts.per_item {
            let stream = ((i as u64) << 20) | k as u64;
            let mut rng = Rng(opts.seed ^ stream.wrapping_mul(0xA24B_AED4_963E_E407));
            let mut canvas = background_crop(&backgrounds, &mut rng);
            let look = Look::draw(&mut rng);
            let Some(bbox) = paste(&mut canvas, &photo, &fg, &look) else {
                continue;
            };
            let name = format!("{}_{k}.jpg", safe_name(&item.id));
            let path = images.join(&name);
            canvas.save(&path).map_err(|e| EvalError::Write {
                path: path.clone(),
                reason: std::io::Error::other(e.to_string()),
            })?;
            pairs.push(RetrievalPair {
                query: format!("images/{name}"),
                item: item.id.clone(),
                bbox: Some(bbox),
                group: Some(item.group.clone()),
            });
        }
    }
    let pairs_path = opts.out.join("pairs.jsonl");
    write_pairs(&pairs_path, &pairs)?;
    Ok(PasteSummary {
        queries: pairs.len(),
        items: items.len(),
        pairs: pairs_path,
    })
}

/// An item id as a file name: anything but letters, digits, '-' and '_' becomes '_'.
fn safe_name(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn write_pairs(path: &Path, pairs: &[RetrievalPair]) -> Result<(), EvalError> {
    let werr = |reason| EvalError::Write {
        path: path.into(),
        reason,
    };
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).map_err(werr)?);
    for p in pairs {
        let line = serde_json::to_string(p).map_err(|e| EvalError::Usage(e.to_string()))?;
        writeln!(f, "{line}").map_err(werr)?;
    }
    f.flush().map_err(werr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generator_is_seeded_and_spread() {
        let draw = |seed| {
            let mut r = Rng(seed);
            (0..1000).map(|_| r.range(0.0, 1.0)).collect::<Vec<f32>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        let v = draw(7);
        assert!(v.iter().all(|x| (0.0..1.0).contains(x)));
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        assert!((mean - 0.5).abs() < 0.05, "mean {mean}");
    }

    #[test]
    fn pasting_keeps_the_background_outside_the_item_and_boxes_the_item() {
        // A 20×20 item: a red 10×10 square on white; only the square is foreground.
        let mut item = RgbImage::from_pixel(20, 20, Rgb([255, 255, 255]));
        for y in 5..15 {
            for x in 5..15 {
                item.put_pixel(x, y, Rgb([200, 0, 0]));
            }
        }
        let fg: Vec<bool> = item.pixels().map(|p| p.0 != [255, 255, 255]).collect();
        let mut canvas = RgbImage::from_pixel(CANVAS, CANVAS, Rgb([0, 90, 0]));
        let look = Look {
            brightness: 1.0,
            contrast: 1.0,
            temperature: 0.0,
            scale: 0.5,
            degrees: 0.0,
            centre: (0.5, 0.5),
        };
        let b = paste(&mut canvas, &item, &fg, &look).unwrap();
        // 20 px item → 128 px: the square covers the middle 64 px, 96..160.
        for v in [b.xmin, b.ymin] {
            assert!((v - 96.0).abs() <= 1.0, "{b:?}");
        }
        for v in [b.xmax, b.ymax] {
            assert!((v - 160.0).abs() <= 1.0, "{b:?}");
        }
        assert_eq!(canvas.get_pixel(128, 128).0, [200, 0, 0]);
        // The item's white background was not pasted.
        assert_eq!(canvas.get_pixel(70, 70).0, [0, 90, 0]);
        // Warm light raises red and lowers blue.
        let warm = Look {
            temperature: 1.0,
            ..look
        };
        let lit = warm.relight([100, 100, 100]);
        assert!(lit[0] > 100.0 && lit[2] < 100.0 && lit[1] == 100.0);
    }
}
