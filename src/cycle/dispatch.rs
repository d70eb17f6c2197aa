//! The dispatcher of a run alone in its cycle: new submissions first, then the tracked messages due, group by
//! group.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{SyncSender, sync_channel};
use std::time::Instant;

use anyhow::Result;
use chrono::{DateTime, Utc};

use super::{DueCounts, Job, ToWriter};
use crate::control::Control;
use crate::domain::{DueMessage, Intake};
use crate::intake::{self, Gatherer, ReadEnd, Window};
use crate::phases::Phase;
use crate::schedule;
use crate::store::Backend;

/// Submissions to take in that may wait for the writer, at most.
const TAKE_IN_AHEAD: usize = 50_000;
/// Tracked messages of one group read per query.
pub(super) const DUE_CHUNK: usize = 10_000;

/// The dispatcher's view of the cycle, and where it sends its work.
pub(super) struct Dispatch {
    pub control: Arc<Control>,
    pub jobs: SyncSender<Job>,
    pub out: SyncSender<ToWriter>,
    /// Submissions sent to be taken in since the writer last stored them all.
    pub ahead: Cell<usize>,
    pub window: Window,
    /// The cycle's clock.
    pub now: DateTime<Utc>,
    pub counts: Arc<DueCounts>,
    /// Worker threads: how many units a run of a round claims at a time.
    pub concurrency: usize,
}

impl Dispatch {
    /// Sends submissions to be taken in. They may come by the million (a first run on history, interleaved
    /// batches, a round's intake): once [`TAKE_IN_AHEAD`] wait for the writer, this waits until it has stored
    /// them, so that memory stays flat. False once the cycle is stopping.
    pub fn take_in(&self, intakes: Vec<Intake>) -> bool {
        self.ahead.set(self.ahead.get() + intakes.len());
        if self.out.send(ToWriter::TakeIn(intakes)).is_err() {
            return false;
        }
        if self.ahead.get() >= TAKE_IN_AHEAD {
            self.ahead.set(0);
            return self.flush();
        }
        true
    }

    /// Hands a job to the workers; false once the cycle is stopping.
    pub fn send(&self, job: Job) -> bool {
        self.control.stopped().is_none() && self.jobs.send(job).is_ok()
    }

    /// Waits until the writer has stored everything sent to it so far; false when it cannot (it failed, or the
    /// cycle is over).
    pub fn flush(&self) -> bool {
        let (done, stored) = sync_channel(1);
        self.out.send(ToWriter::Flush(done)).is_ok() && stored.recv() == Ok(true)
    }

    /// Where the messages due now are cut off: the end of the cycle's slot.
    pub fn cutoff(&self) -> DateTime<Utc> {
        schedule::cutoff(self.now)
    }
}

/// Reads the new submissions and hands out those due, then the tracked messages due, group by group, until
/// both run out or the cycle must stop. Messages never polled go first: a batch that failed on its first poll is
/// still new in the next cycle, and its first result is the one that says whether the send went out at all.
/// New messages of batches whose rows are interleaved with other batches' are taken in instead, and polled with
/// the tracked ones, one listing per batch. Returns how reading ended, and whether every tracked group was handed
/// out.
pub(super) fn alone(reader: &mut dyn Backend, to: &Dispatch) -> Result<(ReadEnd, bool)> {
    let mut send = |(batch_id, messages)| {
        to.send(Job {
            batch_id,
            messages,
            unit: None,
        })
    };
    let end = intake::read(
        reader,
        &to.window,
        to.now,
        &to.control,
        &to.counts.new,
        &mut send,
        |i| to.take_in(i),
    )?;
    // Every submission taken in must be stored before the tracked messages due are listed.
    if !to.flush() {
        return Ok((end, false));
    }
    let cutoff = to.cutoff();
    let step = Instant::now();
    let groups = Phase::ReadDue.time(|| reader.due_groups(cutoff))?;
    let due: u64 = groups.iter().map(|g| g.messages).sum();
    to.counts.tracked.store(due, Ordering::Relaxed);
    log::info!(
        "{due} tracked messages due in {} groups (found in {:.1}s)",
        groups.len(),
        step.elapsed().as_secs_f64()
    );
    for group in groups {
        // Read in chunks, each a short read: a group may hold a whole send.
        let mut gather = Gatherer::default().with_lone(to.window.lone);
        let mut open = true;
        let mut after = None;
        while open && to.control.stopped().is_none() {
            let (chunk, last) = Phase::ReadDue.time(|| {
                reader.due_messages(group.batch_id.as_deref(), cutoff, after.as_ref(), DUE_CHUNK)
            })?;
            let more = chunk.len() == DUE_CHUNK;
            after = last;
            for m in chunk {
                open = open && gather.add(m, &mut send);
            }
            if !more {
                break;
            }
        }
        if !(open && to.control.stopped().is_none() && gather.finish(&mut send)) {
            return Ok((end, false));
        }
    }
    Ok((end, true))
}

/// Every message of a batch due at `cutoff`, read in chunks.
pub(super) fn whole_batch(
    reader: &mut dyn Backend,
    batch: &str,
    cutoff: DateTime<Utc>,
    expected: usize,
) -> Result<Vec<DueMessage>> {
    let mut messages = Vec::with_capacity(expected);
    let mut after = None;
    loop {
        let (chunk, last) = Phase::ReadDue
            .time(|| reader.due_messages(Some(batch), cutoff, after.as_ref(), DUE_CHUNK))?;
        let more = chunk.len() == DUE_CHUNK;
        after = last;
        messages.extend(chunk);
        if !more {
            return Ok(messages);
        }
    }
}
