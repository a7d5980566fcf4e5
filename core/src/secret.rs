//! A credential value that never prints.
//!
//! Upstream credentials pass through configuration, logs and error paths; a
//! type whose `Debug` and `Display` print `<redacted>` keeps a stray `{:?}`
//! from leaking one. The bytes are reachable only through [`Secret::expose`],
//! and are overwritten with zeros when the value is dropped, so a replaced
//! credential does not linger in freed memory.

/// Secret bytes: printed as `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Box<[u8]>);

impl Secret {
    /// Wraps `bytes`.
    pub fn new(bytes: impl Into<Box<[u8]>>) -> Self {
        Self(bytes.into())
    }

    /// The secret bytes, for the one place that sends them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut *self.0);
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints() {
        let s = Secret::new(b"hunter2".to_vec());
        assert_eq!(format!("{s:?} {s}"), "<redacted> <redacted>");
        assert_eq!(s.expose(), b"hunter2");
    }
}
