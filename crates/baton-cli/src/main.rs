//! The `baton` command: learn a task dependency graph from logs, predict chains and request
//! sets, export the graph, evaluate prediction on a later window, convert logs, replay
//! traces through the pre-warming policies, measure hops and cold starts, serve functions
//! over HTTP and talk to a server, and run the demo.

mod app;
mod bench;
mod callers;
mod cluster;
mod commands;
mod demo;
mod load;
mod manage;
mod peers;
mod progress;
mod replay;
mod server;
mod sim;
#[cfg(test)]
mod test_support;

use anyhow::Result;
use clap::{CommandFactory, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "baton",
    version,
    about = "A serverless runtime that sees the next function coming",
    after_help = "Exit status: 0 done, 1 failed here, 2 usage, 3 server unreachable, 4 failed on the server (a function's error, an unknown name, a refused deploy)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Learn the task dependency graph from logs and print a summary.
    Learn(commands::LearnArgs),
    /// Predict the most likely chains from a task.
    Predict(commands::PredictArgs),
    /// Export the graph as DOT or JSON.
    Graph(commands::GraphArgs),
    /// Learn on one window, measure prediction on the next.
    Eval(commands::EvalArgs),
    /// Convert logs (e.g. span CSV) to execution-log schema v1 JSONL.
    Convert(commands::ConvertArgs),
    /// Replay a trace through every pre-warming policy and compare them.
    Sim(sim::SimArgs),
    /// Replay a trace against a live `baton serve` and print `baton sim`'s figures for the
    /// same plan beside what the server did.
    Load(replay::LoadArgs),
    /// Report what this machine offers baton: the resource-limit mechanism for workers and
    /// what moving a worker into its groups costs.
    Doctor(DoctorArgs),
    /// Run the server: the HTTP API over the runtime, state kept in --data-dir.
    Serve(server::ServeArgs),
    /// Set up a cluster: its signing key and NATS users.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Deploy functions from their manifests, or an app (baton.toml), to a server.
    Deploy(server::DeployArgs),
    /// Create an app from a template: a function (python, wat or c) with its test.
    New(app::NewArgs),
    /// Serve an app on loopback and redeploy it when its files change.
    Up(app::UpArgs),
    /// Invoke a function or sequence on a server.
    Invoke(server::InvokeArgs),
    /// List, show or remove a server's functions.
    Functions(manage::FunctionsArgs),
    /// List, show, declare or remove a server's sequences.
    Sequences(manage::SequencesArgs),
    /// Show how an asynchronous invocation went.
    Invocations(manage::InvocationsArgs),
    /// Show a server's latest execution records, or send it logs to learn.
    Logs(server::LogsArgs),
    /// Live view of a server's warm instances, reservations and hit rate.
    Top(server::TopArgs),
    /// Run the example order pipeline on an in-process server, pre-warming off then on.
    Demo(demo::DemoArgs),
    /// Print a completion script for SHELL (bash, zsh, fish, elvish, powershell), e.g.
    /// `baton completions bash > /etc/bash_completion.d/baton`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Measure hops and cold starts on this machine.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

#[derive(Debug, clap::Args)]
struct DoctorArgs {
    /// First mount a cgroup hierarchy with `favordynmods` (Linux 6.0+, root), which makes
    /// moving a process into its groups cost microseconds instead of a grace period of
    /// 5–25 ms: forked Python starts drop from about 15 ms to 4 here. Host-wide, and kept
    /// until reboot; forks and exits elsewhere on the host get slightly dearer.
    #[arg(long)]
    favor_dynmods: bool,
    /// First set (`on`) or clear (`off`) the kernel's expedited RCU grace periods
    /// (`/sys/kernel/rcu_expedited`, root), the reversible way to the same: a move then
    /// costs about 0.15 ms instead of 8 here. Host-wide until set again or reboot; every
    /// grace period on the host then interrupts all CPUs.
    #[arg(long, value_parser = ["on", "off"])]
    expedite_rcu: Option<String>,
}

fn doctor(args: DoctorArgs) -> Result<()> {
    use baton_runtime::limits;
    if args.favor_dynmods {
        println!("{}", limits::favor_dynmods().map_err(anyhow::Error::msg)?);
    }
    if let Some(on) = &args.expedite_rcu {
        println!(
            "{}",
            limits::expedite_rcu(on == "on").map_err(anyhow::Error::msg)?
        );
    }
    let detection = baton_runtime::isolation::detect();
    print!("{detection}");
    let mechanism = &detection.isolation().limits;
    match limits::move_cost(mechanism, 5) {
        Ok(Some(cost)) => println!(
            "moving a process into its groups: {:.2} ms (median of 5), {}",
            cost.as_secs_f64() * 1e3,
            limits::MoveMode::now()
        ),
        Ok(None) => println!("moving a process into its groups: not needed (no cgroups)"),
        Err(e) => println!("moving a process into its groups: cannot measure: {e}"),
    }
    Ok(())
}

/// Exit status when the server could not be reached (or its URL is wrong).
pub const EXIT_UNREACHABLE: u8 = 3;
/// Exit status when the server answered that what was asked failed (a function's error, an
/// unknown function, a refused deploy).
pub const EXIT_FAILED_THERE: u8 = 4;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // A command that runs workers (a server, the demo, the benches) keeps SIGPIPE ignored,
    // as Rust sets it: a worker that closes its end of a pipe makes the next write fail
    // with EPIPE, that worker's failure, instead of killing the server with every other
    // worker and call in it.
    if !cli.command.runs_workers() {
        restore_sigpipe();
    }
    // RUST_LOG when set; else the server logs each request (`baton::access`) and what
    // went wrong, and every other command only warnings.
    let default = if matches!(cli.command, Command::Serve(_)) {
        "info"
    } else {
        "warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("Error: {error:#}");
            let code = if error.chain().any(|e| e.is::<server::FailedThere>()) {
                EXIT_FAILED_THERE
            } else if error
                .chain()
                .any(|e| e.is::<baton_server::client::ClientError>())
            {
                EXIT_UNREACHABLE
            } else {
                1
            };
            std::process::ExitCode::from(code)
        }
    }
}

impl Command {
    /// Whether this command starts worker processes (whose pipes a function may close).
    fn runs_workers(&self) -> bool {
        matches!(
            self,
            Command::Serve(_) | Command::Up(_) | Command::Demo(_) | Command::Bench(_)
        )
    }
}

/// Lets a closed pipe end the process quietly, as it does any Unix tool (`baton top | head`),
/// instead of a panic on the next write: Rust ignores SIGPIPE by default.
fn restore_sigpipe() {
    #[allow(unsafe_code)]
    // SAFETY: called in `main` before any other thread exists; setting a
    // signal's disposition to the default has no memory-safety preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Learn(args) => commands::learn(args),
        Command::Predict(args) => commands::predict(args),
        Command::Graph(args) => commands::graph(args),
        Command::Eval(args) => commands::eval(args),
        Command::Convert(args) => commands::convert(args),
        Command::Sim(args) => sim::sim(args),
        Command::Load(args) => replay::load(args),
        Command::Bench(command) => bench::run(command),
        Command::Serve(args) => server::serve(args),
        Command::Deploy(args) => server::deploy(args),
        Command::New(args) => app::new(args),
        Command::Up(args) => app::up(args),
        Command::Invoke(args) => server::invoke(args),
        Command::Functions(args) => manage::functions(args),
        Command::Sequences(args) => manage::sequences(args),
        Command::Invocations(args) => manage::invocations(args),
        Command::Logs(args) => server::logs(args),
        Command::Top(args) => server::top(args),
        Command::Cluster(command) => cluster::cluster(command),
        Command::Demo(args) => demo::demo(args),
        Command::Doctor(args) => doctor(args),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "baton", &mut std::io::stdout());
            Ok(())
        }
    }
}
