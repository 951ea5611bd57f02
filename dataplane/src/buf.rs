//! The buffer abstraction that actions work on.
//!
//! A packet is one contiguous run of bytes with free room in front of it
//! (headroom), exactly like a single-segment DPDK mbuf. Actions that add
//! headers (`prepend`) or strip them (`adj`) are written once against
//! [`PacketBuf`] and run both on mbufs in `petreld` and on [`VecBuf`] in
//! tests and benches.
//!
//! Invariant: `data()` is always the whole packet, starting at the outermost
//! header; implementations never move the bytes on `prepend`/`adj`.

/// Errors of buffer resizing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error, displaydoc::Display)]
pub enum BufError {
    /// not enough headroom to prepend {0} bytes
    NoHeadroom(usize),
    /// not enough tailroom to append {0} bytes
    NoTailroom(usize),
    /// cannot remove {0} bytes from a shorter packet
    TooShort(usize),
}

/// A packet in one contiguous buffer with headroom, like a single-segment mbuf.
pub trait PacketBuf {
    /// The packet bytes, outermost header first.
    fn data(&self) -> &[u8];
    /// The packet bytes, writable.
    fn data_mut(&mut self) -> &mut [u8];
    /// Free bytes in front of the packet.
    fn headroom(&self) -> usize;
    /// Grows the packet by `n` bytes at the front, taken from the headroom.
    /// The new bytes have unspecified content.
    ///
    /// # Errors
    /// [`BufError::NoHeadroom`] if fewer than `n` bytes of headroom are free;
    /// the packet is then unchanged.
    fn prepend(&mut self, n: usize) -> Result<(), BufError>;
    /// Removes `n` bytes from the front of the packet.
    ///
    /// # Errors
    /// [`BufError::TooShort`] if the packet is shorter than `n`; unchanged then.
    fn adj(&mut self, n: usize) -> Result<(), BufError>;
    /// Removes `n` bytes from the end of the packet.
    ///
    /// # Errors
    /// [`BufError::TooShort`] if the packet is shorter than `n`; unchanged then.
    fn trim(&mut self, n: usize) -> Result<(), BufError>;
    /// Grows the packet by `n` bytes at the end (content unspecified).
    ///
    /// # Errors
    /// [`BufError::NoTailroom`] if there is no room; unchanged then.
    fn append(&mut self, n: usize) -> Result<(), BufError>;
    /// Packet length in bytes.
    #[inline]
    fn len(&self) -> usize {
        self.data().len()
    }
    /// Whether the packet has no bytes.
    #[inline]
    fn is_empty(&self) -> bool {
        self.data().is_empty()
    }
}

/// A heap-backed [`PacketBuf`] for tests, benches and the slow path.
///
/// Allocates only in [`VecBuf::new`]; resizing moves offsets, never bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VecBuf {
    storage: Vec<u8>,
    start: usize,
    end: usize,
}

impl VecBuf {
    /// Headroom DPDK gives an mbuf by default (`RTE_PKTMBUF_HEADROOM`).
    pub const DEFAULT_HEADROOM: usize = 128;

    /// A buffer holding `packet` with `headroom` free bytes in front and
    /// `tailroom` behind.
    pub fn new(packet: &[u8], headroom: usize, tailroom: usize) -> Self {
        let mut storage = vec![0u8; headroom + packet.len() + tailroom];
        storage[headroom..headroom + packet.len()].copy_from_slice(packet);
        VecBuf { storage, start: headroom, end: headroom + packet.len() }
    }

    /// A buffer holding `packet` with the default mbuf headroom and 64 bytes of tailroom.
    pub fn from_packet(packet: &[u8]) -> Self {
        Self::new(packet, Self::DEFAULT_HEADROOM, 64)
    }

    /// Resets to hold `packet` again without allocating, if it fits with the
    /// same headroom as at creation; returns false (unchanged) if it does not.
    pub fn reset(&mut self, packet: &[u8], headroom: usize) -> bool {
        if headroom + packet.len() > self.storage.len() {
            return false;
        }
        self.storage[headroom..headroom + packet.len()].copy_from_slice(packet);
        self.start = headroom;
        self.end = headroom + packet.len();
        true
    }
}

impl PacketBuf for VecBuf {
    #[inline]
    fn data(&self) -> &[u8] {
        &self.storage[self.start..self.end]
    }
    #[inline]
    fn data_mut(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.end]
    }
    #[inline]
    fn headroom(&self) -> usize {
        self.start
    }
    #[inline]
    fn prepend(&mut self, n: usize) -> Result<(), BufError> {
        if n > self.start {
            return Err(BufError::NoHeadroom(n));
        }
        self.start -= n;
        Ok(())
    }
    #[inline]
    fn adj(&mut self, n: usize) -> Result<(), BufError> {
        if n > self.end - self.start {
            return Err(BufError::TooShort(n));
        }
        self.start += n;
        Ok(())
    }
    #[inline]
    fn trim(&mut self, n: usize) -> Result<(), BufError> {
        if n > self.end - self.start {
            return Err(BufError::TooShort(n));
        }
        self.end -= n;
        Ok(())
    }
    #[inline]
    fn append(&mut self, n: usize) -> Result<(), BufError> {
        if n > self.storage.len() - self.end {
            return Err(BufError::NoTailroom(n));
        }
        self.end += n;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn prepend_adj_roundtrip_keeps_bytes() {
        let mut b = VecBuf::new(&[1, 2, 3, 4], 8, 2);
        b.prepend(4).unwrap();
        b.data_mut()[..4].copy_from_slice(&[9, 9, 9, 9]);
        assert_eq!(b.data(), &[9, 9, 9, 9, 1, 2, 3, 4]);
        assert_eq!(b.prepend(5), Err(BufError::NoHeadroom(5)));
        b.adj(4).unwrap();
        assert_eq!(b.data(), &[1, 2, 3, 4]);
        assert_eq!(b.adj(5), Err(BufError::TooShort(5)));
        b.append(2).unwrap();
        assert_eq!(b.len(), 6);
        assert_eq!(b.append(1), Err(BufError::NoTailroom(1)));
        b.trim(6).unwrap();
        assert!(b.is_empty());
    }
}
