//! [`WeightBytes`]: the raw blocks of a weight, owned or borrowed from something shared
//! (a memory-mapped model file), so a model can run straight from the page cache.

use std::ops::{Deref, Range};
use std::sync::Arc;

/// Bytes a weight matrix reads: a range of a shared, immutable buffer. Cloning is cheap.
#[derive(Clone)]
pub struct WeightBytes {
    owner: Arc<dyn AsRef<[u8]> + Send + Sync>,
    range: Range<usize>,
}

impl WeightBytes {
    /// `range` of `owner`'s bytes; `None` when the range is not inside them.
    pub fn shared(owner: Arc<dyn AsRef<[u8]> + Send + Sync>, range: Range<usize>) -> Option<Self> {
        let len = (*owner).as_ref().len();
        (range.start <= range.end && range.end <= len).then_some(Self { owner, range })
    }

    /// `range` of these bytes (relative to them), sharing the owner; `None` when the
    /// range is not inside them.
    pub fn slice(&self, range: Range<usize>) -> Option<Self> {
        let len = self.range.len();
        (range.start <= range.end && range.end <= len).then(|| Self {
            owner: self.owner.clone(),
            range: self.range.start + range.start..self.range.start + range.end,
        })
    }
}

impl From<Vec<u8>> for WeightBytes {
    fn from(v: Vec<u8>) -> Self {
        let range = 0..v.len();
        Self {
            owner: Arc::new(v),
            range,
        }
    }
}

impl Deref for WeightBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &(*self.owner).as_ref()[self.range.clone()]
    }
}

impl std::fmt::Debug for WeightBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WeightBytes({} bytes)", self.range.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_ranges_are_checked() {
        let owner: Arc<dyn AsRef<[u8]> + Send + Sync> = Arc::new(vec![1u8, 2, 3, 4]);
        let w = WeightBytes::shared(owner.clone(), 1..3).expect("inside");
        assert_eq!(&*w, &[2, 3]);
        assert!(WeightBytes::shared(owner.clone(), 2..5).is_none());
        assert_eq!(&*WeightBytes::from(vec![7u8]), &[7]);
    }
}
