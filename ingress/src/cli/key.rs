//! `toolgate key new`: a fresh API key and its SHA-256.

use clap::Subcommand;

/// `toolgate key …`.
#[derive(Subcommand)]
pub enum KeyCommand {
    /// Print a fresh API key and the SHA-256 to put in `api_key_sha256`.
    New,
}

/// Runs `toolgate key …`.
pub fn run(command: KeyCommand) -> anyhow::Result<()> {
    match command {
        KeyCommand::New => {
            let random = toolgate_ingress::random::bytes32()?;
            let (key, hash) = toolgate_core::identity::format_key(&random);
            println!("key: {key}");
            println!("sha256: {hash}");
        }
    }
    Ok(())
}
