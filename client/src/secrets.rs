//! Secrets: from the environment, else a no-echo prompt on the terminal.
//!
//! | secret | variable | used by |
//! | --- | --- | --- |
//! | account password | `CONFAB_PASSWORD` | `register`, `login` |
//! | login passphrase (three words or more) | `CONFAB_PASSPHRASE` | `register`, `login` |
//! | room password | `CONFAB_ROOM_PASSWORD` | `room create`, `room join` |
//!
//! Values are held in [`Zeroizing`] strings and erased when dropped.

use std::collections::HashMap;

use zeroize::Zeroizing;

/// Which secret is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Secret {
    /// The account password.
    Password,
    /// The login passphrase.
    Passphrase,
    /// A room's password.
    RoomPassword,
}

impl Secret {
    /// The environment variable that carries it.
    #[must_use]
    pub fn var(self) -> &'static str {
        match self {
            Secret::Password => "CONFAB_PASSWORD",
            Secret::Passphrase => "CONFAB_PASSPHRASE",
            Secret::RoomPassword => "CONFAB_ROOM_PASSWORD",
        }
    }

    fn prompt(self) -> &'static str {
        match self {
            Secret::Password => "password: ",
            Secret::Passphrase => "passphrase (three words or more): ",
            Secret::RoomPassword => "room password: ",
        }
    }
}

/// Why a secret could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// Not in the environment and no terminal to ask on.
    #[error("{} is not set and there is no terminal to ask for it: {source}", .secret.var())]
    NoTerminal {
        /// The secret.
        secret: Secret,
        /// The terminal error.
        source: std::io::Error,
    },
    /// The value given is empty.
    #[error("empty {} given", .0.var())]
    Empty(Secret),
}

/// Where secrets come from.
pub trait Secrets {
    /// The value of `secret`.
    fn get(&mut self, secret: Secret) -> Result<Zeroizing<String>, SecretError>;
}

/// The environment, then a no-echo prompt on the terminal.
#[derive(Debug, Default)]
pub struct EnvOrPrompt;

impl Secrets for EnvOrPrompt {
    fn get(&mut self, secret: Secret) -> Result<Zeroizing<String>, SecretError> {
        let value = match std::env::var(secret.var()) {
            Ok(value) => Zeroizing::new(value),
            Err(_) => Zeroizing::new(
                rpassword::prompt_password(secret.prompt())
                    .map_err(|source| SecretError::NoTerminal { secret, source })?,
            ),
        };
        if value.is_empty() {
            return Err(SecretError::Empty(secret));
        }
        Ok(value)
    }
}

/// Fixed values (tests, scripts embedding the library).
#[derive(Debug, Default, Clone)]
pub struct Fixed(pub HashMap<Secret, String>);

impl Secrets for Fixed {
    fn get(&mut self, secret: Secret) -> Result<Zeroizing<String>, SecretError> {
        match self.0.get(&secret) {
            Some(v) if !v.is_empty() => Ok(Zeroizing::new(v.clone())),
            _ => Err(SecretError::Empty(secret)),
        }
    }
}
