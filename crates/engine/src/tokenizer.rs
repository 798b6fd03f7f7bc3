//! Byte-level BPE tokenizer, built from GGUF metadata, whose ids equal llama.cpp's exactly.
//!
//! Supported: `tokenizer.ggml.model = "gpt2"` with `tokenizer.ggml.pre` one of `smollm`,
//! `starcoder` (both: every `\p{N}` codepoint is split off first, then the GPT-2 pre-tokenizer)
//! or `gpt-2` (the GPT-2 pre-tokenizer alone). Anything else is refused with
//! [`EngineError::Unsupported`], never silently approximated.
//!
//! The pipeline mirrors llama.cpp's `llama_vocab::impl::tokenize` for BPE vocabularies
//! (`src/llama-vocab.cpp` and `src/unicode.cpp` of llama.cpp, as vendored by
//! llama-cpp-python 0.3.36, commit `0c1e570`):
//!
//! 1. **Special-token partition** (`tokenizer_st_partition`): the texts of all CONTROL,
//!    USER_DEFINED and UNKNOWN tokens, longest first, are cut out of the raw text as whole
//!    tokens. With `parse_special = false`, CONTROL and UNKNOWN tokens are left as plain text
//!    but USER_DEFINED ones are still cut out (as llama.cpp and HF `tokenizers` do).
//! 2. **Pre-tokenization** of each remaining text fragment: llama.cpp does not run the
//!    regexes as written but its own hand-coded splitters, bounded by the pieces the previous
//!    regex produced, with its own Unicode tables (`unicode-data.cpp`). Both are ported here
//!    literally: `split_gpt2` and the `LETTER_RANGES` / `NUMBER_RANGES` / `is_space`
//!    tables below, so that rarely used codepoints are classified as llama.cpp classifies
//!    them, whatever Unicode version Rust's own tables follow.
//! 3. **Byte-level BPE** on the UTF-8 bytes of each piece, mapped to GPT-2's byte-to-unicode
//!    alphabet: the adjacent pair with the lowest merge rank is merged first, ties going to
//!    the leftmost pair (llama.cpp's `llm_tokenizer_bpe_session` priority queue), in
//!    O(n log n) per piece.
//!
//! No BOS is ever added, no prefix space is inserted and nothing is normalized.
//!
//! **Bytes without a token are dropped**, as llama.cpp drops them: real vocabularies lack some
//! byte tokens (SmolLM2's lacks 21: six rare ASCII controls such as 0x04, the bytes that never
//! occur in UTF-8, and 0xF1 / 0xF2, which only lead codepoints of planes 4 to 11), and
//! llama.cpp's per-byte fallback then finds nothing to emit. So `decode(encode(x)) == x` holds
//! exactly when every byte of `x` has a token.
//!
//! Validation is stricter than llama.cpp's (which aborts, or accepts and drops text later):
//! the token list must be free of duplicates, the byte tokens of space, newline and printable
//! ASCII must exist (otherwise this is not a byte-level vocabulary), and every merge must name
//! two tokens whose concatenation is a token. Given that, every BPE symbol is either a
//! vocabulary token or a lone byte without one, which is exactly when llama.cpp's fallback
//! drops it.
//!
//! Not replicated: llama.cpp's model-name heuristics that set LSTRIP/RSTRIP on special tokens
//! (phi-3, jina, modern-bert) and its default BOS/EOS id of 11 when the GGUF names none
//! (here: `None`).

use crate::error::{EngineError, Result};
use crate::gguf::{value_as_u64, GgufFile};
use candle_core::quantized::gguf_file::Value;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

/// GGUF token types (llama.cpp's `LLAMA_TOKEN_TYPE_*`); unknown values count as `Undefined`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TokenType {
    Undefined,
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

impl TokenType {
    fn from_i32(t: i32) -> Self {
        match t {
            1 => TokenType::Normal,
            2 => TokenType::Unknown,
            3 => TokenType::Control,
            4 => TokenType::UserDefined,
            5 => TokenType::Unused,
            6 => TokenType::Byte,
            _ => TokenType::Undefined,
        }
    }

    /// Tokens that llama.cpp matches as whole strings in the input (its special-token cache).
    fn is_special(self) -> bool {
        matches!(
            self,
            TokenType::Control | TokenType::UserDefined | TokenType::Unknown
        )
    }
}

/// The pre-tokenizer named by `tokenizer.ggml.pre`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PreTokenizer {
    /// `smollm`, `starcoder`: `\p{N}` isolated first, then the GPT-2 regex.
    DigitsThenGpt2,
    /// `gpt-2`: the GPT-2 regex alone.
    Gpt2,
}

impl PreTokenizer {
    fn from_name(pre: &str) -> Result<Self> {
        match pre {
            "smollm" | "starcoder" => Ok(PreTokenizer::DigitsThenGpt2),
            "gpt-2" => Ok(PreTokenizer::Gpt2),
            other => Err(EngineError::Unsupported(format!(
                "tokenizer.ggml.pre = {other:?} is not supported; supported pre-tokenizers: \
                 \"smollm\", \"starcoder\", \"gpt-2\""
            ))),
        }
    }
}

/// A byte-level BPE tokenizer. Immutable once built, so it is `Send + Sync` and can be shared.
#[derive(Clone)]
pub struct Tokenizer {
    /// Vocabulary text of each token (GGUF's `tokenizer.ggml.tokens`).
    tokens: Vec<String>,
    types: Vec<TokenType>,
    token_to_id: HashMap<String, u32>,
    /// `(left id, right id)` -> `(rank, merged id)`; the rank is the merge's index in the list.
    merges: HashMap<(u32, u32), (u32, u32)>,
    /// Token id of each raw byte (the single-character token of its GPT-2 alphabet symbol), or
    /// [`NO_TOKEN`] for bytes the vocabulary lacks.
    byte_ids: [u32; 256],
    /// CONTROL / USER_DEFINED / UNKNOWN tokens, longest text first (ties: lower id first).
    specials: Vec<u32>,
    /// Output bytes of each token (what [`Tokenizer::token_bytes`] returns).
    pieces: Vec<Vec<u8>>,
    pre: PreTokenizer,
    bos: Option<u32>,
    eos: Option<u32>,
}

impl std::fmt::Debug for Tokenizer {
    /// A summary: the vocabulary itself is far too large to print.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.tokens.len())
            .field("merges", &self.merges.len())
            .field("specials", &self.specials.len())
            .field("pre", &self.pre)
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .finish_non_exhaustive()
    }
}

/// A stretch of input: raw text still to be BPE-encoded, or an already matched special token.
enum Fragment<'a> {
    Text(&'a str),
    Token(u32),
}

fn tok_err(msg: impl Into<String>) -> EngineError {
    EngineError::Tokenizer(msg.into())
}

impl Tokenizer {
    /// Builds the tokenizer of a GGUF file from its `tokenizer.ggml.*` metadata.
    ///
    /// Refuses any `tokenizer.ggml.model` other than `"gpt2"` and any missing or unknown
    /// `tokenizer.ggml.pre` with [`EngineError::Unsupported`]; malformed metadata gives
    /// [`EngineError::Tokenizer`].
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let model = match g.get("tokenizer.ggml.model") {
            Some(Value::String(s)) => s.as_str(),
            Some(v) => {
                return Err(tok_err(format!(
                    "tokenizer.ggml.model is not a string: {}",
                    short(v)
                )))
            }
            None => {
                return Err(EngineError::Unsupported(
                    "the GGUF has no tokenizer.ggml.model; only byte-level BPE (\"gpt2\") \
                     tokenizers are supported"
                        .into(),
                ))
            }
        };
        if model != "gpt2" {
            return Err(EngineError::Unsupported(format!(
                "tokenizer.ggml.model = {model:?} is not supported; only byte-level BPE \
                 (\"gpt2\") tokenizers are"
            )));
        }
        let pre = match g.get("tokenizer.ggml.pre") {
            Some(Value::String(s)) => s.as_str(),
            Some(v) => {
                return Err(tok_err(format!(
                    "tokenizer.ggml.pre is not a string: {}",
                    short(v)
                )))
            }
            None => {
                return Err(EngineError::Unsupported(
                    "the GGUF has no tokenizer.ggml.pre (llama.cpp would fall back to its \
                     'default' pre-tokenizer, which is not implemented here); supported: \
                     \"smollm\", \"starcoder\", \"gpt-2\""
                        .into(),
                ))
            }
        };
        // Fail on an unknown pre-tokenizer before reading the (large) arrays.
        PreTokenizer::from_name(pre)?;

        let tokens = string_array(g, "tokenizer.ggml.tokens")?
            .ok_or_else(|| tok_err("missing tokenizer.ggml.tokens"))?;
        let merges = string_array(g, "tokenizer.ggml.merges")?
            .ok_or_else(|| tok_err("missing tokenizer.ggml.merges"))?;
        // Like llama.cpp: without a token_type array every token is NORMAL.
        let token_types = match g.get("tokenizer.ggml.token_type") {
            None => vec![1; tokens.len()],
            Some(Value::Array(vs)) => vs
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    value_as_i32(v).ok_or_else(|| {
                        tok_err(format!(
                            "tokenizer.ggml.token_type[{i}] is not a 32-bit integer: {}",
                            short(v)
                        ))
                    })
                })
                .collect::<Result<Vec<i32>>>()?,
            Some(v) => {
                return Err(tok_err(format!(
                    "tokenizer.ggml.token_type is not an array: {}",
                    short(v)
                )))
            }
        };
        let bos = optional_id(g, "tokenizer.ggml.bos_token_id")?;
        let eos = optional_id(g, "tokenizer.ggml.eos_token_id")?;
        Self::from_parts(tokens, token_types, merges, pre, bos, eos)
    }

    /// Builds a tokenizer from its parts: the token texts (byte-level alphabet), their GGUF
    /// token types, the merges as `"left right"` strings in rank order, the pre-tokenizer
    /// name and the BOS/EOS ids.
    pub fn from_parts(
        tokens: Vec<String>,
        token_types: Vec<i32>,
        merges: Vec<String>,
        pre: &str,
        bos: Option<u32>,
        eos: Option<u32>,
    ) -> Result<Self> {
        let pre = PreTokenizer::from_name(pre)?;
        if tokens.is_empty() {
            return Err(tok_err("the vocabulary is empty"));
        }
        if u32::try_from(tokens.len()).is_err() {
            return Err(tok_err(format!(
                "{} tokens do not fit 32-bit ids",
                tokens.len()
            )));
        }
        if token_types.len() != tokens.len() {
            return Err(tok_err(format!(
                "{} token types for {} tokens",
                token_types.len(),
                tokens.len()
            )));
        }
        let n = tokens.len() as u32;
        for (what, id) in [("BOS", bos), ("EOS", eos)] {
            if let Some(id) = id {
                if id >= n {
                    return Err(tok_err(format!(
                        "{what} id {id} is out of range for a vocabulary of {n} tokens"
                    )));
                }
            }
        }

        // llama.cpp renames empty tokens so that they can never match anything.
        let tokens: Vec<String> = tokens
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                if t.is_empty() {
                    format!("[EMPTY_{i}]")
                } else {
                    t
                }
            })
            .collect();
        let types: Vec<TokenType> = token_types.into_iter().map(TokenType::from_i32).collect();

        let mut token_to_id = HashMap::with_capacity(tokens.len());
        for (i, t) in tokens.iter().enumerate() {
            if let Some(prev) = token_to_id.insert(t.clone(), i as u32) {
                return Err(tok_err(format!(
                    "duplicate token {t:?} (ids {prev} and {i})"
                )));
            }
        }

        let mut byte_ids = [NO_TOKEN; 256];
        for (b, slot) in byte_ids.iter_mut().enumerate() {
            let sym = BYTE_TO_CHAR[b].to_string();
            match token_to_id.get(&sym) {
                Some(&id) => *slot = id,
                None if b == 0x20 || b == 0x0A || (0x21..=0x7E).contains(&b) => {
                    return Err(tok_err(format!(
                        "the vocabulary lacks the byte token {sym:?} for byte 0x{b:02X}; \
                         not a byte-level BPE vocabulary"
                    )))
                }
                None => {}
            }
        }
        let missing = byte_ids.iter().filter(|&&id| id == NO_TOKEN).count();
        if missing > 0 {
            tracing::debug!(
                "the vocabulary lacks {missing} byte tokens; those bytes encode to nothing"
            );
        }

        let mut merge_map = HashMap::with_capacity(merges.len());
        for (rank, m) in merges.iter().enumerate() {
            // llama.cpp: `word.find(' ', 1)`, a byte search that skips the first byte.
            let pos = m
                .as_bytes()
                .iter()
                .skip(1)
                .position(|&c| c == b' ')
                .map(|p| p + 1)
                .ok_or_else(|| tok_err(format!("merge {rank} ({m:?}) has no separating space")))?;
            let (left, right) = (&m[..pos], &m[pos + 1..]);
            let id_of = |s: &str| {
                token_to_id.get(s).copied().ok_or_else(|| {
                    tok_err(format!(
                        "merge {rank} ({m:?}) names {s:?}, which is not a token"
                    ))
                })
            };
            let (l, r) = (id_of(left)?, id_of(right)?);
            let merged = id_of(&format!("{left}{right}"))?;
            let rank = u32::try_from(rank).map_err(|_| tok_err("too many merges"))?;
            // Duplicates: the first (lowest) rank wins, as with llama.cpp's map emplace.
            merge_map.entry((l, r)).or_insert((rank, merged));
        }

        let mut specials: Vec<u32> = (0..n).filter(|&i| types[i as usize].is_special()).collect();
        specials.sort_by_key(|&i| (Reverse(tokens[i as usize].len()), i));

        let pieces = tokens
            .iter()
            .zip(&types)
            .map(|(t, &ty)| token_piece(t, ty))
            .collect();

        Ok(Self {
            tokens,
            types,
            token_to_id,
            merges: merge_map,
            byte_ids,
            specials,
            pieces,
            pre,
            bos,
            eos,
        })
    }

    /// Token ids of `text`, exactly as llama.cpp's `llama_tokenize(text, add_special = false,
    /// parse_special)`. Never adds BOS. With `parse_special`, texts of control tokens such as
    /// `<|im_start|>` become those tokens; without it they are encoded as plain text.
    pub fn encode(&self, text: &str, parse_special: bool) -> Result<Vec<u32>> {
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        let mut scratch = Scratch::default();
        for frag in self.partition(text, parse_special) {
            match frag {
                Fragment::Token(id) => out.push(id),
                Fragment::Text(s) => self.encode_fragment(s, &mut scratch, &mut out),
            }
        }
        Ok(out)
    }

    /// Raw output bytes of a token: byte-level decoded for normal tokens, the token's text for
    /// control / user-defined / unknown tokens, nothing for unused ones. `None` if out of range.
    pub fn token_bytes(&self, id: u32) -> Option<Vec<u8>> {
        self.pieces.get(id as usize).cloned()
    }

    /// The bytes of a non-control token, borrowed (`None` for control tokens and ids outside
    /// the vocabulary).
    pub fn text_piece(&self, id: u32) -> Option<&[u8]> {
        if self.is_control(id) {
            return None;
        }
        self.pieces.get(id as usize).map(Vec::as_slice)
    }

    /// The concatenated [`Tokenizer::token_bytes`] of `ids` as (lossy) UTF-8; out-of-range ids
    /// are skipped. Control tokens appear as their text.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            if let Some(p) = self.pieces.get(id as usize) {
                bytes.extend_from_slice(p);
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    /// The id of the token whose vocabulary text is exactly `text` (e.g. `"<|im_end|>"`; for
    /// normal tokens this is the byte-level form, e.g. `"Ġthe"`).
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.token_to_id.get(text).copied()
    }

    /// Whether `id` is a CONTROL token (GGUF token type 3).
    pub fn is_control(&self, id: u32) -> bool {
        self.types.get(id as usize) == Some(&TokenType::Control)
    }

    /// Ids that end generation: EOS, plus `<|im_end|>` and `<|endoftext|>` when the vocabulary
    /// has them; no duplicates, EOS first.
    pub fn stop_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self.eos.into_iter().collect();
        for t in ["<|im_end|>", "<|endoftext|>"] {
            if let Some(id) = self.token_id(t) {
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
        ids
    }

    /// llama.cpp's `tokenizer_st_partition`: for each special token, longest first, every
    /// occurrence in every still-raw fragment (left to right, non-overlapping) is cut out.
    /// Equal lengths go by id (llama.cpp's `std::sort` leaves that order unspecified; it only
    /// matters for two overlapping special texts of the same length).
    fn partition<'a>(&self, text: &'a str, parse_special: bool) -> Vec<Fragment<'a>> {
        let mut frags = Vec::new();
        if !text.is_empty() {
            frags.push(Fragment::Text(text));
        }
        for &id in &self.specials {
            let ty = self.types[id as usize];
            if !parse_special && matches!(ty, TokenType::Control | TokenType::Unknown) {
                continue;
            }
            let pat = self.tokens[id as usize].as_str();
            let hit = frags
                .iter()
                .any(|f| matches!(f, Fragment::Text(s) if s.contains(pat)));
            if !hit {
                continue;
            }
            let mut next = Vec::with_capacity(frags.len() + 2);
            for f in frags {
                match f {
                    Fragment::Token(_) => next.push(f),
                    Fragment::Text(mut rest) => {
                        while let Some(p) = rest.find(pat) {
                            if p > 0 {
                                next.push(Fragment::Text(&rest[..p]));
                            }
                            next.push(Fragment::Token(id));
                            rest = &rest[p + pat.len()..];
                        }
                        if !rest.is_empty() {
                            next.push(Fragment::Text(rest));
                        }
                    }
                }
            }
            frags = next;
        }
        frags
    }

    /// Pre-tokenizes one raw fragment and BPE-encodes each piece.
    fn encode_fragment(&self, text: &str, s: &mut Scratch, out: &mut Vec<u32>) {
        s.chars.clear();
        s.offsets.clear();
        for (off, c) in text.char_indices() {
            s.chars.push(c);
            s.offsets.push(off);
        }
        s.offsets.push(text.len());
        s.words.clear();
        let n = s.chars.len();
        match self.pre {
            PreTokenizer::Gpt2 => split_gpt2(&s.chars, 0, n, &mut s.words),
            PreTokenizer::DigitsThenGpt2 => {
                // `\p{N}`: each number codepoint is its own piece; the stretches between them
                // are pieces too, and the GPT-2 splitter never looks across a piece boundary.
                let mut start = 0;
                for i in 0..n {
                    if classify(s.chars[i]) == Class::Number {
                        split_gpt2(&s.chars, start, i, &mut s.words);
                        s.words.push((i, i + 1));
                        start = i + 1;
                    }
                }
                split_gpt2(&s.chars, start, n, &mut s.words);
            }
        }
        for k in 0..s.words.len() {
            let (a, b) = s.words[k];
            let bytes = &text.as_bytes()[s.offsets[a]..s.offsets[b]];
            self.bpe(bytes, &mut s.bpe, out);
        }
    }

    /// BPE-merges one pre-tokenized piece, lowest rank first, leftmost first on equal ranks.
    fn bpe(&self, word: &[u8], w: &mut BpeScratch, out: &mut Vec<u32>) {
        const NONE: usize = usize::MAX;
        if word.len() == 1 {
            let id = self.byte_ids[word[0] as usize];
            if id != NO_TOKEN {
                out.push(id);
            }
            return;
        }
        let n = word.len();
        w.ids.clear();
        w.ids
            .extend(word.iter().map(|&b| self.byte_ids[b as usize]));
        w.prev.clear();
        w.prev
            .extend((0..n).map(|i| if i == 0 { NONE } else { i - 1 }));
        w.next.clear();
        w.next
            .extend((0..n).map(|i| if i + 1 == n { NONE } else { i + 1 }));
        w.alive.clear();
        w.alive.resize(n, true);
        w.heap.clear();

        let push = |ids: &[u32], heap: &mut BinaryHeap<Reverse<Bigram>>, l: usize, r: usize| {
            if l == NONE || r == NONE {
                return;
            }
            if let Some(&(rank, merged)) = self.merges.get(&(ids[l], ids[r])) {
                heap.push(Reverse(Bigram {
                    rank,
                    left: l,
                    right: r,
                    left_id: ids[l],
                    right_id: ids[r],
                    merged,
                }));
            }
        };
        for i in 1..n {
            push(&w.ids, &mut w.heap, i - 1, i);
        }
        while let Some(Reverse(bg)) = w.heap.pop() {
            let (l, r) = (bg.left, bg.right);
            // Stale entry: one side has since been merged away or grown.
            if !w.alive[l] || !w.alive[r] || w.ids[l] != bg.left_id || w.ids[r] != bg.right_id {
                continue;
            }
            w.ids[l] = bg.merged;
            w.alive[r] = false;
            let after = w.next[r];
            w.next[l] = after;
            if after != NONE {
                w.prev[after] = l;
            }
            push(&w.ids, &mut w.heap, w.prev[l], l);
            push(&w.ids, &mut w.heap, l, after);
        }
        // Symbols without a token can only be lone bytes; llama.cpp's fallback drops them.
        let mut i = 0;
        while i != NONE {
            if w.ids[i] != NO_TOKEN {
                out.push(w.ids[i]);
            }
            i = w.next[i];
        }
    }
}

/// Stands for a byte that has no token; never a key of the merge table, so it never merges.
const NO_TOKEN: u32 = u32::MAX;

/// A candidate merge in the priority queue. Ordered by rank, then left position (llama.cpp's
/// `llm_bigram_bpe::comparator`); the remaining fields only detect stale entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Bigram {
    rank: u32,
    left: usize,
    right: usize,
    left_id: u32,
    right_id: u32,
    merged: u32,
}

/// Reusable buffers for one `encode` call.
#[derive(Default)]
struct Scratch {
    chars: Vec<char>,
    /// Byte offset of each char, plus the fragment's length.
    offsets: Vec<usize>,
    /// Pre-tokenized pieces as char index ranges.
    words: Vec<(usize, usize)>,
    bpe: BpeScratch,
}

#[derive(Default)]
struct BpeScratch {
    ids: Vec<u32>,
    prev: Vec<usize>,
    next: Vec<usize>,
    alive: Vec<bool>,
    heap: BinaryHeap<Reverse<Bigram>>,
}

/// Output bytes of a token, as llama.cpp's `token_to_piece(special = true)` for BPE vocabs.
fn token_piece(text: &str, ty: TokenType) -> Vec<u8> {
    match ty {
        TokenType::Control | TokenType::UserDefined | TokenType::Unknown => {
            text.as_bytes().to_vec()
        }
        TokenType::Normal => {
            let mut out = Vec::with_capacity(text.len());
            for c in text.chars() {
                match char_to_byte(c) {
                    Some(b) => out.push(b),
                    None => {
                        // llama.cpp's `llama_decode_text` marks symbols outside the alphabet.
                        let mut buf = [0u8; 4];
                        let hex: String = c
                            .encode_utf8(&mut buf)
                            .bytes()
                            .map(|b| format!("{b:02x}"))
                            .collect();
                        out.extend_from_slice(format!("[UNK_BYTE_0x{hex}{text}]").as_bytes());
                    }
                }
            }
            out
        }
        // `<0xHH>` byte tokens (rare in byte-level vocabs).
        TokenType::Byte => text
            .get(3..5)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .map(|b| vec![b])
            .unwrap_or_default(),
        TokenType::Unused | TokenType::Undefined => Vec::new(),
    }
}

fn short(v: &Value) -> String {
    let s = format!("{v:?}");
    if s.chars().count() > 80 {
        format!("{}...", s.chars().take(80).collect::<String>())
    } else {
        s
    }
}

fn value_as_i32(v: &Value) -> Option<i32> {
    match v {
        Value::I32(x) => Some(*x),
        Value::I8(x) => Some(*x as i32),
        Value::I16(x) => Some(*x as i32),
        Value::U8(x) => Some(*x as i32),
        Value::U16(x) => Some(*x as i32),
        Value::U32(x) => i32::try_from(*x).ok(),
        Value::I64(x) => i32::try_from(*x).ok(),
        Value::U64(x) => i32::try_from(*x).ok(),
        _ => None,
    }
}

/// A metadata array of strings; `None` if the key is absent.
fn string_array(g: &GgufFile, key: &str) -> Result<Option<Vec<String>>> {
    match g.get(key) {
        None => Ok(None),
        Some(Value::Array(vs)) => vs
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.clone()),
                other => Err(tok_err(format!(
                    "{key}[{i}] is not a string: {}",
                    short(other)
                ))),
            })
            .collect::<Result<Vec<_>>>()
            .map(Some),
        Some(v) => Err(tok_err(format!("{key} is not an array: {}", short(v)))),
    }
}

fn optional_id(g: &GgufFile, key: &str) -> Result<Option<u32>> {
    match g.get(key) {
        None => Ok(None),
        Some(v) => value_as_u64(v)
            .and_then(|x| u32::try_from(x).ok())
            .map(Some)
            .ok_or_else(|| tok_err(format!("{key} is not a token id: {}", short(v)))),
    }
}

/// One message of a chat, as in OpenAI-style APIs and HF chat templates.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

/// SmolLM2's default system prompt, inserted by its chat template when the first message is
/// not a system message.
pub const DEFAULT_SYSTEM_PROMPT: &str =
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

/// The ChatML prompt of SmolLM2's chat template (`tokenizer.chat_template`):
/// `<|im_start|>{role}\n{content}<|im_end|>\n` per message, preceded by the default system
/// message when `messages` is non-empty and does not start with a system message, followed
/// by `<|im_start|>assistant\n` when `add_generation_prompt`. Contents are not trimmed or
/// escaped; encode the result with `parse_special = true`.
pub fn chat_prompt(messages: &[ChatMessage], add_generation_prompt: bool) -> String {
    let mut s = String::new();
    if messages.first().is_some_and(|m| m.role != "system") {
        s.push_str("<|im_start|>system\n");
        s.push_str(DEFAULT_SYSTEM_PROMPT);
        s.push_str("<|im_end|>\n");
    }
    for m in messages {
        s.push_str("<|im_start|>");
        s.push_str(&m.role);
        s.push('\n');
        s.push_str(&m.content);
        s.push_str("<|im_end|>\n");
    }
    if add_generation_prompt {
        s.push_str("<|im_start|>assistant\n");
    }
    s
}

// ---------------------------------------------------------------------------------------------
// GPT-2 byte-to-unicode alphabet
// ---------------------------------------------------------------------------------------------

/// GPT-2's `bytes_to_unicode`: printable Latin-1 bytes map to themselves, the other 68 bytes
/// to U+0100.. in byte order.
const BYTE_TO_CHAR: [char; 256] = byte_to_char_table();

/// GPT-2's byte-to-unicode alphabet: the printable character that stands for byte `b` in a
/// byte-level vocabulary (e.g. `Ġ` for a space).
pub fn byte_char(b: u8) -> char {
    BYTE_TO_CHAR[b as usize]
}

const fn byte_to_char_table() -> [char; 256] {
    let mut t = ['\0'; 256];
    let mut n = 0u32;
    let mut b = 0usize;
    while b < 256 {
        let printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        let cp = if printable {
            b as u32
        } else {
            n += 1;
            256 + n - 1
        };
        t[b] = match char::from_u32(cp) {
            Some(c) => c,
            None => '\0',
        };
        b += 1;
    }
    t
}

/// Inverse of [`BYTE_TO_CHAR`]: `None` for characters outside the alphabet. (Only used
/// while building the tokenizer, so a scan of 256 entries is fine.)
fn char_to_byte(c: char) -> Option<u8> {
    BYTE_TO_CHAR.iter().position(|&m| m == c).map(|b| b as u8)
}

// ---------------------------------------------------------------------------------------------
// Pre-tokenizer: llama.cpp's `unicode_regex_split_custom_gpt2`
// ---------------------------------------------------------------------------------------------

/// A codepoint's class as the GPT-2 splitter sees it (llama.cpp's `unicode_cpt_flags`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    /// `\p{L}`
    Letter,
    /// `\p{N}`
    Number,
    /// `\s` (llama.cpp's `unicode_set_whitespace`)
    Space,
    /// Everything else (punctuation, symbols, marks, controls, unassigned).
    Other,
}

fn classify(c: char) -> Class {
    if c.is_ascii() {
        return match c {
            'a'..='z' | 'A'..='Z' => Class::Letter,
            '0'..='9' => Class::Number,
            '\t' | '\n' | '\x0B' | '\x0C' | '\r' | ' ' => Class::Space,
            _ => Class::Other,
        };
    }
    let cp = c as u32;
    if in_ranges(&LETTER_RANGES, cp) {
        Class::Letter
    } else if in_ranges(&NUMBER_RANGES, cp) {
        Class::Number
    } else if is_space(cp) {
        Class::Space
    } else {
        Class::Other
    }
}

fn in_ranges(ranges: &[(u32, u32)], cp: u32) -> bool {
    // Index of the first range starting after `cp`; the one before it may contain `cp`.
    let i = ranges.partition_point(|&(start, _)| start <= cp);
    i > 0 && cp <= ranges[i - 1].1
}

/// llama.cpp's `unicode_set_whitespace` (Unicode White_Space).
fn is_space(cp: u32) -> bool {
    matches!(
        cp,
        0x09..=0x0D | 0x20 | 0x85 | 0xA0 | 0x1680 | 0x2000..=0x200A | 0x2028 | 0x2029 | 0x202F
            | 0x205F | 0x3000
    )
}

/// Splits `chars[start..end]` by the GPT-2 pre-tokenizer
/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`, pushing the
/// pieces as char index ranges. A literal port of llama.cpp's hand-written matcher: positions
/// at or past `end` are "out of range" (so `(?!\S)` succeeds at the end of the piece), and
/// only U+0020 serves as the optional leading space.
fn split_gpt2(chars: &[char], start: usize, end: usize, out: &mut Vec<(usize, usize)>) {
    let class_at = |p: usize| (p < end).then(|| classify(chars[p]));
    let mut prev = start;
    let mut emit = |to: usize, out: &mut Vec<(usize, usize)>| {
        if to > prev {
            out.push((prev, to));
        }
        prev = to;
    };
    let mut pos = start;
    while pos < end {
        let c = chars[pos];
        // 's|'t|'re|'ve|'m|'ll|'d (case-sensitive)
        if c == '\'' && pos + 1 < end {
            let c1 = chars[pos + 1];
            if matches!(c1, 's' | 't' | 'm' | 'd') {
                pos += 2;
                emit(pos, out);
                continue;
            }
            if pos + 2 < end {
                let c2 = chars[pos + 2];
                if matches!((c1, c2), ('r', 'e') | ('v', 'e') | ('l', 'l')) {
                    pos += 3;
                    emit(pos, out);
                    continue;
                }
            }
        }
        let lead = if c == ' ' {
            class_at(pos + 1)
        } else {
            class_at(pos)
        };
        match lead {
            // ' ?\p{L}+', ' ?\p{N}+', ' ?[^\s\p{L}\p{N}]+'
            Some(k @ (Class::Letter | Class::Number | Class::Other)) => {
                if c == ' ' {
                    pos += 1;
                }
                while class_at(pos) == Some(k) {
                    pos += 1;
                }
                emit(pos, out);
            }
            _ => {
                let mut spaces = 0;
                while class_at(pos + spaces) == Some(Class::Space) {
                    spaces += 1;
                }
                if spaces > 1 && pos + spaces < end {
                    // '\s+(?!\S)': leave the last space to prefix the next piece.
                    pos += spaces - 1;
                    emit(pos, out);
                } else if spaces > 0 {
                    // '\s+'
                    pos += spaces;
                    emit(pos, out);
                } else {
                    // No branch matches: the codepoint stands alone. (Unreachable in practice:
                    // every codepoint has a class.)
                    pos += 1;
                    emit(pos, out);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// llama.cpp's Unicode tables
// ---------------------------------------------------------------------------------------------
//
// Inclusive codepoint ranges whose `unicode_cpt_flags` category is LETTER (`\p{L}`) or
// NUMBER (`\p{N}`), transcribed from llama.cpp's generated `src/unicode-data.cpp`
// (`unicode_ranges_flags`, llama.cpp commit 0c1e570 as vendored by llama-cpp-python 0.3.36),
// with adjacent ranges joined. Sorted, so membership is a binary search.

#[rustfmt::skip]
const LETTER_RANGES: [(u32, u32); 660] = [
    (0x41, 0x5A), (0x61, 0x7A), (0xAA, 0xAA), (0xB5, 0xB5), (0xBA, 0xBA), (0xC0, 0xD6),
    (0xD8, 0xF6), (0xF8, 0x2C1), (0x2C6, 0x2D1), (0x2E0, 0x2E4), (0x2EC, 0x2EC), (0x2EE, 0x2EE),
    (0x370, 0x374), (0x376, 0x377), (0x37A, 0x37D), (0x37F, 0x37F), (0x386, 0x386), (0x388, 0x38A),
    (0x38C, 0x38C), (0x38E, 0x3A1), (0x3A3, 0x3F5), (0x3F7, 0x481), (0x48A, 0x52F), (0x531, 0x556),
    (0x559, 0x559), (0x560, 0x588), (0x5D0, 0x5EA), (0x5EF, 0x5F2), (0x620, 0x64A), (0x66E, 0x66F),
    (0x671, 0x6D3), (0x6D5, 0x6D5), (0x6E5, 0x6E6), (0x6EE, 0x6EF), (0x6FA, 0x6FC), (0x6FF, 0x6FF),
    (0x710, 0x710), (0x712, 0x72F), (0x74D, 0x7A5), (0x7B1, 0x7B1), (0x7CA, 0x7EA), (0x7F4, 0x7F5),
    (0x7FA, 0x7FA), (0x800, 0x815), (0x81A, 0x81A), (0x824, 0x824), (0x828, 0x828), (0x840, 0x858),
    (0x860, 0x86A), (0x870, 0x887), (0x889, 0x88E), (0x8A0, 0x8C9), (0x904, 0x939), (0x93D, 0x93D),
    (0x950, 0x950), (0x958, 0x961), (0x971, 0x980), (0x985, 0x98C), (0x98F, 0x990), (0x993, 0x9A8),
    (0x9AA, 0x9B0), (0x9B2, 0x9B2), (0x9B6, 0x9B9), (0x9BD, 0x9BD), (0x9CE, 0x9CE), (0x9DC, 0x9DD),
    (0x9DF, 0x9E1), (0x9F0, 0x9F1), (0x9FC, 0x9FC), (0xA05, 0xA0A), (0xA0F, 0xA10), (0xA13, 0xA28),
    (0xA2A, 0xA30), (0xA32, 0xA33), (0xA35, 0xA36), (0xA38, 0xA39), (0xA59, 0xA5C), (0xA5E, 0xA5E),
    (0xA72, 0xA74), (0xA85, 0xA8D), (0xA8F, 0xA91), (0xA93, 0xAA8), (0xAAA, 0xAB0), (0xAB2, 0xAB3),
    (0xAB5, 0xAB9), (0xABD, 0xABD), (0xAD0, 0xAD0), (0xAE0, 0xAE1), (0xAF9, 0xAF9), (0xB05, 0xB0C),
    (0xB0F, 0xB10), (0xB13, 0xB28), (0xB2A, 0xB30), (0xB32, 0xB33), (0xB35, 0xB39), (0xB3D, 0xB3D),
    (0xB5C, 0xB5D), (0xB5F, 0xB61), (0xB71, 0xB71), (0xB83, 0xB83), (0xB85, 0xB8A), (0xB8E, 0xB90),
    (0xB92, 0xB95), (0xB99, 0xB9A), (0xB9C, 0xB9C), (0xB9E, 0xB9F), (0xBA3, 0xBA4), (0xBA8, 0xBAA),
    (0xBAE, 0xBB9), (0xBD0, 0xBD0), (0xC05, 0xC0C), (0xC0E, 0xC10), (0xC12, 0xC28), (0xC2A, 0xC39),
    (0xC3D, 0xC3D), (0xC58, 0xC5A), (0xC5D, 0xC5D), (0xC60, 0xC61), (0xC80, 0xC80), (0xC85, 0xC8C),
    (0xC8E, 0xC90), (0xC92, 0xCA8), (0xCAA, 0xCB3), (0xCB5, 0xCB9), (0xCBD, 0xCBD), (0xCDD, 0xCDE),
    (0xCE0, 0xCE1), (0xCF1, 0xCF2), (0xD04, 0xD0C), (0xD0E, 0xD10), (0xD12, 0xD3A), (0xD3D, 0xD3D),
    (0xD4E, 0xD4E), (0xD54, 0xD56), (0xD5F, 0xD61), (0xD7A, 0xD7F), (0xD85, 0xD96), (0xD9A, 0xDB1),
    (0xDB3, 0xDBB), (0xDBD, 0xDBD), (0xDC0, 0xDC6), (0xE01, 0xE30), (0xE32, 0xE33), (0xE40, 0xE46),
    (0xE81, 0xE82), (0xE84, 0xE84), (0xE86, 0xE8A), (0xE8C, 0xEA3), (0xEA5, 0xEA5), (0xEA7, 0xEB0),
    (0xEB2, 0xEB3), (0xEBD, 0xEBD), (0xEC0, 0xEC4), (0xEC6, 0xEC6), (0xEDC, 0xEDF), (0xF00, 0xF00),
    (0xF40, 0xF47), (0xF49, 0xF6C), (0xF88, 0xF8C), (0x1000, 0x102A), (0x103F, 0x103F),
    (0x1050, 0x1055), (0x105A, 0x105D), (0x1061, 0x1061), (0x1065, 0x1066), (0x106E, 0x1070),
    (0x1075, 0x1081), (0x108E, 0x108E), (0x10A0, 0x10C5), (0x10C7, 0x10C7), (0x10CD, 0x10CD),
    (0x10D0, 0x10FA), (0x10FC, 0x1248), (0x124A, 0x124D), (0x1250, 0x1256), (0x1258, 0x1258),
    (0x125A, 0x125D), (0x1260, 0x1288), (0x128A, 0x128D), (0x1290, 0x12B0), (0x12B2, 0x12B5),
    (0x12B8, 0x12BE), (0x12C0, 0x12C0), (0x12C2, 0x12C5), (0x12C8, 0x12D6), (0x12D8, 0x1310),
    (0x1312, 0x1315), (0x1318, 0x135A), (0x1380, 0x138F), (0x13A0, 0x13F5), (0x13F8, 0x13FD),
    (0x1401, 0x166C), (0x166F, 0x167F), (0x1681, 0x169A), (0x16A0, 0x16EA), (0x16F1, 0x16F8),
    (0x1700, 0x1711), (0x171F, 0x1731), (0x1740, 0x1751), (0x1760, 0x176C), (0x176E, 0x1770),
    (0x1780, 0x17B3), (0x17D7, 0x17D7), (0x17DC, 0x17DC), (0x1820, 0x1878), (0x1880, 0x1884),
    (0x1887, 0x18A8), (0x18AA, 0x18AA), (0x18B0, 0x18F5), (0x1900, 0x191E), (0x1950, 0x196D),
    (0x1970, 0x1974), (0x1980, 0x19AB), (0x19B0, 0x19C9), (0x1A00, 0x1A16), (0x1A20, 0x1A54),
    (0x1AA7, 0x1AA7), (0x1B05, 0x1B33), (0x1B45, 0x1B4C), (0x1B83, 0x1BA0), (0x1BAE, 0x1BAF),
    (0x1BBA, 0x1BE5), (0x1C00, 0x1C23), (0x1C4D, 0x1C4F), (0x1C5A, 0x1C7D), (0x1C80, 0x1C88),
    (0x1C90, 0x1CBA), (0x1CBD, 0x1CBF), (0x1CE9, 0x1CEC), (0x1CEE, 0x1CF3), (0x1CF5, 0x1CF6),
    (0x1CFA, 0x1CFA), (0x1D00, 0x1DBF), (0x1E00, 0x1F15), (0x1F18, 0x1F1D), (0x1F20, 0x1F45),
    (0x1F48, 0x1F4D), (0x1F50, 0x1F57), (0x1F59, 0x1F59), (0x1F5B, 0x1F5B), (0x1F5D, 0x1F5D),
    (0x1F5F, 0x1F7D), (0x1F80, 0x1FB4), (0x1FB6, 0x1FBC), (0x1FBE, 0x1FBE), (0x1FC2, 0x1FC4),
    (0x1FC6, 0x1FCC), (0x1FD0, 0x1FD3), (0x1FD6, 0x1FDB), (0x1FE0, 0x1FEC), (0x1FF2, 0x1FF4),
    (0x1FF6, 0x1FFC), (0x2071, 0x2071), (0x207F, 0x207F), (0x2090, 0x209C), (0x2102, 0x2102),
    (0x2107, 0x2107), (0x210A, 0x2113), (0x2115, 0x2115), (0x2119, 0x211D), (0x2124, 0x2124),
    (0x2126, 0x2126), (0x2128, 0x2128), (0x212A, 0x212D), (0x212F, 0x2139), (0x213C, 0x213F),
    (0x2145, 0x2149), (0x214E, 0x214E), (0x2183, 0x2184), (0x2C00, 0x2CE4), (0x2CEB, 0x2CEE),
    (0x2CF2, 0x2CF3), (0x2D00, 0x2D25), (0x2D27, 0x2D27), (0x2D2D, 0x2D2D), (0x2D30, 0x2D67),
    (0x2D6F, 0x2D6F), (0x2D80, 0x2D96), (0x2DA0, 0x2DA6), (0x2DA8, 0x2DAE), (0x2DB0, 0x2DB6),
    (0x2DB8, 0x2DBE), (0x2DC0, 0x2DC6), (0x2DC8, 0x2DCE), (0x2DD0, 0x2DD6), (0x2DD8, 0x2DDE),
    (0x2E2F, 0x2E2F), (0x3005, 0x3006), (0x3031, 0x3035), (0x303B, 0x303C), (0x3041, 0x3096),
    (0x309D, 0x309F), (0x30A1, 0x30FA), (0x30FC, 0x30FF), (0x3105, 0x312F), (0x3131, 0x318E),
    (0x31A0, 0x31BF), (0x31F0, 0x31FF), (0x3400, 0x4DBF), (0x4E00, 0xA48C), (0xA4D0, 0xA4FD),
    (0xA500, 0xA60C), (0xA610, 0xA61F), (0xA62A, 0xA62B), (0xA640, 0xA66E), (0xA67F, 0xA69D),
    (0xA6A0, 0xA6E5), (0xA717, 0xA71F), (0xA722, 0xA788), (0xA78B, 0xA7CA), (0xA7D0, 0xA7D1),
    (0xA7D3, 0xA7D3), (0xA7D5, 0xA7D9), (0xA7F2, 0xA801), (0xA803, 0xA805), (0xA807, 0xA80A),
    (0xA80C, 0xA822), (0xA840, 0xA873), (0xA882, 0xA8B3), (0xA8F2, 0xA8F7), (0xA8FB, 0xA8FB),
    (0xA8FD, 0xA8FE), (0xA90A, 0xA925), (0xA930, 0xA946), (0xA960, 0xA97C), (0xA984, 0xA9B2),
    (0xA9CF, 0xA9CF), (0xA9E0, 0xA9E4), (0xA9E6, 0xA9EF), (0xA9FA, 0xA9FE), (0xAA00, 0xAA28),
    (0xAA40, 0xAA42), (0xAA44, 0xAA4B), (0xAA60, 0xAA76), (0xAA7A, 0xAA7A), (0xAA7E, 0xAAAF),
    (0xAAB1, 0xAAB1), (0xAAB5, 0xAAB6), (0xAAB9, 0xAABD), (0xAAC0, 0xAAC0), (0xAAC2, 0xAAC2),
    (0xAADB, 0xAADD), (0xAAE0, 0xAAEA), (0xAAF2, 0xAAF4), (0xAB01, 0xAB06), (0xAB09, 0xAB0E),
    (0xAB11, 0xAB16), (0xAB20, 0xAB26), (0xAB28, 0xAB2E), (0xAB30, 0xAB5A), (0xAB5C, 0xAB69),
    (0xAB70, 0xABE2), (0xAC00, 0xD7A3), (0xD7B0, 0xD7C6), (0xD7CB, 0xD7FB), (0xF900, 0xFA6D),
    (0xFA70, 0xFAD9), (0xFB00, 0xFB06), (0xFB13, 0xFB17), (0xFB1D, 0xFB1D), (0xFB1F, 0xFB28),
    (0xFB2A, 0xFB36), (0xFB38, 0xFB3C), (0xFB3E, 0xFB3E), (0xFB40, 0xFB41), (0xFB43, 0xFB44),
    (0xFB46, 0xFBB1), (0xFBD3, 0xFD3D), (0xFD50, 0xFD8F), (0xFD92, 0xFDC7), (0xFDF0, 0xFDFB),
    (0xFE70, 0xFE74), (0xFE76, 0xFEFC), (0xFF21, 0xFF3A), (0xFF41, 0xFF5A), (0xFF66, 0xFFBE),
    (0xFFC2, 0xFFC7), (0xFFCA, 0xFFCF), (0xFFD2, 0xFFD7), (0xFFDA, 0xFFDC), (0x10000, 0x1000B),
    (0x1000D, 0x10026), (0x10028, 0x1003A), (0x1003C, 0x1003D), (0x1003F, 0x1004D),
    (0x10050, 0x1005D), (0x10080, 0x100FA), (0x10280, 0x1029C), (0x102A0, 0x102D0),
    (0x10300, 0x1031F), (0x1032D, 0x10340), (0x10342, 0x10349), (0x10350, 0x10375),
    (0x10380, 0x1039D), (0x103A0, 0x103C3), (0x103C8, 0x103CF), (0x10400, 0x1049D),
    (0x104B0, 0x104D3), (0x104D8, 0x104FB), (0x10500, 0x10527), (0x10530, 0x10563),
    (0x10570, 0x1057A), (0x1057C, 0x1058A), (0x1058C, 0x10592), (0x10594, 0x10595),
    (0x10597, 0x105A1), (0x105A3, 0x105B1), (0x105B3, 0x105B9), (0x105BB, 0x105BC),
    (0x10600, 0x10736), (0x10740, 0x10755), (0x10760, 0x10767), (0x10780, 0x10785),
    (0x10787, 0x107B0), (0x107B2, 0x107BA), (0x10800, 0x10805), (0x10808, 0x10808),
    (0x1080A, 0x10835), (0x10837, 0x10838), (0x1083C, 0x1083C), (0x1083F, 0x10855),
    (0x10860, 0x10876), (0x10880, 0x1089E), (0x108E0, 0x108F2), (0x108F4, 0x108F5),
    (0x10900, 0x10915), (0x10920, 0x10939), (0x10980, 0x109B7), (0x109BE, 0x109BF),
    (0x10A00, 0x10A00), (0x10A10, 0x10A13), (0x10A15, 0x10A17), (0x10A19, 0x10A35),
    (0x10A60, 0x10A7C), (0x10A80, 0x10A9C), (0x10AC0, 0x10AC7), (0x10AC9, 0x10AE4),
    (0x10B00, 0x10B35), (0x10B40, 0x10B55), (0x10B60, 0x10B72), (0x10B80, 0x10B91),
    (0x10C00, 0x10C48), (0x10C80, 0x10CB2), (0x10CC0, 0x10CF2), (0x10D00, 0x10D23),
    (0x10E80, 0x10EA9), (0x10EB0, 0x10EB1), (0x10F00, 0x10F1C), (0x10F27, 0x10F27),
    (0x10F30, 0x10F45), (0x10F70, 0x10F81), (0x10FB0, 0x10FC4), (0x10FE0, 0x10FF6),
    (0x11003, 0x11037), (0x11071, 0x11072), (0x11075, 0x11075), (0x11083, 0x110AF),
    (0x110D0, 0x110E8), (0x11103, 0x11126), (0x11144, 0x11144), (0x11147, 0x11147),
    (0x11150, 0x11172), (0x11176, 0x11176), (0x11183, 0x111B2), (0x111C1, 0x111C4),
    (0x111DA, 0x111DA), (0x111DC, 0x111DC), (0x11200, 0x11211), (0x11213, 0x1122B),
    (0x1123F, 0x11240), (0x11280, 0x11286), (0x11288, 0x11288), (0x1128A, 0x1128D),
    (0x1128F, 0x1129D), (0x1129F, 0x112A8), (0x112B0, 0x112DE), (0x11305, 0x1130C),
    (0x1130F, 0x11310), (0x11313, 0x11328), (0x1132A, 0x11330), (0x11332, 0x11333),
    (0x11335, 0x11339), (0x1133D, 0x1133D), (0x11350, 0x11350), (0x1135D, 0x11361),
    (0x11400, 0x11434), (0x11447, 0x1144A), (0x1145F, 0x11461), (0x11480, 0x114AF),
    (0x114C4, 0x114C5), (0x114C7, 0x114C7), (0x11580, 0x115AE), (0x115D8, 0x115DB),
    (0x11600, 0x1162F), (0x11644, 0x11644), (0x11680, 0x116AA), (0x116B8, 0x116B8),
    (0x11700, 0x1171A), (0x11740, 0x11746), (0x11800, 0x1182B), (0x118A0, 0x118DF),
    (0x118FF, 0x11906), (0x11909, 0x11909), (0x1190C, 0x11913), (0x11915, 0x11916),
    (0x11918, 0x1192F), (0x1193F, 0x1193F), (0x11941, 0x11941), (0x119A0, 0x119A7),
    (0x119AA, 0x119D0), (0x119E1, 0x119E1), (0x119E3, 0x119E3), (0x11A00, 0x11A00),
    (0x11A0B, 0x11A32), (0x11A3A, 0x11A3A), (0x11A50, 0x11A50), (0x11A5C, 0x11A89),
    (0x11A9D, 0x11A9D), (0x11AB0, 0x11AF8), (0x11C00, 0x11C08), (0x11C0A, 0x11C2E),
    (0x11C40, 0x11C40), (0x11C72, 0x11C8F), (0x11D00, 0x11D06), (0x11D08, 0x11D09),
    (0x11D0B, 0x11D30), (0x11D46, 0x11D46), (0x11D60, 0x11D65), (0x11D67, 0x11D68),
    (0x11D6A, 0x11D89), (0x11D98, 0x11D98), (0x11EE0, 0x11EF2), (0x11F02, 0x11F02),
    (0x11F04, 0x11F10), (0x11F12, 0x11F33), (0x11FB0, 0x11FB0), (0x12000, 0x12399),
    (0x12480, 0x12543), (0x12F90, 0x12FF0), (0x13000, 0x1342F), (0x13441, 0x13446),
    (0x14400, 0x14646), (0x16800, 0x16A38), (0x16A40, 0x16A5E), (0x16A70, 0x16ABE),
    (0x16AD0, 0x16AED), (0x16B00, 0x16B2F), (0x16B40, 0x16B43), (0x16B63, 0x16B77),
    (0x16B7D, 0x16B8F), (0x16E40, 0x16E7F), (0x16F00, 0x16F4A), (0x16F50, 0x16F50),
    (0x16F93, 0x16F9F), (0x16FE0, 0x16FE1), (0x16FE3, 0x16FE3), (0x17000, 0x187F7),
    (0x18800, 0x18CD5), (0x18D00, 0x18D08), (0x1AFF0, 0x1AFF3), (0x1AFF5, 0x1AFFB),
    (0x1AFFD, 0x1AFFE), (0x1B000, 0x1B122), (0x1B132, 0x1B132), (0x1B150, 0x1B152),
    (0x1B155, 0x1B155), (0x1B164, 0x1B167), (0x1B170, 0x1B2FB), (0x1BC00, 0x1BC6A),
    (0x1BC70, 0x1BC7C), (0x1BC80, 0x1BC88), (0x1BC90, 0x1BC99), (0x1D400, 0x1D454),
    (0x1D456, 0x1D49C), (0x1D49E, 0x1D49F), (0x1D4A2, 0x1D4A2), (0x1D4A5, 0x1D4A6),
    (0x1D4A9, 0x1D4AC), (0x1D4AE, 0x1D4B9), (0x1D4BB, 0x1D4BB), (0x1D4BD, 0x1D4C3),
    (0x1D4C5, 0x1D505), (0x1D507, 0x1D50A), (0x1D50D, 0x1D514), (0x1D516, 0x1D51C),
    (0x1D51E, 0x1D539), (0x1D53B, 0x1D53E), (0x1D540, 0x1D544), (0x1D546, 0x1D546),
    (0x1D54A, 0x1D550), (0x1D552, 0x1D6A5), (0x1D6A8, 0x1D6C0), (0x1D6C2, 0x1D6DA),
    (0x1D6DC, 0x1D6FA), (0x1D6FC, 0x1D714), (0x1D716, 0x1D734), (0x1D736, 0x1D74E),
    (0x1D750, 0x1D76E), (0x1D770, 0x1D788), (0x1D78A, 0x1D7A8), (0x1D7AA, 0x1D7C2),
    (0x1D7C4, 0x1D7CB), (0x1DF00, 0x1DF1E), (0x1DF25, 0x1DF2A), (0x1E030, 0x1E06D),
    (0x1E100, 0x1E12C), (0x1E137, 0x1E13D), (0x1E14E, 0x1E14E), (0x1E290, 0x1E2AD),
    (0x1E2C0, 0x1E2EB), (0x1E4D0, 0x1E4EB), (0x1E7E0, 0x1E7E6), (0x1E7E8, 0x1E7EB),
    (0x1E7ED, 0x1E7EE), (0x1E7F0, 0x1E7FE), (0x1E800, 0x1E8C4), (0x1E900, 0x1E943),
    (0x1E94B, 0x1E94B), (0x1EE00, 0x1EE03), (0x1EE05, 0x1EE1F), (0x1EE21, 0x1EE22),
    (0x1EE24, 0x1EE24), (0x1EE27, 0x1EE27), (0x1EE29, 0x1EE32), (0x1EE34, 0x1EE37),
    (0x1EE39, 0x1EE39), (0x1EE3B, 0x1EE3B), (0x1EE42, 0x1EE42), (0x1EE47, 0x1EE47),
    (0x1EE49, 0x1EE49), (0x1EE4B, 0x1EE4B), (0x1EE4D, 0x1EE4F), (0x1EE51, 0x1EE52),
    (0x1EE54, 0x1EE54), (0x1EE57, 0x1EE57), (0x1EE59, 0x1EE59), (0x1EE5B, 0x1EE5B),
    (0x1EE5D, 0x1EE5D), (0x1EE5F, 0x1EE5F), (0x1EE61, 0x1EE62), (0x1EE64, 0x1EE64),
    (0x1EE67, 0x1EE6A), (0x1EE6C, 0x1EE72), (0x1EE74, 0x1EE77), (0x1EE79, 0x1EE7C),
    (0x1EE7E, 0x1EE7E), (0x1EE80, 0x1EE89), (0x1EE8B, 0x1EE9B), (0x1EEA1, 0x1EEA3),
    (0x1EEA5, 0x1EEA9), (0x1EEAB, 0x1EEBB), (0x20000, 0x2A6DF), (0x2A700, 0x2B739),
    (0x2B740, 0x2B81D), (0x2B820, 0x2CEA1), (0x2CEB0, 0x2EBE0), (0x2EBF0, 0x2EE5D),
    (0x2F800, 0x2FA1D), (0x30000, 0x3134A), (0x31350, 0x323AF),
];
#[rustfmt::skip]
const NUMBER_RANGES: [(u32, u32); 137] = [
    (0x30, 0x39), (0xB2, 0xB3), (0xB9, 0xB9), (0xBC, 0xBE), (0x660, 0x669), (0x6F0, 0x6F9),
    (0x7C0, 0x7C9), (0x966, 0x96F), (0x9E6, 0x9EF), (0x9F4, 0x9F9), (0xA66, 0xA6F), (0xAE6, 0xAEF),
    (0xB66, 0xB6F), (0xB72, 0xB77), (0xBE6, 0xBF2), (0xC66, 0xC6F), (0xC78, 0xC7E), (0xCE6, 0xCEF),
    (0xD58, 0xD5E), (0xD66, 0xD78), (0xDE6, 0xDEF), (0xE50, 0xE59), (0xED0, 0xED9), (0xF20, 0xF33),
    (0x1040, 0x1049), (0x1090, 0x1099), (0x1369, 0x137C), (0x16EE, 0x16F0), (0x17E0, 0x17E9),
    (0x17F0, 0x17F9), (0x1810, 0x1819), (0x1946, 0x194F), (0x19D0, 0x19DA), (0x1A80, 0x1A89),
    (0x1A90, 0x1A99), (0x1B50, 0x1B59), (0x1BB0, 0x1BB9), (0x1C40, 0x1C49), (0x1C50, 0x1C59),
    (0x2070, 0x2070), (0x2074, 0x2079), (0x2080, 0x2089), (0x2150, 0x2182), (0x2185, 0x2189),
    (0x2460, 0x249B), (0x24EA, 0x24FF), (0x2776, 0x2793), (0x2CFD, 0x2CFD), (0x3007, 0x3007),
    (0x3021, 0x3029), (0x3038, 0x303A), (0x3192, 0x3195), (0x3220, 0x3229), (0x3248, 0x324F),
    (0x3251, 0x325F), (0x3280, 0x3289), (0x32B1, 0x32BF), (0xA620, 0xA629), (0xA6E6, 0xA6EF),
    (0xA830, 0xA835), (0xA8D0, 0xA8D9), (0xA900, 0xA909), (0xA9D0, 0xA9D9), (0xA9F0, 0xA9F9),
    (0xAA50, 0xAA59), (0xABF0, 0xABF9), (0xFF10, 0xFF19), (0x10107, 0x10133), (0x10140, 0x10178),
    (0x1018A, 0x1018B), (0x102E1, 0x102FB), (0x10320, 0x10323), (0x10341, 0x10341),
    (0x1034A, 0x1034A), (0x103D1, 0x103D5), (0x104A0, 0x104A9), (0x10858, 0x1085F),
    (0x10879, 0x1087F), (0x108A7, 0x108AF), (0x108FB, 0x108FF), (0x10916, 0x1091B),
    (0x109BC, 0x109BD), (0x109C0, 0x109CF), (0x109D2, 0x109FF), (0x10A40, 0x10A48),
    (0x10A7D, 0x10A7E), (0x10A9D, 0x10A9F), (0x10AEB, 0x10AEF), (0x10B58, 0x10B5F),
    (0x10B78, 0x10B7F), (0x10BA9, 0x10BAF), (0x10CFA, 0x10CFF), (0x10D30, 0x10D39),
    (0x10E60, 0x10E7E), (0x10F1D, 0x10F26), (0x10F51, 0x10F54), (0x10FC5, 0x10FCB),
    (0x11052, 0x1106F), (0x110F0, 0x110F9), (0x11136, 0x1113F), (0x111D0, 0x111D9),
    (0x111E1, 0x111F4), (0x112F0, 0x112F9), (0x11450, 0x11459), (0x114D0, 0x114D9),
    (0x11650, 0x11659), (0x116C0, 0x116C9), (0x11730, 0x1173B), (0x118E0, 0x118F2),
    (0x11950, 0x11959), (0x11C50, 0x11C6C), (0x11D50, 0x11D59), (0x11DA0, 0x11DA9),
    (0x11F50, 0x11F59), (0x11FC0, 0x11FD4), (0x12400, 0x1246E), (0x16A60, 0x16A69),
    (0x16AC0, 0x16AC9), (0x16B50, 0x16B59), (0x16B5B, 0x16B61), (0x16E80, 0x16E96),
    (0x1D2C0, 0x1D2D3), (0x1D2E0, 0x1D2F3), (0x1D360, 0x1D378), (0x1D7CE, 0x1D7FF),
    (0x1E140, 0x1E149), (0x1E2F0, 0x1E2F9), (0x1E4F0, 0x1E4F9), (0x1E8C7, 0x1E8CF),
    (0x1E950, 0x1E959), (0x1EC71, 0x1ECAB), (0x1ECAD, 0x1ECAF), (0x1ECB1, 0x1ECB4),
    (0x1ED01, 0x1ED2D), (0x1ED2F, 0x1ED3D), (0x1F100, 0x1F10C), (0x1FBF0, 0x1FBF9),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(s: &str) -> Vec<String> {
        let chars: Vec<char> = s.chars().collect();
        let mut out = Vec::new();
        split_gpt2(&chars, 0, chars.len(), &mut out);
        out.iter()
            .map(|&(a, b)| chars[a..b].iter().collect())
            .collect()
    }

    #[test]
    fn byte_alphabet() {
        let distinct: std::collections::HashSet<char> = BYTE_TO_CHAR.iter().copied().collect();
        assert_eq!(distinct.len(), 256);
        assert_eq!(BYTE_TO_CHAR[b'a' as usize], 'a');
        assert_eq!(BYTE_TO_CHAR[b' ' as usize], '\u{120}'); // Ġ
        assert_eq!(BYTE_TO_CHAR[b'\n' as usize], '\u{10A}'); // Ċ
        assert_eq!(BYTE_TO_CHAR[0xAD], '\u{143}');
        assert_eq!(BYTE_TO_CHAR[0], '\u{100}');
        for b in 0..=255u8 {
            assert_eq!(char_to_byte(BYTE_TO_CHAR[b as usize]), Some(b));
        }
        assert_eq!(char_to_byte('中'), None);
        assert_eq!(char_to_byte('\u{AD}'), None);
    }

    #[test]
    fn classes_follow_llama_cpp_tables() {
        for (c, k) in [
            ('a', Class::Letter),
            ('é', Class::Letter),
            ('ß', Class::Letter),
            ('中', Class::Letter),
            ('ǅ', Class::Letter),
            ('7', Class::Number),
            ('²', Class::Number),
            ('½', Class::Number),
            ('٣', Class::Number),
            ('１', Class::Number),
            (' ', Class::Space),
            ('\u{0B}', Class::Space),
            ('\u{85}', Class::Space),
            ('\u{A0}', Class::Space),
            ('\u{3000}', Class::Space),
            ('\u{1C}', Class::Other), // Python's isspace() says yes; llama.cpp says no
            ('\u{200B}', Class::Other),
            ('\u{301}', Class::Other),
            ('👍', Class::Other),
            ('_', Class::Other),
            ('\u{E000}', Class::Other),
            ('\u{10FFFF}', Class::Other),
        ] {
            assert_eq!(classify(c), k, "{c:?} (U+{:04X})", c as u32);
        }
        for table in [&LETTER_RANGES[..], &NUMBER_RANGES[..]] {
            assert!(table.windows(2).all(|w| w[0].1 < w[1].0));
            assert!(table.iter().all(|&(a, b)| a <= b));
        }
    }

    #[test]
    fn gpt2_split() {
        assert_eq!(pieces("Hello world"), ["Hello", " world"]);
        assert_eq!(
            pieces("I'm you'll they'D"),
            ["I", "'m", " you", "'ll", " they", "'", "D"]
        );
        assert_eq!(pieces("a  b"), ["a", " ", " b"]);
        assert_eq!(pieces("x   "), ["x", "   "]);
        assert_eq!(pieces("hi!!! ok?"), ["hi", "!!!", " ok", "?"]);
        assert_eq!(pieces("\n\nfoo"), ["\n", "\n", "foo"]);
        assert_eq!(pieces(" \n b"), [" \n", " b"]);
        assert_eq!(pieces("12 345"), ["12", " 345"]);
        assert_eq!(pieces("café 👍🏽"), ["café", " 👍🏽"]);
        assert_eq!(pieces(" "), [" "]);
        assert_eq!(pieces(""), Vec::<String>::new());
        // A piece boundary acts as the end of text: the trailing spaces are one piece.
        let chars: Vec<char> = "ab  c".chars().collect();
        let mut out = Vec::new();
        split_gpt2(&chars, 0, 4, &mut out);
        assert_eq!(out, [(0, 2), (2, 4)]);
    }
}
