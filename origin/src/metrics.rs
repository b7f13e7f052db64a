//! Counters for `/metrics`, in the Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Statuses the origin answers with; anything else is counted as `other`.
const STATUSES: [u16; 11] = [200, 206, 304, 400, 403, 404, 405, 416, 500, 503, 0];

/// Process-wide counters, shared by every connection.
#[derive(Debug, Default)]
pub struct Metrics {
    responses: [AtomicU64; STATUSES.len()],
    /// Full-payload bodies started, completed, aborted by a failure, and cut by the client.
    pub packages_started: AtomicU64,
    pub packages_completed: AtomicU64,
    pub packages_aborted: AtomicU64,
    pub packages_client_gone: AtomicU64,
    /// The same for `/binaries/<sha256>` bodies.
    pub binaries_started: AtomicU64,
    pub binaries_completed: AtomicU64,
    pub binaries_aborted: AtomicU64,
    pub binaries_client_gone: AtomicU64,
    /// Full-payload bodies assembled from stored segments, and requests that fell back
    /// to compressing because a stored segment was unusable.
    pub packages_spliced: AtomicU64,
    pub spliced_fallbacks: AtomicU64,
    /// Refreshes that read the rules being served or loaded new ones; snapshots built.
    pub rules_refreshes: AtomicU64,
    pub rules_snapshots: AtomicU64,
    pub rules_refresh_failures: AtomicU64,
    /// Requests answered with a plan reused from an earlier request.
    pub answers_reused: AtomicU64,
    /// Connections closed at the cap because they had sent no request, to admit others.
    pub connections_closed_unused: AtomicU64,
    /// Gauges of the current rules snapshot.
    pub rules_served: AtomicU64,
    pub rules_rejected: AtomicU64,
}

impl Metrics {
    pub fn count_response(&self, status: u16) {
        let slot = STATUSES
            .iter()
            .position(|&known| known == status)
            .unwrap_or(STATUSES.len() - 1);
        self.responses[slot].fetch_add(1, Ordering::Relaxed);
    }

    pub fn increment(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        out.push_str("# HELP fleetpack_responses_total Responses sent, by status.\n");
        out.push_str("# TYPE fleetpack_responses_total counter\n");
        for (status, counter) in STATUSES.iter().zip(&self.responses) {
            let label = if *status == 0 {
                "other".to_owned()
            } else {
                status.to_string()
            };
            let _ = writeln!(
                out,
                "fleetpack_responses_total{{status=\"{label}\"}} {}",
                get(counter)
            );
        }
        let rows: [(&str, &str, &str, &AtomicU64); 17] = [
            (
                "fleetpack_packages_spliced_total",
                "counter",
                "Full-payload bodies assembled from stored segments.",
                &self.packages_spliced,
            ),
            (
                "fleetpack_spliced_fallbacks_total",
                "counter",
                "Packages compressed as they stream because a stored segment was unusable.",
                &self.spliced_fallbacks,
            ),
            (
                "fleetpack_packages_started_total",
                "counter",
                "Full-payload bodies started.",
                &self.packages_started,
            ),
            (
                "fleetpack_packages_completed_total",
                "counter",
                "Full-payload bodies sent to the end.",
                &self.packages_completed,
            ),
            (
                "fleetpack_packages_aborted_total",
                "counter",
                "Full-payload bodies aborted by a store or integrity failure.",
                &self.packages_aborted,
            ),
            (
                "fleetpack_packages_client_gone_total",
                "counter",
                "Full-payload bodies cut short by the client.",
                &self.packages_client_gone,
            ),
            (
                "fleetpack_binaries_started_total",
                "counter",
                "Binary bodies (/binaries/<sha256>) started.",
                &self.binaries_started,
            ),
            (
                "fleetpack_binaries_completed_total",
                "counter",
                "Binary bodies sent to the end.",
                &self.binaries_completed,
            ),
            (
                "fleetpack_binaries_aborted_total",
                "counter",
                "Binary bodies aborted by a store or integrity failure.",
                &self.binaries_aborted,
            ),
            (
                "fleetpack_binaries_client_gone_total",
                "counter",
                "Binary bodies cut short by the client.",
                &self.binaries_client_gone,
            ),
            (
                "fleetpack_answers_reused_total",
                "counter",
                "Package requests answered with a plan reused from an earlier request.",
                &self.answers_reused,
            ),
            (
                "fleetpack_connections_closed_unused_total",
                "counter",
                "Connections closed at the connection cap because they had sent no request, to admit new clients.",
                &self.connections_closed_unused,
            ),
            (
                "fleetpack_rules_refreshes_total",
                "counter",
                "Refreshes that found the rules being served in the store, or loaded new ones.",
                &self.rules_refreshes,
            ),
            (
                "fleetpack_rules_snapshots_total",
                "counter",
                "Rules snapshots built: one at start and one per change of the stored rules.",
                &self.rules_snapshots,
            ),
            (
                "fleetpack_rules_refresh_failures_total",
                "counter",
                "Failed loads of the rules from the store.",
                &self.rules_refresh_failures,
            ),
            (
                "fleetpack_rules_served",
                "gauge",
                "Rules in the current snapshot.",
                &self.rules_served,
            ),
            (
                "fleetpack_rules_rejected",
                "gauge",
                "Stored rules left out of the current snapshot as invalid.",
                &self.rules_rejected,
            ),
        ];
        for (name, kind, help, counter) in rows {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                get(counter)
            );
        }
        out
    }
}
