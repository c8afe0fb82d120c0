//! `kube-standin --listen 127.0.0.1:0 [--pods N] [--pods-namespace NS] [--minor 33] [--port-file PATH]`
//!
//! Serves the demo cluster until SIGTERM or SIGINT. Prints the bound address,
//! and with `--port-file` writes `host:port` there once listening.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use kube_standin::{StandIn, Store};

const USAGE: &str = "usage: kube-standin [--listen ADDR] [--pods N] [--pods-namespace NS] [--minor N] [--port-file PATH]";

struct Options {
    listen: SocketAddr,
    pods: usize,
    pods_namespace: String,
    minor: u32,
    port_file: Option<PathBuf>,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> anyhow::Result<Options> {
    let mut options = Options {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        pods: 0,
        pods_namespace: "load".into(),
        minor: 33,
        port_file: None,
    };
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--listen" => {
                options.listen = value.parse().with_context(|| format!("--listen {value}"))?
            }
            "--pods" => options.pods = value.parse().with_context(|| format!("--pods {value}"))?,
            "--pods-namespace" => options.pods_namespace = value,
            "--minor" => {
                options.minor = value.parse().with_context(|| format!("--minor {value}"))?
            }
            "--port-file" => options.port_file = Some(PathBuf::from(value)),
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    Ok(options)
}

fn main() -> anyhow::Result<()> {
    let options = parse_args(std::env::args().skip(1))?;
    let mut store = Store::demo().with_version_minor(options.minor);
    if options.pods > 0 {
        store
            .add_pods(&options.pods_namespace, options.pods)
            .map_err(|status| anyhow::anyhow!("--pods-namespace: {}", status.message))?;
    }
    let server = StandIn::start(store, options.listen)?;
    let addr = server.addr();
    if let Some(path) = &options.port_file {
        // Write then rename, so a reader never sees a partial address.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, addr.to_string())
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    }
    println!("kube-standin listening on http://{addr}");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        anyhow::Ok(())
    })?;
    drop(server);
    Ok(())
}
