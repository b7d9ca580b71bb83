//! The small part of NumPy's `.npy` format a catalog needs: a 2-D little-endian float32 matrix in
//! C order, as `np.save("embeddings.npy", x.astype(np.float32))` writes it.
//!
//! Written by hand rather than with a crate (issue 12 suggested `npyz`): the format is a dozen
//! lines, the errors must say exactly what was wrong with the staff's file (dtype, order, shape)
//! and how to fix it, and the reader must never trust the header's shape with memory. The header
//! is read first ([`read_header`]) so a caller checks the shape against what it expects (item
//! count, embedder size) and against the file's length before anything is allocated; the body is
//! then read in bounded chunks, so even a caller that knows neither allocates no more than the
//! bytes that actually arrived.

use std::io::{Read, Write};

const MAGIC: &[u8] = b"\x93NUMPY";

/// Bytes read per step of the body: the most allocated ahead of data that has arrived.
const CHUNK: usize = 1 << 20;

/// A parsed header: the matrix shape, and how many bytes the header took (magic included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub rows: usize,
    pub cols: usize,
    pub header_bytes: u64,
}

impl Header {
    /// Bytes the body must hold; `None` when the shape overflows.
    pub fn body_bytes(&self) -> Option<u64> {
        (self.rows as u64)
            .checked_mul(self.cols as u64)?
            .checked_mul(4)
    }

    /// Checks the declared body against the `file_len` actually there: a header that claims more
    /// than the file holds is refused before a byte is allocated for it.
    pub fn check_file_len(&self, file_len: u64) -> Result<(), String> {
        let (rows, cols) = (self.rows, self.cols);
        let need = self
            .body_bytes()
            .ok_or_else(|| format!("shape ({rows}, {cols}) is too large"))?;
        let have = file_len.saturating_sub(self.header_bytes);
        if have < need {
            return Err(format!(
                "the file is shorter than its shape ({rows}, {cols}) says ({have} bytes of data, {need} needed): truncated"
            ));
        }
        if have > need {
            return Err(format!(
                "the file has {} bytes after the ({rows}, {cols}) matrix its header declares; write it with numpy.save",
                have - need
            ));
        }
        Ok(())
    }
}

/// Reads and checks the header; the error is one sentence naming the fix.
pub fn read_header(r: &mut impl Read) -> Result<Header, String> {
    let mut head = [0u8; 8];
    r.read_exact(&mut head)
        .map_err(|e| format!("not an .npy file (too short: {e})"))?;
    if &head[..6] != MAGIC {
        return Err("not an .npy file (no \\x93NUMPY magic); write it with numpy.save".into());
    }
    let (header_len, prefix) = match head[6] {
        1 => {
            let mut b = [0u8; 2];
            r.read_exact(&mut b)
                .map_err(|e| format!("truncated header: {e}"))?;
            (u16::from_le_bytes(b) as usize, 10)
        }
        2 | 3 => {
            let mut b = [0u8; 4];
            r.read_exact(&mut b)
                .map_err(|e| format!("truncated header: {e}"))?;
            (u32::from_le_bytes(b) as usize, 12)
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
    let (rows, cols) = parse_dict(&header)?;
    Ok(Header {
        rows,
        cols,
        header_bytes: (prefix + header_len) as u64,
    })
}

/// The header's Python dict: dtype, order and a 2-D shape.
fn parse_dict(header: &str) -> Result<(usize, usize), String> {
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
    Ok((rows, cols))
}

/// Reads the body `h` declares. Memory grows with the data that arrives (at most [`CHUNK`]
/// ahead of it), never with the header's claim alone.
pub fn read_body(r: &mut impl Read, h: &Header) -> Result<Vec<f32>, String> {
    let (rows, cols) = (h.rows, h.cols);
    let need = h
        .body_bytes()
        .filter(|n| *n <= 1 << 33)
        .ok_or_else(|| format!("shape ({rows}, {cols}) is too large"))? as usize;
    let mut data: Vec<f32> = Vec::new();
    let mut buf = vec![0u8; CHUNK.min(need)];
    let mut got = 0usize;
    while got < need {
        let want = (need - got).min(buf.len());
        r.read_exact(&mut buf[..want]).map_err(|_| {
            format!("the file is shorter than its shape ({rows}, {cols}) says: truncated")
        })?;
        data.extend(
            buf[..want]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        );
        got += want;
    }
    Ok(data)
}

/// Reads a `[rows, cols]` float32 matrix; the error is one sentence naming the fix.
pub fn read_f32_matrix(mut r: impl Read) -> Result<(usize, usize, Vec<f32>), String> {
    let h = read_header(&mut r)?;
    let data = read_body(&mut r, &h)?;
    Ok((h.rows, h.cols, data))
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

    /// Fuzz target: arbitrary and mutated `.npy` bytes are read or refused with a sentence,
    /// never a panic, and never with more memory than the bytes given (plus one read chunk).
    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        fn check(bytes: &[u8]) {
            let (res, largest) = crate::test_alloc::largest_during(|| read_f32_matrix(bytes));
            match res {
                Ok((rows, cols, data)) => {
                    assert_eq!(data.len(), rows * cols);
                    assert!(data.len() * 4 <= bytes.len());
                }
                Err(e) => assert!(!e.is_empty()),
            }
            assert!(
                largest <= CHUNK + (1 << 16) + 2 * bytes.len(),
                "{largest} bytes for {} bytes of input",
                bytes.len()
            );
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
                let mut with_magic = MAGIC.to_vec();
                with_magic.extend_from_slice(&bytes);
                check(&bytes);
                check(&with_magic);
            }

            #[test]
            fn mutated_files(
                rows in 0usize..6,
                cols in 1usize..6,
                edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
                cut in any::<usize>(),
            ) {
                let data: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
                let mut bytes = Vec::new();
                write_f32_matrix(&mut bytes, cols, &data).expect("write");
                for (at, b) in edits {
                    let n = bytes.len();
                    bytes[at % n] = b;
                }
                let keep = bytes.len() - cut % (bytes.len() / 4 + 1);
                check(&bytes[..keep]);
            }
        }
    }
}
