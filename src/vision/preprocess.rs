//! Pre-processing: frame → model input tensor, and the [`ResizeRecord`] that maps the model's
//! boxes back to the frame's pixels.
//!
//! The record is made where the resize happens and travels with the detections to the very end,
//! so no later stage can normalise a box against the wrong image size (the source project's second
//! bug). The resize is Pillow's bilinear convolution, bit for bit (CONTRACTS.md §3, [`super::resize`]),
//! which is what the Python reference uses. Buffers live in the
//! [`Preprocessor`] and are reused frame after frame.

use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::geometry::{NormBox, PixelBox};
use super::resize::PillowResizer;

/// How a frame is fitted to the model's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResizeMode {
    /// The whole frame to the input size, aspect ratio not kept: what TF OD API SSDs are trained on.
    #[default]
    Stretch,
    /// Aspect ratio kept, black bars; for models trained that way.
    Letterbox,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    Nhwc,
    Nchw,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    F32,
    U8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channels {
    #[default]
    Rgb,
    Bgr,
}

/// What one image input of a model looks like; read from the model's TOML and checked against the
/// loaded graph in `build`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    pub name: String,
    pub width: u32,
    pub height: u32,
    pub layout: Layout,
    pub dtype: DType,
    #[serde(default)]
    pub channels: Channels,
    #[serde(default = "zero3")]
    pub mean: [f32; 3],
    #[serde(default = "one3")]
    pub std: [f32; 3],
}

fn zero3() -> [f32; 3] {
    [0.0; 3]
}
fn one3() -> [f32; 3] {
    [1.0; 3]
}

impl InputSpec {
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.width == 0 || self.height == 0 || self.width > 4096 || self.height > 4096 {
            out.push(format!(
                "input size {}×{} must be between 1 and 4096",
                self.width, self.height
            ));
        }
        if self.std.iter().any(|s| s.abs() <= 1e-12 || !s.is_finite())
            || self.mean.iter().any(|m| !m.is_finite())
        {
            out.push("input mean must be finite and std non-zero".to_string());
        }
        out
    }

    /// Elements of one image in the tensor.
    pub fn elements(&self) -> usize {
        self.width as usize * self.height as usize * 3
    }

    /// The tensor shape for a batch of `n`.
    pub fn shape(&self, n: usize) -> [usize; 4] {
        let (h, w) = (self.height as usize, self.width as usize);
        match self.layout {
            Layout::Nhwc => [n, h, w, 3],
            Layout::Nchw => [n, 3, h, w],
        }
    }
}

/// How a frame was fitted into the model input: everything needed to map boxes back exactly.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResizeRecord {
    /// The original frame.
    pub src_w: u32,
    pub src_h: u32,
    /// The model input.
    pub dst_w: u32,
    pub dst_h: u32,
    /// The resized content inside the input (equal to dst for stretch).
    pub content_w: u32,
    pub content_h: u32,
    /// Where the content starts inside the input (0 for stretch).
    pub pad_x: u32,
    pub pad_y: u32,
}

impl ResizeRecord {
    pub fn new(src_w: u32, src_h: u32, dst_w: u32, dst_h: u32, mode: ResizeMode) -> Self {
        match mode {
            ResizeMode::Stretch => Self {
                src_w,
                src_h,
                dst_w,
                dst_h,
                content_w: dst_w,
                content_h: dst_h,
                pad_x: 0,
                pad_y: 0,
            },
            ResizeMode::Letterbox => {
                let s = (dst_w as f64 / src_w as f64).min(dst_h as f64 / src_h as f64);
                let cw = ((src_w as f64 * s + 0.5).floor() as u32).clamp(1, dst_w);
                let ch = ((src_h as f64 * s + 0.5).floor() as u32).clamp(1, dst_h);
                Self {
                    src_w,
                    src_h,
                    dst_w,
                    dst_h,
                    content_w: cw,
                    content_h: ch,
                    pad_x: (dst_w - cw) / 2,
                    pad_y: (dst_h - ch) / 2,
                }
            }
        }
    }

    /// A model-space box to original pixels, clamped to the frame (CONTRACTS.md §3, §4.6).
    pub fn to_pixels(&self, b: NormBox) -> PixelBox {
        let fx = self.src_w as f32 / self.content_w as f32;
        let fy = self.src_h as f32 / self.content_h as f32;
        let x = |v: f32| (v * self.dst_w as f32 - self.pad_x as f32) * fx;
        let y = |v: f32| (v * self.dst_h as f32 - self.pad_y as f32) * fy;
        PixelBox {
            xmin: x(b.xmin),
            ymin: y(b.ymin),
            xmax: x(b.xmax),
            ymax: y(b.ymax),
        }
        .clamped(self.src_w, self.src_h)
    }

    /// The inverse, used by tests and by tools that plant boxes: pixels to model space.
    pub fn to_model(&self, b: PixelBox) -> NormBox {
        let fx = self.content_w as f32 / self.src_w as f32;
        let fy = self.content_h as f32 / self.src_h as f32;
        let x = |v: f32| (v * fx + self.pad_x as f32) / self.dst_w as f32;
        let y = |v: f32| (v * fy + self.pad_y as f32) / self.dst_h as f32;
        NormBox {
            ymin: y(b.ymin),
            xmin: x(b.xmin),
            ymax: y(b.ymax),
            xmax: x(b.xmax),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    #[error("empty image or crop ({0}×{1})")]
    Empty(u32, u32),
}

/// Owns the resizer and scratch buffers; one per stage thread.
#[derive(Default)]
pub struct Preprocessor {
    resizer: PillowResizer,
    resized: Vec<u8>,
    crop: Vec<u8>,
}

impl Preprocessor {
    pub fn new() -> Self {
        Self::default()
    }

    /// Resizes `src` (RGB8, `w`×`h`, tightly packed) into `self.resized` at `dst_w`×`dst_h`.
    fn resize_rgb(
        &mut self,
        src: &[u8],
        w: u32,
        h: u32,
        dst_w: u32,
        dst_h: u32,
    ) -> Result<(), PreprocessError> {
        if w == 0 || h == 0 || dst_w == 0 || dst_h == 0 {
            return Err(PreprocessError::Empty(w, h));
        }
        self.resized.resize(dst_w as usize * dst_h as usize * 3, 0);
        self.resizer
            .resize(src, w, h, &mut self.resized, dst_w, dst_h);
        Ok(())
    }

    /// Fits a whole frame into the model input and writes it into `out` (one image's slot of the
    /// batch tensor, `spec.elements()` long, f32 or u8 according to `spec.dtype`).
    pub fn frame_into(
        &mut self,
        frame: &RgbImage,
        spec: &InputSpec,
        mode: ResizeMode,
        out: TensorSlot<'_>,
    ) -> Result<ResizeRecord, PreprocessError> {
        let rec = ResizeRecord::new(frame.width(), frame.height(), spec.width, spec.height, mode);
        self.resize_rgb(
            frame.as_raw(),
            frame.width(),
            frame.height(),
            rec.content_w,
            rec.content_h,
        )?;
        write_tensor(&self.resized, &rec, spec, out);
        Ok(rec)
    }

    /// Crops `rect` (x, y, w, h) out of `frame`, stretches it to the input size and writes it.
    pub fn crop_into(
        &mut self,
        frame: &RgbImage,
        rect: (u32, u32, u32, u32),
        spec: &InputSpec,
        out: TensorSlot<'_>,
    ) -> Result<(), PreprocessError> {
        let (x, y, w, h) = rect;
        if w == 0 || h == 0 || x + w > frame.width() || y + h > frame.height() {
            return Err(PreprocessError::Empty(w, h));
        }
        // A crop is copied out first so the filter never reads pixels outside it, as Pillow's
        // `crop().resize()` does not.
        let stride = frame.width() as usize * 3;
        self.crop.clear();
        let raw = frame.as_raw();
        for row in y..y + h {
            let start = row as usize * stride + x as usize * 3;
            self.crop
                .extend_from_slice(&raw[start..start + w as usize * 3]);
        }
        let crop = std::mem::take(&mut self.crop);
        let res = self.resize_rgb(&crop, w, h, spec.width, spec.height);
        self.crop = crop;
        res?;
        let rec = ResizeRecord::new(w, h, spec.width, spec.height, ResizeMode::Stretch);
        write_tensor(&self.resized, &rec, spec, out);
        Ok(())
    }
}

/// One image's place in a batch tensor.
pub enum TensorSlot<'a> {
    F32(&'a mut [f32]),
    U8(&'a mut [u8]),
}

/// Writes resized content (content_w×content_h RGB8) into the slot with padding, channel order,
/// normalisation and layout of `spec`.
fn write_tensor(content: &[u8], rec: &ResizeRecord, spec: &InputSpec, out: TensorSlot<'_>) {
    let (w, h) = (spec.width as usize, spec.height as usize);
    let (cw, ch) = (rec.content_w as usize, rec.content_h as usize);
    let (px, py) = (rec.pad_x as usize, rec.pad_y as usize);
    let order: [usize; 3] = match spec.channels {
        Channels::Rgb => [0, 1, 2],
        Channels::Bgr => [2, 1, 0],
    };
    // `(v - mean) / std` exactly as the reference computes it, looked up per 8-bit value: a
    // multiply-add would differ by an ulp, enough to flip an int8 model's input quantization.
    let lut: [[f32; 256]; 3] = std::array::from_fn(|c| {
        std::array::from_fn(|v| (v as f32 - spec.mean[order[c]]) / spec.std[order[c]])
    });
    // Padding is a black pixel, normalised like any other.
    match out {
        TensorSlot::F32(buf) => {
            let pad: [f32; 3] = [lut[0][0], lut[1][0], lut[2][0]];
            match spec.layout {
                Layout::Nhwc => {
                    // Row by row: bars, then content through the lookup table, then bars.
                    for (yy, row) in buf[..w * h * 3].chunks_exact_mut(w * 3).enumerate() {
                        if yy < py || yy >= py + ch {
                            row.chunks_exact_mut(3)
                                .for_each(|p| p.copy_from_slice(&pad));
                            continue;
                        }
                        let (left, rest) = row.split_at_mut(px * 3);
                        let (mid, right) = rest.split_at_mut(cw * 3);
                        left.chunks_exact_mut(3)
                            .for_each(|p| p.copy_from_slice(&pad));
                        right
                            .chunks_exact_mut(3)
                            .for_each(|p| p.copy_from_slice(&pad));
                        let src = &content[(yy - py) * cw * 3..(yy - py + 1) * cw * 3];
                        for (d, s) in mid.chunks_exact_mut(3).zip(src.chunks_exact(3)) {
                            d[0] = lut[0][s[order[0]] as usize];
                            d[1] = lut[1][s[order[1]] as usize];
                            d[2] = lut[2][s[order[2]] as usize];
                        }
                    }
                }
                Layout::Nchw => {
                    let plane = w * h;
                    for c in 0..3 {
                        let dst = &mut buf[c * plane..(c + 1) * plane];
                        dst.fill(pad[c]);
                        for yy in 0..ch {
                            let row = &mut dst[(yy + py) * w + px..(yy + py) * w + px + cw];
                            let src = &content[yy * cw * 3..(yy + 1) * cw * 3];
                            for (d, s) in row.iter_mut().zip(src.chunks_exact(3)) {
                                *d = lut[c][s[order[c]] as usize];
                            }
                        }
                    }
                }
            }
        }
        TensorSlot::U8(buf) => {
            buf.fill(0);
            for yy in 0..ch {
                for xx in 0..cw {
                    let i = (yy * cw + xx) * 3;
                    for c in 0..3 {
                        let v = content[i + order[c]];
                        let (oy, ox) = (yy + py, xx + px);
                        let o = match spec.layout {
                            Layout::Nhwc => (oy * w + ox) * 3 + c,
                            Layout::Nchw => c * w * h + oy * w + ox,
                        };
                        buf[o] = v;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(w: u32, h: u32, layout: Layout) -> InputSpec {
        InputSpec {
            name: "x".into(),
            width: w,
            height: h,
            layout,
            dtype: DType::F32,
            channels: Channels::Rgb,
            mean: [127.5; 3],
            std: [127.5; 3],
        }
    }

    /// The source project's bug, as a test: a box at known pixels, in frames of several sizes and
    /// aspect ratios, must come back at the same pixels after the round trip through model space.
    #[test]
    fn boxes_map_back_to_the_same_pixels_under_stretch_and_letterbox() {
        let frames = [
            (768, 576),
            (1280, 720),
            (300, 300),
            (480, 640),
            (1920, 1080),
            (97, 403),
        ];
        for mode in [ResizeMode::Stretch, ResizeMode::Letterbox] {
            for (dst_w, dst_h) in [(300, 300), (320, 240)] {
                for &(w, h) in &frames {
                    let rec = ResizeRecord::new(w, h, dst_w, dst_h, mode);
                    let b = PixelBox {
                        xmin: w as f32 * 0.13,
                        ymin: h as f32 * 0.21,
                        xmax: w as f32 * 0.77,
                        ymax: h as f32 * 0.94,
                    };
                    let back = rec.to_pixels(rec.to_model(b));
                    for (a, e) in <[f32; 4]>::from(back).iter().zip(<[f32; 4]>::from(b)) {
                        assert!(
                            (a - e).abs() < 0.01,
                            "{mode:?} {w}×{h} → {dst_w}×{dst_h}: {back:?} vs {b:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn letterbox_record_centres_the_content() {
        let rec = ResizeRecord::new(768, 576, 300, 300, ResizeMode::Letterbox);
        assert_eq!(
            (rec.content_w, rec.content_h, rec.pad_x, rec.pad_y),
            (300, 225, 0, 37)
        );
        // The top edge of the content is y = 0 in the frame; the bar above it clamps to 0.
        let b = rec.to_pixels(NormBox {
            ymin: 37.0 / 300.0,
            xmin: 0.0,
            ymax: 1.0,
            xmax: 1.0,
        });
        assert!(b.ymin.abs() < 1e-3 && (b.ymax - 576.0).abs() < 1e-3);
    }

    /// A frame whose left half is red and right half blue, letterboxed: the planted colours must
    /// land where the record says the content is, and the bars must be normalised black.
    #[test]
    fn tensor_content_lands_where_the_record_says() {
        let mut img = RgbImage::new(400, 200);
        for (x, _, p) in img.enumerate_pixels_mut() {
            *p = if x < 200 {
                image::Rgb([255, 0, 0])
            } else {
                image::Rgb([0, 0, 255])
            };
        }
        for layout in [Layout::Nhwc, Layout::Nchw] {
            let s = spec(100, 100, layout);
            let mut buf = vec![0f32; s.elements()];
            let rec = Preprocessor::new()
                .frame_into(&img, &s, ResizeMode::Letterbox, TensorSlot::F32(&mut buf))
                .expect("resize");
            assert_eq!((rec.content_w, rec.content_h, rec.pad_y), (100, 50, 25));
            let at = |x: usize, y: usize, c: usize| match layout {
                Layout::Nhwc => buf[(y * 100 + x) * 3 + c],
                Layout::Nchw => buf[c * 10000 + y * 100 + x],
            };
            assert_eq!(at(10, 10, 0), -1.0, "bar is black");
            assert_eq!(at(10, 50, 0), 1.0, "left content red");
            assert_eq!(at(10, 50, 2), -1.0);
            assert_eq!(at(90, 50, 2), 1.0, "right content blue");
        }
    }

    #[test]
    fn crops_use_only_their_own_pixels() {
        let mut img = RgbImage::from_pixel(50, 50, image::Rgb([0, 0, 0]));
        for y in 10..20 {
            for x in 10..20 {
                img.put_pixel(x, y, image::Rgb([200, 100, 50]));
            }
        }
        let mut s = spec(8, 8, Layout::Nchw);
        s.mean = [0.0; 3];
        s.std = [1.0; 3];
        let mut buf = vec![0f32; s.elements()];
        Preprocessor::new()
            .crop_into(&img, (10, 10, 10, 10), &s, TensorSlot::F32(&mut buf))
            .expect("crop");
        assert!(
            buf[..64].iter().all(|v| (*v - 200.0).abs() < 0.5),
            "no black bleeds in from outside the crop"
        );
        assert!(buf[128..].iter().all(|v| (*v - 50.0).abs() < 0.5));
    }
}
