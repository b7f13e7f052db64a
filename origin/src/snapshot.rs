//! The in-memory rules snapshot: loaded from the store at start, refreshed in the
//! background, read by every request without touching the store.
//!
//! The first snapshot is built only from rules that read the same twice in a row: a
//! store read while a publish is halfway through (7 of 9 rules of a demo fleet) would
//! otherwise make the origin ready with rules it then answers 404 with, and caches keep
//! those answers.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use fleetpack_resolver::{Rejected, RuleError, RuleSet, StoredRules};
use fleetpack_store::{RulesStamp, Store, StoreError, rule_set};
use tokio_util::sync::CancellationToken;

use crate::answers::AnswerCache;
use crate::metrics::Metrics;

/// Between the two reads of the first load.
const SETTLE_PAUSE: Duration = Duration::from_millis(200);

/// One immutable generation of the rules.
#[derive(Debug)]
pub struct RulesSnapshot {
    pub rules: RuleSet,
    pub loaded_at: SystemTime,
    pub rejected: usize,
    /// Answers computed from these rules, reused until the next generation.
    pub answers: AnswerCache,
}

/// What `/readyz` reports about the refreshes.
#[derive(Debug, Clone, Default)]
pub struct RefreshState {
    pub last_error: Option<String>,
    pub last_error_at: Option<SystemTime>,
    /// When a refresh last read the store successfully: how old the rules served are.
    pub confirmed_at: Option<SystemTime>,
    stamp: Option<RulesStamp>,
    /// A digest of the rules last read (those of the current snapshot once there is
    /// one): a refresh that reads the same rules again (a store without a stamp, or a
    /// rewritten file) keeps the snapshot, and before the first snapshot, the second
    /// of two equal reads builds it.
    content: Option<u64>,
    /// Some rules were left out because their binaries were missing: the next refresh
    /// looks again even if the rules did not change.
    objects_missing: bool,
}

/// The current snapshot and the state of its refreshes.
///
/// Requests read the snapshot through an `ArcSwapOption`: a load is a few atomic
/// operations and never waits for a refresh, and a refresh swaps in a whole new
/// generation at once, so no request sees half of one.
#[derive(Debug)]
pub struct Rules {
    current: ArcSwapOption<RulesSnapshot>,
    state: Mutex<RefreshState>,
    answer_cache_bytes: u64,
}

impl Rules {
    /// No rules yet; each snapshot will reuse up to `answer_cache_bytes` of answers.
    pub fn new(answer_cache_bytes: u64) -> Self {
        Rules {
            current: ArcSwapOption::empty(),
            state: Mutex::default(),
            answer_cache_bytes,
        }
    }

    /// The current snapshot, or `None` before the first successful load.
    pub fn current(&self) -> Option<Arc<RulesSnapshot>> {
        self.current.load_full()
    }

    /// Like [`Rules::current`], for a short look that ends before any `.await`: no
    /// reference count is touched, so parallel requests do not contend on one.
    pub fn peek(&self) -> arc_swap::Guard<Option<Arc<RulesSnapshot>>> {
        self.current.load()
    }

    pub fn state(&self) -> RefreshState {
        self.lock_state().clone()
    }

    fn lock_state(&self) -> MutexGuard<'_, RefreshState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Loads the rules when the store says they changed. On failure the last good
    /// snapshot stays in place; the failure is logged, counted and kept for `/readyz`.
    pub async fn refresh<S: Store>(&self, store: &S, metrics: &Metrics) {
        if let Err(error) = self.try_refresh(store, metrics).await {
            tracing::warn!(store = %store.describe(), error = &error as &dyn std::error::Error, "rules refresh failed; serving the last good rules");
            Metrics::increment(&metrics.rules_refresh_failures);
            let mut state = self.lock_state();
            state.last_error = Some(with_causes(&error));
            state.last_error_at = Some(SystemTime::now());
        }
    }

    async fn try_refresh<S: Store>(&self, store: &S, metrics: &Metrics) -> Result<(), StoreError> {
        let stamp = store.rules_stamp().await?;
        let loaded = self.current.load().is_some();
        {
            let mut state = self.lock_state();
            if loaded && stamp.is_some() && state.stamp == stamp && !state.objects_missing {
                // The stored rules are the ones last read: served, or failing the same way.
                if state.last_error.is_none() {
                    Metrics::increment(&metrics.rules_refreshes);
                    state.confirmed_at = Some(SystemTime::now());
                }
                return Ok(());
            }
        }
        let mut stored = match store.load_rules().await {
            Ok(stored) => stored,
            Err(error) => {
                // Remember the stamp: the same stored rules would fail the same way, so
                // they are tried again when they change (or while none are loaded).
                self.lock_state().stamp = stamp;
                return Err(error);
            }
        };
        // A store without a stamp is read in full on every refresh; when it returns the
        // rules being served, their snapshot stays, and with it the reused answers.
        stored.sort();
        let content = fingerprint(&stored);
        let (same, objects_missing) = {
            let state = self.lock_state();
            (state.content == Some(content), state.objects_missing)
        };
        let mut state = RefreshState {
            stamp,
            content: Some(content),
            ..RefreshState::default()
        };
        if !loaded && !same {
            // Nothing served yet, and these rules were not read before: read again.
            *self.lock_state() = state;
            return Ok(());
        }
        if !(loaded && same && !objects_missing) {
            state.objects_missing = self.install(store, stored, metrics).await?;
        }
        Metrics::increment(&metrics.rules_refreshes);
        state.confirmed_at = Some(SystemTime::now());
        *self.lock_state() = state;
        Ok(())
    }

    /// Builds a snapshot of `stored` and serves it from the next request on; says
    /// whether rules were left out because their binaries are missing.
    async fn install<S: Store>(
        &self,
        store: &S,
        stored: StoredRules,
        metrics: &Metrics,
    ) -> Result<bool, StoreError> {
        let (rules, rejected) = rule_set(store, stored).await?;
        for Rejected { rule, reason } in &rejected {
            tracing::warn!(app = %rule.app, env = %rule.channel, reason = %reason, "rule left out of the snapshot");
        }
        tracing::info!(
            rules = rules.len(),
            rejected = rejected.len(),
            "rules loaded"
        );
        metrics
            .rules_served
            .store(rules.len() as u64, Ordering::Relaxed);
        metrics
            .rules_rejected
            .store(rejected.len() as u64, Ordering::Relaxed);
        let objects_missing = rejected
            .iter()
            .any(|rejected| matches!(rejected.reason, RuleError::MissingObject { .. }));
        self.current.store(Some(Arc::new(RulesSnapshot {
            rules,
            loaded_at: SystemTime::now(),
            rejected: rejected.len(),
            answers: AnswerCache::new(self.answer_cache_bytes),
        })));
        Metrics::increment(&metrics.rules_snapshots);
        Ok(objects_missing)
    }

    /// The first load: a second read shortly after the first, so that an origin whose
    /// store is quiet is ready at once.
    pub async fn load<S: Store>(&self, store: &S, metrics: &Metrics) {
        self.refresh(store, metrics).await;
        if self.current.load().is_none() && self.lock_state().last_error.is_none() {
            tokio::time::sleep(SETTLE_PAUSE).await;
            self.refresh(store, metrics).await;
        }
    }

    /// Refreshes every `interval` until `stop` is cancelled; until the first load
    /// succeeds, every second at most, so that an origin started before its store
    /// recovers quickly.
    pub async fn keep_fresh<S: Store>(
        &self,
        store: &S,
        metrics: &Metrics,
        interval: Duration,
        stop: CancellationToken,
    ) {
        let retry = interval.min(Duration::from_secs(1));
        loop {
            let wait = if self.current.load().is_some() {
                interval
            } else {
                retry
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => self.refresh(store, metrics).await,
                () = stop.cancelled() => return,
            }
        }
    }
}

/// An error and its causes, `: `-separated, for `/readyz`.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        text.push_str(": ");
        text.push_str(&next.to_string());
        cause = next.source();
    }
    text
}

/// Tells sorted rule lists apart within this process (the digest is never stored).
fn fingerprint(rules: &StoredRules) -> u64 {
    let mut hasher = DefaultHasher::new();
    rules.hash(&mut hasher);
    hasher.finish()
}
