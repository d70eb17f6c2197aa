//! Twilio (REST API 2010-04-01, Messages). The tracking id is the Message SID (`SM` + 32 hex digits).
//!
//! ```text
//! GET {base}/2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json
//! GET {base}/2010-04-01/Accounts/{AccountSid}/Messages.json?PageSize=1000&DateSent>=…&DateSent<=…
//!     then next_page_uri until it is null
//! ```
//! Basic authentication with the Account SID and auth token, or with an API key: a token `SK…:secret`.
//!
//! Twilio has no batch ids and no query by many SIDs: its bulk question is the Messages list filtered by
//! `DateSent`. The profile lists the timeline in one-minute slices, 1,000 messages a page, and keeps the last
//! [`SLICES_KEPT`] slices of the cycle (a report leaves its slice when a job takes it): every job of a send
//! finds its messages in the same few slices, so a send costs about one request per 1,000 messages sent in its
//! minutes, the account's other traffic included (it is skipped). Pages follow one another, so a busy minute
//! (its first page does not reach back to its start) is listed in parts at once, as many as pages are expected,
//! at most `--concurrency`. A message is looked for from a minute before its submission to ten minutes after
//! (Twilio may queue a message before sending it); a job walks its messages' minutes in order, however long its
//! send took. A message its minutes lack (still queued, sent later) is asked for one by one, as is a job of a
//! few messages strewn over more minutes than it has messages (a minute each would cost more than a lookup
//! each). A minute whose listing fails is not asked again for a minute ([`FAILED_FOR`]): the jobs that need it
//! meanwhile take what their other minutes hold, and the messages only it could list are handled as a failed
//! bulk question's.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::http::{Auth, Http};
use super::wire::{self, Page, encode, string_or_number};
use super::{AccountRule, Bulk, FetchError, Listing, Profile, Provider, Report};
use crate::domain::{DueMessage, LoneJobs};
use crate::timefmt;

/// How long before its submission a message may count as sent (clocks apart).
const BEFORE: TimeDelta = TimeDelta::minutes(1);
/// How long after its submission a message may still be sent (Twilio's queue).
const AFTER: TimeDelta = TimeDelta::minutes(10);
const PAGE_SIZE: usize = 1_000;
/// The listed minutes kept in memory: a job needs about twelve; jobs come roughly in submission order.
pub const SLICES_KEPT: usize = 16;
/// Messages without a batch per job, at most: a busy minute of a send is asked for by several jobs.
const LONE_CHUNK: usize = 1_000;

/// The messages sent in one minute, as far as this cycle has listed them. A report leaves it when a job takes it.
type Slice = Arc<Mutex<Listed>>;

/// A minute's listing in this cycle.
#[derive(Default)]
enum Listed {
    #[default]
    Not,
    Done(Minute),
    /// Its listing failed (after its retries) at `at`: the jobs that come in the next [`FAILED_FOR`] do not ask
    /// again; they take what their other minutes hold, and the messages those lack are handled as a failed bulk
    /// question's. After that, a job asks again (a carrier that was unwell for a moment has recovered).
    Failed {
        error: FetchError,
        at: Instant,
    },
}

/// How long a minute whose listing failed is passed over before a job lists it again.
const FAILED_FOR: Duration = Duration::from_secs(60);

/// One listed minute, compactly: a send's minute may hold a hundred thousand messages, most of them alike.
#[derive(Default)]
struct Minute {
    /// By the SID's 128 bits.
    messages: HashMap<u128, Compact>,
    /// Status words, codes and texts, each kept once.
    strings: Vec<String>,
    index: HashMap<String, u32>,
}

/// A report in a [`Minute`]: indexes into its strings (`u32::MAX`: none), the update time in Unix seconds.
struct Compact {
    status: u32,
    code: u32,
    message: u32,
    updated: Option<i64>,
}

const NONE: u32 = u32::MAX;

/// The 128 bits of an `SM`/`MM` SID.
fn sid_bits(sid: &str) -> Option<u128> {
    let hex = sid.get(2..).filter(|h| h.len() == 32)?;
    // Digits only: the parser would also take a sign (`SM+` and 31 digits would read as `SM0` and the same).
    hex.bytes()
        .all(|b| b.is_ascii_hexdigit())
        .then(|| u128::from_str_radix(hex, 16).ok())?
}

impl Minute {
    fn intern(&mut self, text: Option<String>) -> u32 {
        let Some(text) = text else { return NONE };
        if let Some(&i) = self.index.get(&text) {
            return i;
        }
        let i = self.strings.len() as u32;
        self.index.insert(text.clone(), i);
        self.strings.push(text);
        i
    }

    fn add(&mut self, r: Report) {
        let Some(bits) = sid_bits(&r.tracking_id) else {
            return;
        };
        let compact = Compact {
            status: self.intern(Some(r.status)),
            code: self.intern(r.error_code),
            message: self.intern(r.error_message),
            updated: r
                .status_updated_at
                .as_deref()
                .and_then(|t| timefmt::parse(t).ok())
                .map(|t| t.timestamp()),
        };
        self.messages.insert(bits, compact);
    }

    /// Takes out the report about `sid`, if this minute lists it: each message is asked about once a cycle,
    /// so a report taken is memory given back.
    fn take(&mut self, sid: &str) -> Option<Report> {
        let c = self.messages.remove(&sid_bits(sid)?)?;
        let text = |i: u32| self.strings.get(i as usize).cloned();
        Some(Report {
            tracking_id: sid.to_string(),
            status: text(c.status).unwrap_or_default(),
            error_code: text(c.code),
            error_message: text(c.message),
            status_updated_at: c
                .updated
                .and_then(|t| DateTime::from_timestamp(t, 0))
                .map(timefmt::format),
            ..Report::default()
        })
    }
}

/// How many minutes the windows (first minute, last minute, id; sorted) cover together.
fn covered_minutes(windows: &[(i64, i64, &str)]) -> usize {
    let mut covered = 0;
    let mut end = i64::MIN;
    for &(first, last, _) in windows {
        let from = first.max(end.saturating_add(1));
        if last >= from {
            covered += (last - from + 1) as usize;
        }
        end = end.max(last);
    }
    covered
}

/// Moves the reports `minute` holds about `wanted` messages into `found`.
fn take_wanted<V>(minute: &mut Minute, wanted: &mut HashMap<&str, V>, found: &mut Listing) {
    wanted.retain(|sid, _| match minute.take(sid) {
        Some(report) => {
            found.reports.push(report);
            false
        }
        None => true,
    });
}

/// How many messages the rest of a busy minute `from..=to` holds, judged from a first page of `listed` messages
/// reaching back to `oldest` (the list runs newest first): as many per second as that page's.
fn expected_rest(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    oldest: DateTime<Utc>,
    listed: usize,
) -> i64 {
    let end = (oldest + TimeDelta::seconds(1)).min(to);
    let rest = (end - from).num_seconds().max(1);
    let covered = (to - oldest).num_seconds().max(1);
    listed as i64 * rest / covered
}

/// The pages the rest of a busy minute takes to list, after its first page (see [`expected_rest`]).
fn pages_left(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    oldest: DateTime<Utc>,
    listed: usize,
) -> usize {
    if oldest < from || oldest > to {
        return 1;
    }
    (expected_rest(from, to, oldest, listed) as usize / PAGE_SIZE) + 1
}

/// How to list the rest of a busy minute `from..=to` at once, after a first page of `listed` messages reaching
/// back to `oldest` (the list runs newest first): from the minute's start to the end of `oldest`'s second (that
/// second may go on), in as many parts as pages are expected, at most `concurrency`. Each part ends where the
/// next begins (an instant listed twice costs nothing; one listed by neither would be lost). Empty or one part:
/// page on in turn.
fn parts(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    oldest: DateTime<Utc>,
    listed: usize,
    concurrency: usize,
) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    if oldest < from || oldest > to {
        return Vec::new();
    }
    let end = (oldest + TimeDelta::seconds(1)).min(to);
    let rest = (end - from).num_seconds().max(1);
    let expected = expected_rest(from, to, oldest, listed);
    let parts = (expected / PAGE_SIZE as i64 + 1)
        .min(rest)
        .min(concurrency as i64);
    (0..parts)
        .map(|i| {
            let at = |i: i64| from + TimeDelta::seconds(rest * i / parts);
            (at(i), at(i + 1))
        })
        .collect()
}

/// The provider's entry in the registry.
pub const PROVIDER: Provider = Provider {
    name: "twilio",
    account: Some(AccountRule {
        what: "Account SID",
        shape: "AC followed by 32 hex digits",
        valid: valid_account,
    }),
    default_url: Some("https://api.twilio.com"),
    url_hint: "",
    pace: None,
    table: include_str!("tables/twilio.map"),
    profile: |account| Box::new(Twilio::new(account.unwrap_or_default())),
};

pub struct Twilio {
    account: String,
    /// Listed minutes (Unix minute numbers), oldest first.
    slices: Mutex<(HashMap<i64, Slice>, VecDeque<i64>)>,
    /// The pages each minute seen this cycle takes to list (from its first page, then as listed).
    pages: Mutex<HashMap<i64, usize>>,
}

pub fn valid_account(id: &str) -> bool {
    sid(id, "AC")
}

fn sid(id: &str, prefix: &str) -> bool {
    id.len() == 34 && id.starts_with(prefix) && id[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

impl Twilio {
    pub fn new(account: String) -> Twilio {
        Twilio {
            account,
            slices: Mutex::new((HashMap::new(), VecDeque::new())),
            pages: Mutex::new(HashMap::new()),
        }
    }

    /// The pages `minute` takes to list, when a job has seen its first page this cycle.
    fn pages_of(&self, minute: i64) -> Option<usize> {
        let pages = self.pages.lock().unwrap_or_else(|e| e.into_inner());
        pages.get(&minute).copied()
    }

    fn note_pages(&self, minute: i64, pages: usize) {
        let mut known = self.pages.lock().unwrap_or_else(|e| e.into_inner());
        known.insert(minute, pages);
    }

    /// Moves the reports about the `wanted` messages that were sent in `minute` into `found`. The minute is
    /// listed once per cycle while kept, and its unreadable entries go to the job that listed it.
    ///
    /// A minute is listed only where that is cheaper than a lookup for each wanted message: a busy minute of
    /// the account's other traffic (or of a send whose messages are nearly all final) may take sixty pages for
    /// a handful of messages. Its first page tells how many pages it takes; a job with fewer messages to find
    /// keeps what that page holds and leaves the rest to lookups, as does every later job that the known count
    /// shows it would not pay for.
    ///
    /// A minute whose listing fails (after its retries) is not asked again for [`FAILED_FOR`]; it is passed
    /// over, `Ok(Some(error))`, where the carrier has answered a listing in this cycle: else it may be failing
    /// as a whole, and the walk ends (`Err`), as it does at the deadline, a stop or credentials rejected.
    fn take<V>(
        &self,
        http: &Http,
        minute: i64,
        wanted: &mut HashMap<&str, V>,
        found: &mut Listing,
    ) -> Result<Option<FetchError>, FetchError> {
        let cell = self.slice(minute);
        // Workers needing the same minute wait for the one listing it.
        let mut listed = cell.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *listed {
            Listed::Failed { error, at } if at.elapsed() < FAILED_FOR => {
                return Ok(Some(error.clone()));
            }
            Listed::Not | Listed::Failed { .. } => {
                if self
                    .pages_of(minute)
                    .is_some_and(|pages| pages > wanted.len())
                {
                    return Ok(None);
                }
                let (mut reports, malformed, complete) =
                    match self.list_minute(http, minute, wanted) {
                        Ok(listing) => listing,
                        Err(e) if matches!(e, FetchError::Failed { .. }) || e.is_permanent() => {
                            *listed = Listed::Failed {
                                error: e.clone(),
                                at: Instant::now(),
                            };
                            let answered = !self
                                .pages
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .is_empty();
                            return if answered { Ok(Some(e)) } else { Err(e) };
                        }
                        Err(e) => return Err(e),
                    };
                found.malformed.extend(malformed);
                if !complete {
                    // The first page only: this job's share of it, and nothing kept for the others.
                    take_wanted(&mut reports, wanted, found);
                    return Ok(None);
                }
                *listed = Listed::Done(reports);
            }
            Listed::Done(_) => {}
        }
        if let Listed::Done(reports) = &mut *listed {
            take_wanted(reports, wanted, found);
            let m = &mut reports.messages;
            if m.capacity() > 4096 && m.len() < m.capacity() / 4 {
                m.shrink_to_fit();
            }
        }
        Ok(None)
    }

    /// The shared slice of `minute`, made (empty) when it is new; the oldest is dropped past [`SLICES_KEPT`].
    fn slice(&self, minute: i64) -> Slice {
        let mut slices = self.slices.lock().unwrap_or_else(|e| e.into_inner());
        let (map, order) = &mut *slices;
        if let Some(cell) = map.get(&minute) {
            return cell.clone();
        }
        let cell = Slice::default();
        map.insert(minute, cell.clone());
        order.push_back(minute);
        while order.len() > SLICES_KEPT {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
            }
        }
        cell
    }

    /// Lists the messages sent in `minute`, with the entries that could not be read, and whether the listing is
    /// complete: it stops after its first page when the pages still to come outnumber the `wanted` messages
    /// that page lacks.
    fn list_minute<V>(
        &self,
        http: &Http,
        minute: i64,
        wanted: &HashMap<&str, V>,
    ) -> Result<(Minute, Vec<String>, bool), FetchError> {
        let from = DateTime::from_timestamp(minute * 60, 0).unwrap_or_default();
        // Both ends inclusive: the instant between two minutes is listed in each.
        let to = from + TimeDelta::minutes(1);
        let reports = Mutex::new(Minute::default());
        let malformed = Mutex::new(Vec::new());
        let take = |page: ListPage| {
            malformed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(page.malformed);
            let mut reports = reports.lock().unwrap_or_else(|e| e.into_inner());
            page.messages.into_iter().for_each(|r| reports.add(r));
        };
        fn done(
            reports: Mutex<Minute>,
            malformed: Mutex<Vec<String>>,
            complete: bool,
        ) -> Result<(Minute, Vec<String>, bool), FetchError> {
            let reports = reports.into_inner().unwrap_or_else(|e| e.into_inner());
            let malformed = malformed.into_inner().unwrap_or_else(|e| e.into_inner());
            Ok((reports, malformed, complete))
        }
        let first = http.get(&self.list_path(from, to), parse_list)?;
        let Some(page) = first else {
            self.note_pages(minute, 1);
            return done(reports, malformed, true);
        };
        let (next, oldest) = (page.next_page_uri.clone(), page.oldest_sent);
        let listed = page.messages.len();
        take(page);
        let Some(next) = next else {
            self.note_pages(minute, 1);
            return done(reports, malformed, true);
        };
        let rest = oldest.map_or(1, |oldest| pages_left(from, to, oldest, listed));
        self.note_pages(minute, rest + 1);
        let lacking = {
            let reports = reports.lock().unwrap_or_else(|e| e.into_inner());
            wanted
                .keys()
                .filter(|sid| sid_bits(sid).is_none_or(|b| !reports.messages.contains_key(&b)))
                .count()
        };
        if rest > lacking {
            return done(reports, malformed, false);
        }
        let parts = oldest
            .map(|oldest| parts(from, to, oldest, listed, http.concurrency()))
            .unwrap_or_default();
        if parts.len() > 1 {
            std::thread::scope(|scope| {
                let parts: Vec<_> = parts
                    .iter()
                    .map(|&(a, b)| {
                        scope.spawn(move || self.follow(http, a, b, self.list_path(a, b), take))
                    })
                    .collect();
                parts
                    .into_iter()
                    .map(|part| part.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                    .collect::<Result<Vec<()>, FetchError>>()
            })?;
        } else {
            self.follow(http, from, to, next, take)?;
        }
        let pages = reports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .messages
            .len()
            .div_ceil(PAGE_SIZE);
        self.note_pages(minute, pages.max(1));
        done(reports, malformed, true)
    }

    /// Follows the listing of the messages sent from `from` to `to` (inclusive) from the page `first`, handing
    /// each page to `take`.
    fn follow(
        &self,
        http: &Http,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        first: String,
        take: impl Fn(ListPage),
    ) -> Result<(), FetchError> {
        let what = format!(
            "messages sent {} to {}",
            timefmt::format(from),
            timefmt::format(to)
        );
        wire::follow(
            &what,
            first,
            |path| {
                Ok(http.get(path, parse_list)?.map(|page| Page {
                    next: page.next_page_uri.clone(),
                    entries: vec![page],
                }))
            },
            |pages| {
                pages.into_iter().for_each(&take);
                true
            },
        )
        .map(|_| ())
    }

    fn messages(&self) -> String {
        format!("/2010-04-01/Accounts/{}/Messages", encode(&self.account))
    }

    /// The first page of the listing of messages sent between `from` and `to`.
    pub fn list_path(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> String {
        format!(
            "{}.json?PageSize={PAGE_SIZE}&{}={}&{}={}",
            self.messages(),
            encode("DateSent>"),
            encode(&timefmt::format(from)),
            encode("DateSent<"),
            encode(&timefmt::format(to)),
        )
    }
}

impl Profile for Twilio {
    fn name(&self) -> &'static str {
        PROVIDER.name
    }

    fn auth(&self) -> Auth {
        Auth::Basic {
            user: self.account.clone(),
        }
    }

    fn unaskable(&self, message: &DueMessage) -> Option<String> {
        let id = &message.tracking_id;
        (!(sid(id, "SM") || sid(id, "MM"))).then(|| {
            format!("tracking id {id:?} is not a Twilio Message SID (SM or MM followed by 32 hex digits)")
        })
    }

    fn bulk(
        &self,
        http: &Http,
        _batch_id: Option<&str>,
        messages: &[&DueMessage],
    ) -> Result<Bulk, FetchError> {
        // Each message may be listed from a minute before its submission to ten minutes after: its window.
        let minute = |t: DateTime<Utc>| t.timestamp().div_euclid(60);
        let mut windows: Vec<(i64, i64, &str)> = messages
            .iter()
            .map(|m| {
                let (first, last) = (m.submitted_at - BEFORE, m.submitted_at + AFTER);
                (minute(first), minute(last), m.tracking_id.as_str())
            })
            .collect();
        windows.sort_unstable();
        // Listing pays when the minutes are shared: a send's, or a job's few; not for a handful of messages
        // strewn over hours (a minute each is dearer than a lookup each).
        let minutes = covered_minutes(&windows);
        if messages.len() < 2 || (minutes > SLICES_KEPT && minutes > messages.len()) {
            return Ok(Bulk::NotOffered);
        }
        // Walk the minutes in order, asking each for the messages whose window is open; a message not found by
        // the end of its window is left to be asked one by one. A minute whose listing fails is passed over (see
        // `take`).
        let mut listing = Listing::default();
        let mut passed_over = None;
        let mut wanted: HashMap<&str, i64> = HashMap::new();
        let mut next = windows.iter().peekable();
        let Some(&&(mut at, _, _)) = next.peek() else {
            return Ok(Bulk::NotOffered);
        };
        loop {
            while let Some(&&(first, last, id)) = next.peek()
                && first <= at
            {
                wanted.insert(id, last);
                next.next();
            }
            wanted.retain(|_, last| *last >= at);
            if wanted.is_empty() {
                match next.peek() {
                    Some(&&(first, _, _)) => at = first,
                    None => break,
                }
                continue;
            }
            // The reports taken from the minutes listed so far have left the shared slices: they are kept.
            match self.take(http, at, &mut wanted, &mut listing) {
                Ok(None) => {}
                Ok(Some(e)) => {
                    passed_over.get_or_insert((at, e));
                }
                Err(e) => return listing.cut_short(e),
            }
            at += 1;
        }
        match passed_over {
            _ if listing.reports.len() == messages.len() => Ok(Bulk::Listed(listing)),
            // A minute that cannot be listed however often it is asked (past the page cap, a redirect): the
            // job's messages are asked one by one, as for any refused bulk question.
            Some((_, e)) if e.is_permanent() => listing.cut_short(e),
            // The messages the failed minute may have held are those its failure concerns.
            Some((at, e)) => {
                let from = DateTime::from_timestamp(at * 60, 0).unwrap_or_default();
                listing.cut_short(FetchError::Failed {
                    attempts: 1,
                    reason: format!(
                        "the listing of messages sent from {} failed in this cycle: {e}",
                        timefmt::format(from)
                    ),
                })
            }
            _ => Ok(Bulk::Listed(listing)),
        }
    }

    fn one(&self, http: &Http, message: &DueMessage) -> Result<Option<Report>, FetchError> {
        let path = format!("{}/{}.json", self.messages(), encode(&message.tracking_id));
        match http.get(&path, parse_message)? {
            Some(r) if r.tracking_id != message.tracking_id => Err(FetchError::Refused {
                code: None,
                reason: format!("GET {path}: Twilio answered for SID {:?}", r.tracking_id),
            }),
            other => Ok(other),
        }
    }

    fn probe(&self, http: &Http) -> Result<(), FetchError> {
        http.probe_listing(&format!("{}.json?PageSize=1", self.messages()))
    }

    /// A job per minute of submission: its messages are found in the few minutes listed from there, which the
    /// jobs of the next minutes share.
    fn lone_jobs(&self) -> LoneJobs {
        LoneJobs {
            chunk: LONE_CHUNK,
            by_minute: true,
        }
    }
}

/// A Message resource, the fields the poller reads.
#[derive(Deserialize)]
struct WireMessage {
    sid: String,
    status: String,
    #[serde(default, deserialize_with = "string_or_number")]
    error_code: Option<String>,
    #[serde(default)]
    error_message: Option<String>,
    #[serde(default)]
    date_updated: Option<String>,
    #[serde(default)]
    date_sent: Option<String>,
}

impl From<WireMessage> for Report {
    fn from(m: WireMessage) -> Report {
        Report {
            tracking_id: m.sid,
            status: m.status,
            error_code: m.error_code,
            error_message: m.error_message,
            status_updated_at: m.date_updated.as_deref().and_then(wire::timestamp),
            ..Report::default()
        }
    }
}

#[derive(Deserialize)]
struct WireList<'a> {
    #[serde(borrow)]
    messages: Vec<&'a RawValue>,
    #[serde(default)]
    next_page_uri: Option<String>,
}

/// One page of the Messages listing.
pub struct ListPage {
    pub messages: Vec<Report>,
    pub malformed: Vec<String>,
    /// The next page's path (Twilio gives it from the API root: `/2010-04-01/...`).
    pub next_page_uri: Option<String>,
    /// The earliest `date_sent` on the page (the list runs newest first, so the last entry's).
    pub oldest_sent: Option<DateTime<Utc>>,
}

pub fn parse_list(body: &[u8]) -> Result<ListPage, String> {
    let list: WireList = wire::json(body)?;
    let next = match list.next_page_uri.filter(|u| !u.is_empty()) {
        Some(uri) if !uri.starts_with('/') || uri.starts_with("//") => {
            return Err(format!(
                "next_page_uri {uri:?} is not a path on the API host; it is not followed"
            ));
        }
        other => other,
    };
    let (messages, malformed) = wire::entries::<WireMessage>(&list.messages);
    let oldest_sent = messages
        .iter()
        .filter_map(|m| m.date_sent.as_deref().and_then(wire::timestamp))
        .filter_map(|t| timefmt::parse(&t).ok())
        .min();
    Ok(ListPage {
        messages: messages.into_iter().map(Report::from).collect(),
        malformed,
        next_page_uri: next,
        oldest_sent,
    })
}

pub fn parse_message(body: &[u8]) -> Result<Report, String> {
    wire::json::<WireMessage>(body).map(Report::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sid_is_32_hex_digits_without_a_sign() {
        let sid = "SM0123456789abcdef0123456789abcdef";
        assert_eq!(sid_bits(sid), Some(0x0123456789abcdef0123456789abcdef));
        assert_eq!(sid_bits("SM+123456789abcdef0123456789abcdef"), None);
        assert_eq!(sid_bits("SM0123456789abcdef0123456789abcde"), None);
        assert_eq!(sid_bits("SMé123456789abcdef0123456789abcde"), None);
    }

    const FETCH: &[u8] = include_bytes!("../../tests/fixtures/carriers/twilio.message.json");
    const LIST: &[u8] = include_bytes!("../../tests/fixtures/carriers/twilio.list.json");

    #[test]
    fn the_descriptions_message_example() {
        let report = parse_message(FETCH).unwrap();
        assert_eq!(report.status, "sent");
        assert_eq!(report.error_code.as_deref(), Some("30007"));
        assert_eq!(report.error_message.as_deref(), Some("Carrier violation"));
        assert_eq!(
            report.status_updated_at.as_deref(),
            Some("2019-05-24T17:18:28Z")
        );
        assert!(sid(&report.tracking_id, "SM"), "{}", report.tracking_id);
    }

    #[test]
    fn the_descriptions_list_example() {
        let page = parse_list(LIST).unwrap();
        assert!(!page.messages.is_empty());
        assert!(page.malformed.is_empty());
        assert!(page.messages.iter().all(|r| !r.status.is_empty()));
    }

    #[test]
    fn a_minute_keeps_its_reports_compactly_and_gives_each_back_once() {
        let page = parse_list(LIST).unwrap();
        let mut minute = Minute::default();
        let mut failed = parse_message(FETCH).unwrap();
        failed.status = "undelivered".into();
        for r in page.messages.iter().cloned().chain([failed.clone()]) {
            minute.add(r);
        }
        for r in page.messages.iter().chain([&failed]) {
            assert_eq!(minute.take(&r.tracking_id).as_ref(), Some(r));
            assert_eq!(minute.take(&r.tracking_id), None);
        }
        assert!(minute.messages.is_empty());
        assert_eq!(minute.take(&format!("SM{}", "0".repeat(32))), None);
        assert_eq!(minute.take("not a sid"), None);
    }

    #[test]
    fn next_page_uri_must_stay_on_the_api_host() {
        for uri in [
            "https://elsewhere.example/x",
            "//elsewhere.example/x",
            "relative",
        ] {
            let body = serde_json::json!({ "messages": [], "next_page_uri": uri }).to_string();
            assert!(parse_list(body.as_bytes()).is_err(), "{uri}");
        }
        let body =
            r#"{"messages":[],"next_page_uri":"/2010-04-01/Accounts/AC1/Messages.json?Page=1"}"#;
        assert!(parse_list(body.as_bytes()).unwrap().next_page_uri.is_some());
    }

    #[test]
    fn list_path_escapes_the_filters() {
        let t = Twilio::new(format!("AC{}", "a".repeat(32)));
        let from = timefmt::parse("2026-11-26T08:00:00Z").unwrap();
        assert_eq!(
            t.list_path(from, from + TimeDelta::hours(1)),
            format!(
                "/2010-04-01/Accounts/AC{}/Messages.json?PageSize=1000&DateSent%3E=2026-11-26T08%3A00%3A00Z&\
                 DateSent%3C=2026-11-26T09%3A00%3A00Z",
                "a".repeat(32)
            )
        );
    }

    #[test]
    fn a_busy_minute_is_split_into_parts_that_cover_the_rest_of_it() {
        let from = timefmt::parse("2026-11-26T08:00:00Z").unwrap();
        let to = from + TimeDelta::minutes(1);
        let at = |s: i64| from + TimeDelta::seconds(s);
        // 1,000 messages in the last 20 seconds: about 2,000 more in the first 41, so three parts.
        let split = parts(from, to, at(40), 1_000, 8);
        assert_eq!(split.len(), 3, "{split:?}");
        assert_eq!(split[0].0, from);
        assert_eq!(split.last().unwrap().1, at(41));
        for pair in split.windows(2) {
            assert_eq!(pair[1].0, pair[0].1, "{split:?}");
        }
        // As many parts as pages expected (1,000 in the last two seconds: 29,500 more), at most --concurrency.
        assert_eq!(parts(from, to, at(58), 1_000, 256).len(), 30);
        assert_eq!(parts(from, to, at(58), 1_000, 4).len(), 4);
        // A sparse minute, or one second of a hundred thousand, pages on in turn.
        assert_eq!(parts(from, to, at(2), 1_000, 8).len(), 1);
        assert!(parts(from, to, at(61), 1_000, 8).is_empty());
    }

    #[test]
    fn covered_minutes_counts_overlaps_once() {
        assert_eq!(covered_minutes(&[]), 0);
        assert_eq!(covered_minutes(&[(0, 11, "a"), (0, 11, "b")]), 12);
        assert_eq!(covered_minutes(&[(0, 11, "a"), (5, 16, "b")]), 17);
        assert_eq!(covered_minutes(&[(0, 11, "a"), (100, 111, "b")]), 24);
        assert_eq!(
            covered_minutes(&[(0, 11, "a"), (2, 3, "b"), (12, 12, "c")]),
            13
        );
    }

    #[test]
    fn sids_are_checked() {
        assert!(valid_account(&format!(
            "AC{}",
            "0123456789abcdef".repeat(2)
        )));
        assert!(!valid_account("AC123"));
        assert!(!valid_account(&format!("SK{}", "0".repeat(32))));
        assert!(sid(&format!("MM{}", "F".repeat(32)), "MM"));
    }
}
