//! Nothing the poller writes holds a recipient's number or a secret. Every provider profile is run through the
//! real binary against a hostile carrier that echoes the request's path (Sinch's holds the number), puts the
//! number in every spelling into error bodies, unreadable answers, status words and error texts, and redirects
//! to a URL with a secret in its query. Then every output is searched: stderr at trace level (the libraries'
//! lines included), stdout, what `cycles`, `history`, `check` and `doctor` print, and every text column of every
//! table the poller writes but the two that hold the number by design (`phone_number` of message_tracking and of
//! the audit trail). sms_submissions is the dispatcher's, numbers and all.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use common::{Backend, TOKEN, TestDb, bin};
use dlr_poller::carrier::http::base64;

/// The number every test submission is sent to (see `TestDb::submit`).
const NUMBER: &str = "+4915112345678";
const SUBMITTED: &str = "2025-12-01T09:00:00Z";
const FIRST_POLL: &str = "2025-12-01T11:00:00Z";
/// A secret the hostile carrier puts in a redirect's query.
const SECRET: &str = "s3cr3tQueryValue";

/// The spellings of the number and the secrets that must appear nowhere.
fn needles() -> Vec<String> {
    let mut needles = vec![
        "4915112345678".to_string(),
        "15112345678".to_string(),
        "151 12345678".to_string(),
        "151 1234".to_string(),
        "151-1234".to_string(),
        "1234 5678".to_string(),
        "1234-5678".to_string(),
        TOKEN.to_string(),
        SECRET.to_string(),
    ];
    for user in ["AC0123456789abcdef0123456789abcdef", "abcdef01"] {
        needles.push(base64(format!("{user}:{TOKEN}").as_bytes()));
    }
    needles
}

/// Fails naming the place and the needle when `text` holds any of them.
fn assert_clean(place: &str, text: &str) {
    for needle in needles() {
        if let Some(at) = text.find(&needle) {
            let from = text[..at]
                .char_indices()
                .rev()
                .nth(200)
                .map_or(0, |(i, _)| i);
            let to = (at + needle.len() + 200).min(text.len());
            let to = (to..=text.len())
                .find(|i| text.is_char_boundary(*i))
                .unwrap_or(text.len());
            panic!("{place} holds {needle:?}:\n…{}…", &text[from..to]);
        }
    }
}

/// A carrier that answers every request with the next of a round of hostile answers, each full of the
/// recipient's number: a refusal echoing the path, an unreadable 200, a 503, a redirect to a URL with a secret.
/// Connections are closed after each answer. Stops when dropped.
struct Hostile {
    url: String,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Hostile {
    fn start() -> Hostile {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (requests, stop) = (requests.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let n = requests.fetch_add(1, Ordering::Relaxed);
                            let _ = answer(stream, n);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        Hostile {
            url,
            requests,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn answer(stream: TcpStream, n: usize) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // The headers, up to the blank line (bounded: a request is a few hundred bytes); the Authorization header is
    // echoed in the answers, as a careless gateway's error page might.
    let mut authorization = String::new();
    for _ in 0..100 {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        if header.to_ascii_lowercase().starts_with("authorization:") {
            authorization = header.trim().to_string();
        }
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("/");
    // The carrier's words quote the first 200 bytes of a body: what matters most comes first.
    let spelled = format!(
        "{authorization} / {NUMBER} / +49 151 1234 5678 / (0151) 1234-5678 / %2B49%20151%201234%205678 / \
         4915112345678 / %2B4915112345678 / +49 151 12345678"
    );
    let (status, extra, body) = match n % 4 {
        0 => (
            "400 Bad Request",
            String::new(),
            serde_json::json!({"error": format!("no route for {path}: {spelled}")}).to_string(),
        ),
        1 => (
            "200 OK",
            String::new(),
            serde_json::json!({
                "to": NUMBER, "status": 4915112345678u64, "recipient": spelled,
                "messages": [{"to": NUMBER, "tracking_id": 4915112345678u64}],
                "results": [{"to": NUMBER, "messageId": 4915112345678u64}],
                "statuses": [{"recipients": [NUMBER], "code": "x", "status": 1}],
                "data": {"to": [{"phone_number": NUMBER}]}
            })
            .to_string(),
        ),
        2 => (
            "503 Service Unavailable",
            String::new(),
            format!("upstream for {spelled} is down"),
        ),
        _ => (
            "302 Found",
            format!("Location: https://carrier.example/{NUMBER}?token={SECRET}&to={NUMBER}\r\n"),
            String::new(),
        ),
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

/// The flags that select a provider, and tracking ids shaped as its message ids.
fn provider(name: &str) -> (Vec<&'static str>, [&'static str; 3]) {
    match name {
        "twilio" => (
            vec!["--carrier-account", "AC0123456789abcdef0123456789abcdef"],
            [
                "SM00000000000000000000000000000001",
                "SM00000000000000000000000000000002",
                "SM00000000000000000000000000000003",
            ],
        ),
        "vonage" => (vec!["--carrier-account", "abcdef01"], ["T1", "T2", "T3"]),
        "sinch" => (vec!["--carrier-account", "plan01"], ["T1", "T2", "T3"]),
        "telnyx" => (
            vec![],
            [
                "40000000-0000-4000-8000-000000000001",
                "40000000-0000-4000-8000-000000000002",
                "40000000-0000-4000-8000-000000000003",
            ],
        ),
        _ => (vec![], ["T1", "T2", "T3"]),
    }
}

/// Every text column of every table the poller writes, but the ones that hold the number by design, as one
/// text.
fn tables_text(db: &TestDb) -> String {
    let mut text = String::new();
    if let Some(pg) = &db.pg {
        let mut client = pg.client();
        let columns = client
            .query(
                "SELECT table_name::text, column_name::text FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name <> 'sms_submissions' \
                 AND column_name <> 'phone_number' ORDER BY 1, 2",
                &[],
            )
            .unwrap();
        for column in columns {
            let (table, column): (String, String) = (column.get(0), column.get(1));
            let sql = format!("SELECT \"{column}\"::text FROM \"{table}\"");
            for row in client.query(&sql, &[]).unwrap() {
                if let Some(value) = row.get::<_, Option<String>>(0) {
                    text.push_str(&format!("{table}.{column}: {value}\n"));
                }
            }
        }
        return text;
    }
    let conn = db.conn();
    let tables: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name != 'sms_submissions'",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for table in tables {
        let columns: Vec<String> = conn
            .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .filter(|c: &String| c != "phone_number")
            .collect();
        for column in columns {
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT CAST(\"{column}\" AS TEXT) FROM \"{table}\""
                ))
                .unwrap();
            for value in stmt
                .query_map([], |r| r.get::<_, Option<String>>(0))
                .unwrap()
            {
                if let Some(value) = value.unwrap() {
                    text.push_str(&format!("{table}.{column}: {value}\n"));
                }
            }
        }
    }
    text
}

/// Runs the binary with `args`, the token in the environment and every log line of every library on; returns
/// stdout and stderr together.
fn run(db: &TestDb, args: &[&str]) -> String {
    let out = bin()
        .args(db.db_args())
        .args(args)
        .env("DLR_CARRIER_TOKEN", TOKEN)
        .env("RUST_LOG", "trace")
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // A worker thread's panic does not end the process: it shows only on stderr.
    assert!(
        out.status.code() != Some(101) && !stderr.contains("panicked"),
        "{args:?} panicked:\n{stderr}"
    );
    // The HTTP client's dumps of the bytes on the wire (the Authorization header, cut into 16-byte rows where no
    // search for the token finds it) are never written.
    assert!(
        !stderr.contains("ureq_proto::util"),
        "{args:?} wrote the client's byte dumps"
    );
    format!("{}\n{stderr}", String::from_utf8_lossy(&out.stdout))
}

on_both_backends!(a_hostile_carrier_leaves_no_number_and_no_secret_anywhere);

fn a_hostile_carrier_leaves_no_number_and_no_secret_anywhere(backend: Backend) {
    for name in ["generic", "twilio", "vonage", "sinch", "infobip", "telnyx"] {
        let db = backend.db();
        let (flags, ids) = provider(name);
        db.submit(ids[0], Some("B1"), SUBMITTED);
        db.submit(ids[1], Some("B1"), SUBMITTED);
        db.submit(ids[2], None, SUBMITTED);
        // One number as a person would write it, in groups (Sinch puts it in the request's path).
        let grouped =
            "UPDATE sms_submissions SET phone_number = '+49 151 1234 5678' WHERE tracking_id = ";
        match &db.pg {
            Some(pg) => {
                pg.client()
                    .execute(&format!("{grouped}$1"), &[&ids[1]])
                    .unwrap();
            }
            None => {
                db.conn()
                    .execute(&format!("{grouped}?1"), [ids[1]])
                    .unwrap();
            }
        }
        if backend == Backend::Sqlite {
            // The number typed into the wrong column (a timestamptz column would refuse it): quoted in the reason
            // it cannot be tracked.
            db.submit("T-MIXED-UP", None, NUMBER);
        }
        let carrier = Hostile::start();
        let mut args = vec![
            "poll",
            "--json",
            "--carrier",
            name,
            "--carrier-url",
            &carrier.url,
            "--max-attempts",
            "2",
            "--max-rps",
            "1000",
            "--concurrency",
            "2",
        ];
        args.extend(&flags);
        for now in [FIRST_POLL, "2025-12-01T13:00:00Z", "2025-12-04T09:00:00Z"] {
            let mut cycle = args.clone();
            cycle.extend(["--now", now]);
            assert_clean(&format!("{name}: poll at {now}"), &run(&db, &cycle));
        }
        assert!(
            carrier.requests.load(Ordering::Relaxed) >= 3,
            "{name}: the carrier was asked"
        );
        let mut doctor = vec!["doctor", "--carrier", name, "--carrier-url", &carrier.url];
        doctor.extend(&flags);
        for command in [
            &["cycles", "--last", "10"][..],
            &["cycles", "--last", "10", "--json"],
            &["history", ids[0]],
            &["history", ids[2], "--json"],
            &["check"],
            &doctor,
        ] {
            assert_clean(&format!("{name}: {command:?}"), &run(&db, command));
        }
        assert_clean(&format!("{name}: the tables"), &tables_text(&db));
        assert!(
            db.count("SELECT COUNT(*) FROM poll_cycles WHERE error IS NOT NULL") > 0,
            "{name}: the cycles recorded the carrier's errors"
        );
    }
}

/// Sinch asks about a recipient by its number in the path: a refusal of that request is stored and shown with
/// the number masked, not left out, so that ops can still tell messages apart.
#[test]
fn a_refused_sinch_recipient_is_named_with_its_number_masked() {
    let db = TestDb::new();
    db.submit("T1", Some("B1"), SUBMITTED);
    let mut server = mockito::Server::new();
    let batch = server
        .mock("GET", "/xms/v1/plan01/batches/B1/delivery_report?type=full")
        .with_status(400)
        .with_body(r#"{"code":"syntax_invalid_parameter_format","text":"bad"}"#)
        .expect(1)
        .create();
    let recipient = server
        .mock(
            "GET",
            "/xms/v1/plan01/batches/B1/delivery_report/%2B4915112345678",
        )
        .with_status(400)
        .with_body(format!(
            r#"{{"text":"recipient {NUMBER} is not in batch B1"}}"#
        ))
        .expect(1)
        .create();
    let url = server.url();
    let out = run(
        &db,
        &[
            "poll",
            "--carrier",
            "sinch",
            "--carrier-account",
            "plan01",
            "--carrier-url",
            &url,
            "--now",
            FIRST_POLL,
        ],
    );
    batch.assert();
    recipient.assert();
    assert_clean("poll", &out);
    let trail = db.audit("T1");
    assert_eq!(trail.len(), 1, "{trail:?}");
    let reason = trail[0].failure_reason.as_deref().unwrap_or_default();
    assert!(
        reason.contains("delivery_report/%2B49********678")
            && reason.contains("recipient +49********678 is not in batch B1"),
        "{reason}"
    );
}

/// A carrier's words about a message (an unknown status word, an error text, an entry that cannot be read) are
/// stored and logged with every number masked.
#[test]
fn a_carriers_words_are_stored_with_numbers_masked() {
    let db = TestDb::new();
    db.submit("T1", Some("B1"), SUBMITTED);
    db.submit("T2", Some("B1"), SUBMITTED);
    let mut server = mockito::Server::new();
    let listing = server
        .mock("GET", "/batches/B1/messages")
        .with_body(
            serde_json::json!({
                "batch_id": "B1",
                "messages": [
                    {"tracking_id": "T1", "status": format!("HELD_FOR {NUMBER}"),
                     "error_code": "E1", "error_message": "handset +49 151 12345678 (4915112345678) is off"},
                    {"tracking_id": "T2", "to": NUMBER, "status": 4915112345678u64}
                ]
            })
            .to_string(),
        )
        .expect(1)
        .create();
    let one = server
        .mock("GET", "/messages/T2")
        .with_body(
            serde_json::json!({"tracking_id": "T2", "status": "FAILED", "error_code": "E2",
                "error_message": format!("{NUMBER} unknown")})
            .to_string(),
        )
        .expect(1)
        .create();
    let url = server.url();
    let out = run(
        &db,
        &["poll", "--carrier-url", &url, "--now", FIRST_POLL, "-vv"],
    );
    listing.assert();
    one.assert();
    assert_clean("poll", &out);
    assert!(out.contains("HELD_FOR +49********678"), "{out}");
    assert!(out.contains(r#""to":"+49********678""#), "{out}");
    assert_clean("the tables", &tables_text(&db));
    let t1 = &db.audit("T1")[0];
    assert_eq!(
        t1.carrier_status.as_deref(),
        Some("HELD_FOR +49********678")
    );
    assert_eq!(
        t1.failure_reason.as_deref(),
        Some("handset +49 *** ******** (**********678) is off")
    );
    assert_eq!(
        db.audit("T2")[0].failure_reason.as_deref(),
        Some("+49********678 unknown")
    );
}

/// Rows written by an earlier version, which stored carrier text as it came, are shown masked.
#[test]
fn text_stored_by_an_earlier_version_is_shown_masked() {
    let db = TestDb::new();
    db.submit("T1", Some("B1"), SUBMITTED);
    let mut server = mockito::Server::new();
    server
        .mock("GET", "/batches/B1/messages")
        .with_status(503)
        .create();
    let url = server.url();
    run(
        &db,
        &[
            "poll",
            "--carrier-url",
            &url,
            "--now",
            FIRST_POLL,
            "--max-attempts",
            "1",
        ],
    );
    server.reset();
    server
        .mock("GET", "/batches/B1/messages")
        .with_body(common::listing("B1", &[common::wire("T1", "SENT")], None))
        .create();
    run(
        &db,
        &[
            "poll",
            "--carrier-url",
            &url,
            "--now",
            "2025-12-01T13:00:00Z",
        ],
    );
    let old = format!("GET /delivery_report/%2B4915112345678: no route to {NUMBER}");
    let conn = db.conn();
    conn.execute("UPDATE poll_cycles SET error = ?1, exit_code = 69", [&old])
        .unwrap();
    conn.execute(
        "UPDATE sms_delivery_confirmations SET failure_reason = ?1, carrier_status = ?1",
        [&old],
    )
    .unwrap();
    // The table of `cycles` shows no error text.
    assert_clean("cycles", &run(&db, &["cycles"]));
    for command in [
        &["check"][..],
        &["cycles", "--json"],
        &["history", "T1"],
        &["history", "T1", "--json"],
    ] {
        let out = run(&db, command);
        assert_clean(&format!("{command:?}"), &out);
        assert!(out.contains("%2B49********678"), "{command:?}: {out}");
    }
}

/// A database error can quote the row it failed on (PostgreSQL: "Failing row contains (..., +49..., ...)"):
/// what is printed and stored of it has the number masked.
#[test]
fn a_database_error_quoting_the_row_shows_no_number() {
    let Some(db) = TestDb::postgres("leaks::a_database_error_quoting_the_row_shows_no_number")
    else {
        return;
    };
    db.submit("T1", Some("B1"), SUBMITTED);
    db.pg()
        .client()
        .batch_execute(
            "ALTER TABLE message_tracking ADD CONSTRAINT refuse_all CHECK (phone_number IS NULL) NOT VALID",
        )
        .unwrap();
    let mut server = mockito::Server::new();
    server
        .mock("GET", "/batches/B1/messages")
        .with_body(common::listing("B1", &[common::wire("T1", "SENT")], None))
        .create();
    let url = server.url();
    let out = run(&db, &["poll", "--carrier-url", &url, "--now", FIRST_POLL]);
    assert!(out.contains("Failing row contains"), "{out}");
    assert_clean("poll", &out);
    assert_clean("the tables", &tables_text(&db));
    assert_clean("check", &run(&db, &["check"]));
}
