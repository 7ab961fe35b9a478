//! The catch-up subscription's state machine, free of I/O so every interleaving can be tested:
//! it says what to read next and turns each page read into the events to deliver, with the
//! `CaughtUp` and `FellBehind` markers where they belong. `subscription` drives it over a real
//! source (a stream or a partition) and a bounded channel.
//!
//! The rule that keeps delivery exact: `next` is the offset after the last record delivered,
//! and it only moves past a record when that record went into the buffer. A record read but
//! not delivered (the buffer was full) is read again, in history mode, from `next`: no gap and,
//! because records below `next` are dropped, no duplicate.

/// Anything with a place in a partition's offset order.
pub trait Positioned {
    /// The record's offset in its partition.
    fn offset(&self) -> i64;
}

/// What a subscriber receives, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionEvent<R> {
    /// The next record, in offset order; never one already delivered, never one skipped.
    Record(R),
    /// Every record before the live end, as of the read that found it, has been delivered;
    /// what follows is live.
    CaughtUp,
    /// The subscriber did not keep up with live records (its buffer filled, or a live read
    /// found a backlog): history is read again from the next undelivered record, and another
    /// `CaughtUp` follows once the end is reached.
    FellBehind,
}

/// Reading history (paced by the subscriber) or following the live end (long polls, pushed
/// into the buffer without waiting for room).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    History,
    Live,
}

/// The next read: from where, how many records at most, whether it may long-poll, and how many
/// buffer slots must be free before it is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReadPlan {
    pub(crate) from: i64,
    pub(crate) limit: usize,
    pub(crate) mode: Mode,
    /// History waits for room for a whole page and its `CaughtUp`, so it never drops what it
    /// read; live waits for one slot only, kept for the `FellBehind` marker.
    pub(crate) reserve: usize,
}

/// One read's answer, as every source reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Page<R> {
    /// In offset order, at or after the read's `from`.
    pub(crate) records: Vec<R>,
    /// Where the next read starts when every record here was delivered (past records of other
    /// keys the source skipped).
    pub(crate) next_offset: i64,
    /// True when nothing the subscription wants lies between `next_offset` and the live end.
    pub(crate) at_end: bool,
}

/// The catch-up state machine.
#[derive(Debug, Clone)]
pub(crate) struct CatchUp {
    mode: Mode,
    /// The offset after the last record delivered (or the subscription's start).
    next: i64,
    page_records: usize,
}

impl CatchUp {
    /// Starts in history mode at `from`. `page_records` must be at least 1; the buffer must
    /// hold `page_records + 1` events (`SubscriptionConfig::validate` checks both).
    pub(crate) fn new(from: i64, page_records: usize) -> Self {
        Self {
            mode: Mode::History,
            next: from.max(0),
            page_records: page_records.max(1),
        }
    }

    pub(crate) fn mode(&self) -> Mode {
        self.mode
    }

    /// The offset after the last record delivered.
    pub(crate) fn next_offset(&self) -> i64 {
        self.next
    }

    pub(crate) fn plan(&self) -> ReadPlan {
        ReadPlan {
            from: self.next,
            limit: self.page_records,
            mode: self.mode,
            reserve: match self.mode {
                Mode::History => self.page_records + 1,
                Mode::Live => 1,
            },
        }
    }

    /// Takes the page read under the last [`plan`](Self::plan) and returns the events to
    /// deliver now, at most `room` of them (`room` = free buffer slots, at least the plan's
    /// `reserve`). Records that do not fit are not delivered and will be read again.
    pub(crate) fn accept<R: Positioned>(&mut self, page: Page<R>, room: usize) -> Vec<SubscriptionEvent<R>> {
        // One slot is always kept for the marker that may follow the records.
        let record_room = room.saturating_sub(1);
        let mut out = Vec::with_capacity(page.records.len().min(record_room) + 1);
        let mut delivered_all = true;
        for record in page.records {
            let offset = record.offset();
            // A source may repeat a record a page boundary or a re-read overlapped.
            if offset < self.next {
                continue;
            }
            if out.len() == record_room {
                delivered_all = false;
                break;
            }
            self.next = offset + 1;
            out.push(SubscriptionEvent::Record(record));
        }
        if delivered_all {
            self.next = self.next.max(page.next_offset);
        }
        let reached_end = delivered_all && page.at_end;
        match self.mode {
            Mode::History if reached_end && room > 0 => {
                out.push(SubscriptionEvent::CaughtUp);
                self.mode = Mode::Live;
            }
            Mode::History => {}
            Mode::Live if !reached_end && room > 0 => {
                out.push(SubscriptionEvent::FellBehind);
                self.mode = Mode::History;
            }
            Mode::Live => {}
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    /// A record of the fake log: its offset and whether it belongs to the subscription (the
    /// key), so pages skip the others like a stream read does.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct Entry {
        offset: i64,
        ours: bool,
    }

    impl Positioned for Entry {
        fn offset(&self) -> i64 {
            self.offset
        }
    }

    /// The fake source: the log so far; a read returns at most `limit` of our records from
    /// `from`, below the high watermark, like `read_stream`.
    fn read(log: &[Entry], from: i64, limit: usize) -> Page<Entry> {
        let high_watermark = log.len() as i64;
        let mut records: Vec<Entry> = Vec::new();
        let mut more = false;
        for entry in log.iter().skip(from.max(0) as usize).filter(|entry| entry.ours) {
            if records.len() == limit {
                more = true;
                break;
            }
            records.push(*entry);
        }
        let next_offset = match records.last() {
            Some(last) if more => last.offset + 1,
            _ => high_watermark,
        };
        Page {
            records,
            next_offset,
            at_end: !more,
        }
    }

    /// One step of a scripted run: the writer appends, the subscriber takes from its buffer,
    /// or the driver reads once.
    #[derive(Debug, Clone)]
    enum Step {
        Append(Vec<bool>),
        Take(usize),
        Read,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            prop::collection::vec(any::<bool>(), 1..12).prop_map(Step::Append),
            (0usize..10).prop_map(Step::Take),
            Just(Step::Read),
        ]
    }

    /// Runs the machine as `subscription` does (a read only with the plan's reserve free) and
    /// checks what the subscriber saw: every record of ours from `from`, once, in order; the
    /// markers alternate starting with `CaughtUp`; each `CaughtUp` comes once every one of our
    /// records below the high watermark of the read that found the end was delivered.
    fn run(from: i64, page_records: usize, buffer: usize, initial: Vec<bool>, steps: Vec<Step>) {
        let mut log: Vec<Entry> = Vec::new();
        let append = |log: &mut Vec<Entry>, ours: &[bool]| {
            for ours in ours {
                let offset = log.len() as i64;
                log.push(Entry { offset, ours: *ours });
            }
        };
        append(&mut log, &initial);
        let mut machine = CatchUp::new(from, page_records);
        let mut queue: VecDeque<SubscriptionEvent<Entry>> = VecDeque::new();
        let mut seen: Vec<SubscriptionEvent<Entry>> = Vec::new();
        // For each CaughtUp: the high watermark its read saw.
        let mut caught_up_at: Vec<i64> = Vec::new();
        let mut read_once = |log: &[Entry], machine: &mut CatchUp, queue: &mut VecDeque<_>| -> bool {
            let plan = machine.plan();
            let room = buffer - queue.len();
            if room < plan.reserve {
                return false;
            }
            let page = read(log, plan.from, plan.limit);
            for event in machine.accept(page, room) {
                if event == SubscriptionEvent::CaughtUp {
                    caught_up_at.push(log.len() as i64);
                }
                queue.push_back(event);
            }
            assert!(queue.len() <= buffer, "the buffer overflowed");
            true
        };
        for step in steps {
            match step {
                Step::Append(ours) => append(&mut log, &ours),
                Step::Take(count) => {
                    for _ in 0..count {
                        if let Some(event) = queue.pop_front() {
                            seen.push(event);
                        }
                    }
                }
                Step::Read => {
                    read_once(&log, &mut machine, &mut queue);
                }
            }
        }
        // Drain: the subscriber takes everything and the driver reads until it is live and
        // caught up with the final log. Bounded: each round delivers or finishes.
        for _ in 0..(log.len() + 4) * 4 {
            seen.extend(queue.drain(..));
            let before = machine.next_offset();
            read_once(&log, &mut machine, &mut queue);
            if machine.mode() == Mode::Live && queue.is_empty() && machine.next_offset() == before {
                break;
            }
        }
        seen.extend(queue.drain(..));
        assert_eq!(machine.mode(), Mode::Live, "never caught up: {seen:?}");

        let delivered: Vec<i64> = seen
            .iter()
            .filter_map(|event| match event {
                SubscriptionEvent::Record(entry) => Some(entry.offset),
                _ => None,
            })
            .collect();
        let expected: Vec<i64> = log
            .iter()
            .filter(|entry| entry.ours && entry.offset >= from)
            .map(|entry| entry.offset)
            .collect();
        assert_eq!(
            delivered, expected,
            "records lost, repeated or reordered: {seen:?}"
        );

        let markers: Vec<&SubscriptionEvent<Entry>> = seen
            .iter()
            .filter(|event| !matches!(event, SubscriptionEvent::Record(_)))
            .collect();
        for (index, marker) in markers.iter().enumerate() {
            let want = if index % 2 == 0 {
                SubscriptionEvent::CaughtUp
            } else {
                SubscriptionEvent::FellBehind
            };
            assert_eq!(**marker, want, "markers out of order: {markers:?}");
        }
        assert_eq!(
            markers.last().map(|marker| (*marker).clone()),
            Some(SubscriptionEvent::CaughtUp),
            "a drained subscription ends caught up"
        );
        let mut caught_up = 0;
        let mut delivered_so_far: Vec<i64> = Vec::new();
        for event in &seen {
            match event {
                SubscriptionEvent::Record(entry) => delivered_so_far.push(entry.offset),
                SubscriptionEvent::CaughtUp => {
                    let high_watermark = caught_up_at[caught_up];
                    caught_up += 1;
                    let due: Vec<i64> = expected.iter().copied().filter(|o| *o < high_watermark).collect();
                    assert_eq!(delivered_so_far, due, "CaughtUp before the end it reported");
                }
                SubscriptionEvent::FellBehind => {}
            }
        }
    }

    proptest! {
        #[test]
        fn any_interleaving_delivers_each_record_once_in_order_with_markers_in_place(
            from in 0i64..8,
            page_records in 1usize..6,
            extra_buffer in 1usize..8,
            initial in prop::collection::vec(any::<bool>(), 0..30),
            steps in prop::collection::vec(step(), 0..60),
        ) {
            run(from, page_records, page_records + extra_buffer, initial, steps);
        }
    }

    #[test]
    fn empty_source_is_caught_up_at_once() {
        let mut machine = CatchUp::new(0, 4);
        let page: Page<Entry> = Page {
            records: Vec::new(),
            next_offset: 0,
            at_end: true,
        };
        assert_eq!(machine.accept(page, 5), vec![SubscriptionEvent::CaughtUp]);
        assert_eq!(machine.plan().mode, Mode::Live);
    }

    #[test]
    fn full_buffer_on_a_live_read_falls_behind_and_rereads_from_the_first_undelivered() {
        let mut machine = CatchUp::new(0, 4);
        let empty: Page<Entry> = Page {
            records: Vec::new(),
            next_offset: 0,
            at_end: true,
        };
        machine.accept(empty, 5);
        let live = Page {
            records: (0..3).map(|offset| Entry { offset, ours: true }).collect(),
            next_offset: 3,
            at_end: true,
        };
        // Room for one record and the marker only.
        let events = machine.accept(live, 2);
        assert_eq!(
            events,
            vec![
                SubscriptionEvent::Record(Entry {
                    offset: 0,
                    ours: true
                }),
                SubscriptionEvent::FellBehind
            ]
        );
        assert_eq!(machine.plan().from, 1);
        assert_eq!(machine.plan().mode, Mode::History);
    }

    #[test]
    fn live_read_with_a_backlog_falls_behind_after_delivering_it() {
        let mut machine = CatchUp::new(0, 2);
        machine.accept(
            Page::<Entry> {
                records: Vec::new(),
                next_offset: 0,
                at_end: true,
            },
            3,
        );
        let live = Page {
            records: (0..2).map(|offset| Entry { offset, ours: true }).collect(),
            next_offset: 2,
            at_end: false,
        };
        let events = machine.accept(live, 10);
        assert_eq!(events.len(), 3);
        assert_eq!(events[2], SubscriptionEvent::FellBehind);
        assert_eq!(machine.plan().from, 2);
    }
}
