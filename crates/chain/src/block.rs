//! Blocks: a header that commits to the parent, the transactions and the post-state root,
//! and the transactions themselves.
//!
//! The block's digest is the hash of its header alone, so a light client holding a
//! finality certificate for a digest needs only the 112-byte header (not the transactions)
//! to learn the state root, and then a state proof to learn any record.

use deai_ledger::state::MAX_BLOCK_TXS;
use deai_ledger::tx::MAX_TX_BYTES;
use deai_ledger::SignedTx;
use deai_types::codec::{DecodeError, Reader, Writer};
use deai_types::Hash256;
use serde::{Deserialize, Serialize};

/// The fixed-size part of a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub parent: Hash256,
    pub height: u64,
    /// Consensus view the block was proposed in (makes re-proposals at one height distinct).
    pub view: u64,
    /// Hash over the encoded transactions, in order.
    pub txs_root: Hash256,
    /// Ledger state root after applying this block.
    pub state_root: Hash256,
}

pub const HEADER_BYTES: usize = 32 + 8 + 8 + 32 + 32;

impl Header {
    pub fn encode(&self, w: &mut Writer) {
        w.raw(&self.parent.0)
            .u64(self.height)
            .u64(self.view)
            .raw(&self.txs_root.0)
            .raw(&self.state_root.0);
    }

    pub fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(Header {
            parent: Hash256(r.arr("parent")?),
            height: r.u64("height")?,
            view: r.u64("view")?,
            txs_root: Hash256(r.arr("txs root")?),
            state_root: Hash256(r.arr("state root")?),
        })
    }

    /// The block digest that consensus votes on.
    pub fn digest(&self) -> Hash256 {
        let mut w = Writer::new();
        self.encode(&mut w);
        Hash256::digest_parts("deai-block-v1", &[&w.0])
    }

    pub fn from_bytes(b: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(b);
        let h = Header::decode(&mut r)?;
        r.finish()?;
        Ok(h)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.encode(&mut w);
        w.into_bytes()
    }
}

/// Hash over a block's transactions (their canonical bytes, in order).
pub fn txs_root(txs: &[SignedTx]) -> Hash256 {
    let encoded: Vec<Vec<u8>> = txs.iter().map(|t| t.to_bytes()).collect();
    let parts: Vec<&[u8]> = encoded.iter().map(|e| e.as_slice()).collect();
    Hash256::digest_parts("deai-txs-v1", &parts)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    pub header: Header,
    pub txs: Vec<SignedTx>,
    /// Cached `header.digest()`.
    digest: Hash256,
}

impl Block {
    pub fn new(
        parent: Hash256,
        height: u64,
        view: u64,
        txs: Vec<SignedTx>,
        state_root: Hash256,
    ) -> Self {
        let header = Header {
            parent,
            height,
            view,
            txs_root: txs_root(&txs),
            state_root,
        };
        Block {
            digest: header.digest(),
            header,
            txs,
        }
    }

    /// The genesis block: height 0, no transactions, the genesis state root.
    pub fn genesis(chain_id: Hash256, state_root: Hash256) -> Self {
        Block::new(chain_id, 0, 0, Vec::new(), state_root)
    }

    pub fn digest(&self) -> Hash256 {
        self.digest
    }
    pub fn height(&self) -> u64 {
        self.header.height
    }
    pub fn parent(&self) -> Hash256 {
        self.header.parent
    }

    pub fn encode(&self, w: &mut Writer) {
        self.header.encode(w);
        w.u32(self.txs.len() as u32);
        for t in &self.txs {
            w.bytes(&t.to_bytes());
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.encode(&mut w);
        w.into_bytes()
    }

    /// Decodes and checks that the header's `txs_root` matches the transactions.
    pub fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let header = Header::decode(r)?;
        let n = r.count("transactions", MAX_BLOCK_TXS)?;
        let mut txs = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            txs.push(SignedTx::decode(r.bytes("transaction", MAX_TX_BYTES)?)?);
        }
        if txs_root(&txs) != header.txs_root {
            return Err(DecodeError::NonCanonical(
                "transactions do not match the header's txs_root".into(),
            ));
        }
        Ok(Block {
            digest: header.digest(),
            header,
            txs,
        })
    }

    pub fn from_bytes(b: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(b);
        let blk = Block::decode(&mut r)?;
        r.finish()?;
        Ok(blk)
    }

    /// Upper bound on an encoded block, for decoders.
    pub const MAX_BYTES: usize = HEADER_BYTES + 4 + MAX_BLOCK_TXS * (4 + MAX_TX_BYTES);
}

// ----- commonware glue: the block is carried as u32 length + canonical bytes ------------

/// The digest type consensus signs.
pub type Digest = commonware_cryptography::sha256::Digest;

pub fn to_digest(h: Hash256) -> Digest {
    commonware_cryptography::sha256::Digest(h.0)
}

pub fn from_digest(d: &Digest) -> Hash256 {
    Hash256(d.0)
}

impl commonware_codec::Write for Block {
    fn write(&self, buf: &mut impl bytes::BufMut) {
        let b = self.to_bytes();
        buf.put_u32(b.len() as u32);
        buf.put_slice(&b);
    }
}

impl commonware_codec::EncodeSize for Block {
    fn encode_size(&self) -> usize {
        let mut w = Writer::new();
        self.encode(&mut w);
        4 + w.0.len()
    }
}

impl commonware_codec::Read for Block {
    type Cfg = ();
    fn read_cfg(
        buf: &mut impl commonware_codec::Buf,
        _: &(),
    ) -> Result<Self, commonware_codec::Error> {
        use commonware_codec::Error;
        if buf.remaining() < 4 {
            return Err(Error::EndOfBuffer);
        }
        let len = buf.get_u32() as usize;
        if len > Block::MAX_BYTES {
            return Err(Error::Invalid("Block", "too large"));
        }
        if buf.remaining() < len {
            return Err(Error::EndOfBuffer);
        }
        let bytes = buf.copy_to_bytes(len);
        Block::from_bytes(&bytes).map_err(|_| Error::Invalid("Block", "malformed block"))
    }
}

impl commonware_cryptography::Digestible for Block {
    type Digest = Digest;
    fn digest(&self) -> Digest {
        to_digest(self.digest)
    }
}

impl commonware_consensus::Heightable for Block {
    fn height(&self) -> commonware_consensus::types::Height {
        commonware_consensus::types::Height::new(self.header.height)
    }
}

impl commonware_consensus::Block for Block {
    fn parent(&self) -> Digest {
        to_digest(self.header.parent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deai_ledger::{Tx, TxKind};
    use ed25519_dalek::SigningKey;

    fn tx(n: u64) -> SignedTx {
        Tx {
            chain: Hash256([1; 32]),
            from: [0; 32],
            nonce: n,
            fee: 1,
            kind: TxKind::Stake { amount: 3 },
        }
        .sign(&SigningKey::from_bytes(&[5; 32]))
    }

    #[test]
    fn roundtrip_and_tamper() {
        let b = Block::new(Hash256([2; 32]), 7, 9, vec![tx(0), tx(1)], Hash256([3; 32]));
        let bytes = b.to_bytes();
        let back = Block::from_bytes(&bytes).unwrap();
        assert_eq!(back, b);
        assert_eq!(back.digest(), b.header.digest());
        assert_eq!(Header::from_bytes(&b.header.to_bytes()).unwrap(), b.header);
        // Swapping the transactions breaks txs_root.
        let swapped = Block {
            txs: vec![tx(1), tx(0)],
            ..b.clone()
        };
        assert!(Block::from_bytes(&swapped.to_bytes()).is_err());
        // Truncation and trailing bytes.
        assert!(Block::from_bytes(&bytes[..bytes.len() - 1]).is_err());
        let mut long = bytes.clone();
        long.push(0);
        assert!(Block::from_bytes(&long).is_err());
        // Different view, different digest.
        let other = Block::new(
            Hash256([2; 32]),
            7,
            10,
            vec![tx(0), tx(1)],
            Hash256([3; 32]),
        );
        assert_ne!(other.digest(), b.digest());
    }

    #[test]
    fn commonware_codec_roundtrip_and_bounds() {
        use commonware_codec::Read;
        let b = Block::new(Hash256([2; 32]), 7, 9, vec![tx(0)], Hash256([3; 32]));
        let enc = commonware_codec::Encode::encode(&b);
        assert_eq!(enc.len(), commonware_codec::EncodeSize::encode_size(&b));
        let back = Block::read_cfg(&mut enc.clone(), &()).unwrap();
        assert_eq!(back, b);
        // A length prefix beyond the limit is refused before reading.
        let mut huge = Vec::from(&(u32::MAX).to_be_bytes()[..]);
        huge.extend_from_slice(&[0; 16]);
        assert!(Block::read_cfg(&mut bytes::Bytes::from(huge), &()).is_err());
        assert!(Block::read_cfg(&mut enc.slice(..enc.len() - 1), &()).is_err());
    }
}
