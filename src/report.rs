//! What `history` and `cycles` print: plain tables for people, JSON for scripts.

use std::fmt::Write;

use crate::store::History;
use crate::summary::Summary;

pub fn history_text(h: &History) -> String {
    let mut out = String::new();
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_string());
    let state = match h.state.as_deref() {
        None => "NOT YET POLLED (taken in by the first cycle at which it is due: two hours after submission)".to_string(),
        Some("OPEN") => format!("OPEN, next poll due {}", opt(&h.next_due_at)),
        Some("UNCONFIRMED") if h.note.is_some() => format!(
            "UNCONFIRMED, tracking closed {}: {}",
            opt(&h.closed_at),
            opt(&h.note)
        ),
        Some("UNCONFIRMED") => format!(
            "UNCONFIRMED: still pending after the 72-hour window, tracking closed {}",
            opt(&h.closed_at)
        ),
        Some("INVALID") => format!("INVALID, not tracked: {}", opt(&h.note)),
        Some("TOO_OLD") => format!("TOO_OLD, not tracked: {}", opt(&h.note)),
        Some(final_state) => format!(
            "{final_state} (final), tracking closed {}",
            opt(&h.closed_at)
        ),
    };
    let _ = writeln!(out, "tracking id:  {}", h.tracking_id);
    let _ = writeln!(out, "customer:     {}", opt(&h.customer_id));
    let _ = writeln!(out, "phone:        {}", opt(&h.phone_number));
    let _ = writeln!(out, "batch:        {}", opt(&h.carrier_batch_id));
    let _ = writeln!(out, "submitted at: {}", opt(&h.submitted_at));
    let _ = writeln!(out, "state:        {state}");
    let _ = writeln!(out, "polls:        {}", h.polls);
    if h.results.is_empty() {
        return out;
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:>4}  {:<20}  {:<9}  {:<16}  {:<20}  {:<8}  {:<14}  REASON",
        "POLL", "POLLED AT", "STATUS", "CARRIER SAID", "CONFIRMED AT", "CODE", "CATEGORY"
    );
    for r in &h.results {
        let said = match (&r.carrier_status, r.carrier_found) {
            _ if r.entry == "close" => "(closing entry)".to_string(),
            (_, false) if r.failure_reason.is_some() => "(refused)".to_string(),
            (_, false) => "(unknown to carrier)".to_string(),
            (Some(word), true) => word.clone(),
            (None, true) => "-".to_string(),
        };
        let _ = writeln!(
            out,
            "{:>4}  {:<20}  {:<9}  {:<16}  {:<20}  {:<8}  {:<14}  {}",
            r.poll_attempt,
            r.polled_at,
            r.delivery_status,
            said,
            opt(&r.delivery_confirmed_at),
            opt(&r.failure_code),
            opt(&r.failure_category),
            opt(&r.failure_reason)
        );
    }
    out
}

pub fn cycles_text(cycles: &[Summary]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>5}  {:<24}  {:>8}  {:<20}  {:>4}  {:>7}  {:>7}  {:>9}  {:>6}  {:>7}  {:>11}  {:>7}  {:>5}",
        "CYCLE",
        "STARTED",
        "SECONDS",
        "OUTCOME",
        "EXIT",
        "DUE",
        "POLLED",
        "DELIVERED",
        "FAILED",
        "PENDING",
        "UNCONFIRMED",
        "BATCH✗",
        "RATE"
    );
    for c in cycles {
        let exit = c
            .exit_code
            .map(|e| e.to_string())
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "{:>5}  {:<24}  {:>8.1}  {:<20}  {:>4}  {:>7}  {:>7}  {:>9}  {:>6}  {:>7}  {:>11}  {:>7}  {:>4.0}%",
            c.cycle_id,
            c.started_at,
            c.duration_seconds,
            c.outcome,
            exit,
            c.messages_due,
            c.polled,
            c.delivered,
            c.failed,
            c.pending,
            c.closed_unconfirmed,
            c.batches_failed,
            c.success_rate() * 100.0
        );
    }
    out
}
