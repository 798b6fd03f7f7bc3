//! Arbitrary bytes as a signed ledger transaction: `SignedTx::decode` returns an error or a
//! transaction whose canonical encoding is exactly the input (one value, one encoding); it
//! never panics. A decoded transaction also survives the JSON view unchanged, and checking
//! its signature returns a result (inputs are unsigned garbage, so almost always an error).

#![no_main]

use deai_ledger::tx::MAX_TX_BYTES;
use deai_ledger::SignedTx;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(tx) = SignedTx::decode(data) else {
        return;
    };
    assert!(
        data.len() <= MAX_TX_BYTES,
        "decoded an oversized transaction"
    );
    let bytes = tx.to_bytes();
    assert_eq!(bytes, data, "decoding accepted a non-canonical encoding");
    assert_eq!(SignedTx::decode(&bytes).as_ref(), Ok(&tx));
    assert_eq!(tx.id(), deai_types::Hash256::digest(data));
    let _ = tx.verify_signature();
    let _ = tx.tx.kind.name();
    let json = serde_json::to_string(&tx).expect("a transaction has a JSON view");
    let back: SignedTx = serde_json::from_str(&json).expect("JSON view round-trips");
    assert_eq!(back, tx);
});
