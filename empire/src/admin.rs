//! Admin commands that work on the local store: `empire keys …`, `empire users …`,
//! `empire tokens …`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use empire_core::Error;
use empire_core::service::issue_token;
use empire_core::store::{PostgresStore, SqliteStore, Store};

use crate::config::{GlobalArgs, StoreLocation, store_location};

/// `empire keys …`
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Add a public key for a user (the user is created when new).
    Add {
        /// The user the key belongs to.
        user: String,
        /// An OpenSSH public key file (`~/.ssh/id_ed25519.pub`), or `-` for stdin.
        public_key_file: PathBuf,
    },
    /// List keys.
    List,
    /// Remove a key by its fingerprint (`SHA256:…`).
    Remove {
        /// The fingerprint, as `empire keys list` shows it.
        fingerprint: String,
    },
}

/// `empire users …`
#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Add a user (the first user is an admin).
    Add {
        /// The user name.
        name: String,
        /// Make the user an admin.
        #[arg(long)]
        admin: bool,
    },
    /// List users.
    List,
}

/// `empire tokens …`
#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Create an API token for a user and print it (it is shown only once).
    Create {
        /// The user the token authenticates.
        user: String,
        /// What the token is for.
        #[arg(long, default_value = "created by empire tokens create")]
        description: String,
    },
}

/// Opens the store of the data dir that `global` names.
pub async fn open_store(global: &GlobalArgs) -> Result<Arc<dyn Store>> {
    match store_location(global)? {
        StoreLocation::Sqlite(path) => {
            let store = SqliteStore::open(&path)
                .await
                .with_context(|| format!("opening the store {}", path.display()))?;
            Ok(Arc::new(store))
        }
        StoreLocation::Postgres(url) => {
            let store = PostgresStore::connect(&url)
                .await
                .context("opening the PostgreSQL store (--database-url)")?;
            Ok(Arc::new(store))
        }
    }
}

/// Runs `empire keys …`.
pub async fn keys(global: &GlobalArgs, command: KeysCommand) -> Result<()> {
    let store = open_store(global).await?;
    match command {
        KeysCommand::Add {
            user,
            public_key_file,
        } => {
            let text = if public_key_file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading the key from stdin")?
            } else {
                std::fs::read_to_string(&public_key_file)
                    .with_context(|| format!("reading {}", public_key_file.display()))?
            };
            let (fingerprint, public_key) = empire_gitd::parse_public_key(text.trim())
                .with_context(|| {
                    format!("{} is not an OpenSSH public key", public_key_file.display())
                })?;
            match store.create_user(&user, false).await {
                Ok(created) => println!(
                    "Created user {}{}",
                    created.name,
                    if created.admin { " (admin)" } else { "" }
                ),
                Err(Error::Conflict(_)) => {}
                Err(err) => return Err(err.into()),
            }
            let key = store.add_key(&user, &fingerprint, &public_key).await?;
            println!("Added key {} for {}", key.fingerprint, key.user);
        }
        KeysCommand::List => {
            let keys = store.keys(None).await?;
            if keys.is_empty() {
                println!("No keys. Add one with: empire keys add <user> ~/.ssh/id_ed25519.pub");
            }
            for key in keys {
                let kind = key.public_key.split_whitespace().next().unwrap_or("?");
                println!("{}  {}  {}", key.fingerprint, key.user, kind);
            }
        }
        KeysCommand::Remove { fingerprint } => {
            store.remove_key(&fingerprint).await?;
            println!("Removed key {fingerprint}");
        }
    }
    Ok(())
}

/// Runs `empire users …`.
pub async fn users(global: &GlobalArgs, command: UsersCommand) -> Result<()> {
    let store = open_store(global).await?;
    match command {
        UsersCommand::Add { name, admin } => {
            let user = store.create_user(&name, admin).await?;
            println!(
                "Created user {}{}",
                user.name,
                if user.admin { " (admin)" } else { "" }
            );
        }
        UsersCommand::List => {
            for user in store.users().await? {
                println!("{}{}", user.name, if user.admin { "  admin" } else { "" });
            }
        }
    }
    Ok(())
}

/// Runs `empire tokens …`.
pub async fn tokens(global: &GlobalArgs, command: TokensCommand) -> Result<()> {
    let store = open_store(global).await?;
    match command {
        TokensCommand::Create { user, description } => {
            match store.user(&user).await {
                Ok(_) => {}
                Err(Error::NotFound { .. }) => {
                    bail!("there is no user {user}: add it with `empire users add {user}`")
                }
                Err(err) => return Err(err.into()),
            }
            let token = issue_token(store.as_ref(), &user, &description).await?;
            println!("{}", token.secret);
            eprintln!(
                "Created an API token for {user}; it is shown only this once. Use it as the \
                 password of HTTP Basic auth (a .netrc entry) or as `Authorization: Bearer <token>`."
            );
        }
    }
    Ok(())
}
