//! Releases over time: `history`, `rollback`, `disable`, `enable`, `promote` and
//! `rollout`, each printing what the channel serves before and after, and saying
//! whether what devices get changed (for the CDN's invalidation).

use fleetpack_resolver::Rule;
use fleetpack_store::releases::{self, Changed, Channel, ReleaseError, Signer};
use fleetpack_store::{AnyStore, Store, rule_set};

use crate::preview::joined_or_dash;
use crate::{Outcome, Ran};

pub async fn history(
    store: &AnyStore,
    app: &str,
    channel: &str,
    json: bool,
) -> anyhow::Result<Outcome> {
    let stored = store.load_rules().await?;
    let state = Channel::of(&stored, app, channel);
    if state.history.is_empty() {
        eprintln!(
            "fleetpack-seed: {}",
            ReleaseError::NoChannel {
                app: app.to_owned(),
                channel: channel.to_owned(),
            }
        );
        return Ok(Outcome::Failed);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&state.history)?);
        return Ok(Outcome::Success);
    }
    let (rules, _) = rule_set(store, stored).await?;
    let serving = rules.get(app, channel).map(|rule| rule.version.clone());
    let current = state.current.as_ref();
    let rollout = current.and_then(|rule| rule.rollout.as_ref());
    println!(
        "{:<4} {:<16} {:<21} {:<20} {:<24} FLAGS",
        "SEQ", "VERSION", "CREATED", "STATE", "ROLLOUT"
    );
    for release in &state.history {
        let mut states = Vec::new();
        if serving.as_deref() == Some(release.version.as_str()) {
            states.push("current");
            if current.is_some_and(|rule| rule.rolled_back) {
                states.push("rolled back");
            }
        }
        if !release.enabled {
            states.push("disabled");
        }
        let in_rollout = rollout.filter(|rollout| rollout.version == release.version);
        if in_rollout.is_some() {
            states.push("candidate");
        }
        let rollout_text = match in_rollout {
            Some(rollout) if rollout.percent == 0 => "halted at 0%".to_owned(),
            Some(rollout) => format!("{}% of devices", rollout.percent),
            None => "-".to_owned(),
        };
        let mut flags = Vec::new();
        if release.mandatory {
            flags.push("mandatory");
        }
        if release.required {
            flags.push("required");
        }
        println!(
            "{:<4} {:<16} {:<21} {:<20} {:<24} {}",
            release
                .sequence
                .map_or_else(|| "-".to_owned(), |sequence| sequence.to_string()),
            release.version,
            release.created_at.as_deref().unwrap_or("-"),
            joined_or_dash(&states, ", "),
            rollout_text,
            joined_or_dash(&flags, ", ")
        );
    }
    Ok(Outcome::Success)
}

pub async fn rollback(
    store: &AnyStore,
    app: &str,
    channel: &str,
    to: Option<&str>,
    signer: Option<&Signer>,
) -> anyhow::Result<Ran> {
    report(
        app,
        channel,
        releases::rollback(store, app, channel, to, signer).await,
    )
}

pub async fn set_enabled(
    store: &AnyStore,
    app: &str,
    channel: &str,
    version: &str,
    enabled: bool,
) -> anyhow::Result<Ran> {
    // The flag of a release in the history changes answers even when the current
    // release stays: the releases a device passes on its way (mandatory, required)
    // are the enabled ones. Unknown counts as changed.
    let was_enabled = store.load_rules().await.ok().and_then(|stored| {
        Channel::of(&stored, app, channel)
            .release(version)
            .map(|release| release.enabled)
    });
    let changed = releases::set_enabled(store, app, channel, version, enabled).await;
    if changed.is_ok() {
        let state = if enabled { "enabled" } else { "disabled" };
        println!("{app} {version} on {channel} {state}");
    }
    let ran = report(app, channel, changed)?;
    Ok(Ran {
        served_changed: ran.served_changed
            || (ran.outcome == Outcome::Success && was_enabled != Some(enabled)),
        ..ran
    })
}

pub async fn promote(
    store: &AnyStore,
    app: &str,
    from: &str,
    to: &str,
    version: Option<&str>,
    rollout: Option<u8>,
    signer: Option<&Signer>,
) -> anyhow::Result<Ran> {
    report(
        app,
        to,
        releases::promote(store, app, from, to, version, rollout, signer).await,
    )
}

pub async fn rollout(
    store: &AnyStore,
    app: &str,
    channel: &str,
    percent: u8,
) -> anyhow::Result<Ran> {
    report(
        app,
        channel,
        releases::set_rollout(store, app, channel, percent).await,
    )
}

/// Prints what the channel serves after an action, or why it failed. What devices get
/// changed when the channel's current release did.
pub fn report(
    app: &str,
    channel: &str,
    changed: Result<Changed, ReleaseError>,
) -> anyhow::Result<Ran> {
    let changed = match changed {
        Ok(changed) => changed,
        Err(ReleaseError::Store(error)) => return Err(error.into()),
        Err(error) => {
            eprintln!("fleetpack-seed: {error}");
            return Ok(Ran::same(Outcome::Failed));
        }
    };
    let describe = |rule: &Option<Rule>| match rule {
        None => "nothing".to_owned(),
        Some(rule) => {
            let mut text = rule.version.clone();
            if !rule.enabled {
                text.push_str(" (disabled)");
            }
            if rule.rolled_back {
                text.push_str(" (rolled back)");
            }
            if let Some(rollout) = &rule.rollout {
                text.push_str(&format!(
                    ", {} to {}% of devices",
                    rollout.version, rollout.percent
                ));
            }
            text
        }
    };
    if changed.before == changed.after {
        println!(
            "{app} on {channel} serves {}, as before",
            describe(&changed.after)
        );
    } else {
        println!(
            "{app} on {channel} serves {} (was {})",
            describe(&changed.after),
            describe(&changed.before)
        );
    }
    Ok(Ran {
        outcome: Outcome::Success,
        served_changed: serves_differently(&changed),
    })
}

/// Whether the channel's current release changed in a way devices can see: not when
/// only its revision (every write bumps it) or the requirement of signatures (which
/// binds publishers) changed.
pub fn serves_differently(changed: &Changed) -> bool {
    let seen = |rule: &Option<Rule>| {
        rule.clone().map(|rule| Rule {
            revision: None,
            signatures_required: false,
            ..rule
        })
    };
    seen(&changed.before) != seen(&changed.after)
}
