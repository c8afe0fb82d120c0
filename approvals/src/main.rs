//! `gatehouse-approvals --config FILE [--listen ADDR] [--port-file FILE]`
//!
//! Runs the approval service. `--listen` overrides the configured address (so
//! replicas share one file); `--port-file` receives the bound address once
//! the database is migrated and the port is open.

use std::process::ExitCode;

const USAGE: &str =
    "usage: gatehouse-approvals --config FILE [--listen HOST:PORT] [--port-file FILE]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let option = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let Some(path) =
        option("--config").or_else(|| std::env::var("GATEHOUSE_APPROVALS_CONFIG").ok())
    else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let json = match std::fs::read(&path) {
        Ok(json) => json,
        Err(e) => {
            eprintln!("gatehouse-approvals: reading {path}: {e}");
            return ExitCode::from(2);
        }
    };
    let mut config = match gatehouse_approvals::config::Config::from_json(&json) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("gatehouse-approvals: {path}: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(listen) = option("--listen") {
        match listen.parse() {
            Ok(address) => config.listen = address,
            Err(e) => {
                eprintln!("gatehouse-approvals: --listen {listen}: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("gatehouse-approvals: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let (address, serving) = match gatehouse_approvals::start(config).await {
            Ok(started) => started,
            Err(e) => {
                eprintln!("gatehouse-approvals: {e}");
                return ExitCode::FAILURE;
            }
        };
        eprintln!("gatehouse-approvals: listening on http://{address}");
        if let Some(file) = option("--port-file")
            && let Err(e) = std::fs::write(&file, address.to_string())
        {
            eprintln!("gatehouse-approvals: writing {file}: {e}");
            return ExitCode::FAILURE;
        }
        serving.await;
        ExitCode::SUCCESS
    })
}
