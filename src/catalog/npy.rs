//! The small part of NumPy's `.npy` format a catalog needs: a 2-D little-endian float32 matrix in
//! C order, as `np.save("embeddings.npy", x.astype(np.float32))` writes it.
//!
//! Written by hand rather than with a crate because the format is a dozen lines and the errors
//! must say exactly what was wrong with the staff's file (dtype, order, shape) and how to fix it.

use std::io::{Read, Write};

const MAGIC: &[u8] = b"\x93NUMPY";

/// Reads a `[rows, cols]` float32 matrix; the error is one sentence naming the fix.
pub fn read_f32_matrix(mut r: impl Read) -> Result<(usize, usize, Vec<f32>), String> {
    let mut head = [0u8; 8];
    r.read_exact(&mut head)
        .map_err(|e| format!("not an .npy file (too short: {e})"))?;
    if &head[..6] != MAGIC {
        return Err("not an .npy file (no \\x93NUMPY magic); write it with numpy.save".into());
    }
    let header_len = match head[6] {
        1 => {
            let mut b = [0u8; 2];
            r.read_exact(&mut b)
                .map_err(|e| format!("truncated header: {e}"))?;
            u16::from_le_bytes(b) as usize
        }
        2 | 3 => {
            let mut b = [0u8; 4];
            r.read_exact(&mut b)
                .map_err(|e| format!("truncated header: {e}"))?;
            u32::from_le_bytes(b) as usize
        }
        v => return Err(format!("unsupported .npy format version {v}")),
    };
    if header_len > 1 << 16 {
        return Err(format!("header of {header_len} bytes is implausibly large"));
    }
    let mut header = vec![0u8; header_len];
    r.read_exact(&mut header)
        .map_err(|e| format!("truncated header: {e}"))?;
    let header = String::from_utf8_lossy(&header);
    let field = |name: &str| -> Option<String> {
        let at = header.find(&format!("'{name}'"))?;
        let rest = header[at + name.len() + 2..]
            .trim_start()
            .strip_prefix(':')?;
        Some(rest.trim_start().to_string())
    };
    let descr = field("descr").ok_or("header has no 'descr'")?;
    if !(descr.starts_with("'<f4'") || descr.starts_with("'=f4'")) {
        let d = descr.split(',').next().unwrap_or("").trim();
        return Err(format!(
            "dtype is {d}, not little-endian float32 ('<f4'); save it with x.astype(numpy.float32)"
        ));
    }
    let order = field("fortran_order").ok_or("header has no 'fortran_order'")?;
    if !order.starts_with("False") {
        return Err("matrix is in Fortran order; save numpy.ascontiguousarray(x)".into());
    }
    let shape = field("shape").ok_or("header has no 'shape'")?;
    let inner = shape
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or("cannot read 'shape'")?;
    let dims: Vec<usize> = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| format!("bad shape ({inner})"))
        })
        .collect::<Result<_, _>>()?;
    let [rows, cols] = dims[..] else {
        return Err(format!(
            "shape is ({inner}) but a 2-D matrix [items, dim] is needed"
        ));
    };
    let n = rows
        .checked_mul(cols)
        .filter(|n| *n <= 1 << 31)
        .ok_or_else(|| format!("shape ({inner}) is too large"))?;
    let mut bytes = vec![0u8; n * 4];
    r.read_exact(&mut bytes).map_err(|_| {
        format!("the file is shorter than its shape ({rows}, {cols}) says: truncated")
    })?;
    let data = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok((rows, cols, data))
}

/// Writes a `[rows, cols]` float32 matrix (format version 1, header padded to 64 bytes).
pub fn write_f32_matrix(mut w: impl Write, cols: usize, data: &[f32]) -> std::io::Result<()> {
    let rows = data.len().checked_div(cols).unwrap_or(0);
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    let unpadded = MAGIC.len() + 2 + 2 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    w.write_all(MAGIC)?;
    w.write_all(&[1, 0])?;
    w.write_all(&(header.len() as u16).to_le_bytes())?;
    w.write_all(header.as_bytes())?;
    let mut buf = Vec::with_capacity(data.len() * 4);
    for x in data {
        buf.extend_from_slice(&x.to_le_bytes());
    }
    w.write_all(&buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_precise_errors() {
        let mut buf = Vec::new();
        write_f32_matrix(&mut buf, 3, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).expect("write");
        assert_eq!((buf.len() - 24) % 64, 0, "header is padded to 64 bytes");
        let (r, c, d) = read_f32_matrix(&buf[..]).expect("read");
        assert_eq!((r, c, d[5]), (2, 3, 6.0));
        let err = read_f32_matrix(&buf[..buf.len() - 2]).expect_err("truncated");
        assert!(err.contains("truncated"), "{err}");
        let mut f8 = buf.clone();
        let at = f8.windows(3).position(|w| w == b"<f4").expect("descr");
        f8[at + 2] = b'8';
        let err = read_f32_matrix(&f8[..]).expect_err("f8");
        assert!(err.contains("astype(numpy.float32)"), "{err}");
        let err = read_f32_matrix(&b"hello world"[..]).expect_err("magic");
        assert!(err.contains("not an .npy"), "{err}");
    }
}
