use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use fleetpack_origin::config::{Options, ServeConfig};
use fleetpack_origin::{run, shutdown_signal};
use fleetpack_store::demo::publish_demo;
use fleetpack_store::{AnyStore, Store, StoreChoice, init_logging};

/// Blocking threads for file operations other than spliced downloads.
const BLOCKING_THREADS_BESIDES_DOWNLOADS: usize = 64;

fn main() -> ExitCode {
    let options = Options::parse();
    let (store, config) = match options.check() {
        Ok(checked) => checked,
        Err(error) => {
            eprintln!("fleetpack-origin: {error}");
            return ExitCode::from(2);
        }
    };
    init_logging("info");
    // Each spliced download holds a blocking thread while it sends; with one per
    // connection to spare, a download never waits for a thread.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(config.max_connections + BLOCKING_THREADS_BESIDES_DOWNLOADS)
        .build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("fleetpack-origin: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(store, options, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("fleetpack-origin: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(choice: StoreChoice, options: Options, config: ServeConfig) -> anyhow::Result<()> {
    let store = choice.open().await?;
    if options.demo {
        fill_demo(&store, options.demo_size).await?;
    }
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("cannot listen on {}", options.listen))?;
    let address = listener.local_addr()?;
    // Tests and scripts read this line to find the port when listening on port 0.
    println!("fleetpack-origin listening on http://{address}");
    if options.demo {
        print_examples(&store, address).await?;
    }
    run(listener, store, config, shutdown_signal()).await?;
    Ok(())
}

async fn fill_demo(store: &AnyStore, size: u64) -> anyhow::Result<()> {
    if !store.load_rules().await?.is_empty() {
        tracing::info!(store = %store.describe(), "the store already has rules; serving them instead of a new demo fleet");
        return Ok(());
    }
    let outcomes = publish_demo(store, size)
        .await
        .context("cannot publish the demo fleet")?;
    let rules = outcomes.len();
    for (demo, outcome) in outcomes {
        outcome
            .with_context(|| format!("cannot publish demo app {} {}", demo.app, demo.version))?;
    }
    tracing::info!(rules, size, "demo fleet published");
    Ok(())
}

async fn print_examples(store: &AnyStore, address: SocketAddr) -> anyhow::Result<()> {
    let rules = store.load_rules().await?;
    let os_md5 = rules
        .current
        .iter()
        .find(|rule| rule.app == "os_armv8" && rule.channel == "prod")
        .map_or("<md5 of os_armv8>", |rule| rule.md5.as_str());
    let base = format!("http://{address}/package");
    println!(
        "\nTry the AWS sample's requests:\n\
         \x20 curl -sS '{base}?cpuArch=armv8&payloadType=metadataOnly'\n\
         \x20 curl -sS '{base}?cpuArch=armv8&os=beta&payloadType=metadataOnly'\n\
         \x20 curl -sS -o ota-package.tar.gz '{base}?cpuArch=armv8&attrGamer=prod'\n\
         \x20 curl -sS -o ota-package.tar.gz '{base}?cpuArch=armv8&attrGamer=prod&attrCellular=prod' && tar -tzvf ota-package.tar.gz\n\
         Leave out the OS image the device already has (its MD5 in If-None-Match):\n\
         \x20 curl -sS -H 'If-None-Match: {os_md5}' '{base}?cpuArch=armv8&attrGamer=prod&attrCellular=prod&payloadType=metadataOnly'\n"
    );
    Ok(())
}
