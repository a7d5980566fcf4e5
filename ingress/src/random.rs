//! Fresh random bytes from the operating system, for keys and seeds drawn
//! at start-up or by the CLI (never on the request path).

/// The operating system gave no randomness.
#[derive(Debug, thiserror::Error)]
#[error("no randomness from the OS: {0}")]
pub struct NoRandomness(getrandom::Error);

/// 32 random bytes from the operating system.
pub fn bytes32() -> Result<[u8; 32], NoRandomness> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(NoRandomness)?;
    Ok(b)
}
