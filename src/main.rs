//! The `cairn` binary: every role (chunkserver, metadata, dev cluster) and
//! the user CLI, as subcommands.

/// `println!` for command output: exits quietly when stdout is a closed
/// pipe (`cairn ls | head`), see [`write_stdout`].
macro_rules! outln {
    () => {
        $crate::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` for command output, like [`outln!`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::write_stdout(format_args!($($arg)*))
    };
}

mod cmd;
mod config;
mod gateway;

/// Writes command output to stdout. A reader that went away (EPIPE: `cairn
/// stat ... | head`) ends the process at once, quietly and successfully,
/// as for ripgrep; any other write error ends it with a message.
pub(crate) fn write_stdout(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        exit_on_stdout_error(&e);
    }
}

/// Ends the process after a failed write to stdout: quietly (status 0) on
/// a broken pipe, with a message (status 1) otherwise.
pub(crate) fn exit_on_stdout_error(e: &std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("error: cannot write to stdout: {e}");
    std::process::exit(1);
}

/// True when `e` is (or was caused by) a broken pipe.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Log output format (`--log-format`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (timestamp, level, target, fields and the
    /// current span, e.g. an S3 request's `request_id`).
    Json,
}

use clap::{Parser, Subcommand};

/// Cairn: an erasure-coded distributed object store.
#[derive(Parser, Debug)]
#[command(name = "cairn", version, about)]
struct Cli {
    #[command(flatten)]
    conn: config::ConnArgs,
    #[command(flatten)]
    out: cmd::cli::OutArgs,
    /// Log format on stderr: text or json. `cairn dev` passes it on to its
    /// children.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t = LogFormat::Text,
        env = "CAIRN_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a whole local cluster (3 metadata nodes, 6 chunkservers).
    Dev(cmd::dev::Args),
    /// Run a metadata node.
    Metadata(cmd::metadata::Args),
    /// Run a chunkserver: stores, verifies and serves shards.
    Chunkserver(cmd::chunkserver::Args),
    /// Run an S3 gateway (stateless; run as many as you like).
    Gateway(gateway::Args),
    /// Make a bucket: `cairn mb cairn://bucket --ec 4+2`.
    Mb(cmd::cli::MbArgs),
    /// Remove an empty bucket.
    Rb(cmd::cli::UrlArgs),
    /// Upload: `cairn put FILE|- cairn://bucket/key`.
    Put(cmd::cli::CopyArgs),
    /// Download: `cairn get cairn://bucket/key FILE|-`.
    Get(cmd::cli::CopyArgs),
    /// Copy files or trees (-r) to or from the cluster.
    Cp(cmd::cli::CopyArgs),
    /// List buckets, or keys under a prefix.
    Ls(cmd::cli::LsArgs),
    /// Remove an object (or, with -r, every key under a prefix).
    Rm(cmd::cli::RmArgs),
    /// Show an object's manifest: stripes and where each shard is.
    Stat(cmd::cli::UrlArgs),
    /// Cluster administration.
    #[command(subcommand)]
    Admin(cmd::admin::AdminCmd),
    /// Benchmarks: machine limits, metadata commits, client throughput.
    #[command(subcommand)]
    Bench(cmd::bench::BenchCmd),
}

fn init_tracing(server: bool, format: LogFormat) {
    let default = if server { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => fmt
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => fmt
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

/// Prints the process's peak resident set size (VmHWM) to stderr, for the
/// memory-bound tests and benchmarks.
fn report_peak_rss() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if let Some(kib) = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .map(|v| v.trim().trim_end_matches("kB").trim().to_string())
    {
        eprintln!("cairn: peak RSS {kib} KiB");
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let server = matches!(
        cli.cmd,
        Command::Dev(_) | Command::Metadata(_) | Command::Chunkserver(_) | Command::Gateway(_)
    );
    init_tracing(server, cli.log_format);
    if matches!(cli.cmd, Command::Gateway(_)) {
        gateway::limit_malloc_arenas();
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let conn = cli.conn;
    let json_logs = cli.log_format == LogFormat::Json;
    let out = cli.out;
    let res = rt.block_on(async move {
        match cli.cmd {
            Command::Dev(a) => cmd::dev::run(a, json_logs).await,
            Command::Metadata(a) => cmd::metadata::run(a).await,
            Command::Chunkserver(a) => cmd::chunkserver::run(a).await,
            Command::Gateway(a) => gateway::run(a).await,
            Command::Mb(a) => cmd::cli::mb(&conn, a).await,
            Command::Rb(a) => cmd::cli::rb(&conn, a).await,
            Command::Put(a) | Command::Get(a) | Command::Cp(a) => {
                cmd::cli::cp(&conn, a, &out).await
            }
            Command::Ls(a) => cmd::cli::ls(&conn, a, &out).await,
            Command::Rm(a) => cmd::cli::rm(&conn, a).await,
            Command::Stat(a) => cmd::cli::stat(&conn, a, &out).await,
            Command::Admin(c) => cmd::admin::run(&conn, c, out.json).await,
            Command::Bench(c) => cmd::bench::run(&conn, c, out.json).await,
        }
    });
    // Leave a stuck reader (stdin) behind rather than hang on exit.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    if std::env::var_os("CAIRN_REPORT_RSS").is_some() {
        report_peak_rss();
    }
    match res {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
