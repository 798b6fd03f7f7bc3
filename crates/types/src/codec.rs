//! A tiny canonical binary encoding: little-endian fixed-width integers, length-prefixed
//! byte strings, and a reader that refuses truncated, oversized or trailing input.
//!
//! "Canonical" means one value has exactly one encoding: every decoder built on [`Reader`]
//! must reject anything [`Writer`] would not have produced (the reader enforces lengths and
//! [`Reader::finish`] rejects trailing bytes; callers check enum tags and value ranges).

/// Why a byte string could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated input while reading {0}")]
    Truncated(&'static str),
    #[error("{what}: length {len} outside {min}..={max}")]
    Length {
        what: &'static str,
        len: usize,
        min: usize,
        max: usize,
    },
    #[error("{what}: unknown tag {tag}")]
    UnknownTag { what: &'static str, tag: u8 },
    #[error("{0} trailing bytes after the value")]
    Trailing(usize),
    #[error("non-canonical encoding: {0}")]
    NonCanonical(String),
}

/// Appends canonical encodings to a byte vector.
#[derive(Default, Debug, Clone)]
pub struct Writer(pub Vec<u8>);

impl Writer {
    pub fn new() -> Self {
        Self(Vec::new())
    }
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.u8(v as u8)
    }
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Raw bytes with no length prefix (fixed-size fields).
    pub fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
    /// A byte string with a u32 length prefix.
    ///
    /// # Panics
    /// If `b` is longer than `u32::MAX` bytes (no deai value comes close).
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.u32(u32::try_from(b.len()).expect("byte string over 4 GiB"));
        self.raw(b)
    }
    /// A UTF-8 string with a u32 length prefix.
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.bytes(s.as_bytes())
    }
}

/// Reads canonical encodings from a byte slice.
#[derive(Debug)]
pub struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(b: &'a [u8]) -> Self {
        Self { b, pos: 0 }
    }
    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.b.len() - self.pos
    }
    pub fn raw(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.b.len())
            .ok_or(DecodeError::Truncated(what))?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    pub fn arr<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.raw(N, what)?);
        Ok(a)
    }
    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.arr::<1>(what)?[0])
    }
    pub fn bool(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            t => Err(DecodeError::UnknownTag { what, tag: t }),
        }
    }
    pub fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.arr(what)?))
    }
    pub fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.arr(what)?))
    }
    pub fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.arr(what)?))
    }
    /// A count (u32) checked against `max` before anything is allocated for it.
    pub fn count(&mut self, what: &'static str, max: usize) -> Result<usize, DecodeError> {
        let n = self.u32(what)? as usize;
        if n > max {
            return Err(DecodeError::Length {
                what,
                len: n,
                min: 0,
                max,
            });
        }
        Ok(n)
    }
    /// A u32-length-prefixed byte string of at most `max` bytes.
    pub fn bytes(&mut self, what: &'static str, max: usize) -> Result<&'a [u8], DecodeError> {
        let n = self.count(what, max)?;
        self.raw(n, what)
    }
    /// A u32-length-prefixed UTF-8 string of at most `max` bytes.
    pub fn str(&mut self, what: &'static str, max: usize) -> Result<String, DecodeError> {
        let b = self.bytes(what, max)?;
        String::from_utf8(b.to_vec())
            .map_err(|_| DecodeError::NonCanonical(format!("{what}: not UTF-8")))
    }
    /// Fails unless every byte was consumed.
    pub fn finish(self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(DecodeError::Trailing(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_rejections() {
        let mut w = Writer::new();
        w.u8(7)
            .bool(true)
            .u16(300)
            .u32(70_000)
            .u64(u64::MAX)
            .bytes(b"abc")
            .str("hé");
        let b = w.into_bytes();
        let mut r = Reader::new(&b);
        assert_eq!(r.u8("a").unwrap(), 7);
        assert!(r.bool("b").unwrap());
        assert_eq!(r.u16("c").unwrap(), 300);
        assert_eq!(r.u32("d").unwrap(), 70_000);
        assert_eq!(r.u64("e").unwrap(), u64::MAX);
        assert_eq!(r.bytes("f", 3).unwrap(), b"abc");
        assert_eq!(r.str("g", 8).unwrap(), "hé");
        r.finish().unwrap();

        // Oversized length is refused before allocation; truncation and trailing bytes too.
        let mut r = Reader::new(&b[9..]);
        assert!(matches!(r.bytes("f", 2), Err(DecodeError::Length { .. })));
        assert!(matches!(
            Reader::new(&b[..3]).u64("x"),
            Err(DecodeError::Truncated("x"))
        ));
        let mut r = Reader::new(&[1, 2]);
        r.u8("x").unwrap();
        assert_eq!(r.finish(), Err(DecodeError::Trailing(1)));
        assert!(matches!(
            Reader::new(&[2]).bool("flag"),
            Err(DecodeError::UnknownTag { tag: 2, .. })
        ));
        let bad_utf8 = [2, 0, 0, 0, 0xff, 0xfe];
        assert!(matches!(
            Reader::new(&bad_utf8).str("s", 10),
            Err(DecodeError::NonCanonical(_))
        ));
    }
}
