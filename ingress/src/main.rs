//! The `toolgate` command: parses the command line, runs the subcommand
//! (one module each under `cli/`; the gateway itself is wired by
//! [`toolgate_ingress::process`]), and turns the result into the exit
//! status: 0 on success; 1 with `error: …` on stderr; 2 from `admin diff`
//! when the live state differs from the files.

mod cli;

use std::process::ExitCode;

use clap::Parser;
use cli::{Cli, Command};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Inside a stdio upstream's sandbox, toolgate is the egress helper that
    // starts the server: no CLI, no logging, nothing of the gateway.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args
        .get(1)
        .is_some_and(|a| a == toolgate_upstream::stdio::egress::EXEC_SUBCOMMAND)
    {
        let e = toolgate_upstream::stdio::egress::sandbox_exec(&args[2..]);
        eprintln!(
            "toolgate {}: {e}",
            toolgate_upstream::stdio::egress::EXEC_SUBCOMMAND
        );
        return ExitCode::from(127);
    }
    let done = |r: anyhow::Result<()>| r.map(|()| ExitCode::SUCCESS);
    let result = match Cli::parse().command {
        Command::Run { config } => done(cli::run::run(&config)),
        Command::Check { config } => done(cli::check::run(&config)),
        Command::Demo { port } => done(cli::demo::run(port)),
        Command::Key { command } => done(cli::key::run(command)),
        Command::Policy { command } => cli::policy::run(command),
        Command::Audit { command } => done(cli::audit::run(command)),
        Command::Usage(args) => done(cli::usage::run(args)),
        Command::Token { command } => done(cli::token::run(command)),
        Command::Tools { command } => done(cli::tools::run(command)),
        Command::Admin { api, command } => cli::admin::run(&api, command),
        Command::Apply {
            api,
            dir,
            dry_run,
            prune,
        } => done(cli::apply::run(&api, &dir, dry_run, prune)),
    };
    result.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        ExitCode::FAILURE
    })
}
