//! Arbitrary bytes as a chain block (and as a bare header): `Block::from_bytes` and
//! `Header::from_bytes` return an error or a value whose canonical encoding is exactly the
//! input; neither panics. The commonware codec wrapper (u32 length + block bytes), which
//! consensus and p2p run on untrusted input, is fuzzed with the same bytes.
//!
//! Random bytes almost never match the header's `txs_root` (a hash over the transactions),
//! so each input is also tried with `txs_root` patched: when the bytes after the 112-byte
//! header parse as a count and that many length-prefixed transactions, the target writes
//! their hash into the header and decodes again. That copy must then decode whenever the
//! original failed only on the hash, and the fuzzer reaches well-formed blocks.

#![no_main]

use deai_chain::block::{txs_root, HEADER_BYTES};
use deai_chain::{Block, Header};
use deai_ledger::SignedTx;
use libfuzzer_sys::fuzz_target;

/// Offset of `txs_root` in the header: parent (32), height (8), view (8).
const TXS_ROOT_AT: usize = 48;

fuzz_target!(|data: &[u8]| {
    check_block(data);
    if let Some((patched, trailing)) = with_txs_root(data) {
        // The patch parsed the transactions the way the decoder reads them and fixed the
        // hash, so only trailing bytes may still make the block fail.
        let ok = check_block(&patched);
        assert_eq!(ok, !trailing, "block decoder disagrees with a plain parse");
    }

    if let Ok(h) = Header::from_bytes(data) {
        assert_eq!(data.len(), HEADER_BYTES);
        assert_eq!(
            h.to_bytes(),
            data,
            "header decoding accepted a non-canonical encoding"
        );
        let _ = h.digest();
    }

    // The consensus codec: u32 big-endian length, then the block.
    let mut buf = bytes::Bytes::copy_from_slice(data);
    if let Ok(b) = <Block as commonware_codec::Read>::read_cfg(&mut buf, &()) {
        let enc = commonware_codec::Encode::encode(&b);
        let used = data.len() - buf.len();
        assert_eq!(&enc[..], &data[..used], "codec re-encoding differs");
        assert_eq!(enc.len(), commonware_codec::EncodeSize::encode_size(&b));
    }
});

fn check_block(data: &[u8]) -> bool {
    let Ok(b) = Block::from_bytes(data) else {
        return false;
    };
    assert_eq!(
        b.to_bytes(),
        data,
        "block decoding accepted a non-canonical encoding"
    );
    assert_eq!(b.digest(), b.header.digest());
    assert_eq!(txs_root(&b.txs), b.header.txs_root);
    assert!(data.len() <= Block::MAX_BYTES);
    true
}

/// `data` with the header's `txs_root` replaced by the hash of the transactions that follow
/// it, if they parse (u32 LE count, then u32 LE length + canonical transaction each), and
/// whether bytes are left after them.
fn with_txs_root(data: &[u8]) -> Option<(Vec<u8>, bool)> {
    let rest = data.get(HEADER_BYTES..)?;
    let (n, mut rest) = take_u32(rest)?;
    let mut txs = Vec::new();
    for _ in 0..n.min(64) {
        let (len, r) = take_u32(rest)?;
        let body = r.get(..len as usize)?;
        txs.push(SignedTx::decode(body).ok()?);
        rest = &r[len as usize..];
    }
    if txs.len() != n as usize {
        return None;
    }
    let root = txs_root(&txs);
    let mut out = data.to_vec();
    if out[TXS_ROOT_AT..TXS_ROOT_AT + 32] == root.0 {
        return None; // already right: the plain run covered it
    }
    out[TXS_ROOT_AT..TXS_ROOT_AT + 32].copy_from_slice(&root.0);
    Some((out, !rest.is_empty()))
}

fn take_u32(b: &[u8]) -> Option<(u32, &[u8])> {
    let (n, rest) = b.split_first_chunk::<4>()?;
    Some((u32::from_le_bytes(*n), rest))
}
