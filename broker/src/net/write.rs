//! Writing queued response chunks to a socket with vectored writes, bounded by a stall
//! timeout: the one write loop of every listener (record data stays in the `Bytes` it was
//! read into; nothing is copied into an encode buffer).

use std::collections::VecDeque;
use std::io::IoSlice;
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;

/// I/O slices handed to one `writev` (the kernel's limit is 1024).
pub(crate) const WRITE_SLICES_MAX: usize = 256;

/// Writes every chunk, in order, with as few `writev` calls as the socket allows; fails with
/// `TimedOut` when the socket takes nothing for `write_stall`.
pub(crate) async fn write_all_chunks(
    writer: &mut OwnedWriteHalf,
    chunks: &mut VecDeque<Bytes>,
    write_stall: Duration,
) -> std::io::Result<()> {
    while !chunks.is_empty() {
        let slices: Vec<IoSlice<'_>> = chunks
            .iter()
            .take(WRITE_SLICES_MAX)
            .map(|chunk| IoSlice::new(chunk))
            .collect();
        let written = tokio::time::timeout(write_stall, writer.write_vectored(&slices))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        advance_chunks(chunks, written);
    }
    Ok(())
}

/// Drops the first `written` bytes of `chunks` (what a write took).
pub(crate) fn advance_chunks(chunks: &mut VecDeque<Bytes>, mut written: usize) {
    while written > 0 {
        let Some(front) = chunks.front_mut() else {
            break;
        };
        if written >= front.len() {
            written -= front.len();
            chunks.pop_front();
        } else {
            front.advance(written);
            written = 0;
        }
    }
}
