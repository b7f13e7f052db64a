//! fleetpack-seed: the operator's tool. Publishes binaries and rules, fills a store with
//! the demo fleet, lists rules and shows what a device would get, through the same
//! store and resolver code as the origin.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use fleetpack_resolver::{ARCHIVE_FORMAT, DeviceRequest, Rule};
use fleetpack_store::demo::{DEFAULT_DEMO_SIZE, publish_demo};
use fleetpack_store::publish::{Published, Release, build_segment, publish};
use fleetpack_store::{
    AnyStore, Created, Initialized, Store, StoreOptions, init_logging, rule_set,
};
use indicatif::{ProgressBar, ProgressStyle};

/// Publish binaries and release rules for fleetpack, and preview what devices get.
#[derive(Debug, Parser)]
#[command(
    name = "fleetpack-seed",
    version,
    max_term_width = 100,
    after_help = "Examples:\n  \
        fleetpack-seed demo\n  \
        fleetpack-seed --store aws --table ota-rules --bucket ota-binaries init\n  \
        fleetpack-seed publish ./firmware.bin --app modemFW --channel beta --version 1.1 --attr cellular\n  \
        fleetpack-seed publish ./os.img --app os_armv8 --channel prod --version 1.2.0 --cpu-arch armv8\n  \
        fleetpack-seed list\n  \
        fleetpack-seed segments\n  \
        fleetpack-seed resolve 'cpuArch=armv8&attrGamer=prod'\n\n\
        Exit status: 0 when everything worked, 1 when something failed (the rest still ran), \
        2 for bad arguments or a bad query."
)]
struct Cli {
    #[command(flatten)]
    store: StoreOptions,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the store: on AWS, a table with the AWS sample's key schema (app, env) and a
    /// bucket, for development and emulators. Existing ones are left as they are.
    Init,
    /// Publish the demo fleet: the AWS sample's nine rules, with pseudo-random binaries.
    ///
    /// Safe to run again with the same size: nothing changes.
    Demo {
        /// Size in bytes of each demo binary.
        #[arg(long, default_value_t = DEFAULT_DEMO_SIZE)]
        size: u64,
    },
    /// Publish FILE as VERSION of APP on CHANNEL.
    ///
    /// The binary is stored as `<app>_<version>` first, then the rule for APP on CHANNEL
    /// is written (replacing the previous one on that channel), so devices never see a
    /// rule without its binary. A version always names the same bytes: publishing other
    /// bytes under an existing app and version is refused.
    Publish {
        /// The binary to publish.
        file: PathBuf,
        /// App name, e.g. `os_armv8` (the OS image for cpuArch=armv8) or `scoreboard`.
        #[arg(long)]
        app: String,
        /// Channel (the table's `env`), e.g. `prod` or `beta`.
        #[arg(long)]
        channel: String,
        /// Version, e.g. `1.2.0`.
        #[arg(long)]
        version: String,
        /// CPU architecture, recorded in the rule (`cpuArch`).
        #[arg(long)]
        cpu_arch: Option<String>,
        /// Device attribute this app is for (repeatable): devices sending
        /// `attr<Name>=<channel>` get it.
        #[arg(long = "attr", value_name = "NAME")]
        attributes: Vec<String>,
        /// Mark the release as mandatory in the package metadata.
        #[arg(long)]
        mandatory: bool,
        /// Store the rule disabled: kept, but not served.
        #[arg(long)]
        disabled: bool,
    },
    /// Build the compressed segment of every rule that lacks one for the current archive
    /// format, e.g. after adopting a table made by the AWS sample. Rules without a size
    /// or a deflate level get them too (the binary is checked against the rule's MD5 on
    /// the way).
    Segments,
    /// List the stored rules, with the reason when one cannot be served.
    List {
        /// Print the rules as JSON, in the table's attribute names.
        #[arg(long)]
        json: bool,
    },
    /// Show what a device sending QUERY would get, as the origin would answer it.
    Resolve {
        /// The query string, e.g. 'cpuArch=armv8&attrGamer=prod'.
        query: String,
        /// The device's If-None-Match header: digests of binaries it already has.
        #[arg(long)]
        if_none_match: Option<String>,
    },
}

/// Outcome of a command that ran to its end.
enum Outcome {
    Success,
    /// Something failed; the reasons were printed.
    Failed,
    /// The input (query or header) was refused.
    BadInput,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging("warn");
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("fleetpack-seed: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::Failed) => ExitCode::FAILURE,
        Ok(Outcome::BadInput) => ExitCode::from(2),
        Err(error) => {
            eprintln!("fleetpack-seed: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<Outcome> {
    let choice = match cli.store.check() {
        Ok(choice) => choice,
        Err(error) => {
            eprintln!("fleetpack-seed: {error}");
            return Ok(Outcome::BadInput);
        }
    };
    let store = choice.open().await?;
    match cli.command {
        Command::Init => {
            match store.init().await? {
                Initialized::Local { root } => {
                    println!("local store ready in {}", root.display());
                }
                Initialized::Aws { table, bucket } => {
                    let said = |state| match state {
                        Created::Created => "created",
                        Created::AlreadyThere => "already there, left as it is",
                    };
                    let (table_name, bucket_name) = (
                        cli.store.table.unwrap_or_default(),
                        cli.store.bucket.unwrap_or_default(),
                    );
                    println!("table {table_name}: {}", said(table));
                    println!("bucket {bucket_name}: {}", said(bucket));
                }
            }
            Ok(Outcome::Success)
        }
        Command::Demo { size } => demo(&store, size).await,
        Command::Publish {
            file,
            app,
            channel,
            version,
            cpu_arch,
            attributes,
            mandatory,
            disabled,
        } => {
            let release = Release {
                app,
                channel,
                version,
                cpu_arch,
                attributes,
                mandatory,
                enabled: !disabled,
            };
            let size = std::fs::metadata(&file).map_or(0, |meta| meta.len());
            // Drawn only on a terminal: indicatif hides itself otherwise.
            let bar = ProgressBar::new(size).with_style(
                ProgressStyle::with_template("{bytes}/{total_bytes} {wide_bar} {eta}")
                    .expect("a valid template"),
            );
            let progress = {
                let bar = bar.clone();
                move |sent| bar.set_position(sent)
            };
            let published = publish(&store, &release, &file, &progress).await;
            bar.finish_and_clear();
            let published =
                published.with_context(|| format!("cannot publish `{}`", file.display()))?;
            report(&published);
            Ok(Outcome::Success)
        }
        Command::Segments => segments(&store).await,
        Command::List { json } => list(&store, json).await,
        Command::Resolve {
            query,
            if_none_match,
        } => resolve(&store, &query, if_none_match.as_deref()).await,
    }
}

async fn demo(store: &AnyStore, size: u64) -> anyhow::Result<Outcome> {
    let mut outcome = Outcome::Success;
    for (demo, result) in publish_demo(store, size).await? {
        match result {
            Ok(published) => report(&published),
            Err(error) => {
                eprintln!(
                    "fleetpack-seed: cannot publish {} {} on {}: {:#}",
                    demo.app,
                    demo.version,
                    demo.channel,
                    anyhow::Error::from(error)
                );
                outcome = Outcome::Failed;
            }
        }
    }
    Ok(outcome)
}

fn report(published: &Published) {
    let rule = &published.rule;
    let stored = if published.uploaded {
        "stored"
    } else {
        "already stored"
    };
    let replaced = match &published.replaced {
        Some(old) if old.version != rule.version => format!(", replacing {}", old.version),
        _ => String::new(),
    };
    println!(
        "published {} {} on {} ({} bytes, md5 {}, binary {stored}{replaced})",
        rule.app,
        rule.version,
        rule.channel,
        rule.size.unwrap_or_default(),
        rule.md5
    );
}

async fn segments(store: &AnyStore) -> anyhow::Result<Outcome> {
    let mut outcome = Outcome::Success;
    let (mut built, mut current) = (0, 0);
    for rule in store.load_rules().await? {
        if rule
            .segment
            .as_ref()
            .is_some_and(|segment| segment.format == ARCHIVE_FORMAT)
        {
            current += 1;
            continue;
        }
        match build_segment(store, &rule).await {
            Ok(_) => {
                built += 1;
                println!(
                    "built the segment of {} {} on {}",
                    rule.app, rule.version, rule.channel
                );
            }
            Err(error) => {
                outcome = Outcome::Failed;
                eprintln!(
                    "fleetpack-seed: cannot build the segment of {} {} on {}: {:#}",
                    rule.app,
                    rule.version,
                    rule.channel,
                    anyhow::Error::from(error)
                );
            }
        }
    }
    println!("{built} segments built, {current} already current");
    Ok(outcome)
}

async fn list(store: &AnyStore, json: bool) -> anyhow::Result<Outcome> {
    let mut rules = store.load_rules().await?;
    rules.sort_by(|a, b| (&a.app, &a.channel).cmp(&(&b.app, &b.channel)));
    if json {
        println!("{}", serde_json::to_string_pretty(&rules)?);
        return Ok(Outcome::Success);
    }
    let (_, rejected) = rule_set(store, rules.clone());
    let status = |rule: &Rule| {
        if !rule.enabled {
            return "disabled".to_owned();
        }
        rejected
            .iter()
            .find(|rejected| rejected.rule == *rule)
            .map_or_else(
                || "served".to_owned(),
                |rejected| format!("not served: {}", rejected.reason),
            )
    };
    println!(
        "{:<20} {:<10} {:<12} {:<8} {:<20} {:>12}  {:<32}  STATUS",
        "APP", "ENV", "VERSION", "CPUARCH", "ATTRIBUTES", "SIZE", "MD5"
    );
    for rule in &rules {
        let attributes: Vec<&str> = rule
            .device_attr
            .iter()
            .filter(|(_, on)| **on)
            .map(|(name, _)| name.as_str())
            .collect();
        println!(
            "{:<20} {:<10} {:<12} {:<8} {:<20} {:>12}  {:<32}  {}",
            rule.app,
            rule.channel,
            rule.version,
            rule.cpu_arch.as_deref().unwrap_or("-"),
            if attributes.is_empty() {
                "-".to_owned()
            } else {
                attributes.join(",")
            },
            rule.size
                .map_or_else(|| "-".to_owned(), |size| size.to_string()),
            rule.md5,
            status(rule)
        );
    }
    Ok(Outcome::Success)
}

async fn resolve(
    store: &AnyStore,
    query: &str,
    if_none_match: Option<&str>,
) -> anyhow::Result<Outcome> {
    let query = query.strip_prefix('?').unwrap_or(query);
    let device = match DeviceRequest::parse(query, if_none_match.map(str::as_bytes)) {
        Ok(device) => device,
        Err(error) => {
            eprintln!("400 Bad Request: {error}");
            return Ok(Outcome::BadInput);
        }
    };
    let (rules, rejected) = rule_set(store, store.load_rules().await?);
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
