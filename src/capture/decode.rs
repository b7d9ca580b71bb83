//! Encoded images to RGB, strictly and within bounds: the one decoder for camera frames, replay
//! and still files, `vitrine detect` and catalog photos.
//!
//! Strict: libjpeg and the `image` crate both fill the missing rows of a cut-off image with grey
//! and report success, so a truncated frame or product photo would pass unseen. Here an image
//! is complete only when its own structure says so: a JPEG reaches its end-of-image marker after
//! its last scan, a PNG its `IEND` chunk. Bytes after those (some cameras send them) are fine.
//!
//! Bounded: the size in the header is checked before a pixel is allocated, so a small file that
//! declares a huge image is refused instead of allocating what it declares.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use image::RgbImage;

/// The most pixels decoded (10000×10000): RGB at this size is 300 MB.
pub const MAX_PIXELS: u64 = 100_000_000;

/// Decodes an encoded frame or photo. JPEG goes through libjpeg-turbo (the `mozjpeg` crate,
/// already built for nokhwa): it is the decoder the Python reference (Pillow) uses, so pixels —
/// and therefore detections — agree with the reference exactly, and its SIMD paths are the
/// fastest available. Other formats (PNG) go through the `image` crate.
pub fn decode_frame(bytes: &[u8]) -> Result<RgbImage, String> {
    check_complete(bytes)?;
    if is_jpeg(bytes) {
        return decode_jpeg(bytes);
    }
    let reader = || {
        image::ImageReader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| e.to_string())
    };
    let (w, h) = reader()?.into_dimensions().map_err(|e| e.to_string())?;
    check_size(w, h)?;
    let mut r = reader()?;
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(MAX_PIXELS * 4 + (64 << 20));
    r.limits(limits);
    r.decode().map(|i| i.into_rgb8()).map_err(|e| e.to_string())
}

/// Reads and decodes an image file with [`decode_frame`], naming the file in errors.
pub fn read_image(path: &Path) -> Result<RgbImage, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    decode_frame(&bytes).map_err(|e| format!("cannot decode image {}: {e}", path.display()))
}

fn is_jpeg(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0xFF, 0xD8])
}

fn is_png(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\x89PNG\r\n\x1a\n")
}

fn check_size(w: u32, h: u32) -> Result<(), String> {
    if w as u64 * h as u64 > MAX_PIXELS {
        return Err(format!(
            "the image is {w}×{h}, more than the {} megapixels decoded; scale it down",
            MAX_PIXELS / 1_000_000
        ));
    }
    Ok(())
}

fn truncated(what: &str) -> String {
    format!("the {what} is truncated (its data ends before the image does)")
}

/// Whether a JPEG or PNG is complete; other formats pass (the decoder judges them).
pub fn check_complete(bytes: &[u8]) -> Result<(), String> {
    if is_jpeg(bytes) {
        jpeg_complete(bytes)
    } else if is_png(bytes) {
        png_complete(bytes)
    } else {
        Ok(())
    }
}

/// Walks a JPEG's segments and scans to its end-of-image marker. Inside a scan's entropy-coded
/// data a 0xFF byte is always stuffed (FF 00) or a restart marker, so the first other marker
/// ends the scan; an EXIF thumbnail's own end marker lies inside a segment and is skipped whole.
fn jpeg_complete(b: &[u8]) -> Result<(), String> {
    let cut = || truncated("JPEG");
    let mut i = 2;
    let mut scanned = false;
    loop {
        // Bytes between segments are not ours to judge (libjpeg skips them with a warning).
        i += b
            .get(i..)
            .ok_or_else(cut)?
            .iter()
            .position(|&x| x == 0xFF)
            .ok_or_else(cut)?;
        while b.get(i) == Some(&0xFF) {
            i += 1;
        }
        let marker = *b.get(i).ok_or_else(cut)?;
        i += 1;
        match marker {
            0xD9 if scanned => return Ok(()),
            0xD9 => return Err("the JPEG ends before any image data".into()),
            0x00 | 0x01 | 0xD0..=0xD8 => continue,
            _ => {}
        }
        let len = match b.get(i..i + 2) {
            Some(l) => u16::from_be_bytes([l[0], l[1]]) as usize,
            None => return Err(cut()),
        };
        if len < 2 {
            return Err("the JPEG has a corrupt segment length".into());
        }
        i = i
            .checked_add(len)
            .filter(|e| *e <= b.len())
            .ok_or_else(cut)?;
        if marker == 0xDA {
            scanned = true;
            i = end_of_scan(b, i).ok_or_else(cut)?;
        }
    }
}

/// Where the entropy-coded data starting at `i` ends: the 0xFF of the next real marker.
fn end_of_scan(b: &[u8], mut i: usize) -> Option<usize> {
    loop {
        i += b.get(i..)?.iter().position(|&x| x == 0xFF)?;
        match *b.get(i + 1)? {
            0x00 | 0xD0..=0xD7 => i += 2,
            0xFF => i += 1,
            _ => return Some(i),
        }
    }
}

/// Walks a PNG's chunks to `IEND`.
fn png_complete(b: &[u8]) -> Result<(), String> {
    let cut = || truncated("PNG");
    let mut i = 8usize;
    loop {
        let head = b.get(i..i + 8).ok_or_else(cut)?;
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let end = i
            .checked_add(12)
            .and_then(|e| e.checked_add(len))
            .filter(|e| *e <= b.len())
            .ok_or_else(cut)?;
        if &head[4..8] == b"IEND" {
            return Ok(());
        }
        i = end;
    }
}

/// [`check_complete`] for a file, reading as little as it can: a PNG's chunk headers, a JPEG's
/// last bytes when they hold its end marker (the whole file only when they do not, for JPEGs
/// with trailers). For checks that do not decode, so validating a catalog stays cheap.
pub fn check_file_complete(path: &Path) -> Result<(), String> {
    let mut f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let len = f.metadata().map_err(|e| e.to_string())?.len();
    let mut head = [0u8; 8];
    let n = f.read(&mut head).map_err(|e| e.to_string())?;
    let head = &head[..n];
    if is_png(head) {
        return png_file_complete(&mut f, len);
    }
    if !is_jpeg(head) {
        return Ok(());
    }
    let tail = len.min(4096);
    f.seek(SeekFrom::Start(len - tail))
        .map_err(|e| e.to_string())?;
    let mut last = Vec::with_capacity(tail as usize);
    f.take(tail)
        .read_to_end(&mut last)
        .map_err(|e| e.to_string())?;
    if last.trim_ascii_end().ends_with(&[0xFF, 0xD9]) {
        return Ok(());
    }
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    jpeg_complete(&bytes)
}

fn png_file_complete(f: &mut std::fs::File, len: u64) -> Result<(), String> {
    let mut at = 8u64;
    let mut head = [0u8; 8];
    loop {
        if at + 12 > len {
            return Err(truncated("PNG"));
        }
        f.seek(SeekFrom::Start(at)).map_err(|e| e.to_string())?;
        f.read_exact(&mut head).map_err(|e| e.to_string())?;
        let n = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as u64;
        if at + 12 + n > len {
            return Err(truncated("PNG"));
        }
        if &head[4..8] == b"IEND" {
            return Ok(());
        }
        at += 12 + n;
    }
}

fn decode_jpeg(bytes: &[u8]) -> Result<RgbImage, String> {
    // libjpeg reports errors by unwinding (mozjpeg's documented contract), not by return value.
    let res = std::panic::catch_unwind(|| -> std::io::Result<Result<RgbImage, String>> {
        let d = mozjpeg::Decompress::new_mem(bytes)?;
        let (w, h) = d.size();
        if let Err(e) = check_size(w as u32, h as u32) {
            return Ok(Err(e));
        }
        let mut img = d.rgb()?;
        let (w, h) = (img.width() as u32, img.height() as u32);
        let pixels: Vec<u8> = img.read_scanlines()?;
        // Trailing bytes after the image (some cameras send them) are not an error.
        let _ = img.finish();
        Ok(RgbImage::from_raw(w, h, pixels).ok_or_else(|| "short scanlines".to_string()))
    });
    match res {
        Ok(Ok(r)) => r.map_err(|e| format!("JPEG: {e}")),
        Ok(Err(e)) => Err(format!("JPEG: {e}")),
        Err(_) => Err("JPEG: corrupt data".into()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn jpeg(w: u32, h: u32) -> Vec<u8> {
        let img = RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 7) as u8, (y * 5) as u8, 90]));
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
            .encode_image(&img)
            .expect("jpeg");
        out
    }

    pub fn png(w: u32, h: u32) -> Vec<u8> {
        let img = RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 7) as u8, (y * 5) as u8, 90]));
        let mut out = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
            .expect("png");
        out
    }

    #[test]
    fn truncated_jpegs_and_pngs_are_refused_whole_ones_decode() {
        for (what, bytes) in [("JPEG", jpeg(64, 48)), ("PNG", png(64, 48))] {
            let img = decode_frame(&bytes).expect("whole");
            assert_eq!((img.width(), img.height()), (64, 48));
            // Trailing bytes are tolerated.
            let mut trailer = bytes.clone();
            trailer.extend_from_slice(b"\0\0camera trailer");
            decode_frame(&trailer).expect("trailer");
            for cut in [bytes.len() - 2, bytes.len() * 2 / 3, bytes.len() / 2] {
                let err = decode_frame(&bytes[..cut]).expect_err(what);
                assert!(
                    err.contains(&format!("{what} is truncated")),
                    "{what} at {cut}: {err}"
                );
            }
        }
    }

    #[test]
    fn file_checks_agree_with_the_in_memory_ones() {
        let dir = tempfile::tempdir().expect("tmp");
        for (name, bytes) in [("a.jpg", jpeg(40, 30)), ("a.png", png(40, 30))] {
            let p = dir.path().join(name);
            std::fs::write(&p, &bytes).expect("w");
            check_file_complete(&p).expect(name);
            std::fs::write(&p, &bytes[..bytes.len() * 3 / 4]).expect("w");
            let err = check_file_complete(&p).expect_err(name);
            assert!(err.contains("truncated"), "{name}: {err}");
        }
    }

    #[test]
    fn a_header_declaring_a_huge_image_is_refused_before_decoding() {
        // A PNG header claiming 60000×60000 over a few bytes of data.
        let mut bytes = png(8, 8);
        bytes[16..20].copy_from_slice(&60000u32.to_be_bytes());
        bytes[20..24].copy_from_slice(&60000u32.to_be_bytes());
        let mut crc = flate2::Crc::new();
        crc.update(&bytes[12..29]);
        bytes[29..33].copy_from_slice(&crc.sum().to_be_bytes());
        let (res, largest) = crate::test_alloc::largest_during(|| decode_frame(&bytes));
        let err = res.expect_err("huge");
        assert!(
            err.contains("60000×60000") && err.contains("megapixels"),
            "{err}"
        );
        assert!(largest < 64 << 20, "allocated {largest} bytes");
    }
}
