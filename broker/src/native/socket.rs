//! A connection's write half, shared by its writer task and by the requests that answer: a
//! response that finds the writer idle is written by the request's own task, at once, instead
//! of waking the writer (one cross-thread wake-up less per answer when that task runs on
//! another thread, as a sync led in place does). Owns the rule for giving the socket up.
//!
//! Frames never interleave: every write happens under one lock, a direct write only with
//! `try_lock` and an empty queue, and a direct write the socket takes only in part is
//! finished under the same lock before anyone else writes. Responses may leave in any order
//! (clients match them by correlation id), so a direct write may pass queued frames.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{mpsc, Mutex, MutexGuard, Notify};

use crate::net::budget::Reservation;
use crate::net::write::{advance_chunks, write_all_chunks, WRITE_SLICES_MAX};

use super::response::FrameChunks;

/// A framed response on its way to the socket, with the memory it holds until written.
pub(super) struct Outgoing {
    pub chunks: FrameChunks,
    pub reservation: Reservation,
}

/// Bytes of queued responses the writer gathers into one vectored write.
const WRITE_COALESCE_BYTES: usize = 4 << 20;

/// Frames up to this size may be written by the answering task; larger ones (fetches) go to
/// the writer, which coalesces them and may wait on the socket.
const DIRECT_WRITE_BYTES_MAX: usize = 64 << 10;

/// The shared write half. `None` once a write failed: it is dropped at once, so the socket
/// closes as soon as the reader lets go of its half.
pub(super) struct Socket {
    half: Mutex<Option<OwnedWriteHalf>>,
    write_stall: Duration,
    /// Told when the socket was given up on (failed or stalled), for the reader.
    pub gone: Notify,
}

impl Socket {
    pub(super) fn new(half: OwnedWriteHalf, write_stall: Duration) -> Arc<Self> {
        Arc::new(Self {
            half: Mutex::new(Some(half)),
            write_stall,
            gone: Notify::new(),
        })
    }

    /// Writes `chunks` now if the writer is idle (`queue` empty, nobody writing) and the
    /// frame is small; returns it otherwise, for the queue. A frame the socket takes in part
    /// is finished here, under the lock. `Ok(())` also when the socket is gone: there is
    /// nobody left to tell.
    pub(super) async fn try_write_now(
        &self,
        chunks: FrameChunks,
        queue: &mpsc::Sender<Outgoing>,
    ) -> Result<(), FrameChunks> {
        let bytes: usize = chunks.iter().map(Bytes::len).sum();
        if bytes > DIRECT_WRITE_BYTES_MAX
            || chunks.len() > WRITE_SLICES_MAX
            || queue.capacity() < queue.max_capacity()
        {
            return Err(chunks);
        }
        let Ok(mut half) = self.half.try_lock() else {
            return Err(chunks);
        };
        let Some(writer) = half.as_ref() else {
            return Ok(());
        };
        let slices: Vec<IoSlice<'_>> = chunks.iter().map(|chunk| IoSlice::new(chunk)).collect();
        match writer.try_write_vectored(&slices) {
            Ok(written) if written == bytes => Ok(()),
            Ok(written) => {
                let mut rest: VecDeque<Bytes> = chunks.into();
                advance_chunks(&mut rest, written);
                self.write_locked(&mut half, &mut rest).await;
                Ok(())
            }
            // Nothing was written: the frame can still go through the queue whole.
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => Err(chunks),
            Err(error) => {
                self.give_up(&mut half, &error);
                Ok(())
            }
        }
    }

    /// Writes every chunk with the lock held; on failure gives the socket up. Whether the
    /// socket still lives.
    async fn write_locked(
        &self,
        half: &mut MutexGuard<'_, Option<OwnedWriteHalf>>,
        chunks: &mut VecDeque<Bytes>,
    ) -> bool {
        let Some(writer) = half.as_mut() else {
            return false;
        };
        match write_all_chunks(writer, chunks, self.write_stall).await {
            Ok(()) => true,
            Err(error) => {
                self.give_up(half, &error);
                false
            }
        }
    }

    fn give_up(&self, half: &mut MutexGuard<'_, Option<OwnedWriteHalf>>, error: &std::io::Error) {
        if error.kind() == std::io::ErrorKind::TimedOut {
            tracing::warn!(
                stall_ms = self.write_stall.as_millis() as u64,
                "client stopped reading its responses; cutting the connection"
            );
        } else {
            tracing::debug!(%error, "write failed; dropping the remaining responses");
        }
        // Close our half now: the socket goes once the reader (told next) lets go of its
        // half, not only when the last request still under way has finished.
        **half = None;
        self.gone.notify_one();
    }
}

/// Writes queued response frames, gathering whatever is already queued into one vectored
/// write. A socket that takes no byte for the write stall is given up on: the reader is told,
/// and the remaining responses (and their memory) are dropped.
pub(super) async fn write_responses(socket: Arc<Socket>, mut queued: mpsc::Receiver<Outgoing>) {
    let mut pending: VecDeque<Bytes> = VecDeque::new();
    let mut held: Vec<Reservation> = Vec::new();
    while let Some(frame) = queued.recv().await {
        let mut gathered: usize = frame.chunks.iter().map(Bytes::len).sum();
        pending.extend(frame.chunks);
        held.push(frame.reservation);
        while gathered < WRITE_COALESCE_BYTES {
            match queued.try_recv() {
                Ok(more) => {
                    gathered += more.chunks.iter().map(Bytes::len).sum::<usize>();
                    pending.extend(more.chunks);
                    held.push(more.reservation);
                }
                Err(_) => break,
            }
        }
        let alive = {
            let mut half = socket.half.lock().await;
            socket.write_locked(&mut half, &mut pending).await
        };
        // Written (or failed): either way the bytes are no longer needed.
        held.clear();
        if !alive {
            pending.clear();
            // Keep receiving so senders never block on a dead connection.
            while queued.recv().await.is_some() {}
            return;
        }
    }
    if let Some(half) = socket.half.lock().await.as_mut() {
        let _ = half.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::net::budget::MemoryBudget;

    async fn pair() -> (OwnedWriteHalf, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("address"))
            .await
            .expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        let (_read, write) = server.into_split();
        (write, client)
    }

    fn frame(tag: u8, bytes: usize) -> FrameChunks {
        vec![
            Bytes::from(vec![tag; bytes / 2]),
            Bytes::from(vec![tag; bytes - bytes / 2]),
        ]
    }

    #[tokio::test]
    async fn an_answer_finding_the_writer_idle_goes_straight_to_the_socket() {
        let (write, mut peer) = pair().await;
        let socket = Socket::new(write, Duration::from_secs(5));
        // No writer task at all: only a direct write can deliver these bytes.
        let (queue, _queued) = mpsc::channel(4);
        assert!(socket.try_write_now(frame(7, 100), &queue).await.is_ok());
        let mut got = [0u8; 100];
        tokio::time::timeout(Duration::from_secs(5), peer.read_exact(&mut got))
            .await
            .expect("the bytes arrive")
            .expect("read");
        assert_eq!(got, [7u8; 100]);
    }

    #[tokio::test]
    async fn an_answer_goes_to_the_queue_while_the_writer_writes_and_frames_never_interleave() {
        let (write, mut peer) = pair().await;
        let socket = Socket::new(write, Duration::from_secs(30));
        let budget = MemoryBudget::new(64 << 20, 64 << 20).connection();
        let (queue, queued) = mpsc::channel(4);
        let writer = tokio::spawn(write_responses(Arc::clone(&socket), queued));
        // More than the socket buffers hold while the peer reads nothing: the writer stays
        // inside its write, holding the lock.
        let big = 16 << 20;
        queue
            .send(Outgoing {
                chunks: frame(1, big),
                reservation: budget.empty(),
            })
            .await
            .expect("writer alive");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while queue.capacity() < queue.max_capacity() {
            assert!(
                std::time::Instant::now() < deadline,
                "the writer never took the frame"
            );
            tokio::task::yield_now().await;
        }
        let refused = socket.try_write_now(frame(2, 100), &queue).await;
        let small = refused.expect_err("a direct write while the writer writes");
        queue
            .send(Outgoing {
                chunks: small,
                reservation: budget.empty(),
            })
            .await
            .expect("writer alive");
        let mut got = vec![0u8; big + 100];
        tokio::time::timeout(Duration::from_secs(30), peer.read_exact(&mut got))
            .await
            .expect("every byte arrives")
            .expect("read");
        assert!(
            got[..big].iter().all(|byte| *byte == 1),
            "the big frame was cut into"
        );
        assert!(got[big..].iter().all(|byte| *byte == 2));
        drop(queue);
        writer.await.expect("writer ends");
    }

    #[tokio::test]
    async fn a_direct_write_the_socket_takes_in_part_is_finished_before_any_other_frame() {
        let (write, mut peer) = pair().await;
        let socket = Socket::new(write, Duration::from_secs(30));
        let (queue, _queued) = mpsc::channel(4);
        // 64 KiB frames, each of its own byte, written directly while the peer reads nothing:
        // sooner or later one is taken in part and its rest waits for the peer under the lock.
        // One refused because the socket took none of it goes the writer's way (under the lock).
        let frames = 400u16;
        let direct = {
            let socket = Arc::clone(&socket);
            tokio::spawn(async move {
                for index in 0..frames {
                    let tag = (index % 251) as u8;
                    if let Err(refused) = socket
                        .try_write_now(frame(tag, DIRECT_WRITE_BYTES_MAX), &queue)
                        .await
                    {
                        let mut half = socket.half.lock().await;
                        assert!(socket.write_locked(&mut half, &mut refused.into()).await);
                    }
                }
            })
        };
        let mut got = vec![0u8; usize::from(frames) * DIRECT_WRITE_BYTES_MAX];
        tokio::time::timeout(Duration::from_secs(30), peer.read_exact(&mut got))
            .await
            .expect("every byte arrives")
            .expect("read");
        direct.await.expect("every frame was written");
        for (index, chunk) in got.chunks(DIRECT_WRITE_BYTES_MAX).enumerate() {
            let tag = (index % 251) as u8;
            assert!(
                chunk.iter().all(|byte| *byte == tag),
                "frame {index} was cut into"
            );
        }
    }
}
