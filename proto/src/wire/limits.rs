//! Decoding limits. Every bound the codec enforces is a named field here.

/// Size limits checked by the codec before anything is allocated.
///
/// The defaults are the ones documented in `docs/PROTOCOL.md`; a server or
/// client may lower (or raise) them through its configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted `len_auth` (default 4 KiB).
    pub max_auth: u32,
    /// Largest accepted `len_data` (default 1 MiB).
    pub max_data: u64,
    /// Largest name field in bytes: usernames, rooms, audiences (default 64).
    pub max_name: u16,
    /// Largest short text field in bytes: passwords, tokens, reasons (default 1024).
    pub max_text: u16,
    /// Largest number of items in a list field (default 1024).
    pub max_items: u16,
}

impl Limits {
    /// The documented defaults: auth 4 KiB, data 1 MiB, names 64 B, texts 1 KiB, lists 1024 items.
    pub const DEFAULT: Limits =
        Limits { max_auth: 4 * 1024, max_data: 1024 * 1024, max_name: 64, max_text: 1024, max_items: 1024 };
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}
