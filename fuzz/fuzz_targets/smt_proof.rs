//! The sparse Merkle tree behind the state root, and forged proofs against it.
//!
//! The input builds a tree from fuzz-chosen keys, then bends a proof:
//!
//! ```text
//! input = n_ops:u8 op{n_ops % 33} query:u8 flip:u8 mutation*
//! op       = kind:u8 x:u8 y:u8
//!   kind%4 0: insert sha256([x]) -> [y; 32]         (random-looking keys)
//!          1: insert (keys[x] with bit y flipped)    (shares y bits with an existing key)
//!          2: remove keys[x]                         (present or not)
//!          3: insert [0; 32] with byte x%32 = y      (long shared prefixes: deep paths)
//! mutation = op:u8 arg:u8                            (see `mutate`)
//! ```
//! Checked: the root equals the definition computed from scratch over a sorted map, `len`
//! and `get` agree with the map, every honest proof verifies to the true value or to
//! absence, and a mutated proof never verifies to anything but the truth: `Ok(Some(v))`
//! only with `v` the stored value hash, `Ok(None)` only for an absent key, for the queried
//! key and for the other key the mutation names.

#![no_main]

use deai_ledger::smt::{self, Proof, ProofLeaf, Tree, EMPTY, H};
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

fn sha(parts: &[&[u8]]) -> H {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

fn leaf_hash(k: &H, v: &H) -> H {
    sha(&[&[0u8], k, v])
}

fn node_hash(l: &H, r: &H) -> H {
    sha(&[&[1u8], l, r])
}

fn bit(key: &H, d: usize) -> bool {
    (key[d / 8] >> (7 - d % 8)) & 1 == 1
}

fn flip(key: &H, d: usize) -> H {
    let mut k = *key;
    k[(d / 8) % 32] ^= 1 << (7 - d % 8);
    k
}

/// The root by definition (the module's doc comment), from a sorted map.
fn reference(m: &BTreeMap<H, H>) -> H {
    fn go(items: &[(H, H)], d: usize) -> H {
        match items {
            [] => EMPTY,
            [(k, v)] => leaf_hash(k, v),
            _ => {
                let split = items.partition_point(|(k, _)| !bit(k, d));
                node_hash(&go(&items[..split], d + 1), &go(&items[split..], d + 1))
            }
        }
    }
    let items: Vec<(H, H)> = m.iter().map(|(k, v)| (*k, *v)).collect();
    go(&items, 0)
}

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn next(&mut self) -> Option<u8> {
        let (b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*b)
    }
    fn or0(&mut self) -> u8 {
        self.next().unwrap_or(0)
    }
}

/// A forged proof may verify only to the truth.
fn sound(root: &H, truth: &BTreeMap<H, H>, key: &H, p: &Proof) {
    match smt::verify(root, key, p) {
        Ok(Some(v)) => assert_eq!(
            truth.get(key),
            Some(&v),
            "a proof verified a wrong value for {}",
            hex(key)
        ),
        Ok(None) => assert!(
            !truth.contains_key(key),
            "a proof verified absence of present key {}",
            hex(key)
        ),
        Err(_) => {}
    }
}

fn hex(k: &H) -> String {
    k.iter().map(|b| format!("{b:02x}")).collect()
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let Some(n_ops) = input.next() else { return };
    let mut tree = Tree::new();
    let mut truth: BTreeMap<H, H> = BTreeMap::new();
    // Every key ever named, present or not: what queries and mutations pick from.
    let mut keys: Vec<H> = vec![[0u8; 32]];
    for _ in 0..n_ops % 33 {
        let (kind, x, y) = (input.or0(), input.or0(), input.or0());
        let pick = |keys: &Vec<H>| keys[x as usize % keys.len()];
        match kind % 4 {
            0 => {
                let k = sha(&[&[x]]);
                tree.insert(k, [y; 32]);
                truth.insert(k, [y; 32]);
                keys.push(k);
            }
            1 => {
                let k = flip(&pick(&keys), y as usize);
                tree.insert(k, [y; 32]);
                truth.insert(k, [y; 32]);
                keys.push(k);
            }
            2 => {
                let k = pick(&keys);
                assert_eq!(tree.remove(&k), truth.remove(&k).is_some(), "remove result");
            }
            _ => {
                let mut k = [0u8; 32];
                k[x as usize % 32] = y;
                tree.insert(k, [x ^ y; 32]);
                truth.insert(k, [x ^ y; 32]);
                keys.push(k);
            }
        }
        assert_eq!(tree.len(), truth.len(), "len");
    }

    // Proofs taken before `root()` (changed branches unhashed) must equal those after.
    let early: Vec<Proof> = keys.iter().map(|k| tree.prove(k)).collect();
    let root = tree.root();
    assert_eq!(root, reference(&truth), "root differs from the definition");
    assert_eq!(tree.clone().root(), root, "a clone has another root");
    for (k, p) in keys.iter().zip(&early) {
        assert_eq!(tree.get(k), truth.get(k).copied(), "get");
        let honest = tree.prove(k);
        assert_eq!(&honest, p, "proof before and after root() differ");
        assert_eq!(
            smt::verify(&root, k, &honest),
            Ok(truth.get(k).copied()),
            "honest proof of {} does not verify",
            hex(k)
        );
    }

    // The queried key: a named key, or one bit away from one (often absent, same path).
    let (q, fl) = (input.or0(), input.or0());
    let mut key = keys[q as usize % keys.len()];
    if fl & 1 == 1 {
        key = flip(&key, (fl >> 1) as usize + (q as usize & 1) * 128);
    }
    let mut p = tree.prove(&key);
    sound(&root, &truth, &key, &p);
    let mut mutations = 0;
    while let (Some(op), Some(arg)) = (input.next(), input.next()) {
        mutations += 1;
        if mutations > 64 {
            break;
        }
        let other = keys[arg as usize % keys.len()];
        mutate(&mut p, &tree, &truth, op, arg, &other);
        sound(&root, &truth, &key, &p);
        sound(&root, &truth, &other, &p);
    }
});

/// One edit of `p`; `op % 12` picks it, `op >> 4` and `arg` are its operands.
fn mutate(p: &mut Proof, tree: &Tree, truth: &BTreeMap<H, H>, op: u8, arg: u8, other: &H) {
    let n = p.siblings.len();
    let hi = (op >> 4) as usize;
    match op % 12 {
        // Flip one bit of a sibling.
        0 if n > 0 => {
            let i = arg as usize % n;
            p.siblings[i] = flip(&p.siblings[i], hi * 16 + arg as usize / 16);
        }
        1 => p.siblings.truncate(arg as usize % (n + 1)),
        // Extend the path: an empty sibling, a fake, or a real leaf's hash.
        2 => p.siblings.push(match hi % 3 {
            0 => EMPTY,
            1 => [arg; 32],
            _ => truth
                .iter()
                .nth(arg as usize % truth.len().max(1))
                .map_or(EMPTY, |(k, v)| leaf_hash(k, v)),
        }),
        3 if n > 0 => {
            p.siblings.remove(arg as usize % n);
        }
        4 => p.terminal = None,
        // Claim another key's leaf (with its true value, or a made-up one).
        5 => {
            p.terminal = Some(ProofLeaf {
                key: *other,
                value: match (hi & 1, truth.get(other)) {
                    (0, Some(v)) => *v,
                    _ => [arg; 32],
                },
            })
        }
        6 => {
            if let Some(t) = &mut p.terminal {
                t.value = flip(&t.value, arg as usize);
            }
        }
        7 => {
            if let Some(t) = &mut p.terminal {
                t.key = flip(&t.key, arg as usize);
            }
        }
        // Another key's honest proof.
        8 => *p = tree.prove(other),
        // Replace a sibling with the empty hash, or swap two.
        9 if n > 0 => p.siblings[arg as usize % n] = EMPTY,
        10 if n > 1 => p.siblings.swap(arg as usize % n, hi % n),
        // Graft: the siblings of another key's proof with this terminal, or the reverse.
        11 => {
            let o = tree.prove(other);
            if hi & 1 == 0 {
                p.siblings = o.siblings;
            } else {
                p.terminal = o.terminal;
            }
        }
        _ => {}
    }
}
