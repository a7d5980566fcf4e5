//! A sink's persisted position in the log: `<audit dir>/cursors/<sink name>`,
//! one JSON object `{"next_seq":N,"segment":F,"offset":B}`, replaced
//! atomically after each delivered batch. A sink restarted from its cursor
//! resends at most the batch in flight when it stopped (at-least-once).

use std::path::{Path, PathBuf};

use crate::reader::Position;
use crate::segment::write_atomically;

/// Folder of cursors inside the audit directory.
pub const CURSOR_DIR: &str = "cursors";

/// Path of sink `name`'s cursor.
pub fn cursor_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(CURSOR_DIR).join(name)
}

/// Reads a cursor; a missing one is the start of the log, an unreadable
/// one too (resending everything is the at-least-once side of the choice).
pub fn load(path: &Path) -> std::io::Result<Position> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Position::START),
        Err(e) => return Err(e),
    };
    let v: serde_json::Value = serde_json::from_slice(&text).unwrap_or_default();
    match (
        v["next_seq"].as_u64(),
        v["segment"].as_u64(),
        v["offset"].as_u64(),
    ) {
        (Some(next_seq), Some(segment), Some(offset)) => Ok(Position {
            next_seq,
            segment,
            offset,
        }),
        _ => {
            tracing::warn!(cursor = %path.display(), "unreadable sink cursor: delivering from the start of the log");
            Ok(Position::START)
        }
    }
}

/// Persists a cursor.
pub fn save(path: &Path, pos: Position) -> std::io::Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    let text = format!(
        "{{\"next_seq\":{},\"segment\":{},\"offset\":{}}}\n",
        pos.next_seq, pos.segment, pos.offset
    );
    write_atomically(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_defaults_to_the_start() {
        let dir = std::env::temp_dir().join(format!("toolgate-cursor-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = cursor_path(&dir, "siem");
        assert_eq!(load(&path).ok(), Some(Position::START));
        let pos = Position {
            next_seq: 42,
            segment: 1,
            offset: 9000,
        };
        assert!(save(&path, pos).is_ok());
        assert_eq!(load(&path).ok(), Some(pos));
        let _ = std::fs::write(&path, b"garbage");
        assert_eq!(load(&path).ok(), Some(Position::START));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
