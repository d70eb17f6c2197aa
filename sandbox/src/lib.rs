//! The sandbox carrier: a simulated carrier that speaks the generic wire format over real HTTP on loopback.
//!
//! It holds a world of messages, each with a fate (delivers after a delay, fails with a code, stays queued,
//! reports a word outside the mapping table, is missing from its batch listing, is unknown to the carrier), a
//! settable clock, paging, and fault knobs (latency, 5xx, 429 with Retry-After, malformed bodies, 401). The
//! integration tests, the demo and the benchmarks run the real `dlr-poller` binary against it.

pub mod dialect;
mod escape;
mod server;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use dlr_poller::carrier::Report;
use dlr_poller::retry::Rng;
use dlr_poller::timefmt;

pub use dialect::{Dialect, Truth};
pub use server::SandboxServer;

/// What happens to a simulated message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fate {
    /// `SENT` until `after` has passed since submission, then `DELIVERED`.
    Deliver { after: TimeDelta },
    /// `QUEUED` until `after`, then `word` (FAILED, REJECTED, BOUNCED, UNDELIVERABLE) with an error code.
    Fail {
        after: TimeDelta,
        word: String,
        code: String,
        reason: String,
    },
    /// Reports `word` forever (QUEUED, SENT, TIMEOUT, NO_STATUS, or a word outside the mapping table).
    Stuck { word: String },
}

#[derive(Clone, Debug)]
pub struct SimMessage {
    pub tracking_id: String,
    pub customer_id: String,
    pub phone_number: String,
    pub batch_id: Option<String>,
    pub submitted_at: DateTime<Utc>,
    pub fate: Fate,
    /// False: the batch listing leaves this message out (it must be asked for one by one).
    pub listed: bool,
    /// False: the carrier answers 404 for this message.
    pub known: bool,
}

impl SimMessage {
    /// What the carrier says about this message at `now`; `None` when it does not know the message.
    pub fn report_at(&self, now: DateTime<Utc>) -> Option<Report> {
        self.wire_at(now).map(|w| Report {
            tracking_id: w.tracking_id.to_string(),
            status: w.status.to_string(),
            error_code: w.error_code.map(str::to_string),
            error_message: w.error_message.map(str::to_string),
            status_updated_at: w.status_updated_at,
            ..Report::default()
        })
    }

    /// The same, as it goes on the wire, borrowed from the message (a listing of thousands is serialised without
    /// building a value per message).
    fn wire_at(&self, now: DateTime<Utc>) -> Option<Wire<'_>> {
        let (status, error_code, error_message, at) = self.said_at(now, Dialect::Generic)?;
        Some(Wire {
            tracking_id: &self.tracking_id,
            status,
            error_code,
            error_message,
            status_updated_at: at.map(timefmt::format),
        })
    }
}

/// One message in the generic wire format.
#[derive(serde::Serialize)]
struct Wire<'a> {
    tracking_id: &'a str,
    status: &'a str,
    error_code: Option<&'a str>,
    error_message: Option<&'a str>,
    status_updated_at: Option<String>,
}

/// One page of a batch listing in the generic wire format.
#[derive(serde::Serialize)]
struct Page<'a> {
    batch_id: &'a str,
    messages: Vec<Wire<'a>>,
    next_page_token: Option<String>,
}

/// Tracking ids in the order of submission (`T00000042`): each new id sorts after the last.
pub fn sequential_id(i: usize) -> String {
    format!("T{i:08}")
}

/// Tracking ids in no order, shaped like UUIDs: distinct for distinct `i`, so that every insert lands somewhere
/// else in the indexes on tracking_id.
pub fn random_id(i: usize) -> String {
    // splitmix64's finaliser: a bijection on u64, so the ids never collide.
    let mut z = (i as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    let low = (i as u64).wrapping_mul(0x2545_f491_4f6c_dd1d);
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        z >> 32,
        (z >> 16) & 0xffff,
        z & 0xfff,
        (low >> 52) & 0xfff,
        low & 0xffff_ffff_ffff
    )
}

/// The simulated messages, indexed by tracking id and by batch.
#[derive(Debug, Default)]
pub struct World {
    messages: Vec<SimMessage>,
    /// The account's other traffic: known to the carrier, in its listings, never in sms_submissions.
    others: Vec<SimMessage>,
    by_id: HashMap<String, usize>,
    batches: BTreeMap<String, Vec<usize>>,
    /// Every message, ours and others', by submission time then tracking id (descending, so that walking it
    /// backwards gives the newest first and ids in order): listings by time read only what they return.
    by_time: BTreeSet<TimeKey>,
    other_ids: HashMap<String, usize>,
    other_batches: BTreeMap<String, Vec<usize>>,
}

/// A message's place in [`World`]'s time index.
pub type TimeKey = (DateTime<Utc>, Reverse<String>, Slot);

fn time_key(m: &SimMessage, slot: Slot) -> TimeKey {
    (m.submitted_at, Reverse(m.tracking_id.clone()), slot)
}

/// Where a message lives in a [`World`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Slot {
    Ours(usize),
    Other(usize),
}

impl World {
    pub fn new(messages: Vec<SimMessage>) -> World {
        let mut world = World::default();
        for m in messages {
            world.add(m);
        }
        world
    }

    pub fn add(&mut self, m: SimMessage) {
        let i = self.messages.len();
        self.by_id.insert(m.tracking_id.clone(), i);
        self.by_time.insert(time_key(&m, Slot::Ours(i)));
        if let Some(b) = &m.batch_id {
            self.batches.entry(b.clone()).or_default().push(i);
        }
        self.messages.push(m);
    }

    pub fn messages(&self) -> &[SimMessage] {
        &self.messages
    }

    /// Changes our messages with `f` (the account's other traffic stays as it is): say, without the
    /// dispatcher's batch ids, as a provider without batches (Twilio) is sent to one message at a time.
    pub fn edit(&mut self, mut f: impl FnMut(&mut SimMessage)) {
        let World {
            messages, others, ..
        } = std::mem::take(self);
        for mut m in messages {
            f(&mut m);
            self.add(m);
        }
        for m in others {
            self.add_other(m);
        }
    }

    /// Adds a message of the account's other traffic (another system sending on the same account).
    pub fn add_other(&mut self, m: SimMessage) {
        let i = self.others.len();
        self.by_time.insert(time_key(&m, Slot::Other(i)));
        self.other_ids.entry(m.tracking_id.clone()).or_insert(i);
        if let Some(b) = &m.batch_id {
            self.other_batches.entry(b.clone()).or_default().push(i);
        }
        self.others.push(m);
    }

    /// The message in `slot`, with its key in the time index.
    pub fn at(&self, slot: Slot) -> Option<(&SimMessage, TimeKey)> {
        let m = match slot {
            Slot::Ours(i) => self.messages.get(i)?,
            Slot::Other(i) => self.others.get(i)?,
        };
        Some((m, time_key(m, slot)))
    }

    /// Messages submitted at `until` or before, newest first (ids in order within a time), starting after
    /// `after` (a key this walk returned) when given.
    pub fn newest_first(
        &self,
        until: DateTime<Utc>,
        after: Option<&TimeKey>,
    ) -> impl Iterator<Item = (&SimMessage, &TimeKey)> {
        // (t, Reverse(""), the largest slot) is the last key at time t.
        let last = (until, Reverse(String::new()), Slot::Other(usize::MAX));
        let (end, inclusive) = match after {
            Some(key) if *key < last => (key.clone(), false),
            _ => (last, true),
        };
        self.by_time
            .range(..=end.clone())
            .rev()
            .filter(move |k| inclusive || **k != end)
            .filter_map(|k| Some((self.at(k.2)?.0, k)))
    }

    /// The poller's messages and the account's other traffic.
    pub fn all(&self) -> impl Iterator<Item = &SimMessage> {
        self.messages.iter().chain(&self.others)
    }

    /// A message of the poller's or of the other traffic, by id.
    pub fn find(&self, id: &str) -> Option<&SimMessage> {
        self.get(id)
            .or_else(|| self.others.get(*self.other_ids.get(id)?))
    }

    /// The poller's messages and the account's other traffic that carry `batch_id`.
    pub fn in_batch(&self, batch_id: &str) -> impl Iterator<Item = &SimMessage> {
        let ours = self.batches.get(batch_id).into_iter().flatten();
        let others = self.other_batches.get(batch_id).into_iter().flatten();
        ours.map(|&i| &self.messages[i])
            .chain(others.map(|&i| &self.others[i]))
    }

    /// Every member of a batch (listed or not); `None` for a batch the carrier does not know.
    pub fn batch(&self, batch_id: &str) -> Option<Vec<&SimMessage>> {
        let members = self.batches.get(batch_id)?;
        Some(members.iter().map(|&i| &self.messages[i]).collect())
    }

    /// Writes the world's messages into `sms_submissions` as the dispatch system would, in one transaction.
    pub fn write_submissions(&self, conn: &mut rusqlite::Connection) -> rusqlite::Result<()> {
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare(
                "INSERT INTO sms_submissions (tracking_id, customer_id, phone_number, carrier_batch_id, \
                 submitted_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for m in &self.messages {
                insert.execute((
                    &m.tracking_id,
                    &m.customer_id,
                    &m.phone_number,
                    &m.batch_id,
                    timefmt::format(m.submitted_at),
                ))?;
            }
        }
        tx.commit()
    }

    pub fn get(&self, tracking_id: &str) -> Option<&SimMessage> {
        self.by_id.get(tracking_id).map(|&i| &self.messages[i])
    }

    /// The messages a batch listing shows; `None` for a batch the carrier does not know.
    fn listing(&self, batch_id: &str) -> Option<Vec<&SimMessage>> {
        let members = self.batches.get(batch_id)?;
        let listed: Vec<_> = members
            .iter()
            .map(|&i| &self.messages[i])
            .filter(|m| m.known && m.listed)
            .collect();
        Some(listed)
    }

    /// `n` messages that all stay SENT, submitted at `start`: in batches of `batch_size` (all listed), or without
    /// batch ids when `batch_size` is 0. For benchmarks: every message is due in the same cycles.
    pub fn uniform(n: usize, batch_size: usize, start: DateTime<Utc>) -> World {
        World::uniform_with(n, batch_size, start, sequential_id)
    }

    /// The same, with tracking ids made by `id` from the message's number (see [`sequential_id`] and
    /// [`random_id`]).
    pub fn uniform_with(
        n: usize,
        batch_size: usize,
        start: DateTime<Utc>,
        id: impl Fn(usize) -> String,
    ) -> World {
        World::new(
            (0..n)
                .map(|i| SimMessage {
                    tracking_id: id(i),
                    customer_id: format!("C{:06}", i % 100_000),
                    phone_number: format!("+4915{i:09}"),
                    batch_id: (batch_size > 0).then(|| format!("B{:06}", i / batch_size)),
                    submitted_at: start,
                    fate: Fate::Stuck {
                        word: "SENT".into(),
                    },
                    listed: true,
                    known: true,
                })
                .collect(),
        )
    }

    /// `n` messages in `dialect`'s ids that all stay on their way (Twilio `sent`, Sinch `Dispatched`...),
    /// submitted at `start`, in batches of `batch_size` (0: without batch ids). For benchmarks.
    pub fn uniform_for(
        dialect: Dialect,
        n: usize,
        batch_size: usize,
        start: DateTime<Utc>,
    ) -> World {
        let mut world = World::uniform_with(n, batch_size, start, |i| dialect.tracking_id(i));
        let word = dialect.pending_word();
        for m in &mut world.messages {
            m.fate = Fate::Stuck { word: word.into() };
        }
        world
    }

    /// A realistic mix of `n` messages in batches of `batch_size`, submitted from `start` over the next hour:
    /// most deliver within hours, some fail, some stay queued, a few report odd words, are missing from their
    /// listing or are unknown to the carrier, and some have no batch id. Deterministic for a seed.
    pub fn generate(n: usize, batch_size: usize, start: DateTime<Utc>, seed: u64) -> World {
        let mut rng = Rng::seeded(seed);
        let mut messages = Vec::with_capacity(n);
        let batch_size = batch_size.max(1);
        for i in 0..n {
            let batch_no = i / batch_size;
            let submitted_at = start + TimeDelta::seconds((batch_no as i64 * 37) % 3600);
            let roll = rng.below(1000);
            let hours =
                |rng: &mut Rng, max: u64| TimeDelta::minutes(1 + rng.below(max * 60) as i64);
            let fate = match roll {
                0..=649 => Fate::Deliver {
                    after: hours(&mut rng, 6),
                },
                650..=719 => Fate::Deliver {
                    after: hours(&mut rng, 80),
                },
                720..=799 => {
                    let (word, code, reason) = [
                        ("FAILED", "30003", "Unreachable destination handset"),
                        ("REJECTED", "30007", "Carrier violation"),
                        ("BOUNCED", "30005", "Unknown destination handset"),
                        ("UNDELIVERABLE", "30006", "Landline or unreachable carrier"),
                    ][rng.below(4) as usize];
                    Fate::Fail {
                        after: hours(&mut rng, 24),
                        word: word.into(),
                        code: code.into(),
                        reason: reason.into(),
                    }
                }
                800..=939 => Fate::Stuck {
                    word: ["QUEUED", "SENT", "TIMEOUT", "NO_STATUS", "pending"]
                        [rng.below(5) as usize]
                        .into(),
                },
                _ => Fate::Stuck {
                    word: ["ACCEPTD", "EN_ROUTE"][rng.below(2) as usize].into(),
                },
            };
            let odd = rng.below(100);
            messages.push(SimMessage {
                tracking_id: format!("T{i:07}"),
                customer_id: format!("C{:05}", rng.below(50_000)),
                phone_number: format!("+4915{:09}", rng.below(1_000_000_000)),
                batch_id: (odd >= 6).then(|| format!("B{batch_no:05}")),
                submitted_at,
                fate,
                listed: !(6..9).contains(&odd),
                known: !(9..11).contains(&odd),
            });
        }
        World::new(messages)
    }
}

impl World {
    /// A realistic mix of `n` messages in `dialect`'s words, ids and codes, in batches of `batch_size`, plus the
    /// account's other traffic (one message in twenty, submitted at the same times): see [`World::generate`].
    pub fn generate_for(
        dialect: Dialect,
        n: usize,
        batch_size: usize,
        start: DateTime<Utc>,
        seed: u64,
    ) -> World {
        let mut rng = Rng::seeded(seed);
        let batch_size = batch_size.max(1);
        let failures = dialect.failures();
        let stuck = dialect.stuck_words();
        let mut world = World::default();
        for i in 0..n + n / 20 {
            let batch_no = (i % n.max(1)) / batch_size;
            let submitted_at = start + TimeDelta::seconds((batch_no as i64 * 37) % 3600);
            let hours =
                |rng: &mut Rng, max: u64| TimeDelta::minutes(1 + rng.below(max * 60) as i64);
            let fate = match rng.below(1000) {
                0..=649 => Fate::Deliver {
                    after: hours(&mut rng, 6),
                },
                650..=719 => Fate::Deliver {
                    after: hours(&mut rng, 80),
                },
                720..=799 => {
                    let (word, code, reason) = failures[rng.below(failures.len() as u64) as usize];
                    Fate::Fail {
                        after: hours(&mut rng, 24),
                        word: word.into(),
                        code: code.into(),
                        reason: reason.into(),
                    }
                }
                _ => Fate::Stuck {
                    word: stuck[rng.below(stuck.len() as u64) as usize].into(),
                },
            };
            let odd = rng.below(100);
            // Sinch can only be asked by batch and number: nearly every message has a batch.
            let batchless = if dialect == Dialect::Sinch {
                odd < 1
            } else {
                odd < 6
            };
            let m = SimMessage {
                tracking_id: dialect.tracking_id(i),
                customer_id: format!("C{:05}", rng.below(50_000)),
                phone_number: format!("+4915{:09}", rng.below(1_000_000_000)),
                batch_id: (!batchless).then(|| format!("B{batch_no:05}")),
                submitted_at,
                fate,
                listed: !(6..9).contains(&odd),
                known: !(9..11).contains(&odd),
            };
            if i < n {
                world.add(m);
            } else {
                world.add_other(SimMessage {
                    batch_id: Some(format!("X{batch_no:05}")),
                    ..m
                });
            }
        }
        world
    }
}

/// Fault knobs. Counters (`*_next`) apply to that many upcoming requests, then the carrier behaves again.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Added to every request.
    pub latency: Duration,
    /// Answer 503 to the next N requests.
    pub unavailable_next: u32,
    /// Answer 429 with `Retry-After: retry_after_secs` to the next N requests.
    pub rate_limited_next: u32,
    pub retry_after_secs: u64,
    /// Answer 200 with a body that is not JSON to the next N requests.
    pub malformed_next: u32,
    /// Answer 500 to this share of requests (0.0-1.0), at random.
    pub error_rate: f64,
    /// Answer 401 to everything.
    pub unauthorized: bool,
    /// Batch listings answer 503 for these batch ids (dead batches). Twilio has no batches: there, the
    /// listings of messages sent from these times (`DateSent>` as RFC 3339) answer 503 (dead minutes).
    pub dead_batches: Vec<String>,
    /// Answer 503 to every request after this many (the carrier goes down halfway).
    pub unavailable_after: Option<u64>,
    /// Cut the body of the next N responses in half (the connection closes before Content-Length is reached).
    pub truncated_next: u32,
    /// Never answer: every request hangs until the client gives up.
    pub hang: bool,
    /// Vonage's and Infobip's id lists (`id=`, `messageId=`) of more ids than this answer 400.
    pub max_ids: Option<usize>,
}

/// A fault below HTTP, applied by the server to the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportFault {
    Truncate,
    Hang,
}

/// Request counts, for assertions and benchmarks.
#[derive(Debug, Default)]
pub struct SandboxStats {
    pub requests: AtomicU64,
    /// Requests being answered now, and the most there ever were at once.
    pub in_flight: AtomicU64,
    pub max_in_flight: AtomicU64,
    pub batch_pages: AtomicU64,
    pub message_lookups: AtomicU64,
    pub faults: AtomicU64,
}

/// The simulated carrier's state, shared by its connection threads.
pub struct Sandbox {
    world: RwLock<World>,
    clock: RwLock<DateTime<Utc>>,
    faults: Mutex<Faults>,
    token: String,
    dialect: Dialect,
    page_size: usize,
    rng: Mutex<Rng>,
    pub stats: SandboxStats,
}

impl Sandbox {
    pub fn new(world: World, token: &str, now: DateTime<Utc>) -> Sandbox {
        Sandbox {
            world: RwLock::new(world),
            clock: RwLock::new(now),
            faults: Mutex::new(Faults::default()),
            token: token.to_string(),
            dialect: Dialect::Generic,
            page_size: 100,
            rng: Mutex::new(Rng::seeded(7)),
            stats: SandboxStats::default(),
        }
    }

    /// Answers as `dialect` does (default: the generic API).
    pub fn with_dialect(mut self, dialect: Dialect) -> Sandbox {
        self.dialect = dialect;
        self
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Messages per page of a batch listing (default 100).
    pub fn with_page_size(mut self, page_size: usize) -> Sandbox {
        self.page_size = page_size.max(1);
        self
    }

    pub fn set_clock(&self, now: DateTime<Utc>) {
        *self.clock.write().unwrap_or_else(|e| e.into_inner()) = now;
    }

    pub fn clock(&self) -> DateTime<Utc> {
        *self.clock.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the fault knobs.
    pub fn faults(&self, change: impl FnOnce(&mut Faults)) {
        change(&mut self.faults.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Reads the world (e.g. to compare the poller's audit trail with the truth).
    pub fn world<T>(&self, read: impl FnOnce(&World) -> T) -> T {
        read(&self.world.read().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn requests(&self) -> u64 {
        self.stats.requests.load(Ordering::Relaxed)
    }

    /// The connection-level fault for the next response, if any (consumed).
    fn transport_fault(&self) -> Option<TransportFault> {
        let mut f = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        if f.hang {
            return Some(TransportFault::Hang);
        }
        if f.truncated_next > 0 {
            f.truncated_next -= 1;
            return Some(TransportFault::Truncate);
        }
        None
    }

    /// Decides a response to `GET target` with the given Authorization header: (status, extra headers, body).
    /// Counts the requests answered at once.
    pub(crate) fn respond(
        &self,
        target: &str,
        authorization: Option<&str>,
    ) -> (u16, Vec<(&'static str, String)>, String) {
        let now = self.stats.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.stats.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let answer = self.answer(target, authorization);
        self.stats.in_flight.fetch_sub(1, Ordering::SeqCst);
        answer
    }

    fn answer(
        &self,
        target: &str,
        authorization: Option<&str>,
    ) -> (u16, Vec<(&'static str, String)>, String) {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let faults = {
            let mut guard = self.faults.lock().unwrap_or_else(|e| e.into_inner());
            let f = &mut *guard;
            let snapshot = f.clone();
            for counter in [
                &mut f.unavailable_next,
                &mut f.rate_limited_next,
                &mut f.malformed_next,
            ] {
                if *counter > 0 {
                    *counter -= 1;
                    break;
                }
            }
            snapshot
        };
        if !faults.latency.is_zero() {
            std::thread::sleep(faults.latency);
        }
        let expected = self.dialect.authorization(&self.token);
        if faults.unauthorized || authorization != Some(expected.as_str()) {
            return (401, vec![], error_body("invalid credentials"));
        }
        let fault = |status, headers, body| {
            self.stats.faults.fetch_add(1, Ordering::Relaxed);
            (status, headers, body)
        };
        let served = self.stats.requests.load(Ordering::Relaxed);
        if faults.unavailable_next > 0 || faults.unavailable_after.is_some_and(|n| served > n) {
            return fault(503, vec![], error_body("service unavailable"));
        }
        if faults.rate_limited_next > 0 {
            // Of the providers, only Telnyx says when to come back (x-ratelimit-reset); the generic API sends
            // Retry-After.
            let wait = faults.retry_after_secs.to_string();
            let headers = match self.dialect {
                Dialect::Generic => vec![("Retry-After", wait)],
                Dialect::Telnyx => vec![("x-ratelimit-reset", wait)],
                _ => vec![],
            };
            return fault(429, headers, error_body("slow down"));
        }
        if faults.malformed_next > 0 {
            return fault(
                200,
                vec![],
                "<html><body>502 Bad Gateway</body></html>".to_string(),
            );
        }
        if faults.error_rate > 0.0 {
            let roll = self
                .rng
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .below(1_000_000);
            if (roll as f64) < faults.error_rate * 1_000_000.0 {
                return fault(500, vec![], error_body("internal error"));
            }
        }
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let segments: Vec<String> = path
            .trim_start_matches('/')
            .split('/')
            .map(escape::decode)
            .collect();
        let now = self.clock();
        let world = self.world.read().unwrap_or_else(|e| e.into_inner());
        if self.dialect != Dialect::Generic {
            let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
            let stat = if query.contains("bulkId")
                || query.contains("type=full")
                || path.ends_with("Messages.json")
            {
                &self.stats.batch_pages
            } else {
                &self.stats.message_lookups
            };
            stat.fetch_add(1, Ordering::Relaxed);
            // A dead batch: its bulk question fails every time, its messages' own questions work.
            let bulk = !std::ptr::eq(stat, &self.stats.message_lookups);
            if bulk
                && faults.dead_batches.iter().any(|b| {
                    segments.contains(&b.as_str())
                        || query.split('&').any(|kv| {
                            kv == format!("bulkId={b}")
                                || escape::decode(kv) == format!("DateSent>={b}")
                        })
                })
            {
                return fault(503, vec![], error_body("batch report unavailable"));
            }
            let too_many = |kv: &str| {
                kv.strip_prefix("id=")
                    .or_else(|| kv.strip_prefix("messageId="))
                    .zip(faults.max_ids)
                    .is_some_and(|(ids, max)| escape::decode(ids).split(',').count() > max)
            };
            if query.split('&').any(too_many) {
                return fault(400, vec![], error_body("too many ids"));
            }
            return dialect::respond(self.dialect, &world, now, self.page_size, &segments, query);
        }
        match segments.iter().map(String::as_str).collect::<Vec<_>>()[..] {
            ["batches", batch_id, "messages"] => {
                self.stats.batch_pages.fetch_add(1, Ordering::Relaxed);
                if faults.dead_batches.iter().any(|b| b == batch_id) {
                    return fault(503, vec![], error_body("batch store unavailable"));
                }
                let Some(listed) = world.listing(batch_id) else {
                    return (404, vec![], error_body("unknown batch"));
                };
                let offset = query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("page_token="))
                    .map(escape::decode)
                    .and_then(|t| t.strip_prefix("p").and_then(|n| n.parse::<usize>().ok()));
                let offset = offset.unwrap_or(0).min(listed.len());
                let end = (offset + self.page_size).min(listed.len());
                let page = Page {
                    batch_id,
                    messages: listed[offset..end]
                        .iter()
                        .filter_map(|m| m.wire_at(now))
                        .collect(),
                    next_page_token: (end < listed.len()).then(|| format!("p{end}")),
                };
                (200, vec![], to_json(&page))
            }
            ["messages", tracking_id] => {
                self.stats.message_lookups.fetch_add(1, Ordering::Relaxed);
                match world.get(tracking_id).and_then(|m| m.wire_at(now)) {
                    Some(w) => (200, vec![], to_json(&w)),
                    None => (404, vec![], error_body("unknown message")),
                }
            }
            _ => (404, vec![], error_body("no such endpoint")),
        }
    }
}

fn to_json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).unwrap_or_else(|e| error_body(&e.to_string()))
}

fn error_body(message: &str) -> String {
    serde_json::json!({ "error": message }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        timefmt::parse(s).unwrap()
    }

    fn message(fate: Fate) -> SimMessage {
        SimMessage {
            tracking_id: "T1".into(),
            customer_id: "C1".into(),
            phone_number: "+4915100000001".into(),
            batch_id: Some("B 1/x".into()),
            submitted_at: t("2025-12-01T09:00:00Z"),
            fate,
            listed: true,
            known: true,
        }
    }

    #[test]
    fn fates_unfold_over_time() {
        let m = message(Fate::Deliver {
            after: TimeDelta::hours(3),
        });
        assert_eq!(
            m.report_at(t("2025-12-01T11:00:00Z")).unwrap().status,
            "SENT"
        );
        let later = m.report_at(t("2025-12-01T13:00:00Z")).unwrap();
        assert_eq!(later.status, "DELIVERED");
        assert_eq!(
            later.status_updated_at.as_deref(),
            Some("2025-12-01T12:00:00Z")
        );
        let m = message(Fate::Fail {
            after: TimeDelta::hours(1),
            word: "BOUNCED".into(),
            code: "30005".into(),
            reason: "Unknown".into(),
        });
        assert_eq!(
            m.report_at(t("2025-12-01T09:30:00Z")).unwrap().status,
            "QUEUED"
        );
        assert_eq!(
            m.report_at(t("2025-12-01T11:00:00Z"))
                .unwrap()
                .error_code
                .as_deref(),
            Some("30005")
        );
        let mut m = message(Fate::Stuck {
            word: "QUEUED".into(),
        });
        m.known = false;
        assert_eq!(m.report_at(t("2025-12-01T11:00:00Z")), None);
    }

    #[test]
    fn pages_and_escaped_ids() {
        let mut world = World::default();
        for i in 0..5 {
            let mut m = message(Fate::Stuck {
                word: "SENT".into(),
            });
            m.tracking_id = format!("T{i}");
            m.listed = i != 3;
            world.add(m);
        }
        let sandbox = Sandbox::new(world, "tok", t("2025-12-01T11:00:00Z")).with_page_size(2);
        let auth = Some("Bearer tok");
        let (status, _, body) = sandbox.respond("/batches/B%201%2Fx/messages", auth);
        assert_eq!(status, 200);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["messages"].as_array().unwrap().len(), 2);
        assert_eq!(v["next_page_token"], "p2");
        let (_, _, body) = sandbox.respond("/batches/B%201%2Fx/messages?page_token=p2", auth);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["messages"][0]["tracking_id"], "T2");
        assert_eq!(
            v["messages"][1]["tracking_id"], "T4",
            "T3 is left out of the listing"
        );
        assert!(v["next_page_token"].is_null());
        assert_eq!(sandbox.respond("/messages/T3", auth).0, 200);
        assert_eq!(sandbox.respond("/batches/nope/messages", auth).0, 404);
        assert_eq!(sandbox.respond("/messages/T3", Some("Bearer wrong")).0, 401);
    }

    #[test]
    fn fault_counters_run_down() {
        let sandbox = Sandbox::new(World::default(), "tok", Utc::now());
        sandbox.faults(|f| {
            f.unavailable_next = 1;
            f.rate_limited_next = 1;
            f.retry_after_secs = 2;
            f.malformed_next = 1;
        });
        let auth = Some("Bearer tok");
        assert_eq!(sandbox.respond("/messages/x", auth).0, 503);
        let (status, headers, _) = sandbox.respond("/messages/x", auth);
        assert_eq!(
            (status, headers),
            (429, vec![("Retry-After", "2".to_string())])
        );
        assert_eq!(sandbox.respond("/messages/x", auth).0, 200);
        assert_eq!(sandbox.respond("/messages/x", auth).0, 404);
        assert_eq!(sandbox.stats.faults.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn generated_world_has_every_kind_of_message() {
        let world = World::generate(2000, 100, t("2025-12-01T09:00:00Z"), 1);
        let m = world.messages();
        assert_eq!(m.len(), 2000);
        assert!(m.iter().any(|m| m.batch_id.is_none()));
        assert!(m.iter().any(|m| !m.listed));
        assert!(m.iter().any(|m| !m.known));
        assert!(m.iter().any(|m| matches!(m.fate, Fate::Fail { .. })));
        assert!(
            m.iter()
                .any(|m| matches!(&m.fate, Fate::Stuck { word } if word == "ACCEPTD"))
        );
        let again = World::generate(2000, 100, t("2025-12-01T09:00:00Z"), 1);
        assert_eq!(again.messages()[1234].fate, m[1234].fate);
    }

    #[test]
    fn random_ids_are_distinct_unordered_and_uuid_shaped() {
        let ids: Vec<String> = (0..10_000).map(random_id).collect();
        assert_eq!(
            ids.iter().collect::<std::collections::HashSet<_>>().len(),
            ids.len()
        );
        assert!(
            ids.iter()
                .all(|id| id.len() == 36 && id.matches('-').count() == 4)
        );
        let ascending = ids.windows(2).filter(|w| w[0] < w[1]).count();
        assert!(
            (4_000..6_000).contains(&ascending),
            "{ascending} of 9999 pairs in order"
        );
        assert!(sequential_id(9) < sequential_id(10));
    }
}
