//! A zero-copy reader of `COPY ... TO STDOUT (FORMAT binary)` streams for the
//! rollup's hot loop.
//!
//! Why not `tokio_postgres::binary_copy::BinaryCopyOutStream`: it allocates a
//! vector of field ranges per row and checks each field's type on every
//! `try_get`, which at a million rows per rollup cost more than the rollup's
//! own arithmetic. Here each tuple is handed to the caller as borrowed field
//! slices in a fixed-size array, and the caller decodes only what it needs
//! (the columns and their types are fixed by the rollup's own `SELECT`).
//!
//! The format (PostgreSQL docs, "COPY", binary format): an 11-byte signature,
//! a 32-bit flags field, a 32-bit header-extension length and the extension;
//! then tuples, each a 16-bit field count followed per field by a 32-bit
//! length (−1 for NULL) and the value in the type's binary send format; then
//! a 16-bit −1 trailer. All integers are big-endian. The server happens to
//! send one tuple per `CopyData` message, but nothing here relies on it: a
//! tuple split across messages is reassembled.

use crate::error::Error;

const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// Incremental parser of one binary COPY stream whose tuples have exactly
/// `N` fields.
#[derive(Debug)]
pub(crate) struct CopyTuples<const N: usize> {
    /// Bytes of an incomplete header or tuple carried over to the next chunk.
    carry: Vec<u8>,
    header_done: bool,
    finished: bool,
    context: &'static str,
}

impl<const N: usize> CopyTuples<N> {
    /// A parser; `context` names the stream in errors.
    pub(crate) fn new(context: &'static str) -> Self {
        Self {
            carry: Vec::new(),
            header_done: false,
            finished: false,
            context,
        }
    }

    /// Feeds one chunk of the stream, calling `row` for every complete tuple
    /// with its fields (`None` = NULL).
    pub(crate) fn feed(
        &mut self,
        chunk: &[u8],
        mut row: impl FnMut(&[Option<&[u8]>; N]) -> Result<(), Error>,
    ) -> Result<(), Error> {
        if self.carry.is_empty() {
            let used = self.parse(chunk, &mut row)?;
            self.carry.extend_from_slice(&chunk[used..]);
        } else {
            let mut buf = std::mem::take(&mut self.carry);
            buf.extend_from_slice(chunk);
            let used = self.parse(&buf, &mut row)?;
            let _ = buf.drain(..used);
            self.carry = buf;
        }
        Ok(())
    }

    /// Checks that the stream ended with its trailer and nothing after it.
    pub(crate) fn finish(&self) -> Result<(), Error> {
        if self.finished && self.carry.is_empty() {
            Ok(())
        } else {
            Err(self.error("the stream ended without its trailer"))
        }
    }

    fn error(&self, reason: &'static str) -> Error {
        Error::CopyFormat {
            context: self.context,
            reason,
        }
    }

    /// Parses what it can of `buf`; returns the bytes consumed (whole
    /// header / tuples only).
    fn parse(
        &mut self,
        buf: &[u8],
        row: &mut impl FnMut(&[Option<&[u8]>; N]) -> Result<(), Error>,
    ) -> Result<usize, Error> {
        let mut pos = 0;
        if !self.header_done {
            if buf.len() < SIGNATURE.len() + 8 {
                return Ok(0);
            }
            if &buf[..SIGNATURE.len()] != SIGNATURE {
                return Err(self.error("bad signature (not a binary COPY stream)"));
            }
            let ext = be_u32(&buf[SIGNATURE.len() + 4..]) as usize;
            let header = SIGNATURE.len() + 8 + ext;
            if buf.len() < header {
                return Ok(0);
            }
            pos = header;
            self.header_done = true;
        }
        let mut fields: [Option<&[u8]>; N] = [None; N];
        loop {
            if self.finished {
                if pos < buf.len() {
                    return Err(self.error("data after the trailer"));
                }
                return Ok(pos);
            }
            let Some(count) = buf.get(pos..pos + 2) else {
                return Ok(pos);
            };
            let count = i16::from_be_bytes([count[0], count[1]]);
            if count == -1 {
                self.finished = true;
                pos += 2;
                continue;
            }
            if count as usize != N {
                return Err(self.error("unexpected number of fields in a tuple"));
            }
            let mut at = pos + 2;
            let mut complete = true;
            for field in &mut fields {
                let Some(len) = buf.get(at..at + 4) else {
                    complete = false;
                    break;
                };
                let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
                at += 4;
                if len < 0 {
                    *field = None;
                } else {
                    let end = at + len as usize;
                    let Some(value) = buf.get(at..end) else {
                        complete = false;
                        break;
                    };
                    *field = Some(value);
                    at = end;
                }
            }
            if !complete {
                return Ok(pos);
            }
            row(&fields)?;
            pos = at;
        }
    }
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// The fixed-size binary value of a non-NULL `N`-byte column.
#[inline]
pub(crate) fn fixed<const W: usize>(
    field: Option<&[u8]>,
    context: &'static str,
) -> Result<[u8; W], Error> {
    field
        .and_then(|b| <[u8; W]>::try_from(b).ok())
        .ok_or_else(|| Error::CopyFormat {
            context,
            reason: "a fixed-width column is NULL or has the wrong width",
        })
}

/// A non-NULL column's bytes.
#[inline]
pub(crate) fn bytes<'a>(field: Option<&'a [u8]>, context: &'static str) -> Result<&'a [u8], Error> {
    field.ok_or_else(|| Error::CopyFormat {
        context,
        reason: "a NOT NULL column is NULL",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A binary COPY stream of `(text, int4 or NULL)` tuples.
    fn stream(rows: &[(&str, Option<i32>)]) -> Vec<u8> {
        let mut out = SIGNATURE.to_vec();
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&3u32.to_be_bytes()); // a header extension
        out.extend_from_slice(b"xyz");
        for (s, n) in rows {
            out.extend_from_slice(&2i16.to_be_bytes());
            out.extend_from_slice(&(s.len() as i32).to_be_bytes());
            out.extend_from_slice(s.as_bytes());
            match n {
                Some(n) => {
                    out.extend_from_slice(&4i32.to_be_bytes());
                    out.extend_from_slice(&n.to_be_bytes());
                }
                None => out.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        out.extend_from_slice(&(-1i16).to_be_bytes());
        out
    }

    fn read(chunks: &[&[u8]]) -> Result<Vec<(String, Option<i32>)>, Error> {
        let mut p = CopyTuples::<2>::new("test");
        let mut got = Vec::new();
        for c in chunks {
            p.feed(c, |f| {
                let s = String::from_utf8(bytes(f[0], "test")?.to_vec()).unwrap();
                let n = f[1].map(|b| i32::from_be_bytes(b.try_into().unwrap()));
                got.push((s, n));
                Ok(())
            })?;
        }
        p.finish()?;
        Ok(got)
    }

    #[test]
    fn reads_tuples_split_anywhere() {
        let rows = [("/a", Some(1)), ("", None), ("/ünïcode", Some(-7))];
        let want: Vec<(String, Option<i32>)> =
            rows.iter().map(|(s, n)| ((*s).to_owned(), *n)).collect();
        let all = stream(&rows);
        assert_eq!(read(&[&all]).unwrap(), want);
        // Every split point, and byte by byte.
        for cut in 0..=all.len() {
            assert_eq!(
                read(&[&all[..cut], &all[cut..]]).unwrap(),
                want,
                "cut {cut}"
            );
        }
        let bytes: Vec<&[u8]> = all.chunks(1).collect();
        assert_eq!(read(&bytes).unwrap(), want);
    }

    #[test]
    fn rejects_malformed_streams() {
        let all = stream(&[("/a", Some(1))]);
        // Truncated: no trailer.
        assert!(read(&[&all[..all.len() - 2]]).is_err());
        // Not a binary COPY stream.
        assert!(read(&[b"PGCOPY\nxxxxxxxxxxxxxxxxxxxx"]).is_err());
        // Wrong field count.
        let mut bad = all.clone();
        let first_tuple = SIGNATURE.len() + 8 + 3;
        bad[first_tuple + 1] = 3;
        assert!(read(&[&bad]).is_err());
        // Data after the trailer.
        let mut extra = all;
        extra.push(0);
        assert!(read(&[&extra]).is_err());
        assert!(fixed::<4>(None, "t").is_err());
        assert!(fixed::<4>(Some(&[1, 2]), "t").is_err());
        assert_eq!(fixed::<2>(Some(&[1, 2]), "t").unwrap(), [1, 2]);
    }
}
