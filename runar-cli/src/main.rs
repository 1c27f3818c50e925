//! `runar`: see into a live Runar mesh. It joins the network as a transient node (it hosts
//! nothing and serves no introspection, so no one routes calls to it), reads what the nodes
//! serve from their built-in `$runar` service, and converts JSON ⇄ protobuf with the schemas
//! they serve: no local `.proto` is needed.
//!
//! Errors print the code name and message on stderr and exit with `10 +` the code's gRPC
//! number (see [`error::CliError::exit_code`]); usage errors exit with 2.

mod commands;
mod error;
mod join;
mod keys;
mod schema;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::error::CliError;

/// See into a live Runar mesh: nodes, services and schemas, calls, events, pings and stats.
#[derive(Parser, Debug)]
#[command(name = "runar", version, about)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// How the CLI joins the network; shared by every command.
#[derive(Args, Debug, Clone)]
pub(crate) struct Global {
    /// The network's name (the nodes' default network).
    #[arg(long, global = true, env = "RUNAR_NETWORK", default_value = "default")]
    pub(crate) network: String,
    /// A file holding the network secret (as `runar keygen` writes it). Else `RUNAR_KEY`.
    #[arg(long, global = true, value_name = "PATH")]
    pub(crate) key_file: Option<PathBuf>,
    /// A node to dial (`ip:port`); repeatable.
    #[arg(long = "peer", global = true, value_name = "ADDR")]
    pub(crate) peers: Vec<SocketAddr>,
    /// A multicast discovery group (`239.255.42.98:45678`).
    #[arg(long, global = true, value_name = "GROUP")]
    pub(crate) multicast: Option<String>,
    /// The interface multicast is sent and joined on (`127.0.0.1` for a mesh on loopback).
    #[arg(long, global = true, value_name = "IP")]
    pub(crate) interface: Option<Ipv4Addr>,
    /// How long a request, and finding the nodes, may take (`500ms`, `5s`).
    #[arg(long, global = true, default_value = "5s", value_parser = parse_duration)]
    pub(crate) timeout: Duration,
    /// Print JSON (one object, or one a line) instead of tables.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// A keystore (`runar keys init`): `call`, `pub` and `sub` open the labelled fields it holds
    /// keys of and seal the ones sent. Its passphrase: `RUNAR_KEYSTORE_PASSPHRASE`, else asked
    /// on the terminal.
    #[arg(long, global = true, env = "RUNAR_KEYSTORE", value_name = "DIR")]
    pub(crate) keystore: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The nodes in the network: id, name, addresses, services, RTT.
    Nodes,
    /// Services, their actions with request and response types, and events.
    List {
        /// Only this node (an id, an id prefix or a name).
        #[arg(long)]
        node: Option<String>,
    },
    /// A service (by path or name) or a message (by full name) as .proto text.
    Describe {
        /// The service or message.
        name: String,
    },
    /// One request; the reply as JSON.
    Call {
        /// The action's path (`inventory/get_item`).
        path: String,
        /// The request as JSON, or `@FILE` to read it from a file (default `{}`); for a client
        /// or bidirectional stream, one JSON object a line. A streamed reply prints one JSON
        /// object a line.
        #[arg(short = 'd', long = "data")]
        data: Option<String>,
    },
    /// Publish an event.
    Pub {
        /// The topic.
        topic: String,
        /// The event as JSON, or `@FILE`.
        #[arg(short = 'd', long = "data")]
        data: String,
        /// The event's message type (full name, as the nodes' schemas name it).
        #[arg(long = "type", value_name = "MESSAGE")]
        message_type: String,
    },
    /// Events as JSON lines, until Ctrl-C or `--count` events.
    Sub {
        /// The pattern (`*` one segment, `>` the rest).
        pattern: String,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<u64>,
        /// The events' message type, when no schema declares the topic.
        #[arg(long = "type", value_name = "MESSAGE")]
        message_type: Option<String>,
    },
    /// Round trips to a node: min / p50 / p99.
    Ping {
        /// The node (an id, an id prefix or a name).
        node: String,
        /// How many pings.
        #[arg(long, default_value_t = 5)]
        count: u32,
    },
    /// Requests, errors, latencies per action; RTT, bytes, losses per peer; events.
    Stats {
        /// Only this node (an id, an id prefix or a name).
        #[arg(long)]
        node: Option<String>,
    },
    /// A gRPC gateway to every service of the network (with server reflection), until Ctrl-C.
    /// Prints the address it listens on.
    Gateway {
        /// The address to listen on (port 0 picks a free one).
        #[arg(long, default_value = "127.0.0.1:50051", value_name = "ADDR")]
        listen: SocketAddr,
        /// Serve TLS with this PEM certificate chain (and `--tls-key`).
        #[arg(long, requires = "tls_key", value_name = "PATH")]
        tls_cert: Option<PathBuf>,
        /// The PEM private key of `--tls-cert`.
        #[arg(long, requires = "tls_cert", value_name = "PATH")]
        tls_key: Option<PathBuf>,
    },
    /// Label keys in a keystore (`--keystore DIR`): init, generate, rotate, list, export,
    /// import, revoke.
    Keys {
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// A random 256-bit network secret, written to a new file (mode 0600) or printed.
    Keygen {
        /// The file to create.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// `250ms`, `5s`, `2m`, or a bare number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (`500ms`, `5s`, `1m`)"))?;
    let seconds = match unit {
        "ms" => number / 1000.0,
        "" | "s" => number,
        "m" => number * 60.0,
        _ => return Err(format!("`{text}`: the unit is ms, s or m")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("`{text}`: {e}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RUNAR_LOG")
                .unwrap_or_else(|_| "error".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("Internal: cannot start the runtime: {e}");
            return ExitCode::from(CliError::internal("").exit_code());
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{error}");
            if let Some(hint) = &error.hint {
                eprintln!("hint: {hint}");
            }
            ExitCode::from(error.exit_code())
        }
    }
}

async fn run(cli: Cli) -> Result<(), CliError> {
    let global = cli.global;
    match cli.command {
        Command::Keygen { out } => commands::keygen(out.as_deref()),
        Command::Keys { command } => keys::run(&global, command),
        command => {
            let mesh = join::Mesh::join(&global).await?;
            let result = match command {
                Command::Nodes => commands::nodes(&mesh).await,
                Command::List { node } => commands::list(&mesh, node.as_deref()).await,
                Command::Describe { name } => commands::describe(&mesh, &name).await,
                Command::Call { path, data } => commands::call(&mesh, &path, data.as_deref()).await,
                Command::Pub {
                    topic,
                    data,
                    message_type,
                } => commands::publish(&mesh, &topic, &data, &message_type).await,
                Command::Sub {
                    pattern,
                    count,
                    message_type,
                } => commands::subscribe(&mesh, &pattern, count, message_type.as_deref()).await,
                Command::Ping { node, count } => commands::ping(&mesh, &node, count).await,
                Command::Stats { node } => commands::stats(&mesh, node.as_deref()).await,
                Command::Gateway {
                    listen,
                    tls_cert,
                    tls_key,
                } => {
                    let tls = tls_cert.as_deref().zip(tls_key.as_deref());
                    commands::gateway(&mesh, listen, tls).await
                }
                Command::Keygen { .. } | Command::Keys { .. } => Ok(()),
            };
            mesh.leave().await;
            result
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5h").is_err());
    }
}
