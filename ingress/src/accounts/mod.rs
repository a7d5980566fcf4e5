//! Connected accounts at run time: which users have connected which
//! upstreams, their access tokens as every shard reads them, the grants
//! kept sealed in the control store, and the refresher that keeps the
//! access tokens fresh off the request path.
//!
//! A call only reads: the published map of access tokens, no lock, no I/O
//! ([`Accounts::lookup`]). Connecting (the OAuth callback), disconnecting
//! and refreshing write the store off the shards' threads and publish a
//! new map.

mod refresh;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use toolgate_control::{Connection, ConnectionStore, StoreError};
use toolgate_core::config::ValidConfig;
use toolgate_core::secret::Secret;
use toolgate_decision::Published;
use toolgate_upstream::connect::{purpose, Granted, Link, Provider, Sealer, SetupError};

pub use refresh::spawn_refresher;

/// One user's connection as the shards see it.
#[derive(Clone)]
pub struct Token {
    /// `{header}: Bearer …\r\n`, while an access token is held.
    pub line: Option<Arc<Secret>>,
    /// Unix second the access token expires.
    pub expires: u64,
    /// Unix second it was obtained.
    pub obtained: u64,
    /// The refresh token (the store keeps it sealed).
    pub refresh: Option<Arc<Secret>>,
    /// The refresh token as the store holds it, sealed: another replica's
    /// rotation shows as a different value.
    pub sealed: Arc<str>,
    /// The provider refused the grant: the user must connect again.
    pub revoked: bool,
    /// Unix second before which a failed refresh is not tried again.
    pub retry_at: u64,
    /// What the user granted.
    pub scope: String,
    /// When they connected, Unix seconds.
    pub connected_at: u64,
}

/// Connections by upstream, then user.
pub type Live = HashMap<String, HashMap<String, Token>>;

/// What a call to a connected-account upstream finds for its user.
pub enum Account {
    /// The user's access token line.
    Ready(Arc<Secret>),
    /// The user never connected (or was disconnected).
    NotConnected,
    /// The grant expired or was revoked: connect again.
    Reconnect,
    /// Connected, but no fresh access token right now (a refresh failed
    /// and is being retried).
    Refreshing,
}

/// Why connected accounts cannot start.
#[derive(Debug, thiserror::Error)]
pub enum AccountsError {
    /// A key, secret or CA bundle cannot be read.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// The store cannot be read.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The process's connected accounts.
pub struct Accounts {
    sealer: Sealer,
    public_url: String,
    link_lifetime_s: u64,
    user_header: Option<String>,
    providers: HashMap<String, Arc<Provider>>,
    store: Arc<dyn ConnectionStore>,
    live: Arc<Published<Live>>,
    /// States taken by a callback, with their expiry: a replay is refused.
    taken: Mutex<HashMap<String, u64>>,
}

impl std::fmt::Debug for Accounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accounts")
            .field("upstreams", &self.providers.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Unix seconds now.
pub fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Accounts {
    /// The connected accounts `cfg` configures, kept in `store`, with the
    /// grants already there read back. `None` without `[connected_accounts]`.
    pub fn load(
        cfg: &ValidConfig,
        store: Option<Arc<dyn ConnectionStore>>,
    ) -> Result<Option<Arc<Self>>, AccountsError> {
        let (Some(c), Some(store)) = (&cfg.connected_accounts, store) else {
            return Ok(None);
        };
        let sealer = Sealer::load(&c.key)?;
        let mut providers = HashMap::new();
        for u in &cfg.upstreams {
            let Some(id) = &u.identity else { continue };
            let Some(target) = &id.connect else { continue };
            let p = Provider::load(u.name(), target, &id.header, &c.public_url)?;
            providers.insert(u.name().to_owned(), Arc::new(p));
        }
        let accounts = Arc::new(Self {
            sealer,
            public_url: c.public_url.clone(),
            link_lifetime_s: c.link_lifetime_s,
            user_header: c.user_header.clone(),
            providers,
            store,
            live: Published::new(Live::new()),
            taken: Mutex::default(),
        });
        let stored = accounts.store.list()?;
        accounts
            .live
            .publish(accounts.read_back(&stored, &Live::new()));
        Ok(Some(accounts))
    }

    /// The map of connections every shard reads.
    pub fn live(&self) -> &Arc<Published<Live>> {
        &self.live
    }

    /// The provider of `upstream`, when it is a connected-account upstream.
    pub fn provider(&self, upstream: &str) -> Option<&Arc<Provider>> {
        self.providers.get(upstream)
    }

    /// Seals and opens links and states.
    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    /// Seconds a link and a consent stay usable.
    pub fn link_lifetime_s(&self) -> u64 {
        self.link_lifetime_s
    }

    /// The header naming the browser's signed-in user, when a proxy sets one.
    pub fn user_header(&self) -> Option<&str> {
        self.user_header.as_deref()
    }

    /// Whether connect links and the callback are `https://`.
    pub fn secure(&self) -> bool {
        self.public_url.starts_with("https://")
    }

    /// What `live` holds for `user` of `upstream` at `now` (Unix seconds).
    pub fn lookup(live: &Live, upstream: &str, user: &str, now: u64) -> Account {
        let Some(t) = live.get(upstream).and_then(|m| m.get(user)) else {
            return Account::NotConnected;
        };
        match &t.line {
            Some(line) if t.expires > now => Account::Ready(Arc::clone(line)),
            _ if t.revoked || t.refresh.is_none() => Account::Reconnect,
            _ => Account::Refreshing,
        }
    }

    /// The link that lets `user` connect `upstream`: usable for the
    /// configured lifetime, by whoever opens it.
    pub fn link(&self, upstream: &str, user: &str) -> String {
        let link = Link {
            upstream: upstream.to_owned(),
            user: user.to_owned(),
            expires: now_s() + self.link_lifetime_s,
        };
        format!(
            "{}/connect/{upstream}?link={}",
            self.public_url,
            self.sealer.seal_json(purpose::LINK, &link)
        )
    }

    /// Takes the state of nonce `nonce` (valid until `expires`): false when
    /// it was taken before.
    pub fn take_state(&self, nonce: &str, expires: u64) -> bool {
        let now = now_s();
        let mut taken = self.taken.lock().unwrap_or_else(|p| p.into_inner());
        taken.retain(|_, until| *until >= now);
        taken.insert(nonce.to_owned(), expires).is_none()
    }

    /// Keeps `granted`, just obtained for `user` of `upstream`: sealed in
    /// the store (blocking I/O: never on a shard's thread), then published.
    pub fn keep(&self, upstream: &str, user: &str, granted: Granted) -> Result<(), StoreError> {
        let now = now_s();
        let scope = granted.scope.clone().unwrap_or_default();
        let sealed = granted
            .refresh
            .as_ref()
            .map(|r| {
                self.sealer
                    .seal(&purpose::refresh(upstream, user), r.expose())
            })
            .unwrap_or_default();
        self.store.put(&Connection {
            upstream: upstream.to_owned(),
            user: user.to_owned(),
            sealed: sealed.clone(),
            scope: scope.clone(),
            connected_at: now,
        })?;
        let token = Token {
            line: Some(Arc::new(granted.line)),
            expires: now + granted.lifetime.as_secs(),
            obtained: now,
            refresh: granted.refresh.map(Arc::new),
            sealed: Arc::from(sealed),
            revoked: false,
            retry_at: 0,
            scope,
            connected_at: now,
        };
        self.live.update(|live| {
            let mut next = live.clone();
            next.entry(upstream.to_owned())
                .or_default()
                .insert(user.to_owned(), token.clone());
            next
        });
        Ok(())
    }

    /// Removes `user`'s connection of `upstream` from the store (blocking
    /// I/O) and from what calls see; whether there was one.
    pub fn disconnect(&self, upstream: &str, user: &str) -> Result<bool, StoreError> {
        let stored = self.store.delete(upstream, user)?;
        let mut live_had = false;
        self.live.update(|live| {
            let mut next = live.clone();
            if let Some(m) = next.get_mut(upstream) {
                live_had = m.remove(user).is_some();
            }
            next
        });
        Ok(stored || live_had)
    }

    /// Every connection, as the admin API lists them (never a token).
    pub fn list(&self) -> Vec<serde_json::Value> {
        let loaded = self.live.load();
        let live: &Live = &loaded;
        let now = now_s();
        let mut out: Vec<serde_json::Value> = live
            .iter()
            .flat_map(|(upstream, users)| {
                users.iter().map(move |(user, t)| {
                    let status = match Self::lookup(live, upstream, user, now) {
                        Account::Ready(_) => "connected",
                        Account::Reconnect => "reconnect",
                        Account::Refreshing | Account::NotConnected => "refreshing",
                    };
                    serde_json::json!({
                        "upstream": upstream,
                        "user": user,
                        "scope": t.scope,
                        "connected_at": t.connected_at,
                        "status": status,
                    })
                })
            })
            .collect();
        out.sort_by(|a, b| {
            (a["upstream"].as_str(), a["user"].as_str())
                .cmp(&(b["upstream"].as_str(), b["user"].as_str()))
        });
        out
    }

    /// The map for `stored` (the store's connections), keeping what
    /// `current` already holds of each (its access token), taking a refresh
    /// token another replica rotated, dropping what the store no longer has
    /// (disconnected on another replica).
    fn read_back(&self, stored: &[Connection], current: &Live) -> Live {
        let mut next = Live::new();
        for c in stored {
            if !self.providers.contains_key(&c.upstream) {
                continue;
            }
            let held = current.get(&c.upstream).and_then(|m| m.get(&c.user));
            let token = match held {
                Some(t) if t.connected_at > c.connected_at => t.clone(),
                Some(t) if t.connected_at == c.connected_at && *t.sealed == *c.sealed => t.clone(),
                _ => {
                    let refresh = (!c.sealed.is_empty())
                        .then(|| {
                            self.sealer
                                .open(&purpose::refresh(&c.upstream, &c.user), &c.sealed)
                        })
                        .flatten();
                    if refresh.is_none() && !c.sealed.is_empty() {
                        tracing::warn!(upstream = %c.upstream, user = %c.user, "a stored grant does not open with the configured key; the user must connect again");
                    }
                    // The same grant, rotated elsewhere: its access token
                    // still serves until the refresher renews it.
                    let same = held.filter(|t| t.connected_at == c.connected_at);
                    Token {
                        line: same.and_then(|t| t.line.clone()),
                        expires: same.map_or(0, |t| t.expires),
                        obtained: same.map_or(0, |t| t.obtained),
                        revoked: refresh.is_none(),
                        refresh: refresh.map(Arc::new),
                        sealed: Arc::from(c.sealed.as_str()),
                        retry_at: 0,
                        scope: c.scope.clone(),
                        connected_at: c.connected_at,
                    }
                }
            };
            next.entry(c.upstream.clone())
                .or_default()
                .insert(c.user.clone(), token);
        }
        next
    }

    /// Reads the store again (blocking I/O) and publishes what changed:
    /// connections made or removed by other replicas.
    pub fn sync(&self) -> Result<(), StoreError> {
        let stored = self.store.list()?;
        self.live.update(|current| self.read_back(&stored, current));
        Ok(())
    }

    /// Changes `user`'s token of `upstream` with `f`, unless the user
    /// connected again since `connected_at` (that newer grant stays).
    fn set(&self, upstream: &str, user: &str, connected_at: u64, f: impl FnOnce(&mut Token)) {
        self.live.update(|live| {
            let mut next = live.clone();
            if let Some(t) = next
                .get_mut(upstream)
                .and_then(|m| m.get_mut(user))
                .filter(|t| t.connected_at == connected_at)
            {
                f(t);
            }
            next
        });
    }

    /// Replaces the sealed grant of `user` of `upstream` with `refresh`
    /// (the provider rotated it): blocking I/O. Returns it as stored.
    fn reseal(
        &self,
        upstream: &str,
        user: &str,
        t: &Token,
        refresh: &Secret,
    ) -> Result<Arc<str>, StoreError> {
        let sealed = self
            .sealer
            .seal(&purpose::refresh(upstream, user), refresh.expose());
        self.store.put(&Connection {
            upstream: upstream.to_owned(),
            user: user.to_owned(),
            sealed: sealed.clone(),
            scope: t.scope.clone(),
            connected_at: t.connected_at,
        })?;
        Ok(Arc::from(sealed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(line: Option<&str>, expires: u64, refresh: bool, revoked: bool) -> Token {
        Token {
            line: line.map(|l| Arc::new(Secret::new(l.as_bytes().to_vec()))),
            expires,
            obtained: 0,
            refresh: refresh.then(|| Arc::new(Secret::new(b"rt".to_vec()))),
            sealed: Arc::from(""),
            revoked,
            retry_at: 0,
            scope: String::new(),
            connected_at: 1,
        }
    }

    fn accounts(dir: &std::path::Path) -> Accounts {
        use base64::Engine as _;
        std::env::set_var(
            "TG_TEST_ACCOUNTS_KEY",
            base64::engine::general_purpose::STANDARD.encode([3u8; 32]),
        );
        std::env::set_var("TG_TEST_ACCOUNTS_SECRET", "s");
        let key = toolgate_core::secret::SecretSource::Env("TG_TEST_ACCOUNTS_KEY".into());
        let target = toolgate_core::config::ConnectTarget {
            authorize_url: "http://127.0.0.1:9/auth".into(),
            token_url: toolgate_core::upstream_url::UpstreamUrl::parse("http://127.0.0.1:9/token")
                .unwrap(),
            ca_file: None,
            client_id: "tg".into(),
            client_secret: toolgate_core::secret::SecretSource::Env(
                "TG_TEST_ACCOUNTS_SECRET".into(),
            ),
            scope: None,
            resource: None,
        };
        let provider = Provider::load("mail", &target, "Authorization", "http://tg").unwrap();
        let store = toolgate_control::Store::open(&dir.join("control.redb")).unwrap();
        Accounts {
            sealer: Sealer::load(&key).unwrap(),
            public_url: "http://tg".into(),
            link_lifetime_s: 60,
            user_header: None,
            providers: HashMap::from([("mail".to_owned(), Arc::new(provider))]),
            store: Arc::new(store.connections()),
            live: Published::new(Live::new()),
            taken: Mutex::default(),
        }
    }

    fn stored(a: &Accounts, user: &str, refresh: &[u8], connected_at: u64) -> Connection {
        Connection {
            upstream: "mail".into(),
            user: user.into(),
            sealed: a.sealer.seal(&purpose::refresh("mail", user), refresh),
            scope: String::new(),
            connected_at,
        }
    }

    #[test]
    fn reading_the_store_again_takes_other_replicas_changes_and_keeps_live_tokens() {
        let dir = std::env::temp_dir().join(format!("toolgate-accounts-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a = accounts(&dir);
        let first = [
            stored(&a, "alice", b"rt-1", 10),
            stored(&a, "bob", b"rt-b", 10),
        ];
        let mut live = a.read_back(&first, &Live::new());
        {
            let t = live
                .get_mut("mail")
                .and_then(|m| m.get_mut("alice"))
                .unwrap();
            assert_eq!(t.refresh.as_ref().unwrap().expose(), b"rt-1");
            assert!(
                t.line.is_none() && !t.revoked,
                "renewed by the refresher first"
            );
            t.line = Some(Arc::new(Secret::new(b"L".to_vec())));
            t.expires = 99;
        }
        // Unchanged: what is held stays, access token included.
        let same = a.read_back(&first, &live);
        assert!(same["mail"]["alice"].line.is_some());
        // Another replica rotated alice's refresh token and removed bob.
        let rotated = [stored(&a, "alice", b"rt-2", 10)];
        let next = a.read_back(&rotated, &live);
        let t = &next["mail"]["alice"];
        assert_eq!(t.refresh.as_ref().unwrap().expose(), b"rt-2");
        assert!(
            t.line.is_some() && t.expires == 99,
            "the access token still serves"
        );
        assert!(!next["mail"].contains_key("bob"));
        // Alice connected again elsewhere: a new grant, no access token yet.
        let again = [stored(&a, "alice", b"rt-3", 20)];
        let t = &a.read_back(&again, &next)["mail"]["alice"];
        assert!(t.line.is_none() && t.connected_at == 20);
        // A row sealed for someone else does not open as alice's.
        let mut moved = stored(&a, "bob", b"rt-x", 30);
        moved.user = "alice".into();
        assert!(a.read_back(&[moved], &Live::new())["mail"]["alice"].revoked);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_call_finds_a_fresh_token_or_is_told_what_the_user_must_do() {
        let mut live = Live::new();
        let users = live.entry("github".into()).or_default();
        users.insert("alice".into(), token(Some("L"), 100, true, false));
        users.insert("bob".into(), token(Some("L"), 10, true, false));
        users.insert("carol".into(), token(None, 0, true, true));
        users.insert("dave".into(), token(Some("L"), 10, false, false));
        let at = |user| Accounts::lookup(&live, "github", user, 50);
        assert!(matches!(at("alice"), Account::Ready(_)));
        assert!(
            matches!(at("bob"), Account::Refreshing),
            "expired, a refresh is due"
        );
        assert!(matches!(at("carol"), Account::Reconnect), "revoked");
        assert!(
            matches!(at("dave"), Account::Reconnect),
            "expired with no refresh token"
        );
        assert!(matches!(at("erin"), Account::NotConnected));
        assert!(
            matches!(
                Accounts::lookup(&live, "gitlab", "alice", 50),
                Account::NotConnected
            ),
            "a connection is for its upstream alone"
        );
    }
}
