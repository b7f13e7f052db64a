//! What the store holds and what devices get: `list` and `resolve`, through the same
//! rule set and answer path as the origin.

use fleetpack_resolver::{DeviceRequest, RolloutState, Rule};
use fleetpack_store::{AnyStore, Store, rule_set};

use crate::Outcome;

pub async fn list(store: &AnyStore, json: bool) -> anyhow::Result<Outcome> {
    let stored = store.load_rules().await?;
    let mut rules = stored.current.clone();
    rules.sort_by(|a, b| (&a.app, &a.channel).cmp(&(&b.app, &b.channel)));
    if json {
        println!("{}", serde_json::to_string_pretty(&rules)?);
        return Ok(Outcome::Success);
    }
    let (served, rejected) = rule_set(store, stored).await?;
    let status = |rule: &Rule| {
        if let Some(rejected) = rejected.iter().find(|rejected| rejected.rule == *rule) {
            return format!("not served: {}", rejected.reason);
        }
        match served.get(&rule.app, &rule.channel) {
            Some(serving) if serving.version == rule.version => "served".to_owned(),
            Some(serving) => format!("disabled; serving {}", serving.version),
            None => "disabled".to_owned(),
        }
    };
    println!(
        "{:<20} {:<10} {:<12} {:<8} {:<20} {:>12}  {:<32}  {:<16}  STATUS",
        "APP", "ENV", "VERSION", "CPUARCH", "ATTRIBUTES", "SIZE", "MD5", "ROLLOUT"
    );
    for rule in &rules {
        let attributes: Vec<&str> = rule
            .device_attr
            .iter()
            .filter(|(_, on)| **on)
            .map(|(name, _)| name.as_str())
            .collect();
        let rollout = rule.rollout.as_ref().map_or_else(
            || "-".to_owned(),
            |rollout| format!("{} at {}%", rollout.version, rollout.percent),
        );
        println!(
            "{:<20} {:<10} {:<12} {:<8} {:<20} {:>12}  {:<32}  {:<16}  {}",
            rule.app,
            rule.channel,
            rule.version,
            rule.cpu_arch.as_deref().unwrap_or("-"),
            joined_or_dash(&attributes, ","),
            rule.size
                .map_or_else(|| "-".to_owned(), |size| size.to_string()),
            rule.md5,
            rollout,
            status(rule)
        );
    }
    Ok(Outcome::Success)
}

pub async fn cdn_state(store: &AnyStore) -> anyhow::Result<Outcome> {
    let (rules, _) = rule_set(store, store.load_rules().await?).await?;
    // A rollout at 100% is complete once `rollout` says so: only shares below it split
    // devices into cohorts.
    let state: Vec<&RolloutState> = rules
        .rollouts()
        .filter(|rollout| rollout.percent < 100)
        .collect();
    println!("{}", serde_json::to_string(&state)?);
    Ok(Outcome::Success)
}

pub async fn resolve(
    store: &AnyStore,
    query: &str,
    if_none_match: Option<&str>,
    device_key: Option<&str>,
) -> anyhow::Result<Outcome> {
    let query = query.strip_prefix('?').unwrap_or(query);
    // The key travels in the query, as a device sends it.
    let query = match device_key {
        Some(key) => format!("{query}&deviceKey={key}"),
        None => query.to_owned(),
    };
    let device = match DeviceRequest::parse(&query, if_none_match.map(str::as_bytes)) {
        Ok(device) => device,
        Err(error) => {
            eprintln!("400 Bad Request: {error}");
            return Ok(Outcome::BadInput);
        }
    };
    let (rules, rejected) = rule_set(store, store.load_rules().await?).await?;
    for rejected in &rejected {
        eprintln!(
            "note: rule {} on {} is not served: {}",
            rejected.rule.app, rejected.rule.channel, rejected.reason
        );
    }
    let plan = match rules.answer(&device) {
        Ok(plan) => plan,
        Err(error) => {
            eprintln!("404 Not Found: {error}");
            return Ok(Outcome::Failed);
        }
    };
    if plan.is_not_modified() {
        println!("304 Not Modified, ETag {}", plan.etag());
        return Ok(Outcome::Success);
    }
    let files: Vec<String> = plan.to_send().map(|entry| entry.file_name()).collect();
    println!("200 OK ({}), ETag {}", plan.payload().as_str(), plan.etag());
    println!(
        "binaries sent: {}",
        if files.is_empty() {
            "none".to_owned()
        } else {
            files.join(", ")
        }
    );
    print!("{}", String::from_utf8_lossy(plan.details_json()));
    Ok(Outcome::Success)
}

/// `items` joined by `separator` for a table cell, `-` when there are none.
pub fn joined_or_dash(items: &[&str], separator: &str) -> String {
    if items.is_empty() {
        "-".to_owned()
    } else {
        items.join(separator)
    }
}
