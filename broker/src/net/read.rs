//! Reading request frames off a socket, bounded by the memory budget and the listener's
//! timeouts: the one read loop of every listener (the native and the Kafka one frame alike, a
//! big-endian `u32` size and that many bytes). What a frame holds is the listener's business.
//!
//! Memory: bytes are charged to the broker's budget (`net::budget`) before they are read (never
//! the size a client announced); a frame's charge is handed out with it and travels with its
//! request until it is answered. When the budget says no, the reader simply stops reading: TCP
//! pushes back on that client alone.
//!
//! Time: a quiet connection (no request under way, nothing received) is closed after
//! `connection_idle_timeout_ms`; a frame once started must complete its size prefix within
//! `request_header_timeout_ms` and all of it within `frame_completion_timeout_ms`.
//!
//! In flight: a frame is handed out with a permit of the connection's in-flight semaphore
//! (`in_flight_requests_per_connection_max`); with none free the reader waits, and TCP pushes
//! back.

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tidelog_proto::frame::{decode_frame, FRAME_HEADER_BYTES};
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::budget::{ConnectionBudget, Reservation};
use super::ListenerLimits;

/// Most bytes read from the socket at once, and so charged to the budget at once.
const READ_CHUNK_BYTES: usize = 256 << 10;
/// Frames up to this size are copied out of the read buffer, so a request that waits long
/// (a long poll) does not keep the whole read buffer's allocation alive uncharged.
const FRAME_COPY_BYTES_MAX: usize = 16 << 10;
/// Least a read waits for from the budget (or what the frame still lacks, if less).
const READ_GRANT_BYTES_MIN: usize = 4 << 10;

/// One request frame (size prefix removed), with what it holds until it is answered.
pub(crate) struct Frame {
    pub bytes: Bytes,
    /// The frame's bytes, charged to the connection's budget.
    pub charge: Reservation,
    /// Its place among the connection's requests under way.
    pub permit: OwnedSemaphorePermit,
}

/// Why a connection's reading ended, other than the client closing it or the broker
/// shutting down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReadError {
    /// The size prefix is refused (too large, or empty): the stream is out of sync now. A
    /// listener may tell the client before it hangs up.
    BadFrame(String),
    /// A timeout, a socket error, a client gone mid-frame, or the writer giving up.
    Cut(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::BadFrame(reason) | ReadError::Cut(reason) => f.write_str(reason),
        }
    }
}

/// What the reader needs from its connection besides the socket.
pub(crate) struct ReaderParts<'a> {
    pub limits: &'a ListenerLimits,
    pub budget: &'a ConnectionBudget,
    pub in_flight: &'a Arc<Semaphore>,
    /// Told by the connection's writer when it gave up on the socket (failed or stalled).
    pub writer_gone: &'a Notify,
    pub shutdown: watch::Receiver<bool>,
}

/// Which clock the reader is running against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiting {
    /// Between frames.
    Idle,
    /// A frame has started but its size prefix is incomplete.
    Header,
    /// The size prefix is in; the rest of the frame is not.
    Frame,
}

/// Cuts frames off one connection's socket.
pub(crate) struct FrameReader<'a> {
    reader: OwnedReadHalf,
    parts: ReaderParts<'a>,
    buffer: BytesMut,
    /// Covers `buffer.len()`: the bytes of frames not yet cut.
    held: Reservation,
    frame_started: Instant,
    last_activity: Instant,
    /// A frame was handed out since the last call: its request has been started since, so
    /// the clocks restart now.
    handed_out: bool,
}

impl<'a> FrameReader<'a> {
    pub(crate) fn new(reader: OwnedReadHalf, parts: ReaderParts<'a>) -> Self {
        let held = parts.budget.empty();
        FrameReader {
            reader,
            parts,
            buffer: BytesMut::new(),
            held,
            frame_started: Instant::now(),
            last_activity: Instant::now(),
            handed_out: false,
        }
    }

    /// The next whole frame; `Ok(None)` when the client closed the connection between frames
    /// or the broker is shutting down; `Err` when the connection must be closed.
    pub(crate) async fn next(&mut self) -> Result<Option<Frame>, ReadError> {
        if std::mem::take(&mut self.handed_out) {
            self.frame_started = Instant::now();
            self.last_activity = Instant::now();
        }
        let limits = self.parts.limits;
        let frame_bytes_max = limits.frame_bytes_max;
        let idle_timeout = Duration::from_millis(limits.connection_idle_timeout_ms);
        let header_timeout = Duration::from_millis(limits.request_header_timeout_ms);
        let frame_timeout = Duration::from_millis(limits.frame_completion_timeout_ms);
        let in_flight_max = limits.in_flight_requests_per_connection_max;
        let cut = |reason: String| Err(ReadError::Cut(reason));
        loop {
            // Too large or empty: the size prefix is refused before any of the frame is
            // buffered, and the stream cannot be trusted after it.
            match decode_frame(&mut self.buffer, frame_bytes_max) {
                Ok(Some(frame)) => return self.hand_out(frame).await,
                Ok(None) => {}
                Err(error) => return Err(ReadError::BadFrame(error.to_string())),
            }
            if self.buffer.is_empty() {
                // Let go of the allocation the last frame came from (it lives on only as long
                // as that frame), so a quiet connection holds no buffer at all.
                self.buffer = BytesMut::new();
            }
            if *self.parts.shutdown.borrow() {
                return Ok(None);
            }
            let waiting = match self.buffer.len() {
                0 => Waiting::Idle,
                n if n < FRAME_HEADER_BYTES => Waiting::Header,
                _ => Waiting::Frame,
            };
            let deadline = match waiting {
                Waiting::Idle => self.last_activity + idle_timeout,
                Waiting::Header => self.frame_started + header_timeout,
                Waiting::Frame => self.frame_started + frame_timeout,
            };
            let pending = self.buffer.len();
            let timed_out = || -> Result<Option<Frame>, ReadError> {
                cut(match waiting {
                    Waiting::Idle => format!("idle for {} ms", idle_timeout.as_millis()),
                    Waiting::Header => format!(
                        "frame size prefix incomplete after {} ms ({pending} bytes)",
                        header_timeout.as_millis(),
                    ),
                    Waiting::Frame => format!(
                        "frame incomplete after {} ms ({pending} bytes received)",
                        frame_timeout.as_millis(),
                    ),
                })
            };
            // Wait for bytes before taking memory for them: a quiet connection holds none.
            tokio::select! {
                ready = self.reader.readable() => {
                    if let Err(error) = ready {
                        return cut(format!("read failed: {error}"));
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    if waiting == Waiting::Idle && self.parts.in_flight.available_permits() < in_flight_max {
                        // A request is under way (a long poll, a sync): not idle.
                        self.last_activity = Instant::now();
                        continue;
                    }
                    return timed_out();
                }
                _ = self.parts.shutdown.changed() => return Ok(None),
                _ = self.parts.writer_gone.notified() => return cut("the socket stopped taking responses".into()),
            }
            let wanted = match frame_length(&self.buffer) {
                Some(total) => total.saturating_sub(self.buffer.len()).clamp(1, READ_CHUNK_BYTES),
                None => READ_CHUNK_BYTES,
            };
            let grant = tokio::select! {
                grant = self.parts.budget.reserve_between(wanted.min(READ_GRANT_BYTES_MIN), wanted, None) => {
                    match grant {
                        Ok(grant) => grant,
                        Err(error) => return cut(format!("no memory for the next read: {error}")),
                    }
                }
                _ = tokio::time::sleep_until(deadline), if waiting != Waiting::Idle => return timed_out(),
                _ = self.parts.shutdown.changed() => return Ok(None),
                _ = self.parts.writer_gone.notified() => return cut("the socket stopped taking responses".into()),
            };
            let granted = grant.bytes();
            self.held.merge(grant);
            if self.buffer.is_empty() {
                self.frame_started = Instant::now();
            }
            match frame_length(&self.buffer) {
                // The whole frame in one allocation (its size already checked against the
                // limit): address space is reserved, but its pages become memory only as
                // bytes land in them, and the budget charges exactly those.
                Some(total) if total <= frame_bytes_max.saturating_add(FRAME_HEADER_BYTES) => {
                    self.buffer.reserve(total - self.buffer.len())
                }
                _ => self.buffer.reserve(granted),
            }
            let read = self.reader.try_read_buf(&mut (&mut self.buffer).limit(granted));
            match read {
                Ok(0) if self.buffer.is_empty() => return Ok(None),
                Ok(0) => {
                    return cut(format!(
                        "client closed the connection mid-frame ({} bytes pending)",
                        self.buffer.len()
                    ))
                }
                Ok(_) => self.last_activity = Instant::now(),
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(error) => return cut(format!("read failed: {error}")),
            }
            self.held.shrink_to(self.buffer.len());
        }
    }

    /// A cut frame with its charge and, once one is free, its in-flight permit.
    async fn hand_out(&mut self, frame: Bytes) -> Result<Option<Frame>, ReadError> {
        // A small frame is copied out of the read buffer (see FRAME_COPY_BYTES_MAX).
        let bytes = if frame.len() <= FRAME_COPY_BYTES_MAX {
            Bytes::copy_from_slice(&frame)
        } else {
            frame
        };
        let charge = self.held.split(bytes.len() + FRAME_HEADER_BYTES);
        let permit = tokio::select! {
            permit = self.parts.in_flight.clone().acquire_owned() => {
                permit.map_err(|error| ReadError::Cut(error.to_string()))?
            }
            _ = self.parts.shutdown.changed() => return Ok(None),
        };
        self.handed_out = true;
        Ok(Some(Frame {
            bytes,
            charge,
            permit,
        }))
    }
}

/// The whole length (prefix included) of the frame at the front of `buffer`, once its prefix
/// is in. A length over the limit is left to `decode_frame` to refuse.
fn frame_length(buffer: &BytesMut) -> Option<usize> {
    let header = buffer.get(..FRAME_HEADER_BYTES)?;
    let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    Some(length.saturating_add(FRAME_HEADER_BYTES))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_length_includes_the_prefix_and_never_overflows() {
        let mut buffer = BytesMut::new();
        assert_eq!(frame_length(&buffer), None);
        buffer.put_u32(10);
        assert_eq!(frame_length(&buffer), Some(14));
        let mut huge = BytesMut::new();
        huge.put_u32(u32::MAX);
        assert!(frame_length(&huge).is_some());
    }
}
