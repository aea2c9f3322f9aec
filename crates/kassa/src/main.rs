//! The `kassa` binary: the server and every operator command.

mod admin;
mod bench;
mod bench_api;
mod bench_notify;
mod bench_payouts;
mod config;
mod dev;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "kassa", version, about = "Kassa: a self-hosted crypto payment gateway")]
struct Cli {
    /// Configuration file (TOML). `KASSA_*` environment variables override its keys.
    #[arg(long, short, global = true, env = "KASSA_CONFIG", default_value = "kassa.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server (migrates the database first).
    Serve,
    /// A local development network: Litecoin Core in regtest, Kassa on SQLite under
    /// .kassa/, and a demo merchant whose credentials are printed. `kassa dev pay
    /// ADDRESS AMOUNT` pays a test deposit and mines the blocks that confirm it.
    Dev(dev::DevArgs),
    /// Apply pending database migrations and exit.
    Migrate {
        #[arg(long)]
        json: bool,
    },
    /// Manage merchants.
    #[command(subcommand)]
    Merchant(admin::MerchantCommand),
    /// Manage API keys.
    #[command(subcommand)]
    Key(admin::KeyCommand),
    /// Operate chains.
    #[command(subcommand)]
    Chain(admin::ChainCommand),
    /// Webhook endpoints, deliveries and their attempts; redelivery.
    #[command(subcommand)]
    Notifications(admin::NotificationsCommand),
    /// Withdrawals waiting for approval, decisions, and the limits that make them wait.
    #[command(subcommand)]
    Withdrawals(admin::WithdrawalsCommand),
    /// Payout plans (the scheduled split-payout API): referral codes.
    #[command(subcommand)]
    Plans(admin::PlansCommand),
    /// Credit (positive amount) or debit (negative) a merchant against owner equity.
    Adjust(admin::AdjustArgs),
    /// Verify the ledger's invariants; exits non-zero on any violation.
    Check {
        #[arg(long)]
        json: bool,
    },
    /// Benchmarks that print figures.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

/// Output piped into a reader that stops early (`kassa … --json | head`): the
/// command's work is done by the time it prints, so a closed stdout ends the process
/// quietly instead of with a panic.
fn exit_quietly_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info.payload().downcast_ref::<String>().map(String::as_str).or_else(|| info.payload().downcast_ref::<&str>().copied());
        if message.is_some_and(|m| m.starts_with("failed printing to stdout") && m.contains("Broken pipe")) {
            std::process::exit(0);
        }
        default(info);
    }));
}

fn main() -> ExitCode {
    exit_quietly_on_closed_stdout();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Bench(cmd) => {
            serve::init_logging("text", "warn");
            bench::run(cmd, &cli.config).await
        }
        Command::Dev(args) => dev::run(args).await,
        command => {
            let settings = config::Config::load(&cli.config)?;
            let quiet = !matches!(command, Command::Serve);
            serve::init_logging(&settings.config.log_format, if quiet { "warn" } else { "info" });
            match command {
                Command::Serve => serve::serve(settings).await,
                Command::Migrate { json } => admin::migrate(&settings, json).await,
                Command::Merchant(cmd) => admin::merchant(&settings, cmd).await,
                Command::Key(cmd) => admin::key(&settings, cmd).await,
                Command::Adjust(args) => admin::adjust(&settings, args).await,
                Command::Withdrawals(cmd) => admin::withdrawals(&settings, cmd).await,
                Command::Plans(cmd) => admin::plans(&settings, cmd).await,
                Command::Chain(cmd) => admin::chain(&settings, cmd).await,
                Command::Notifications(cmd) => admin::notifications(&settings, cmd).await,
                Command::Check { json } => admin::check(&settings, json).await,
                Command::Bench(_) | Command::Dev(_) => unreachable!("handled above"),
            }
        }
    }
}
