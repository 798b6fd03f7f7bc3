//! A compacted binary sparse Merkle tree over 256-bit keys: the ledger's state commitment.
//!
//! The hash of a set of (key, value-hash) leaves is defined by the set alone, whatever the
//! order of inserts and removes:
//!
//! ```text
//! hash(S, d) = EMPTY                                   if S is empty
//!            = H(0x00 || key || value_hash)            if S = {(key, value_hash)}
//!            = H(0x01 || hash(S_left, d+1) || hash(S_right, d+1))   otherwise
//! ```
//! where `S_left`/`S_right` split `S` on bit `d` of the key (most significant bit first).
//! A subtree holding one leaf collapses to that leaf, so with hashed keys a path is about
//! log2(n) long: an update costs O(log n) hashes (O(changes) per block), and a proof is the
//! list of sibling hashes on the path plus the terminal leaf or empty slot.
//!
//! Nodes are reference counted and copied on write, so cloning a tree is O(1): the chain
//! keeps one tree per unfinalized block without copying the state.

use sha2::{Digest, Sha256};
use std::sync::Arc;

/// A 32-byte digest.
pub type H = [u8; 32];

/// The hash of an empty subtree.
pub const EMPTY: H = [0u8; 32];

fn leaf_hash(key: &H, value: &H) -> H {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(key);
    h.update(value);
    h.finalize().into()
}

fn node_hash(l: &H, r: &H) -> H {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(l);
    h.update(r);
    h.finalize().into()
}

fn bit(key: &H, depth: usize) -> bool {
    (key[depth / 8] >> (7 - depth % 8)) & 1 == 1
}

#[derive(Clone, Debug)]
enum Node {
    Empty,
    Leaf { key: H, value: H },
    Branch(Arc<Branch>),
}

#[derive(Clone, Debug)]
struct Branch {
    left: Node,
    right: Node,
    /// `None` while a descendant changed since the hash was computed.
    hash: Option<H>,
}

impl Branch {
    fn child_mut(&mut self, right: bool) -> &mut Node {
        if right {
            &mut self.right
        } else {
            &mut self.left
        }
    }
}

/// The tree. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Tree {
    root: Node,
    len: usize,
}

impl Default for Tree {
    fn default() -> Self {
        Self {
            root: Node::Empty,
            len: 0,
        }
    }
}

/// A proof that a key maps to a value hash, or is absent, under a root.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Proof {
    /// Sibling hashes from the root down.
    #[serde(with = "hexvec")]
    pub siblings: Vec<H>,
    /// The leaf found at the end of the path, if any (it may hold another key).
    pub terminal: Option<ProofLeaf>,
}

/// The leaf at the end of a proof's path.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProofLeaf {
    #[serde(with = "hex32")]
    pub key: H,
    #[serde(with = "hex32")]
    pub value: H,
}

/// Why a proof does not check out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("proof path longer than 256")]
    TooLong,
    #[error("terminal leaf is not on the key's path")]
    OffPath,
    #[error("recomputed root does not match")]
    RootMismatch,
}

impl Tree {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of leaves.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Sets `key` to `value` (a value hash).
    pub fn insert(&mut self, key: H, value: H) {
        if insert(&mut self.root, 0, key, value) {
            self.len += 1;
        }
    }

    /// Removes `key`; returns whether it was present.
    pub fn remove(&mut self, key: &H) -> bool {
        let removed = remove(&mut self.root, 0, key);
        if removed {
            self.len -= 1;
        }
        removed
    }

    /// The value hash stored under `key`.
    pub fn get(&self, key: &H) -> Option<H> {
        let mut node = &self.root;
        let mut depth = 0;
        loop {
            match node {
                Node::Empty => return None,
                Node::Leaf { key: k, value } => return (k == key).then_some(*value),
                Node::Branch(b) => {
                    node = if bit(key, depth) { &b.right } else { &b.left };
                    depth += 1;
                }
            }
        }
    }

    /// The root hash; recomputes only the branches changed since the last call.
    pub fn root(&mut self) -> H {
        hash(&mut self.root)
    }

    /// A membership or non-membership proof for `key`. Fast after [`Tree::root`]; before
    /// it, changed branches are rehashed (without caching) on the way.
    pub fn prove(&self, key: &H) -> Proof {
        let mut siblings = Vec::new();
        let mut node = &self.root;
        let mut depth = 0;
        loop {
            match node {
                Node::Empty => {
                    return Proof {
                        siblings,
                        terminal: None,
                    }
                }
                Node::Leaf { key: k, value } => {
                    return Proof {
                        siblings,
                        terminal: Some(ProofLeaf {
                            key: *k,
                            value: *value,
                        }),
                    }
                }
                Node::Branch(b) => {
                    let right = bit(key, depth);
                    let (next, other) = if right {
                        (&b.right, &b.left)
                    } else {
                        (&b.left, &b.right)
                    };
                    siblings.push(clean_hash(other));
                    node = next;
                    depth += 1;
                }
            }
        }
    }
}

/// Checks `proof` for `key` against `root`: `Ok(Some(value_hash))` if the key is present,
/// `Ok(None)` if it is provably absent.
pub fn verify(root: &H, key: &H, proof: &Proof) -> Result<Option<H>, ProofError> {
    let d = proof.siblings.len();
    if d > 256 {
        return Err(ProofError::TooLong);
    }
    let (mut acc, found) = match &proof.terminal {
        None => (EMPTY, None),
        Some(l) => {
            // The terminal leaf must lie on the key's path (share its first d bits).
            if (0..d).any(|i| bit(&l.key, i) != bit(key, i)) {
                return Err(ProofError::OffPath);
            }
            let found = (l.key == *key).then_some(l.value);
            (leaf_hash(&l.key, &l.value), found)
        }
    };
    for (i, sib) in proof.siblings.iter().enumerate().rev() {
        acc = if bit(key, i) {
            node_hash(sib, &acc)
        } else {
            node_hash(&acc, sib)
        };
    }
    if &acc == root {
        Ok(found)
    } else {
        Err(ProofError::RootMismatch)
    }
}

fn clean_hash(node: &Node) -> H {
    match node {
        Node::Empty => EMPTY,
        Node::Leaf { key, value } => leaf_hash(key, value),
        Node::Branch(b) => b
            .hash
            .unwrap_or_else(|| node_hash(&clean_hash(&b.left), &clean_hash(&b.right))),
    }
}

fn hash(node: &mut Node) -> H {
    match node {
        Node::Empty => EMPTY,
        Node::Leaf { key, value } => leaf_hash(key, value),
        Node::Branch(b) => {
            if let Some(h) = b.hash {
                return h;
            }
            let b = Arc::make_mut(b);
            let h = node_hash(&hash(&mut b.left), &hash(&mut b.right));
            b.hash = Some(h);
            h
        }
    }
}

/// Returns true if a new key was added (false if an existing key was updated).
fn insert(node: &mut Node, depth: usize, key: H, value: H) -> bool {
    match node {
        Node::Empty => {
            *node = Node::Leaf { key, value };
            true
        }
        Node::Leaf { key: k, value: v } => {
            if *k == key {
                *v = value;
                return false;
            }
            // Split: push the existing leaf one level down, then insert beside it.
            let old = Node::Leaf { key: *k, value: *v };
            let mut b = Branch {
                left: Node::Empty,
                right: Node::Empty,
                hash: None,
            };
            *b.child_mut(bit(k, depth)) = old;
            insert(b.child_mut(bit(&key, depth)), depth + 1, key, value);
            *node = Node::Branch(Arc::new(b));
            true
        }
        Node::Branch(b) => {
            let b = Arc::make_mut(b);
            b.hash = None;
            insert(b.child_mut(bit(&key, depth)), depth + 1, key, value)
        }
    }
}

fn remove(node: &mut Node, depth: usize, key: &H) -> bool {
    match node {
        Node::Empty => false,
        Node::Leaf { key: k, .. } => {
            if k == key {
                *node = Node::Empty;
                true
            } else {
                false
            }
        }
        Node::Branch(b) => {
            let right = bit(key, depth);
            // Look before copying: a miss must not unshare the path.
            let present = {
                let mut n = if right { &b.right } else { &b.left };
                let mut d = depth + 1;
                loop {
                    match n {
                        Node::Empty => break false,
                        Node::Leaf { key: k, .. } => break k == key,
                        Node::Branch(c) => {
                            n = if bit(key, d) { &c.right } else { &c.left };
                            d += 1;
                        }
                    }
                }
            };
            if !present {
                return false;
            }
            let bm = Arc::make_mut(b);
            bm.hash = None;
            remove(bm.child_mut(right), depth + 1, key);
            // Collapse a branch left with a single leaf and an empty side.
            let collapsed = match (&bm.left, &bm.right) {
                (Node::Empty, Node::Empty) => Some(Node::Empty),
                (Node::Empty, Node::Leaf { .. }) => Some(bm.right.clone()),
                (Node::Leaf { .. }, Node::Empty) => Some(bm.left.clone()),
                _ => None,
            };
            if let Some(c) = collapsed {
                *node = c;
            }
            true
        }
    }
}

mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(&s, &mut out).map_err(serde::de::Error::custom)?;
        Ok(out)
    }
}

mod hexvec {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[[u8; 32]], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(hex::encode))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<[u8; 32]>, D::Error> {
        let v = Vec::<String>::deserialize(d)?;
        if v.len() > 256 {
            return Err(serde::de::Error::custom("proof path longer than 256"));
        }
        v.iter()
            .map(|s| {
                let mut out = [0u8; 32];
                hex::decode_to_slice(s, &mut out).map_err(serde::de::Error::custom)?;
                Ok(out)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn k(i: u32) -> H {
        Sha256::digest(i.to_le_bytes()).into()
    }

    /// The definition, computed from scratch over a sorted map.
    fn reference(set: &BTreeMap<H, H>) -> H {
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
        let items: Vec<_> = set.iter().map(|(k, v)| (*k, *v)).collect();
        go(&items, 0)
    }

    proptest! {
        #[test]
        fn matches_definition_and_proves(ops in proptest::collection::vec((0u32..40, any::<bool>(), any::<u8>()), 1..120)) {
            let mut t = Tree::new();
            let mut m = BTreeMap::new();
            for (i, ins, v) in ops {
                if ins {
                    t.insert(k(i), [v; 32]);
                    m.insert(k(i), [v; 32]);
                } else {
                    prop_assert_eq!(t.remove(&k(i)), m.remove(&k(i)).is_some());
                }
                prop_assert_eq!(t.len(), m.len());
            }
            let root = t.root();
            prop_assert_eq!(root, reference(&m));
            for i in 0..40 {
                let p = t.prove(&k(i));
                prop_assert_eq!(verify(&root, &k(i), &p), Ok(m.get(&k(i)).copied()));
                prop_assert_eq!(t.get(&k(i)), m.get(&k(i)).copied());
            }
        }
    }

    #[test]
    fn forged_proofs_fail() {
        let mut t = Tree::new();
        for i in 0..100 {
            t.insert(k(i), [i as u8; 32]);
        }
        let root = t.root();
        let mut p = t.prove(&k(7));
        assert_eq!(verify(&root, &k(7), &p), Ok(Some([7; 32])));
        // A different value.
        p.terminal.as_mut().unwrap().value = [8; 32];
        assert_eq!(verify(&root, &k(7), &p), Err(ProofError::RootMismatch));
        // Claiming absence of a present key by dropping the terminal.
        let mut p = t.prove(&k(7));
        p.terminal = None;
        assert_eq!(verify(&root, &k(7), &p), Err(ProofError::RootMismatch));
        // Using another key's proof.
        let p = t.prove(&k(8));
        assert!(verify(&root, &k(7), &p).is_err());
        // A tampered sibling.
        let mut p = t.prove(&k(9));
        p.siblings[0][0] ^= 1;
        assert_eq!(verify(&root, &k(9), &p), Err(ProofError::RootMismatch));
        // An absent key proves absent.
        let p = t.prove(&k(1000));
        assert_eq!(verify(&root, &k(1000), &p), Ok(None));
    }

    #[test]
    fn clones_are_independent() {
        let mut a = Tree::new();
        for i in 0..50 {
            a.insert(k(i), [1; 32]);
        }
        let ra = a.root();
        let mut b = a.clone();
        b.insert(k(3), [2; 32]);
        b.remove(&k(4));
        assert_ne!(b.root(), ra);
        assert_eq!(a.root(), ra);
        assert_eq!(a.get(&k(3)), Some([1; 32]));
        assert_eq!(a.get(&k(4)), Some([1; 32]));
    }
}
