//! What the embedder (and the colour descriptor) gets for one garment: its rectangle of the frame
//! and, when a pose model ran, which of those pixels are the shopper.
//!
//! The catalog photos are garments on white; a crop of a shopper also holds the shelf, the floor
//! and other people. Replacing the pixels that are not the shopper by the catalog's background
//! before embedding makes the two look alike ([`masked_crop`]). The mask is cut per garment from
//! the pose model's person mask ([`super::pose::PersonMask::crop_mask`]); its share of shopper
//! pixels ([`CropMask::share`]) tells how much of the crop is garment at all.

use image::RgbImage;

/// Which pixels of a garment rectangle are the shopper; same size as the rectangle,
/// row-major, 255 = shopper, 0 = not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CropMask {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

impl CropMask {
    /// The share of the rectangle that is shopper (pixels above 127), 0 for an empty mask.
    pub fn share(&self) -> f32 {
        if self.data.is_empty() {
            return 0.0;
        }
        let on = self.data.iter().filter(|&&v| v > 127).count();
        on as f32 / self.data.len() as f32
    }
}

/// One garment as handed to the embedder and the colour stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GarmentCrop {
    /// `(x, y, w, h)` in frame pixels, inside the frame.
    pub rect: (u32, u32, u32, u32),
    /// `None` without a pose model: the whole rectangle counts.
    pub mask: Option<CropMask>,
}

impl GarmentCrop {
    pub fn unmasked(rect: (u32, u32, u32, u32)) -> Self {
        Self { rect, mask: None }
    }

    /// The share of the crop that is garment: the mask's share, or 1 without a mask.
    pub fn garment_share(&self) -> f32 {
        self.mask.as_ref().map_or(1.0, CropMask::share)
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GarmentError {
    #[error("garment rectangle {rect:?} is empty or leaves the {width}×{height} frame")]
    OutsideFrame {
        rect: (u32, u32, u32, u32),
        width: u32,
        height: u32,
    },
    #[error("garment mask is {mask_w}×{mask_h} ({len} bytes) but its rectangle is {w}×{h}")]
    MaskSize {
        mask_w: u32,
        mask_h: u32,
        len: usize,
        w: u32,
        h: u32,
    },
}

/// The crop's pixels, with every pixel the mask says is not the shopper (≤ 127) replaced by
/// `background`. Without a mask, the plain crop.
pub fn masked_crop(
    frame: &RgbImage,
    crop: &GarmentCrop,
    background: [u8; 3],
) -> Result<RgbImage, GarmentError> {
    let (x, y, w, h) = crop.rect;
    let inside = w > 0
        && h > 0
        && x.checked_add(w).is_some_and(|r| r <= frame.width())
        && y.checked_add(h).is_some_and(|b| b <= frame.height());
    if !inside {
        return Err(GarmentError::OutsideFrame {
            rect: crop.rect,
            width: frame.width(),
            height: frame.height(),
        });
    }
    if let Some(m) = &crop.mask
        && (m.width != w || m.height != h || m.data.len() != w as usize * h as usize)
    {
        return Err(GarmentError::MaskSize {
            mask_w: m.width,
            mask_h: m.height,
            len: m.data.len(),
            w,
            h,
        });
    }
    let stride = frame.width() as usize * 3;
    let raw = frame.as_raw();
    let mut out = Vec::with_capacity(w as usize * h as usize * 3);
    for row in 0..h as usize {
        let start = (y as usize + row) * stride + x as usize * 3;
        let src = &raw[start..start + w as usize * 3];
        match &crop.mask {
            None => out.extend_from_slice(src),
            Some(m) => {
                let mrow = &m.data[row * w as usize..(row + 1) * w as usize];
                for (px, &keep) in src.chunks_exact(3).zip(mrow) {
                    out.extend_from_slice(if keep > 127 { px } else { &background });
                }
            }
        }
    }
    RgbImage::from_raw(w, h, out).ok_or(GarmentError::OutsideFrame {
        rect: crop.rect,
        width: frame.width(),
        height: frame.height(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame() -> RgbImage {
        RgbImage::from_fn(4, 3, |x, y| image::Rgb([x as u8 * 10, y as u8 * 10, 7]))
    }

    #[test]
    fn pixels_off_the_shopper_become_the_background() {
        let crop = GarmentCrop {
            rect: (1, 1, 2, 2),
            mask: Some(CropMask {
                width: 2,
                height: 2,
                data: vec![255, 0, 128, 127],
            }),
        };
        let img = masked_crop(&frame(), &crop, [255, 255, 255]).expect("inside");
        assert_eq!(img.get_pixel(0, 0).0, [10, 10, 7]);
        assert_eq!(img.get_pixel(1, 0).0, [255, 255, 255]);
        assert_eq!(img.get_pixel(0, 1).0, [10, 20, 7]);
        assert_eq!(img.get_pixel(1, 1).0, [255, 255, 255]);
        assert!((crop.garment_share() - 0.5).abs() < 1e-6);
        let plain =
            masked_crop(&frame(), &GarmentCrop::unmasked((0, 0, 4, 3)), [0; 3]).expect("inside");
        assert_eq!(plain, frame());
    }

    #[test]
    fn bad_rectangles_and_masks_are_refused() {
        let f = frame();
        let out = masked_crop(&f, &GarmentCrop::unmasked((3, 0, 2, 1)), [0; 3]);
        assert!(matches!(out, Err(GarmentError::OutsideFrame { .. })));
        let crop = GarmentCrop {
            rect: (0, 0, 2, 2),
            mask: Some(CropMask {
                width: 2,
                height: 2,
                data: vec![255; 3],
            }),
        };
        assert!(matches!(
            masked_crop(&f, &crop, [0; 3]),
            Err(GarmentError::MaskSize { len: 3, .. })
        ));
        assert_eq!(GarmentCrop::unmasked((0, 0, 1, 1)).garment_share(), 1.0);
    }
}
