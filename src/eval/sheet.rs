//! The relevance contact sheet: one row per garment — its crop, its mask (when the pipeline gave
//! one), its median colour, then the items shown, each with its median colour and its ΔE to the
//! garment written underneath in a tiny bitmap font (the `image` crate has no text).
//!
//! The sheet's size follows from its row count and the list length alone ([`sheet_size`]), so a
//! test can check a written sheet without decoding what is drawn on it.

use image::{Rgb, RgbImage, imageops};

/// Side of every thumbnail, pixels.
pub const THUMB: u32 = 96;
/// Width of the garment's colour swatch.
pub const SWATCH: u32 = 24;
/// Height of the label strip under each thumbnail.
pub const LABEL: u32 = 14;
pub const GAP: u32 = 4;
const BACKDROP: Rgb<u8> = Rgb([48, 48, 48]);
const INK: Rgb<u8> = Rgb([240, 240, 240]);

/// One row: the garment and the items shown for it.
pub struct SheetRow {
    pub crop: RgbImage,
    /// Grey-level mask of the crop (255 = garment), when the pipeline provided one.
    pub mask: Option<image::GrayImage>,
    pub colour: [u8; 3],
    /// Each item's photo, its median colour, and ΔE to the garment.
    pub items: Vec<(RgbImage, [u8; 3], f32)>,
}

/// `(width, height)` of a sheet with `rows` rows of up to `k` items.
pub fn sheet_size(rows: usize, k: usize) -> (u32, u32) {
    let width = GAP + 2 * (THUMB + GAP) + SWATCH + GAP + k as u32 * (THUMB + GAP);
    let height = GAP + rows as u32 * (THUMB + LABEL + GAP);
    (width, height.max(GAP + 1))
}

/// Draws the sheet; rows with more than `k` items are cut at `k`.
pub fn render(rows: &[SheetRow], k: usize) -> RgbImage {
    let (w, h) = sheet_size(rows.len(), k);
    let mut sheet = RgbImage::from_pixel(w, h, BACKDROP);
    for (r, row) in rows.iter().enumerate() {
        let y = GAP + r as u32 * (THUMB + LABEL + GAP);
        let mut x = GAP;
        paste_fit(&mut sheet, &row.crop, x, y);
        x += THUMB + GAP;
        if let Some(m) = &row.mask {
            let rgb = image::DynamicImage::ImageLuma8(m.clone()).into_rgb8();
            paste_fit(&mut sheet, &rgb, x, y);
        }
        x += THUMB + GAP;
        fill(&mut sheet, x, y, SWATCH, THUMB, Rgb(row.colour));
        x += SWATCH + GAP;
        for (photo, colour, de) in row.items.iter().take(k) {
            paste_fit(&mut sheet, photo, x, y);
            fill(&mut sheet, x, y + THUMB + 2, 10, LABEL - 4, Rgb(*colour));
            draw_number(&mut sheet, x + 14, y + THUMB + 2, *de);
            x += THUMB + GAP;
        }
    }
    sheet
}

fn fill(img: &mut RgbImage, x: u32, y: u32, w: u32, h: u32, c: Rgb<u8>) {
    for yy in y..(y + h).min(img.height()) {
        for xx in x..(x + w).min(img.width()) {
            img.put_pixel(xx, yy, c);
        }
    }
}

/// Scales `src` to fit a THUMB square (aspect kept) and centres it there.
fn paste_fit(dst: &mut RgbImage, src: &RgbImage, x: u32, y: u32) {
    if src.width() == 0 || src.height() == 0 {
        return;
    }
    let s = THUMB as f32 / src.width().max(src.height()) as f32;
    let (tw, th) = (
        ((src.width() as f32 * s).round() as u32).clamp(1, THUMB),
        ((src.height() as f32 * s).round() as u32).clamp(1, THUMB),
    );
    let small = imageops::resize(src, tw, th, imageops::FilterType::Triangle);
    imageops::replace(
        dst,
        &small,
        (x + (THUMB - tw) / 2) as i64,
        (y + (THUMB - th) / 2) as i64,
    );
}

/// 3×5 glyphs for 0–9 and '.', one row of three bits per entry, top row first.
const GLYPHS: [[u8; 5]; 11] = [
    [7, 5, 5, 5, 7],
    [2, 6, 2, 2, 7],
    [7, 1, 7, 4, 7],
    [7, 1, 7, 1, 7],
    [5, 5, 7, 1, 1],
    [7, 4, 7, 1, 7],
    [7, 4, 7, 5, 7],
    [7, 1, 1, 1, 1],
    [7, 5, 7, 5, 7],
    [7, 5, 7, 1, 7],
    [0, 0, 0, 0, 2],
];

/// Writes `v` with one decimal, glyphs drawn at twice their size.
fn draw_number(img: &mut RgbImage, x: u32, y: u32, v: f32) {
    let text = format!("{:.1}", v.clamp(0.0, 999.9));
    let mut cx = x;
    for ch in text.chars() {
        let g = match ch {
            '0'..='9' => GLYPHS[ch as usize - '0' as usize],
            _ => GLYPHS[10],
        };
        for (row, bits) in g.iter().enumerate() {
            for col in 0..3u32 {
                if bits & (4 >> col) != 0 {
                    fill(img, cx + col * 2, y + row as u32 * 2, 2, 2, INK);
                }
            }
        }
        cx += 8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sheet_has_the_announced_size_and_draws_each_part() {
        let red = RgbImage::from_pixel(40, 80, Rgb([220, 20, 20]));
        let blue = RgbImage::from_pixel(50, 50, Rgb([20, 20, 220]));
        let rows = vec![
            SheetRow {
                crop: red.clone(),
                mask: None,
                colour: [220, 20, 20],
                items: vec![(blue.clone(), [20, 20, 220], 12.5); 3],
            },
            SheetRow {
                crop: red,
                mask: Some(image::GrayImage::from_pixel(40, 80, image::Luma([255]))),
                colour: [1, 2, 3],
                items: vec![(blue, [20, 20, 220], 3.0); 8],
            },
        ];
        let img = render(&rows, 6);
        assert_eq!(img.dimensions(), sheet_size(2, 6));
        // The crop's centre, the mask's centre on row 2 (white) and not on row 1 (backdrop).
        assert_eq!(
            img.get_pixel(GAP + THUMB / 2, GAP + THUMB / 2).0,
            [220, 20, 20]
        );
        let mask_x = GAP + THUMB + GAP + THUMB / 2;
        assert_eq!(img.get_pixel(mask_x, GAP + THUMB / 2), &BACKDROP);
        let row2 = GAP + THUMB + LABEL + GAP;
        assert_eq!(img.get_pixel(mask_x, row2 + THUMB / 2).0, [255, 255, 255]);
        // Some ink in the label strip of the first item.
        let item_x = GAP + 2 * (THUMB + GAP) + SWATCH + GAP;
        let inked = (item_x + 14..item_x + 60)
            .flat_map(|x| (GAP + THUMB + 2..GAP + THUMB + 12).map(move |y| (x, y)))
            .any(|(x, y)| img.get_pixel(x, y) == &INK);
        assert!(inked);
    }
}
