//! The status and failure tables: which carrier words mean DELIVERED, FAILED or PENDING, and which failure
//! codes mean which failure category. They are data, one file per provider (`src/carrier/tables/*.map`, shown in
//! the README), and a deployment adds or overrides entries with `--status-map FILE`.
//!
//! ```text
//! # comment
//! status WORD OUTCOME          DELIVERED | FAILED | PENDING | UNCONFIRMED (final without a receipt)
//! status-group GROUP OUTCOME   (a status family, where the provider has them: Infobip)
//! code CODE CATEGORY [meaning] INVALID_NUMBER | NETWORK_ERROR | CARRIER_ERROR | UNDELIVERABLE | UNKNOWN
//! code-group GROUP CATEGORY    (an error family: Infobip)
//! ```
//! Words, groups and codes are matched ignoring case. A `--status-map` file has the same lines under a
//! `[provider]` header per provider.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, bail};

use super::Report;
use crate::domain::{Category, DeliveryStatus};

/// What a carrier word means for a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    Failed,
    Pending,
    /// Final without a receipt (Vonage `unknown`, Sinch `Unknown`, Telnyx `delivery_unconfirmed`): recorded as
    /// PENDING with the carrier's word, and tracking ends UNCONFIRMED at once, since asking again cannot change
    /// the answer.
    Unconfirmed,
}

impl Outcome {
    pub fn status(self) -> DeliveryStatus {
        match self {
            Outcome::Delivered => DeliveryStatus::Delivered,
            Outcome::Failed => DeliveryStatus::Failed,
            Outcome::Pending | Outcome::Unconfirmed => DeliveryStatus::Pending,
        }
    }

    fn parse(s: &str) -> Option<Outcome> {
        Some(match s {
            "DELIVERED" => Outcome::Delivered,
            "FAILED" => Outcome::Failed,
            "PENDING" => Outcome::Pending,
            "UNCONFIRMED" => Outcome::Unconfirmed,
            _ => return None,
        })
    }
}

/// The result of mapping one report's word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapped {
    pub outcome: Outcome,
    /// False for a word outside the table: it maps to PENDING and is counted and logged.
    pub known: bool,
}

/// One provider's table.
#[derive(Clone, Debug, Default)]
pub struct Table {
    statuses: HashMap<String, Outcome>,
    status_groups: HashMap<String, Outcome>,
    codes: HashMap<String, (Category, Option<String>)>,
    code_groups: HashMap<String, Category>,
}

/// The built-in table file of each provider.
pub fn builtin_text(provider: &str) -> Option<&'static str> {
    super::Provider::named(provider).ok().map(|p| p.table)
}

impl Table {
    /// The provider's built-in table, with the entries of a `--status-map` file for it applied on top.
    pub fn load(provider: &str, overrides: Option<&Path>) -> Result<Table> {
        let text = builtin_text(provider).with_context(|| format!("no table for {provider}"))?;
        let mut table = Table::default();
        for (n, line) in text.lines().enumerate() {
            table
                .apply(line)
                .with_context(|| format!("built-in table {provider}.map, line {}", n + 1))?;
        }
        if let Some(path) = overrides {
            table.apply_file(provider, path)?;
        }
        Ok(table)
    }

    /// Applies the `[provider]` sections of a `--status-map` file; every line of every section is checked, so
    /// that a mistake in another provider's section is found before it is needed.
    fn apply_file(&mut self, provider: &str, path: &Path) -> Result<()> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read --status-map {}", path.display()))?;
        let mut section: Option<String> = None;
        let mut scratch = Table::default();
        for (n, line) in text.lines().enumerate() {
            let at = || format!("--status-map {}, line {}", path.display(), n + 1);
            let trimmed = strip_comment(line);
            if let Some(name) = trimmed.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
                let name = name.trim().to_ascii_lowercase();
                if builtin_text(&name).is_none() {
                    bail!(
                        "{}: unknown provider [{name}] (expected one of {})",
                        at(),
                        super::names().join(", ")
                    );
                }
                section = Some(name);
                continue;
            }
            if trimmed.is_empty() {
                continue;
            }
            let Some(name) = &section else {
                bail!("{}: {trimmed:?} comes before any [provider] header", at());
            };
            let target = if name == provider {
                &mut *self
            } else {
                &mut scratch
            };
            target.apply(line).with_context(at)?;
        }
        Ok(())
    }

    /// Applies one line of a table.
    fn apply(&mut self, line: &str) -> Result<()> {
        let line = strip_comment(line);
        if line.is_empty() {
            return Ok(());
        }
        let mut fields = line.split_whitespace();
        let kind = fields.next().unwrap_or_default();
        let (Some(key), Some(value)) = (fields.next(), fields.next()) else {
            bail!("{line:?}: expected KIND KEY VALUE");
        };
        let key = key.to_ascii_uppercase();
        let rest: Vec<&str> = fields.collect();
        let outcome = || {
            Outcome::parse(value).with_context(|| {
                format!(
                    "{line:?}: {value:?} is not an outcome (DELIVERED, FAILED, PENDING or UNCONFIRMED)"
                )
            })
        };
        let category = || {
            Category::parse(value).with_context(|| {
                let all: Vec<&str> = Category::ALL.iter().map(|c| c.as_str()).collect();
                format!(
                    "{line:?}: {value:?} is not a failure category ({})",
                    all.join(", ")
                )
            })
        };
        let no_more = |rest: &[&str]| {
            if rest.is_empty() {
                Ok(())
            } else {
                Err(anyhow::anyhow!(
                    "{line:?}: unexpected {:?} after the value",
                    rest.join(" ")
                ))
            }
        };
        match kind {
            "status" => {
                no_more(&rest)?;
                self.statuses.insert(key, outcome()?);
            }
            "status-group" => {
                no_more(&rest)?;
                self.status_groups.insert(key, outcome()?);
            }
            "code" => {
                let meaning = (!rest.is_empty()).then(|| rest.join(" "));
                self.codes.insert(key, (category()?, meaning));
            }
            "code-group" => {
                no_more(&rest)?;
                self.code_groups.insert(key, category()?);
            }
            other => bail!(
                "{line:?}: unknown kind {other:?} (expected status, status-group, code or code-group)"
            ),
        }
        Ok(())
    }

    /// Maps a report's word: its status, else its status group; a word in neither is PENDING, flagged unknown.
    pub fn map(&self, report: &Report) -> Mapped {
        let word = report.status.trim().to_ascii_uppercase();
        let found = self.statuses.get(&word).or_else(|| {
            report
                .status_group
                .as_deref()
                .and_then(|g| self.status_groups.get(&g.trim().to_ascii_uppercase()))
        });
        match found {
            Some(&outcome) => Mapped {
                outcome,
                known: true,
            },
            None => Mapped {
                outcome: Outcome::Pending,
                known: false,
            },
        }
    }

    /// The failure category of a failed report: its code, else its error group, else UNDELIVERABLE when the
    /// carrier calls the error permanent, else UNKNOWN.
    pub fn category(&self, report: &Report) -> Category {
        let code = report
            .error_code
            .as_deref()
            .and_then(|c| self.codes.get(&c.trim().to_ascii_uppercase()));
        if let Some((category, _)) = code {
            return *category;
        }
        let group = report
            .error_group
            .as_deref()
            .and_then(|g| self.code_groups.get(&g.trim().to_ascii_uppercase()));
        match (group, report.permanent) {
            (Some(&category), _) => category,
            (None, Some(true)) => Category::Undeliverable,
            _ => Category::Unknown,
        }
    }

    /// The documented meaning of a code, for carriers that send a code without text (Sinch).
    pub fn meaning(&self, code: &str) -> Option<&str> {
        self.codes
            .get(&code.trim().to_ascii_uppercase())
            .and_then(|(_, m)| m.as_deref())
    }
}

fn strip_comment(line: &str) -> &str {
    line.split_once('#')
        .map_or(line, |(before, _)| before)
        .trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(status: &str) -> Report {
        Report {
            status: status.into(),
            ..Report::default()
        }
    }

    fn with_code(status: &str, code: &str) -> Report {
        Report {
            error_code: Some(code.into()),
            ..report(status)
        }
    }

    #[test]
    fn every_builtin_table_loads() {
        for provider in super::super::names() {
            Table::load(provider, None).unwrap();
        }
    }

    /// The README shows every built-in table as it is.
    #[test]
    fn the_readme_shows_every_table_as_it_is() {
        let readme = include_str!("../../README.md");
        for provider in super::super::names() {
            let text = builtin_text(provider).unwrap().trim_end();
            assert!(
                readme.contains(text),
                "the README's copy of tables/{provider}.map differs from the file"
            );
        }
    }

    #[test]
    fn generic_reference_table() {
        use Outcome::*;
        let table = Table::load("generic", None).unwrap();
        for (word, outcome) in [
            ("DELIVERED", Delivered),
            ("FAILED", Failed),
            ("REJECTED", Failed),
            ("BOUNCED", Failed),
            ("UNDELIVERABLE", Failed),
            ("PENDING", Pending),
            ("QUEUED", Pending),
            ("SENT", Pending),
            ("TIMEOUT", Pending),
            ("NO_STATUS", Pending),
            (" delivered ", Delivered),
            ("No_Status", Pending),
        ] {
            assert_eq!(
                table.map(&report(word)),
                Mapped {
                    outcome,
                    known: true
                },
                "{word}"
            );
        }
        for word in ["ACCEPTD", "", "EXPIRED", "DELIVERED!"] {
            assert!(!table.map(&report(word)).known, "{word:?}");
            assert_eq!(table.map(&report(word)).outcome, Pending);
        }
    }

    /// The words and codes the providers' own tables must map exactly so.
    #[test]
    fn provider_words_and_codes() {
        use Category::*;
        use Outcome::*;
        type Case<'a> = (&'a str, &'a [(&'a str, Outcome)], &'a [(&'a str, Category)]);
        let cases: &[Case] = &[
            (
                "twilio",
                &[
                    ("delivered", Delivered),
                    ("read", Delivered),
                    ("undelivered", Failed),
                    ("failed", Failed),
                    ("canceled", Failed),
                    ("accepted", Pending),
                    ("scheduled", Pending),
                    ("queued", Pending),
                    ("sending", Pending),
                    ("sent", Pending),
                    ("partially_delivered", Pending),
                ],
                &[
                    ("30005", InvalidNumber),
                    ("30006", InvalidNumber),
                    ("30003", NetworkError),
                    ("30004", CarrierError),
                    ("30007", CarrierError),
                    ("30008", Unknown),
                    ("99999", Unknown),
                ],
            ),
            (
                "vonage",
                &[
                    ("delivered", Delivered),
                    ("expired", Failed),
                    ("failed", Failed),
                    ("rejected", Failed),
                    ("accepted", Pending),
                    ("buffered", Pending),
                    ("unknown", Unconfirmed),
                ],
                &[
                    ("3", InvalidNumber),
                    ("12", InvalidNumber),
                    ("2", NetworkError),
                    ("7", NetworkError),
                    ("8", NetworkError),
                    ("4", CarrierError),
                    ("6", CarrierError),
                    ("14", CarrierError),
                    ("5", Undeliverable),
                    ("10", Undeliverable),
                    ("11", Undeliverable),
                    ("1", Unknown),
                    ("99", Unknown),
                ],
            ),
            (
                "sinch",
                &[
                    ("Delivered", Delivered),
                    ("Aborted", Failed),
                    ("Cancelled", Failed),
                    ("Rejected", Failed),
                    ("Deleted", Failed),
                    ("Failed", Failed),
                    ("Expired", Failed),
                    ("Queued", Pending),
                    ("Dispatched", Pending),
                    ("Unknown", Unconfirmed),
                ],
                &[("402", Undeliverable), ("413", CarrierError)],
            ),
            (
                "telnyx",
                &[
                    ("delivered", Delivered),
                    ("sending_failed", Failed),
                    ("delivery_failed", Failed),
                    ("expired", Failed),
                    ("cancelled", Failed),
                    ("scheduled", Pending),
                    ("queued", Pending),
                    ("sending", Pending),
                    ("sent", Pending),
                    ("delivery_unconfirmed", Unconfirmed),
                ],
                &[
                    ("40001", InvalidNumber),
                    ("40012", InvalidNumber),
                    ("40006", NetworkError),
                    ("40002", CarrierError),
                    ("40003", CarrierError),
                    ("40015", CarrierError),
                    ("40005", Undeliverable),
                    ("40008", Undeliverable),
                ],
            ),
        ];
        for (provider, words, codes) in cases {
            let table = Table::load(provider, None).unwrap();
            for (word, outcome) in *words {
                let mapped = table.map(&report(word));
                assert_eq!(mapped.outcome, *outcome, "{provider} {word}");
                assert!(mapped.known);
            }
            for (code, category) in *codes {
                assert_eq!(
                    table.category(&with_code("x", code)),
                    *category,
                    "{provider} {code}"
                );
            }
        }
        let sinch = Table::load("sinch", None).unwrap();
        assert_eq!(sinch.meaning("402"), Some("Message unroutable"));
    }

    #[test]
    fn infobip_groups_names_and_permanent_errors() {
        use Category::*;
        use Outcome::*;
        let table = Table::load("infobip", None).unwrap();
        let status = |name: &str, group: &str| Report {
            status: name.into(),
            status_group: Some(group.into()),
            ..Report::default()
        };
        for (name, group, outcome) in [
            ("DELIVERED_TO_HANDSET", "DELIVERED", Delivered),
            ("DELIVERED_TO_OPERATOR", "DELIVERED", Pending),
            ("UNDELIVERABLE_NOT_DELIVERED", "UNDELIVERABLE", Failed),
            ("EXPIRED_EXPIRED", "EXPIRED", Failed),
            ("REJECTED_NETWORK", "REJECTED", Failed),
            ("PENDING_ENROUTE", "PENDING", Pending),
            ("ACCEPTED", "ACCEPTED", Pending),
        ] {
            assert_eq!(table.map(&status(name, group)).outcome, outcome, "{name}");
        }
        assert!(!table.map(&status("NEW_WORD", "NEW_GROUP")).known);
        let error = |id: &str, group: &str, permanent: bool| Report {
            error_code: Some(id.into()),
            error_group: Some(group.into()),
            permanent: Some(permanent),
            ..report("UNDELIVERABLE_NOT_DELIVERED")
        };
        assert_eq!(
            table.category(&error("1", "HANDSET_ERRORS", true)),
            InvalidNumber
        );
        assert_eq!(
            table.category(&error("7", "HANDSET_ERRORS", false)),
            NetworkError
        );
        assert_eq!(
            table.category(&error("541", "USER_ERRORS", false)),
            CarrierError
        );
        assert_eq!(
            table.category(&error("5000", "NEW_ERRORS", true)),
            Undeliverable
        );
        assert_eq!(table.category(&error("5000", "NEW_ERRORS", false)), Unknown);
    }

    #[test]
    fn a_status_map_adds_and_overrides_for_its_provider_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("map");
        std::fs::write(
            &path,
            "# ours\n[twilio]\nstatus sent UNCONFIRMED  # our routes never confirm\ncode 30008 NETWORK_ERROR Retry later\n\
             status en_route PENDING\n[ Vonage ]\nstatus accepted FAILED\n",
        )
        .unwrap();
        let twilio = Table::load("twilio", Some(&path)).unwrap();
        assert_eq!(twilio.map(&report("sent")).outcome, Outcome::Unconfirmed);
        assert!(twilio.map(&report("EN_ROUTE")).known);
        assert_eq!(
            twilio.category(&with_code("failed", "30008")),
            Category::NetworkError
        );
        assert_eq!(twilio.map(&report("accepted")).outcome, Outcome::Pending);
        let vonage = Table::load("vonage", Some(&path)).unwrap();
        assert_eq!(vonage.map(&report("accepted")).outcome, Outcome::Failed);
    }

    #[test]
    fn a_bad_status_map_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("map");
        for (text, expected) in [
            (
                "status sent PENDING\n",
                "line 1: \"status sent PENDING\" comes before any [provider]",
            ),
            ("[twilio]\n\nstatus sent DONE\n", "line 3"),
            ("[twilio]\nstatus sent DONE\n", "\"DONE\" is not an outcome"),
            ("[acme]\n", "unknown provider [acme]"),
            (
                "[twilio]\ncode 1 SPAM\n",
                "\"SPAM\" is not a failure category",
            ),
            ("[twilio]\nstate sent PENDING\n", "unknown kind \"state\""),
            ("[twilio]\nstatus sent\n", "expected KIND KEY VALUE"),
            ("[twilio]\nstatus sent PENDING now\n", "unexpected \"now\""),
            ("[sinch]\nstatus Sent MAYBE\n", "line 2"),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = format!("{:#}", Table::load("twilio", Some(&path)).unwrap_err());
            assert!(err.contains(expected), "{text:?}: {err}");
            assert!(err.contains(&path.display().to_string()), "{err}");
        }
        let err = format!(
            "{:#}",
            Table::load("twilio", Some(Path::new("/nonexistent/map"))).unwrap_err()
        );
        assert!(
            err.contains("cannot read --status-map /nonexistent/map"),
            "{err}"
        );
    }
}
