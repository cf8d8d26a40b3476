//! The dm-verity hash tree of a RAUC verity bundle, recomputed in full from the payload and
//! compared with the signed root hash and with the tree stored in the bundle.
//!
//! RAUC's parameters (v1.8 `verity_hash.c`, the same as `veritysetup format --no-superblock`,
//! hash format 1): SHA-256, 4096-byte data and hash blocks, a 32-byte salt hashed *before* each
//! block, 128 digests per hash block, zero-padded. Level 0 hashes the data blocks, level i+1
//! hashes level i's blocks, until one block is left; the root hash is the salted hash of that
//! block (of the only data block when there is just one). The tree is stored right after the
//! data, top level first, each level's blocks in order.
//!
//! It owns this computation only; which bytes are the data and what root to expect come from
//! the caller (the signed manifest's `verity-hash`, `verity-salt` and `verity-size`).
//!
//! Limits: the tree is built in memory, 32 bytes per 4 KiB of payload (8 MiB per GiB).

use sha2::{Digest, Sha256};
use std::io::Read;

pub const BLOCK_SIZE: u64 = 4096;
const DIGEST_SIZE: usize = 32;
/// log2 of the digests per hash block (4096 / 32 = 128).
const DIGESTS_PER_BLOCK_BITS: u32 = 7;

#[derive(Debug, thiserror::Error)]
pub enum VerityError {
    #[error("the payload has no data blocks")]
    NoData,
    #[error("a hash tree over {0} data blocks does not fit in 64 bits")]
    TooLarge(u64),
    #[error("cannot read the payload at byte {offset}: {source}")]
    Read { offset: u64, source: std::io::Error },
    #[error(
        "the payload does not match the signed verity hash: computed root {computed}, signed {signed}{first_bad}"
    )]
    RootMismatch {
        computed: String,
        signed: String,
        /// A hint where the data differs from the tree stored in the bundle, if it does.
        first_bad: String,
    },
    #[error(
        "the hash tree stored in the bundle differs from the one recomputed from the payload (level {level}, hash block {block}); the data itself matches the signed root hash"
    )]
    StoredTreeMismatch { level: usize, block: u64 },
}

/// Where each level of the tree lives, in blocks from the start of the bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeLayout {
    data_blocks: u64,
    /// `(first block, number of blocks)` per level; index 0 hashes the data.
    levels: Vec<(u64, u64)>,
}

impl TreeLayout {
    pub fn new(data_blocks: u64) -> Result<TreeLayout, VerityError> {
        if data_blocks == 0 {
            return Err(VerityError::NoData);
        }
        let mut count = 0u32;
        while DIGESTS_PER_BLOCK_BITS * count < 64
            && (data_blocks - 1) >> (DIGESTS_PER_BLOCK_BITS * count) != 0
        {
            count += 1;
        }
        // Blocks per level: the data blocks divided by 128^(level+1), rounded up.
        let sizes: Vec<u64> = (0..count)
            .map(|i| {
                let shift = (i + 1) * DIGESTS_PER_BLOCK_BITS;
                let divisor = 1u128 << shift.min(127);
                u64::try_from(u128::from(data_blocks).div_ceil(divisor))
                    .map_err(|_| VerityError::TooLarge(data_blocks))
            })
            .collect::<Result<_, _>>()?;
        let mut levels = vec![(0, 0); sizes.len()];
        let mut position = data_blocks;
        for (i, &size) in sizes.iter().enumerate().rev() {
            levels[i] = (position, size);
            position = position
                .checked_add(size)
                .ok_or(VerityError::TooLarge(data_blocks))?;
        }
        Ok(TreeLayout {
            data_blocks,
            levels,
        })
    }

    pub fn data_blocks(&self) -> u64 {
        self.data_blocks
    }

    /// `(first block, number of blocks)` per level, level 0 (hashing the data) first.
    pub fn levels(&self) -> &[(u64, u64)] {
        &self.levels
    }

    /// Blocks the stored tree occupies after the data.
    pub fn hash_blocks(&self) -> u64 {
        self.levels.iter().map(|&(_, size)| size).sum()
    }
}

fn salted(salt: &[u8; 32], block: &[u8]) -> [u8; DIGEST_SIZE] {
    let mut hasher = Sha256::new();
    hasher.update(salt);
    hasher.update(block);
    hasher.finalize().into()
}

/// Packs digests into zero-padded hash blocks.
fn pack(digests: impl Iterator<Item = [u8; DIGEST_SIZE]>) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::new();
    for digest in digests {
        out.extend_from_slice(&digest);
    }
    let block = BLOCK_SIZE as usize;
    out.resize(out.len().div_ceil(block) * block, 0);
    out
}

/// Reads `data_blocks` data blocks and then the stored tree from `payload` (positioned at the
/// start of the bundle), recomputes the tree and checks it against `signed_root` and the stored
/// tree. Every byte read is also passed to `observe` (e.g. a whole-file digest).
pub fn verify(
    payload: &mut dyn Read,
    layout: &TreeLayout,
    salt: &[u8; 32],
    signed_root: &[u8; 32],
    observe: &mut dyn FnMut(&[u8]),
) -> Result<(), VerityError> {
    let mut block = vec![0u8; BLOCK_SIZE as usize];
    let mut offset = 0u64;
    let mut read_block = |reader: &mut dyn Read, block: &mut [u8]| {
        reader
            .read_exact(block)
            .map_err(|source| VerityError::Read { offset, source })?;
        observe(block);
        offset += BLOCK_SIZE;
        Ok::<(), VerityError>(())
    };
    let too_large = || VerityError::TooLarge(layout.data_blocks);
    let stored_size = layout
        .hash_blocks()
        .checked_mul(BLOCK_SIZE)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(too_large)?;
    let mut data_digests =
        Vec::with_capacity(usize::try_from(layout.data_blocks).map_err(|_| too_large())?);
    for _ in 0..layout.data_blocks {
        read_block(payload, &mut block)?;
        data_digests.push(salted(salt, &block));
    }
    // Computed levels, bottom up.
    let mut computed: Vec<Vec<u8>> = Vec::with_capacity(layout.levels.len());
    if !layout.levels.is_empty() {
        computed.push(pack(data_digests.iter().copied()));
        while computed.len() < layout.levels.len() {
            let below = computed.last().map(Vec::as_slice).unwrap_or_default();
            let next = pack(below.chunks(BLOCK_SIZE as usize).map(|b| salted(salt, b)));
            computed.push(next);
        }
    }
    let root = match computed.last() {
        Some(top) => salted(salt, top),
        None => data_digests.first().copied().ok_or(VerityError::NoData)?,
    };
    // The stored tree, top level first.
    let mut stored = vec![0u8; stored_size];
    for chunk in stored.chunks_mut(BLOCK_SIZE as usize) {
        read_block(payload, chunk)?;
    }
    let stored_level = |level: usize| {
        let (start, size) = layout.levels[level];
        let from = ((start - layout.data_blocks) * BLOCK_SIZE) as usize;
        &stored[from..from + (size * BLOCK_SIZE) as usize]
    };
    if root != *signed_root {
        let first_bad = match computed.first() {
            Some(level0) => level0
                .chunks(DIGEST_SIZE)
                .zip(stored_level(0).chunks(DIGEST_SIZE))
                .position(|(a, b)| a != b)
                .filter(|&i| (i as u64) < layout.data_blocks)
                .map(|i| {
                    format!(
                        "; first 4 KiB block differing from the stored tree: {i} (bytes {}..{})",
                        i as u64 * BLOCK_SIZE,
                        (i as u64 + 1) * BLOCK_SIZE
                    )
                })
                .unwrap_or_default(),
            None => String::new(),
        };
        return Err(VerityError::RootMismatch {
            computed: hex::encode(root),
            signed: hex::encode(signed_root),
            first_bad,
        });
    }
    for (level, bytes) in computed.iter().enumerate() {
        let theirs = stored_level(level);
        if let Some(block) = bytes
            .chunks(BLOCK_SIZE as usize)
            .zip(theirs.chunks(BLOCK_SIZE as usize))
            .position(|(a, b)| a != b)
        {
            return Err(VerityError::StoredTreeMismatch {
                level,
                block: block as u64,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_rauc_and_veritysetup() {
        // 1 block: no tree; 5 blocks: one hash block; 129 blocks: two level-0 blocks and a top.
        assert_eq!(TreeLayout::new(1).expect("layout").levels, vec![]);
        assert_eq!(TreeLayout::new(5).expect("layout").levels, vec![(5, 1)]);
        assert_eq!(TreeLayout::new(128).expect("layout").levels, vec![(128, 1)]);
        let two = TreeLayout::new(129).expect("layout");
        assert_eq!(two.levels, vec![(130, 2), (129, 1)]);
        assert_eq!(two.hash_blocks(), 3);
        let big = TreeLayout::new(128 * 128 + 1).expect("layout");
        assert_eq!(big.levels.len(), 3);
        assert_eq!(big.hash_blocks(), 129 + 2 + 1);
        assert!(matches!(TreeLayout::new(0), Err(VerityError::NoData)));
        assert!(matches!(
            TreeLayout::new(u64::MAX),
            Err(VerityError::TooLarge(u64::MAX))
        ));
    }

    /// Builds data + tree the way RAUC and veritysetup lay them out, from the definition.
    fn bundle_bytes(data: &[u8], salt: &[u8; 32]) -> (Vec<u8>, [u8; 32]) {
        let blocks = data.len() as u64 / BLOCK_SIZE;
        let layout = TreeLayout::new(blocks).expect("layout");
        let mut levels = vec![pack(data.chunks(4096).map(|b| salted(salt, b)))];
        while levels.len() < layout.levels.len() {
            let below = levels.last().expect("level");
            levels.push(pack(below.chunks(4096).map(|b| salted(salt, b))));
        }
        let root = salted(salt, levels.last().expect("top"));
        let mut out = data.to_vec();
        for level in levels.iter().rev() {
            out.extend_from_slice(level);
        }
        (out, root)
    }

    fn check(
        bytes: &[u8],
        blocks: u64,
        salt: &[u8; 32],
        root: &[u8; 32],
    ) -> Result<(), VerityError> {
        let layout = TreeLayout::new(blocks).expect("layout");
        verify(&mut &bytes[..], &layout, salt, root, &mut |_| {})
    }

    #[test]
    fn a_recomputed_tree_proves_every_data_block() {
        let salt = [7u8; 32];
        let data: Vec<u8> = (0..130 * 4096u32).map(|i| (i % 251) as u8).collect();
        let (bytes, root) = bundle_bytes(&data, &salt);
        check(&bytes, 130, &salt, &root).expect("intact");
        for flipped in [0, 4096 * 129 + 17] {
            let mut bad = bytes.clone();
            bad[flipped] ^= 1;
            let err = check(&bad, 130, &salt, &root).expect_err("flipped data byte");
            assert!(matches!(err, VerityError::RootMismatch { .. }), "{err}");
            assert!(
                err.to_string().contains(&format!(
                    "block differing from the stored tree: {}",
                    flipped / 4096
                )),
                "{err}"
            );
        }
        let mut bad_tree = bytes.clone();
        let last = bad_tree.len() - 1; // zero padding of the last level-0 block
        bad_tree[last] ^= 1;
        assert!(matches!(
            check(&bad_tree, 130, &salt, &root),
            Err(VerityError::StoredTreeMismatch { level: 0, block: 1 })
        ));
        assert!(matches!(
            check(&bytes[..bytes.len() - 1], 130, &salt, &root),
            Err(VerityError::Read { .. })
        ));
    }

    /// A vector from `veritysetup format --no-superblock` (cryptsetup 2.6.1) over 5 blocks of
    /// bytes `i % 256` with the salt `00 01 .. 1f`.
    #[test]
    fn veritysetup_vector() {
        let salt: [u8; 32] = std::array::from_fn(|i| i as u8);
        let data: Vec<u8> = (0..5 * 4096u32).map(|i| (i % 256) as u8).collect();
        let (bytes, root) = bundle_bytes(&data, &salt);
        assert_eq!(hex::encode(root), VERITYSETUP_ROOT_5_BLOCKS);
        check(&bytes, 5, &salt, &root).expect("vector");
    }

    const VERITYSETUP_ROOT_5_BLOCKS: &str =
        "0729211f3dd57e512beefe184f2231712518a8322db7ce1d002fac474f755c6e";
}
