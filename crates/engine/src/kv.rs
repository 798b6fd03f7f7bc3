//! Key/value caches.
//!
//! [`KvCache`] is one sequence's cache, allocated once for its whole capacity (no per-step
//! concatenation, so decode cost per token grows only with the attention itself).
//! [`PrefixCache`] keeps the keys, values and hidden states of recent sequences under a byte
//! budget, so a request that shares a prefix with an earlier one (a system prompt, the earlier
//! turns of a chat) starts from the cached rows. Because every row is computed by batch-
//! invariant kernels, a warm start is bit-identical to a cold one.

/// Keys and values of one sequence, `[layer][position][kv_dim]`, preallocated.
#[derive(Clone, Debug)]
pub struct KvCache {
    n_layer: usize,
    kv_dim: usize,
    cap: usize,
    len: usize,
    k: Vec<f32>,
    v: Vec<f32>,
}

impl KvCache {
    pub fn new(n_layer: usize, kv_dim: usize, cap: usize) -> Self {
        let n = n_layer * cap * kv_dim;
        KvCache {
            n_layer,
            kv_dim,
            cap,
            len: 0,
            k: vec![0.0; n],
            v: vec![0.0; n],
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Bytes held per cached position (keys + values, all layers).
    pub fn bytes_per_token(&self) -> usize {
        2 * self.n_layer * self.kv_dim * 4
    }

    fn layer_range(&self, layer: usize, upto: usize) -> std::ops::Range<usize> {
        let base = layer * self.cap * self.kv_dim;
        base..base + upto * self.kv_dim
    }

    /// Write rows for positions `pos0..pos0 + k.len()/kv_dim` of `layer`.
    pub(crate) fn write(&mut self, layer: usize, pos0: usize, k: &[f32], v: &[f32]) {
        let base = layer * self.cap * self.kv_dim + pos0 * self.kv_dim;
        self.k[base..base + k.len()].copy_from_slice(k);
        self.v[base..base + v.len()].copy_from_slice(v);
    }

    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }

    /// Keys of `layer` for all positions written so far in this pass (the capacity slice).
    pub(crate) fn keys(&self, layer: usize) -> &[f32] {
        &self.k[self.layer_range(layer, self.cap)]
    }

    pub(crate) fn values(&self, layer: usize) -> &[f32] {
        &self.v[self.layer_range(layer, self.cap)]
    }

    /// Forget positions from `len` on (used to roll back or to reuse a shorter prefix).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Copy the first `n` positions out (for the prefix cache).
    fn export(&self, n: usize) -> (Vec<f32>, Vec<f32>) {
        let mut k = Vec::with_capacity(self.n_layer * n * self.kv_dim);
        let mut v = Vec::with_capacity(k.capacity());
        for l in 0..self.n_layer {
            k.extend_from_slice(&self.k[self.layer_range(l, n)]);
            v.extend_from_slice(&self.v[self.layer_range(l, n)]);
        }
        (k, v)
    }

    /// Load the first `n` positions from an export of a cache with the same geometry.
    fn import(&mut self, k: &[f32], v: &[f32], stored: usize, n: usize) {
        for l in 0..self.n_layer {
            let src = l * stored * self.kv_dim..l * stored * self.kv_dim + n * self.kv_dim;
            let dst = self.layer_range(l, n);
            self.k[dst.clone()].copy_from_slice(&k[src.clone()]);
            self.v[dst].copy_from_slice(&v[src]);
        }
        self.len = n;
    }
}

struct Entry {
    tokens: Vec<u32>,
    k: Vec<f32>,
    v: Vec<f32>,
    /// Post-final-norm hidden state of every cached position, `tokens.len() x d_model`.
    hidden: Vec<f32>,
    last_used: u64,
}

impl Entry {
    fn bytes(&self) -> usize {
        (self.k.len() + self.v.len() + self.hidden.len()) * 4 + self.tokens.len() * 4
    }
}

/// Recently computed sequences, reused by longest common token prefix, evicted least-recently
/// used first when over the byte budget. Pure bookkeeping: no clock (a use counter orders
/// entries).
pub struct PrefixCache {
    budget: usize,
    used: usize,
    tick: u64,
    entries: Vec<Entry>,
    hits: u64,
    reused_tokens: u64,
}

/// A prefix taken from the cache: the number of positions loaded and their hidden states.
#[derive(Debug, Default)]
pub struct PrefixHit {
    pub len: usize,
    pub hidden: Vec<f32>,
}

impl PrefixCache {
    pub fn new(budget_bytes: usize) -> Self {
        PrefixCache {
            budget: budget_bytes,
            used: 0,
            tick: 0,
            entries: Vec::new(),
            hits: 0,
            reused_tokens: 0,
        }
    }

    pub fn used_bytes(&self) -> usize {
        self.used
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// (lookups that reused something, total positions reused).
    pub fn stats(&self) -> (u64, u64) {
        (self.hits, self.reused_tokens)
    }

    /// Load into `cache` (which must be empty) the longest cached prefix of `tokens`, at most
    /// `max_len` positions. Returns how many positions were loaded and their hidden states.
    pub fn lookup(
        &mut self,
        tokens: &[u32],
        max_len: usize,
        d_model: usize,
        cache: &mut KvCache,
    ) -> PrefixHit {
        let best = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let n = e
                    .tokens
                    .iter()
                    .zip(tokens)
                    .take_while(|(a, b)| a == b)
                    .count();
                (n.min(max_len), i)
            })
            .max();
        let Some((n, i)) = best.filter(|(n, _)| *n > 0) else {
            return PrefixHit::default();
        };
        self.tick += 1;
        let e = &mut self.entries[i];
        e.last_used = self.tick;
        cache.import(&e.k, &e.v, e.tokens.len(), n);
        self.hits += 1;
        self.reused_tokens += n as u64;
        PrefixHit {
            len: n,
            hidden: e.hidden[..n * d_model].to_vec(),
        }
    }

    /// Remember the first `tokens.len()` positions of `cache` (with their hidden states).
    /// Entries that are prefixes of the new one are dropped; then the least recently used
    /// entries are evicted until the budget holds. An entry larger than the budget is not kept.
    pub fn insert(&mut self, tokens: &[u32], cache: &KvCache, hidden: &[f32]) {
        let n = tokens.len().min(cache.len());
        if n == 0 {
            return;
        }
        let (k, v) = cache.export(n);
        let d = hidden.len() / tokens.len().max(1);
        self.tick += 1;
        let e = Entry {
            tokens: tokens[..n].to_vec(),
            k,
            v,
            hidden: hidden[..n * d].to_vec(),
            last_used: self.tick,
        };
        if e.bytes() > self.budget {
            return;
        }
        self.entries
            .retain(|old| !e.tokens.starts_with(&old.tokens));
        self.used = self.entries.iter().map(Entry::bytes).sum::<usize>() + e.bytes();
        self.entries.push(e);
        while self.used > self.budget {
            let (i, _) = self
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.last_used)
                .expect("over budget implies an entry");
            self.used -= self.entries.swap_remove(i).bytes();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(tokens: usize) -> KvCache {
        let mut c = KvCache::new(2, 4, 16);
        for l in 0..2 {
            let k: Vec<f32> = (0..tokens * 4).map(|i| (l * 1000 + i) as f32).collect();
            c.write(l, 0, &k, &k);
        }
        c.advance(tokens);
        c
    }

    #[test]
    fn longest_prefix_is_reused_and_rows_match() {
        let mut pc = PrefixCache::new(1 << 20);
        let src = filled(5);
        pc.insert(&[1, 2, 3, 4, 5], &src, &[0.5; 5 * 3]);
        let mut dst = KvCache::new(2, 4, 16);
        let hit = pc.lookup(&[1, 2, 3, 9], 3, 3, &mut dst);
        assert_eq!(hit.len, 3);
        assert_eq!(dst.len(), 3);
        assert_eq!(hit.hidden.len(), 9);
        assert_eq!(&dst.keys(1)[..12], &src.keys(1)[..12]);
        let mut miss = KvCache::new(2, 4, 16);
        assert_eq!(pc.lookup(&[7], 1, 3, &mut miss).len, 0);
        assert_eq!(pc.stats(), (1, 3));
    }

    #[test]
    fn budget_evicts_least_recently_used() {
        let one = {
            let mut p = PrefixCache::new(usize::MAX);
            p.insert(&[1, 2, 3, 4], &filled(4), &[0.0; 4]);
            p.used_bytes()
        };
        let mut pc = PrefixCache::new(2 * one);
        pc.insert(&[1, 2, 3, 4], &filled(4), &[0.0; 4]);
        pc.insert(&[5, 6, 7, 8], &filled(4), &[0.0; 4]);
        let mut c = KvCache::new(2, 4, 16);
        assert_eq!(pc.lookup(&[1, 2], 2, 1, &mut c).len, 2); // touch the first
        pc.insert(&[9, 9, 9, 9], &filled(4), &[0.0; 4]);
        assert_eq!(pc.len(), 2);
        assert!(pc.used_bytes() <= 2 * one);
        let mut c = KvCache::new(2, 4, 16);
        assert_eq!(pc.lookup(&[5, 6], 2, 1, &mut c).len, 0, "LRU entry evicted");
        let mut c = KvCache::new(2, 4, 16);
        assert_eq!(
            pc.lookup(&[1, 2], 2, 1, &mut c).len,
            2,
            "recently used kept"
        );
        // An extension replaces its prefix instead of duplicating it.
        // (The 5-token entry plus [9,9,9,9] exceed the budget, so [9,9,9,9] is evicted too.)
        pc.insert(&[1, 2, 3, 4, 5], &filled(5), &[0.0; 5]);
        assert_eq!(pc.len(), 1);
        let mut c = KvCache::new(2, 4, 16);
        assert_eq!(pc.lookup(&[1, 2, 3, 4, 5, 6], 6, 1, &mut c).len, 5);
        // Larger than the whole budget: not kept.
        let mut tiny = PrefixCache::new(8);
        tiny.insert(&[1, 2, 3, 4], &filled(4), &[0.0; 4]);
        assert!(tiny.is_empty());
    }
}
