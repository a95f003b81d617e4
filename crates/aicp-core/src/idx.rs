//! Reading the IDX format of MNIST-style datasets (gzipped or raw), with errors that name the
//! file and what was wrong with it.

use std::io::Read;
use std::path::Path;

use flate2::read::GzDecoder;

/// The IDX type code for unsigned bytes, the only element type MNIST-style files use.
const UBYTE: u8 = 0x08;

/// An IDX file's errors, each naming the file.
#[derive(Debug, thiserror::Error)]
pub enum IdxError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not an IDX file of unsigned bytes: {reason}")]
    Format { path: String, reason: String },
}

/// An IDX array of unsigned bytes: its dimensions and its data in row-major order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

impl IdxArray {
    /// Reads an IDX file, gunzipping it first when it starts with the gzip magic.
    pub fn read(path: &Path) -> Result<Self, IdxError> {
        let io = |source| IdxError::Io {
            path: path.display().to_string(),
            source,
        };
        let raw = std::fs::read(path).map_err(io)?;
        let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
            let mut out = Vec::with_capacity(raw.len() * 4);
            GzDecoder::new(raw.as_slice())
                .read_to_end(&mut out)
                .map_err(io)?;
            out
        } else {
            raw
        };
        Self::parse(&bytes).map_err(|reason| IdxError::Format {
            path: path.display().to_string(),
            reason,
        })
    }

    /// Parses the bytes of an (uncompressed) IDX file.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let [zero_a, zero_b, kind, rank] = match bytes.get(..4) {
            Some(&[a, b, c, d]) => [a, b, c, d],
            _ => {
                return Err(format!(
                    "expected a 4-byte header, got {} bytes",
                    bytes.len()
                ));
            }
        };
        if zero_a != 0 || zero_b != 0 || kind != UBYTE {
            return Err(format!(
                "expected magic 00 00 08 <rank>, got {zero_a:02x} {zero_b:02x} {kind:02x} {rank:02x}"
            ));
        }
        let rank = usize::from(rank);
        let header_len = 4 + 4 * rank;
        let header = bytes.get(4..header_len).ok_or_else(|| {
            format!(
                "expected {rank} dimensions in the header, but the file has {} bytes",
                bytes.len()
            )
        })?;
        let dims: Vec<usize> = header
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
            .collect();
        let expected = dims
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| format!("dimensions {dims:?} overflow"))?;
        let data = &bytes[header_len..];
        if data.len() != expected {
            return Err(format!(
                "dimensions {dims:?} need {expected} data bytes, got {}",
                data.len()
            ));
        }
        Ok(Self {
            dims,
            data: data.to_vec(),
        })
    }

    /// Encodes the array as IDX bytes (uncompressed); the inverse of [`IdxArray::parse`].
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![0, 0, UBYTE, self.dims.len() as u8];
        for &d in &self.dims {
            out.extend_from_slice(&(d as u32).to_be_bytes());
        }
        out.extend_from_slice(&self.data);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_images_and_labels() {
        let images = IdxArray {
            dims: vec![2, 2, 3],
            data: (0..12).collect(),
        };
        assert_eq!(IdxArray::parse(&images.encode()).unwrap(), images);
        let labels = IdxArray {
            dims: vec![3],
            data: vec![7, 1, 9],
        };
        assert_eq!(IdxArray::parse(&labels.encode()).unwrap(), labels);
    }

    #[test]
    fn rejects_wrong_magic_and_truncated_data() {
        let err = IdxArray::parse(&[0, 0, 0x0d, 1, 0, 0, 0, 1, 0]).unwrap_err();
        assert!(err.contains("expected magic 00 00 08"), "{err}");

        let mut bytes = IdxArray {
            dims: vec![4],
            data: vec![1, 2, 3, 4],
        }
        .encode();
        bytes.pop();
        let err = IdxArray::parse(&bytes).unwrap_err();
        assert!(err.contains("need 4 data bytes, got 3"), "{err}");

        let err = IdxArray::parse(&[0, 0]).unwrap_err();
        assert!(err.contains("4-byte header"), "{err}");
        let err = IdxArray::parse(&[0, 0, 8, 3, 0, 0, 0, 1]).unwrap_err();
        assert!(err.contains("expected 3 dimensions"), "{err}");
    }

    #[test]
    fn reads_gzipped_and_raw_files() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let array = IdxArray {
            dims: vec![2, 2],
            data: vec![0, 128, 255, 1],
        };
        let raw = dir.path().join("a-idx2-ubyte");
        std::fs::write(&raw, array.encode()).unwrap();
        let gz = dir.path().join("a-idx2-ubyte.gz");
        let mut enc =
            flate2::write::GzEncoder::new(std::fs::File::create(&gz).unwrap(), Default::default());
        enc.write_all(&array.encode()).unwrap();
        enc.finish().unwrap();
        assert_eq!(IdxArray::read(&raw).unwrap(), array);
        assert_eq!(IdxArray::read(&gz).unwrap(), array);

        let missing = IdxArray::read(&dir.path().join("nope")).unwrap_err();
        assert!(missing.to_string().contains("nope"), "{missing}");
    }
}
