//! fleetpack-seed: the operator's tool. Publishes binaries and rules, manages releases
//! over time (history, rollback, staged rollouts), fills a store with the demo fleet,
//! and shows what a device would get, through the same store and resolver code as the
//! origin.

mod channels;
mod invalidate;
mod keys;
mod preview;
mod publishing;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use fleetpack_store::demo::DEFAULT_DEMO_SIZE;
use fleetpack_store::{AnyStore, Created, Initialized, StoreOptions, StoreTimeouts, init_logging};

use crate::invalidate::{Distribution, PACKAGE_PATHS};

const EXIT_STATUS: &str = "Exit status: 0 when everything worked, 1 when something failed \
    (the rest still ran; a conflict with another operator says to run again), 2 for bad \
    arguments or a bad query.";

/// Publish binaries and release rules for fleetpack, manage releases over time, and
/// preview what devices get.
#[derive(Debug, Parser)]
#[command(
    name = "fleetpack-seed",
    version,
    max_term_width = 100,
    after_help = "Examples:\n  \
        fleetpack-seed demo\n  \
        fleetpack-seed --store aws --table ota-rules --bucket ota-binaries init\n  \
        fleetpack-seed publish ./os.img --app os_armv8 --channel prod --version 1.2.0 --cpu-arch armv8 --rollout 5\n  \
        fleetpack-seed rollout --app os_armv8 --channel prod --percent 25\n  \
        fleetpack-seed history --app os_armv8 --channel prod\n  \
        fleetpack-seed rollback --app os_armv8 --channel prod\n  \
        fleetpack-seed promote --app modemFW --from beta --to prod\n  \
        fleetpack-seed list\n  \
        fleetpack-seed resolve 'cpuArch=armv8&attrGamer=prod' --device-key 3f9c2a\n  \
        fleetpack-seed --store aws --table ota-rules --bucket ota-binaries --distribution-id E2QWRUHAPOMQZL publish ...\n\n\
        Exit status: 0 when everything worked, 1 when something failed (the rest still ran), \
        2 for bad arguments or a bad query."
)]
struct Cli {
    #[command(flatten)]
    store: StoreOptions,

    /// The CloudFront distribution in front of the origin (the stack's DistributionId
    /// output). Every command that changes what devices get (publish, demo, segments,
    /// rollback, disable, enable, promote, rollout, resign) then creates one invalidation
    /// of `/package*` after the change; a change that fails to invalidate exits 1 and
    /// says how to invalidate by hand.
    #[arg(long, env = "FLEETPACK_DISTRIBUTION_ID", value_name = "ID")]
    distribution_id: Option<String>,

    /// How long a change waits before its invalidation, so that every origin task has
    /// loaded it when CloudFront asks again (an origin still on the old rules would
    /// give CloudFront the old packages to keep): the origins' rules refresh interval
    /// (the template's RulesRefresh, 30s) plus the time a refresh takes.
    #[arg(
        long,
        env = "FLEETPACK_INVALIDATION_DELAY",
        value_name = "DURATION",
        default_value = "40s"
    )]
    invalidation_delay: humantime::Duration,

    #[command(subcommand)]
    command: Command,
}

/// How a release is signed, when it is.
#[derive(Debug, Args)]
struct Signing {
    /// Sign the release's statement with this private key (PKCS#8 PEM, as `keygen`
    /// writes it); devices that verify refuse unsigned releases.
    #[arg(long, value_name = "FILE")]
    signing_key: Option<PathBuf>,
    /// How long the signed statement stays valid; `resign` renews it.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "30d",
        requires = "signing_key"
    )]
    expires_in: humantime::Duration,
}

/// Public keys a verifier trusts.
#[derive(Debug, Args)]
struct Trust {
    /// A trusted public key (64 hex digits, as `keygen` writes it); repeat it to accept
    /// several during a key rotation.
    #[arg(long = "public-key", value_name = "FILE", required = true)]
    public_keys: Vec<PathBuf>,
    /// Refuse statements with a lower sequence: the highest the device has seen.
    #[arg(long, value_name = "N", default_value_t = 0)]
    min_sequence: u64,
}

/// An app on a channel.
#[derive(Debug, Args)]
struct Slot {
    /// App name, e.g. `os_armv8` (the OS image for cpuArch=armv8) or `scoreboard`.
    #[arg(long)]
    app: String,
    /// Channel (the table's `env`), e.g. `prod` or `beta`.
    #[arg(long)]
    channel: String,
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
    /// The binary is stored as `<app>_<version>` first, then the release joins the
    /// channel's history and becomes its current release (or, with --rollout, the
    /// candidate for a share of devices), so devices never see a rule without its
    /// binary. A version always names the same bytes: publishing other bytes under an
    /// existing app and version is refused. Every earlier release stays in the history.
    #[command(after_help = format!("Examples:\n  \
        fleetpack-seed publish ./modem.bin --app modemFW --channel beta --version 1.1 --attr cellular\n  \
        fleetpack-seed publish ./os.img --app os_armv8 --channel prod --version 1.2.0 --cpu-arch armv8 --rollout 5\n  \
        fleetpack-seed publish ./os.img --app os_armv8 --channel prod --version 1.1.5 --required --mandatory\n\n{EXIT_STATUS}"))]
    Publish {
        /// The binary to publish.
        file: PathBuf,
        #[command(flatten)]
        slot: Slot,
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
        /// Mark the release as mandatory: devices that skip it are told their update is
        /// mandatory too.
        #[arg(long)]
        mandatory: bool,
        /// Mark the release as required: devices below it get it before anything newer.
        #[arg(long)]
        required: bool,
        /// Keep the release in the history, disabled: never served until enabled.
        #[arg(long)]
        disabled: bool,
        /// Serve the release to PERCENT of the devices that send a `deviceKey`, and the
        /// current release to the rest; `rollout` raises, halts or completes it.
        #[arg(long, value_name = "PERCENT", value_parser = clap::value_parser!(u8).range(0..=100))]
        rollout: Option<u8>,
        #[command(flatten)]
        signing: Signing,
    },
    /// Build the compressed segment of every rule (current releases and history entries)
    /// that lacks one for the current archive format, e.g. after adopting a table made
    /// by the AWS sample. Rules without a size or a deflate level get them too (the
    /// binary is checked against the rule's MD5 on the way).
    Segments,
    /// List the current release of every app and channel, with the reason when one
    /// cannot be served and the rollout in progress.
    List {
        /// Print the rules as JSON, in the table's attribute names.
        #[arg(long)]
        json: bool,
    },
    /// Show every release of APP on CHANNEL, in publishing order: version, when it was
    /// published, its state (current, candidate, disabled, ...) and flags.
    #[command(after_help = format!("Examples:\n  \
        fleetpack-seed history --app os_armv8 --channel prod\n  \
        fleetpack-seed history --app os_armv8 --channel prod --json\n\n{EXIT_STATUS}"))]
    History {
        #[command(flatten)]
        slot: Slot,
        /// Print the releases as JSON, in the table's attribute names.
        #[arg(long)]
        json: bool,
    },
    /// Serve an earlier release of APP on CHANNEL again, without the file at hand.
    ///
    /// Without --to, the enabled release published last before the current one. Devices
    /// that run a newer version take the older one too: the release is marked as rolled
    /// back on purpose. A rollout in progress ends.
    #[command(after_help = format!("Examples:\n  \
        fleetpack-seed rollback --app os_armv8 --channel prod\n  \
        fleetpack-seed rollback --app os_armv8 --channel prod --to 1.1.0\n\n{EXIT_STATUS}"))]
    Rollback {
        #[command(flatten)]
        slot: Slot,
        /// The version to serve.
        #[arg(long, value_name = "VERSION")]
        to: Option<String>,
        /// On a signed channel, sign the release again with a new sequence: devices
        /// refuse a statement older than one they saw.
        #[command(flatten)]
        signing: Signing,
    },
    /// Disable release VERSION of APP on CHANNEL: kept, never served. A disabled
    /// current release gives way to the enabled release published last before it; a
    /// disabled rollout candidate ends its rollout. Devices that run it keep it.
    #[command(after_help = format!("Examples:\n  \
        fleetpack-seed disable --app os_armv8 --channel prod --version 1.2.0\n\n{EXIT_STATUS}"))]
    Disable {
        #[command(flatten)]
        slot: Slot,
        #[arg(long)]
        version: String,
    },
    /// Enable release VERSION of APP on CHANNEL again. What the channel serves stays as
    /// it is; `rollback --to VERSION` serves it.
    #[command(after_help = format!("Examples:\n  \
        fleetpack-seed enable --app os_armv8 --channel prod --version 1.2.0\n\n{EXIT_STATUS}"))]
    Enable {
        #[command(flatten)]
        slot: Slot,
        #[arg(long)]
        version: String,
    },
    /// Publish a release of APP on channel FROM to channel TO: the same bytes, no
    /// upload. Without --version, the release FROM serves.
    #[command(after_help = format!("Examples:\n  \
        fleetpack-seed promote --app modemFW --from beta --to prod\n  \
        fleetpack-seed promote --app os_armv8 --from beta --to prod --version 2.0.0 --rollout 10\n\n{EXIT_STATUS}"))]
    Promote {
        #[arg(long)]
        app: String,
        #[arg(long, value_name = "CHANNEL")]
        from: String,
        #[arg(long, value_name = "CHANNEL")]
        to: String,
        #[arg(long)]
        version: Option<String>,
        /// Stage it: serve it to PERCENT of the devices that send a `deviceKey`.
        #[arg(long, value_name = "PERCENT", value_parser = clap::value_parser!(u8).range(0..=100))]
        rollout: Option<u8>,
        #[command(flatten)]
        signing: Signing,
    },
    /// Set the share of devices that take the candidate of APP's rollout on CHANNEL.
    ///
    /// 0 halts the rollout (everyone on the current release; raise it again to resume
    /// with the same devices), 100 completes it (the candidate becomes the current
    /// release). Raising the percent only adds devices.
    #[command(after_help = format!("Examples:\n  \
        fleetpack-seed rollout --app os_armv8 --channel prod --percent 25\n  \
        fleetpack-seed rollout --app os_armv8 --channel prod --percent 0\n  \
        fleetpack-seed rollout --app os_armv8 --channel prod --percent 100\n\n{EXIT_STATUS}"))]
    Rollout {
        #[command(flatten)]
        slot: Slot,
        #[arg(long, value_parser = clap::value_parser!(u8).range(0..=100))]
        percent: u8,
    },
    /// Make a key pair for signing releases: DIR/release.key (private, PKCS#8 PEM, mode
    /// 0600: keep it offline) and DIR/release.pub (the public key, 64 hex digits, for
    /// devices). Prints the key id devices see in envelopes.
    #[command(after_help = format!("Examples:\n  \
        fleetpack-seed keygen --out ./keys\n\n{EXIT_STATUS}"))]
    Keygen {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Sign a new statement (new sequence, new expiry) for every release the channels
    /// serve: run it on a schedule, well before statements expire.
    #[command(after_help = format!("Examples:\n  \
        fleetpack-seed resign --signing-key ./keys/release.key --expires-in 30d\n\n{EXIT_STATUS}"))]
    Resign {
        #[arg(long, value_name = "FILE")]
        signing_key: PathBuf,
        #[arg(long, value_name = "DURATION", default_value = "30d")]
        expires_in: humantime::Duration,
    },
    /// Require signed releases on APP's CHANNEL (or no longer, with --off): publishing,
    /// promoting or rolling back there without --signing-key is then refused.
    #[command(after_help = format!("Examples:\n  \
        fleetpack-seed require-signatures --app os_armv8 --channel prod\n  \
        fleetpack-seed require-signatures --app os_armv8 --channel prod --off\n\n{EXIT_STATUS}"))]
    RequireSignatures {
        #[command(flatten)]
        slot: Slot,
        #[arg(long)]
        off: bool,
    },
    /// Check a downloaded package as a device would: every binary against its signed
    /// statement (key, signature, app, channel, version, SHA-256, size, expiry,
    /// sequence).
    #[command(after_help = format!("Examples:\n  \
        fleetpack-seed verify ota-package.tar.gz --public-key ./keys/release.pub\n  \
        fleetpack-seed verify ota-package.tar.gz --public-key old.pub --public-key new.pub --min-sequence 12\n\n{EXIT_STATUS}"))]
    Verify {
        package: PathBuf,
        #[command(flatten)]
        trust: Trust,
    },
    /// Check a metadata-only answer (package_details.json) as a device would.
    #[command(after_help = format!("Examples:\n  \
        fleetpack-seed verify-metadata details.json --public-key ./keys/release.pub\n\n{EXIT_STATUS}"))]
    VerifyMetadata {
        metadata: PathBuf,
        #[command(flatten)]
        trust: Trust,
    },
    /// Create one CloudFront invalidation of `/package*` on --distribution-id now.
    ///
    /// Commands that change what devices get invalidate by themselves; run this when
    /// their invalidation failed (their message says so), or after changing the store
    /// by other means, once the origins have loaded the change (RulesRefresh).
    #[command(after_help = format!("Examples:\n  \
        fleetpack-seed --distribution-id E2QWRUHAPOMQZL invalidate\n\n{EXIT_STATUS}"))]
    Invalidate,
    /// Print the state of the rollouts in progress for the CDN's cache key function:
    /// the value of the template's `RolloutState` parameter.
    ///
    /// The CDN puts each device that sends a `deviceKey` in the cohorts of the
    /// rollouts it takes part in, so that the key itself never splits the cache. After
    /// each change of a rollout (publish or promote with --rollout, rollout, rollback,
    /// disable), deploy the stack with this value; until then the CDN keeps the
    /// previous shares.
    #[command(after_help = format!("Examples:\n  \
        fleetpack-seed --store aws --table ota-rules --bucket ota-binaries cdn-state\n  \
        aws cloudformation deploy --stack-name fleetpack --template-file cloudformation/fleetpack.yaml \\\n    \
        --parameter-overrides RolloutState=\"$(fleetpack-seed --store aws --table ota-rules --bucket ota-binaries cdn-state)\"\n\n{EXIT_STATUS}"))]
    CdnState,
    /// Show what a device sending QUERY would get, as the origin would answer it.
    #[command(after_help = format!("Examples:\n  \
        fleetpack-seed resolve 'cpuArch=armv8&attrGamer=prod'\n  \
        fleetpack-seed resolve 'cpuArch=armv8' --device-key 3f9c2a --if-none-match '<md5 of what it runs>'\n\n{EXIT_STATUS}"))]
    Resolve {
        /// The query string, e.g. 'cpuArch=armv8&attrGamer=prod'.
        query: String,
        /// The device's If-None-Match header: digests of binaries it already has.
        #[arg(long)]
        if_none_match: Option<String>,
        /// The device's rollout key, as it sends it in `deviceKey=`.
        #[arg(long)]
        device_key: Option<String>,
    },
}

/// Outcome of a command that ran to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Success,
    /// Something failed; the reasons were printed.
    Failed,
    /// The input (query or header) was refused.
    BadInput,
}

/// What a command that may write the store did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ran {
    outcome: Outcome,
    /// Devices may now get other answers than before (other bytes, headers or
    /// ETags): packages the CDN keeps are stale.
    served_changed: bool,
}

impl Ran {
    /// Nothing a device gets changed.
    fn same(outcome: Outcome) -> Self {
        Ran {
            outcome,
            served_changed: false,
        }
    }
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
    // Commands on files, without a store.
    match &cli.command {
        Command::Keygen { out } => return keys::keygen(out),
        Command::Verify { package, trust } => {
            return verify::package(package, &trust.public_keys, trust.min_sequence);
        }
        Command::VerifyMetadata { metadata, trust } => {
            return verify::metadata(metadata, &trust.public_keys, trust.min_sequence);
        }
        _ => {}
    }
    let distribution = match &cli.distribution_id {
        None => None,
        Some(id) => {
            let timeouts = StoreTimeouts {
                connect: *cli.store.store_connect_timeout,
                call: *cli.store.store_timeout,
            };
            match Distribution::connect(id, timeouts).await {
                Ok(distribution) => Some(distribution),
                Err(error) => {
                    eprintln!("fleetpack-seed: {error}");
                    return Ok(Outcome::BadInput);
                }
            }
        }
    };
    if let Command::Invalidate = cli.command {
        let Some(distribution) = &distribution else {
            eprintln!(
                "fleetpack-seed: invalidate needs --distribution-id (or FLEETPACK_DISTRIBUTION_ID): the CloudFront distribution in front of the origin"
            );
            return Ok(Outcome::BadInput);
        };
        return Ok(invalidate(distribution, None).await);
    }
    let choice = match cli.store.check() {
        Ok(choice) => choice,
        Err(error) => {
            eprintln!("fleetpack-seed: {error}");
            return Ok(Outcome::BadInput);
        }
    };
    let store = choice.open().await?;
    let delay = *cli.invalidation_delay;
    let ran = run_on_store(cli, &store).await?;
    match &distribution {
        Some(distribution) if ran.served_changed => {
            if !delay.is_zero() {
                println!(
                    "waiting {} for the origin tasks to load the change (--invalidation-delay), then invalidating {PACKAGE_PATHS}",
                    humantime::format_duration(delay)
                );
                tokio::time::sleep(delay).await;
            }
            Ok(invalidate(distribution, Some(ran.outcome)).await)
        }
        _ => Ok(ran.outcome),
    }
}

/// Creates the invalidation of the packages: on its own (`invalidate`), or after a
/// command that changed what devices get ended with `after_change`. A change stays when
/// its invalidation fails; the message says how to invalidate by hand.
async fn invalidate(distribution: &Distribution, after_change: Option<Outcome>) -> Outcome {
    match distribution.invalidate_packages().await {
        Ok(id) => {
            println!(
                "invalidation {id} of {PACKAGE_PATHS} created on CloudFront distribution {}: cached packages are dropped within minutes",
                distribution.id()
            );
            after_change.unwrap_or(Outcome::Success)
        }
        Err(error) => {
            if after_change.is_some() {
                eprintln!(
                    "fleetpack-seed: the store change is kept, but CloudFront may serve the previous packages until they expire: {error}"
                );
            } else {
                eprintln!("fleetpack-seed: {error}");
            }
            Outcome::Failed
        }
    }
}

/// Runs a command on the store; says whether it changed what devices get.
async fn run_on_store(cli: Cli, store: &AnyStore) -> anyhow::Result<Ran> {
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
            Ok(Ran::same(Outcome::Success))
        }
        Command::Demo { size } => publishing::demo(store, size).await,
        Command::Publish {
            file,
            slot,
            version,
            cpu_arch,
            attributes,
            mandatory,
            required,
            disabled,
            rollout,
            signing,
        } => {
            let signer = keys::signer(signing.signing_key.as_deref(), signing.expires_in)?;
            let release = fleetpack_store::publish::Release {
                app: slot.app,
                channel: slot.channel,
                version,
                cpu_arch,
                attributes,
                mandatory,
                required,
                enabled: !disabled,
                rollout,
            };
            publishing::publish(store, &release, &file, signer.as_ref()).await
        }
        Command::Segments => publishing::segments(store).await,
        Command::List { json } => preview::list(store, json).await.map(Ran::same),
        Command::CdnState => preview::cdn_state(store).await.map(Ran::same),
        Command::History { slot, json } => channels::history(store, &slot.app, &slot.channel, json)
            .await
            .map(Ran::same),
        Command::Rollback { slot, to, signing } => {
            let signer = keys::signer(signing.signing_key.as_deref(), signing.expires_in)?;
            channels::rollback(
                store,
                &slot.app,
                &slot.channel,
                to.as_deref(),
                signer.as_ref(),
            )
            .await
        }
        Command::Disable { slot, version } => {
            channels::set_enabled(store, &slot.app, &slot.channel, &version, false).await
        }
        Command::Enable { slot, version } => {
            channels::set_enabled(store, &slot.app, &slot.channel, &version, true).await
        }
        Command::Promote {
            app,
            from,
            to,
            version,
            rollout,
            signing,
        } => {
            let signer = keys::signer(signing.signing_key.as_deref(), signing.expires_in)?;
            channels::promote(
                store,
                &app,
                &from,
                &to,
                version.as_deref(),
                rollout,
                signer.as_ref(),
            )
            .await
        }
        Command::Resign {
            signing_key,
            expires_in,
        } => {
            let signer = keys::signer(Some(&signing_key), expires_in)?;
            keys::resign(store, signer.as_ref().expect("a key was given")).await
        }
        Command::RequireSignatures { slot, off } => {
            keys::require_signatures(store, &slot.app, &slot.channel, !off).await
        }
        Command::Keygen { .. }
        | Command::Verify { .. }
        | Command::VerifyMetadata { .. }
        | Command::Invalidate => {
            unreachable!("answered above, without a store")
        }
        Command::Rollout { slot, percent } => {
            channels::rollout(store, &slot.app, &slot.channel, percent).await
        }
        Command::Resolve {
            query,
            if_none_match,
            device_key,
        } => preview::resolve(
            store,
            &query,
            if_none_match.as_deref(),
            device_key.as_deref(),
        )
        .await
        .map(Ran::same),
    }
}
