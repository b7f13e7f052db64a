//! Releases over time: what an operator does to a channel once binaries are published.
//! Roll back, disable and enable a release, promote one to another channel, and stage a
//! rollout, on any store and without the binary at hand.
//!
//! Every action reads the stored rules, writes the history entries it changes, then the
//! channel's current release on the condition that it is still the one read
//! ([`Store::put_rule`]): of two operators racing, the second is told to run again, and
//! nothing either wrote is lost. The current release stays the item the AWS sample reads.

use std::time::{Duration, SystemTime};

use fleetpack_resolver::{Rollout, Rule, StoredRules};

use crate::signing::{ReleaseKey, Statement, statement_sequence};
use crate::{Store, StoreError};

/// One app and channel as stored: its current release and its history.
#[derive(Debug, Clone)]
pub struct Channel {
    pub app: String,
    pub channel: String,
    pub current: Option<Rule>,
    /// Every release, in publishing order.
    pub history: Vec<Rule>,
    /// Whether the stored history holds the current release: not when the store was
    /// made by the AWS sample, or written before history was kept.
    current_kept: bool,
}

impl Channel {
    /// The state of `app` on `channel` in `stored` (names ignore letter case). The
    /// current release joins the history when it has no entry there (a store made by
    /// the AWS sample, or rules written before history was kept).
    pub fn of(stored: &StoredRules, app: &str, channel: &str) -> Channel {
        let current = stored.current(app, channel).cloned();
        let mut history: Vec<Rule> = stored.history(app, channel).into_iter().cloned().collect();
        let current_kept = current.as_ref().is_none_or(|current| {
            history
                .iter()
                .any(|release| release.version == current.version)
        });
        if let Some(current) = current.as_ref().filter(|_| !current_kept) {
            history.insert(0, current.as_release());
        }
        let (app, channel) = match &current {
            Some(current) => (current.app.clone(), current.channel.clone()),
            None => (app.to_owned(), channel.to_owned()),
        };
        Channel {
            app,
            channel,
            current,
            history,
            current_kept,
        }
    }

    /// The release of `version` in the history.
    pub fn release(&self, version: &str) -> Option<&Rule> {
        self.history
            .iter()
            .find(|release| release.version == version)
    }

    /// The sequence number of the next release published here.
    pub fn next_sequence(&self) -> u64 {
        self.history
            .iter()
            .chain(&self.current)
            .filter_map(|rule| rule.sequence)
            .max()
            .unwrap_or(0)
            + 1
    }

    /// The sequence of the next statement signed for this app and channel: above every
    /// statement signed for it so far, so that devices refuse older ones.
    fn next_statement_sequence(&self) -> u64 {
        self.history
            .iter()
            .chain(&self.current)
            .filter_map(|rule| rule.envelope.as_deref().and_then(statement_sequence))
            .max()
            .unwrap_or(0)
            + 1
    }

    /// Refuses to serve an unsigned release on a channel that requires signatures.
    pub(crate) fn check_signer(&self, signer: Option<&Signer>) -> Result<(), ReleaseError> {
        let required = self
            .current
            .as_ref()
            .is_some_and(|current| current.signatures_required);
        if required && signer.is_none() {
            return Err(ReleaseError::SignatureRequired {
                app: self.app.clone(),
                channel: self.channel.clone(),
            });
        }
        Ok(())
    }

    /// `release` signed by `signer` with the next statement sequence, or as it is
    /// without one.
    fn signed(
        &self,
        release: Rule,
        signer: Option<&Signer>,
        sequence: u64,
    ) -> Result<Rule, ReleaseError> {
        let Some(signer) = signer else {
            return Ok(release);
        };
        let envelope = signer.sign(&release, sequence)?;
        Ok(Rule {
            envelope: Some(envelope),
            ..release
        })
    }

    /// Writes `release` to the history, first the current release when only the
    /// current item holds it, so that replacing it loses no release.
    async fn keep<S: Store>(&self, store: &S, release: Option<Rule>) -> Result<(), StoreError> {
        if let Some(current) = self.current.as_ref().filter(|_| !self.current_kept) {
            store.put_release(current.as_release()).await?;
        }
        if let Some(release) = release {
            store.put_release(release).await?;
        }
        Ok(())
    }

    /// Makes `next` the current release, if the current one is still what was read;
    /// a channel that requires signatures goes on requiring them.
    async fn replace_current<S: Store>(&self, store: &S, next: Rule) -> Result<Rule, StoreError> {
        let required = self
            .current
            .as_ref()
            .is_some_and(|current| current.signatures_required);
        self.write_current(
            store,
            Rule {
                signatures_required: required,
                ..next
            },
        )
        .await
    }

    /// Writes `next` as the current release, as it is, if the current one is still what
    /// was read.
    async fn write_current<S: Store>(&self, store: &S, next: Rule) -> Result<Rule, StoreError> {
        let next = Rule {
            revision: Some(
                self.current
                    .as_ref()
                    .and_then(|rule| rule.revision)
                    .unwrap_or(0)
                    + 1,
            ),
            ..next
        };
        store.put_rule(next.clone(), self.current.as_ref()).await?;
        Ok(next)
    }
}

/// Why an action on a channel was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error(
        "the store has no app `{app}` on channel `{channel}`; `fleetpack-seed list` shows what it has"
    )]
    NoChannel { app: String, channel: String },
    #[error(
        "app `{app}` on `{channel}` has no version `{version}`; `fleetpack-seed history --app {app} --channel {channel}` lists its releases"
    )]
    NoVersion {
        app: String,
        channel: String,
        version: String,
    },
    #[error(
        "app `{app}` on `{channel}` has no enabled release before {version} to roll back to; name one with --to"
    )]
    NothingBefore {
        app: String,
        channel: String,
        version: String,
    },
    #[error(
        "version `{version}` of `{app}` on `{channel}` is disabled; enable it first (`fleetpack-seed enable`)"
    )]
    Disabled {
        app: String,
        channel: String,
        version: String,
    },
    #[error(
        "app `{app}` on `{channel}` has no rollout; start one with `fleetpack-seed publish ... --rollout PERCENT` or `promote ... --rollout PERCENT`"
    )]
    NoRollout { app: String, channel: String },
    #[error("a rollout percent is 0 to 100, not {0}")]
    BadPercent(u8),
    #[error(
        "version `{version}` of `{app}` is already in the history of `{channel}`; serve it again with `fleetpack-seed rollback --app {app} --channel {channel} --to {version}`"
    )]
    AlreadyThere {
        app: String,
        channel: String,
        version: String,
    },
    #[error(
        "app `{app}` on `{channel}` requires signed releases; pass --signing-key (or turn the requirement off with `fleetpack-seed require-signatures --off`)"
    )]
    SignatureRequired { app: String, channel: String },
    #[error(
        "release {version} of `{app}` has no SHA-256 or size to sign; run `fleetpack-seed segments`, which fills the size, or publish it again"
    )]
    Unsignable { app: String, version: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What an action changed: the channel's current release before and after (equal when
/// only the history changed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    pub before: Option<Rule>,
    pub after: Option<Rule>,
}

async fn channel_of<S: Store>(
    store: &S,
    app: &str,
    channel: &str,
) -> Result<Channel, ReleaseError> {
    let state = Channel::of(&store.load_rules().await?, app, channel);
    if state.current.is_none() && state.history.is_empty() {
        return Err(ReleaseError::NoChannel {
            app: app.to_owned(),
            channel: channel.to_owned(),
        });
    }
    Ok(state)
}

fn no_version(state: &Channel, version: &str) -> ReleaseError {
    ReleaseError::NoVersion {
        app: state.app.clone(),
        channel: state.channel.clone(),
        version: version.to_owned(),
    }
}

/// Serves an earlier release of the channel again: `to`, or the enabled release
/// published last before the current one. Devices that run a newer version take it too
/// (the current item is marked `rolledBack`); a rollout in progress ends.
pub async fn rollback<S: Store>(
    store: &S,
    app: &str,
    channel: &str,
    to: Option<&str>,
    signer: Option<&Signer>,
) -> Result<Changed, ReleaseError> {
    let state = channel_of(store, app, channel).await?;
    state.check_signer(signer)?;
    let target = match to {
        Some(version) => state
            .release(version)
            .ok_or_else(|| no_version(&state, version))?,
        None => {
            let current = state
                .current
                .as_ref()
                .map(|rule| rule.version.as_str())
                .unwrap_or_default();
            let at = state
                .history
                .iter()
                .position(|release| release.version == current)
                .unwrap_or(state.history.len());
            state.history[..at]
                .iter()
                .rev()
                .find(|release| release.enabled)
                .ok_or_else(|| ReleaseError::NothingBefore {
                    app: state.app.clone(),
                    channel: state.channel.clone(),
                    version: current.to_owned(),
                })?
        }
    };
    if !target.enabled {
        return Err(ReleaseError::Disabled {
            app: state.app.clone(),
            channel: state.channel.clone(),
            version: target.version.clone(),
        });
    }
    // Devices refuse a statement older than one they saw: going back takes a new one.
    let target = state.signed(target.clone(), signer, state.next_statement_sequence())?;
    let resigned = signer.map(|_| target.as_release());
    state.keep(store, resigned).await?;
    let after = state
        .replace_current(
            store,
            Rule {
                rolled_back: true,
                ..target
            },
        )
        .await?;
    Ok(Changed {
        before: state.current.clone(),
        after: Some(after),
    })
}

/// Disables or enables `version` on the channel. A disabled current release gives way
/// to the enabled release published last before it; a disabled candidate ends its
/// rollout. Enabling makes a release servable again; what the channel serves stays,
/// until a rollback or publish chooses it.
pub async fn set_enabled<S: Store>(
    store: &S,
    app: &str,
    channel: &str,
    version: &str,
    enabled: bool,
) -> Result<Changed, ReleaseError> {
    let state = channel_of(store, app, channel).await?;
    let release = state
        .release(version)
        .ok_or_else(|| no_version(&state, version))?;
    state
        .keep(
            store,
            Some(Rule {
                enabled,
                ..release.as_release()
            }),
        )
        .await?;
    let Some(current) = &state.current else {
        return Ok(Changed {
            before: None,
            after: None,
        });
    };
    let next = if current.version == version {
        if enabled {
            Some(Rule {
                enabled: true,
                ..current.clone()
            })
        } else {
            // The release published last before it, or failing that the newest enabled.
            let at = state
                .history
                .iter()
                .position(|release| release.version == version)
                .unwrap_or(0);
            let earlier = state.history[..at]
                .iter()
                .rev()
                .find(|release| release.enabled);
            let any = state
                .history
                .iter()
                .rev()
                .find(|release| release.enabled && release.version != version);
            Some(match earlier.or(any) {
                Some(fallback) => Rule {
                    rollout: None,
                    ..fallback.clone()
                },
                // Nothing else to serve: the item stays, disabled.
                None => Rule {
                    enabled: false,
                    rollout: None,
                    ..current.clone()
                },
            })
        }
    } else if !enabled
        && current
            .rollout
            .as_ref()
            .is_some_and(|rollout| rollout.version == version)
    {
        Some(Rule {
            rollout: None,
            ..current.clone()
        })
    } else {
        None
    };
    let after = match next {
        Some(next) => state.replace_current(store, next).await?,
        None => current.clone(),
    };
    Ok(Changed {
        before: Some(current.clone()),
        after: Some(after),
    })
}

/// Sets the share of devices that take the channel's candidate: 0 halts the rollout
/// (everyone on the current release), 100 completes it (the candidate becomes current).
pub async fn set_rollout<S: Store>(
    store: &S,
    app: &str,
    channel: &str,
    percent: u8,
) -> Result<Changed, ReleaseError> {
    if percent > 100 {
        return Err(ReleaseError::BadPercent(percent));
    }
    let state = channel_of(store, app, channel).await?;
    let no_rollout = || ReleaseError::NoRollout {
        app: state.app.clone(),
        channel: state.channel.clone(),
    };
    let current = state.current.as_ref().ok_or_else(no_rollout)?;
    let rollout = current.rollout.as_ref().ok_or_else(no_rollout)?;
    let candidate = state
        .release(&rollout.version)
        .ok_or_else(|| no_version(&state, &rollout.version))?;
    let next = if percent == 100 {
        state.keep(store, None).await?;
        Rule {
            rolled_back: false,
            ..candidate.clone()
        }
    } else {
        Rule {
            rollout: Some(Rollout {
                version: rollout.version.clone(),
                percent,
            }),
            ..current.clone()
        }
    };
    let after = state.replace_current(store, next).await?;
    Ok(Changed {
        before: Some(current.clone()),
        after: Some(after),
    })
}

/// Publishes `release` (already checked, its binary and segment stored) to its channel:
/// adds it to the history with the next sequence number, then makes it current, or its
/// candidate for `rollout` percent of devices. A disabled release only joins the
/// history. Publishing the current release again changes nothing.
pub async fn add_release<S: Store>(
    store: &S,
    stored: &StoredRules,
    release: Rule,
    rollout: Option<u8>,
    signer: Option<&Signer>,
) -> Result<Changed, ReleaseError> {
    let state = Channel::of(stored, &release.app, &release.channel);
    state.check_signer(signer)?;
    if let Some(existing) = state.release(&release.version) {
        let same = state
            .current
            .as_ref()
            .is_some_and(|current| current.version == release.version);
        if same
            && rollout.is_none()
            && existing.as_release() == release_as_stored(existing, &release)
        {
            return Ok(Changed {
                before: state.current.clone(),
                after: state.current.clone(),
            });
        }
        return Err(ReleaseError::AlreadyThere {
            app: state.app.clone(),
            channel: state.channel.clone(),
            version: release.version.clone(),
        });
    }
    if let Some(percent) = rollout.filter(|&percent| percent > 100) {
        return Err(ReleaseError::BadPercent(percent));
    }
    let release = Rule {
        sequence: Some(state.next_sequence()),
        ..release
    };
    let release = state.signed(release, signer, state.next_statement_sequence())?;
    state.keep(store, Some(release.clone())).await?;
    let next = match (&state.current, rollout) {
        _ if !release.enabled => None,
        (Some(current), Some(percent)) if percent < 100 => Some(Rule {
            rollout: Some(Rollout {
                version: release.version.clone(),
                percent,
            }),
            ..current.clone()
        }),
        _ => Some(release),
    };
    let after = match next {
        Some(next) => Some(state.replace_current(store, next).await?),
        None => state.current.clone(),
    };
    Ok(Changed {
        before: state.current.clone(),
        after,
    })
}

/// `release` with the history fields of `existing`, to tell whether publishing it
/// again would change anything but when it was published.
fn release_as_stored(existing: &Rule, release: &Rule) -> Rule {
    Rule {
        created_at: existing.created_at.clone(),
        sequence: existing.sequence,
        envelope: existing.envelope.clone(),
        ..release.as_release()
    }
}

/// Publishes release `version` of `app` on channel `from` (default: what `from` serves)
/// to channel `to`: the same bytes and segment, no upload; current there, or the
/// candidate of a rollout of `rollout` percent.
pub async fn promote<S: Store>(
    store: &S,
    app: &str,
    from: &str,
    to: &str,
    version: Option<&str>,
    rollout: Option<u8>,
    signer: Option<&Signer>,
) -> Result<Changed, ReleaseError> {
    let stored = store.load_rules().await?;
    let source = Channel::of(&stored, app, from);
    let release = match version {
        Some(version) => source.release(version),
        None => source.current.as_ref(),
    }
    .ok_or_else(|| match version {
        Some(version) => no_version(&source, version),
        None => ReleaseError::NoChannel {
            app: app.to_owned(),
            channel: from.to_owned(),
        },
    })?;
    let target = Channel::of(&stored, app, to);
    let promoted = Rule {
        app: target.app.clone(),
        channel: target.channel.clone(),
        created_at: Some(humantime::format_rfc3339_seconds(SystemTime::now()).to_string()),
        enabled: true,
        // A statement names its channel: the source's does not vouch for this one.
        envelope: None,
        ..release.as_release()
    };
    add_release(store, &stored, promoted, rollout, signer).await
}

/// Signs releases as operators publish them: a key, and how long a statement stays
/// valid (devices refuse expired ones, so signed channels need `resign` on a schedule).
#[derive(Debug)]
pub struct Signer {
    pub key: ReleaseKey,
    pub valid_for: Duration,
}

impl Signer {
    /// The envelope of `release`'s statement, valid from now for `valid_for`.
    fn sign(&self, release: &Rule, sequence: u64) -> Result<String, ReleaseError> {
        let (Some(sha256), Some(size)) = (&release.sha256, release.size) else {
            return Err(ReleaseError::Unsignable {
                app: release.app.clone(),
                version: release.version.clone(),
            });
        };
        let expires = humantime::format_rfc3339_seconds(SystemTime::now() + self.valid_for);
        Ok(self.key.sign(&Statement {
            app: release.app.clone(),
            channel: release.channel.clone(),
            version: release.version.clone(),
            sha256: sha256.clone(),
            size,
            sequence,
            expires: expires.to_string(),
        }))
    }
}

/// Turns the requirement of signed releases on or off for `app` on `channel`.
pub async fn require_signatures<S: Store>(
    store: &S,
    app: &str,
    channel: &str,
    required: bool,
) -> Result<Changed, ReleaseError> {
    let state = channel_of(store, app, channel).await?;
    let current = state
        .current
        .as_ref()
        .ok_or_else(|| ReleaseError::NoChannel {
            app: app.to_owned(),
            channel: channel.to_owned(),
        })?;
    let after = state
        .write_current(
            store,
            Rule {
                signatures_required: required,
                ..current.clone()
            },
        )
        .await?;
    Ok(Changed {
        before: Some(current.clone()),
        after: Some(after),
    })
}

/// Signs a new statement, with a new sequence and expiry, for every release a channel
/// serves (its current release and a rollout's candidate), on every channel: what a
/// scheduled job runs before statements expire. One channel that fails is reported and
/// the others go on.
pub async fn resign<S: Store>(
    store: &S,
    signer: &Signer,
) -> Result<Vec<(String, String, Result<Vec<String>, ReleaseError>)>, StoreError> {
    let stored = store.load_rules().await?;
    let mut outcomes = Vec::new();
    for current in &stored.current {
        let state = Channel::of(&stored, &current.app, &current.channel);
        let outcome = resign_channel(store, signer, &state, current).await;
        outcomes.push((state.app.clone(), state.channel.clone(), outcome));
    }
    Ok(outcomes)
}

/// Re-signs what one channel serves; returns the versions signed.
async fn resign_channel<S: Store>(
    store: &S,
    signer: &Signer,
    state: &Channel,
    current: &Rule,
) -> Result<Vec<String>, ReleaseError> {
    let candidate = current
        .rollout
        .as_ref()
        .map(|rollout| rollout.version.as_str());
    let mut signed = Vec::new();
    let mut current_envelope = None;
    let versions = std::iter::once(current.version.as_str()).chain(candidate);
    for (sequence, version) in (state.next_statement_sequence()..).zip(versions) {
        let release = match state.release(version) {
            Some(release) => release,
            None => return Err(no_version(state, version)),
        };
        let release = state.signed(release.as_release(), Some(signer), sequence)?;
        if version == current.version {
            current_envelope = release.envelope.clone();
        }
        state.keep(store, Some(release)).await?;
        signed.push(version.to_owned());
    }
    state
        .write_current(
            store,
            Rule {
                envelope: current_envelope,
                ..current.clone()
            },
        )
        .await?;
    Ok(signed)
}
