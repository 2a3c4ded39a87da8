//! The serde form of [`State`]: one flat record whose fields keep the order
//! and types of the store format (`confab_server::store::FORMAT_VERSION` 7),
//! whatever the in-memory split into books. Maps are written in key order,
//! so equal states have equal encodings.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::types::{Conversation, Dedup, Lane, MailedRequest, OidcLogin, RetryKey, Room, TokenRecord, User};
use super::{AccountBook, LaneBook, MailBook, RoomBook, State};
use crate::jwt::KeyRecord;
use crate::server::keyed::IntKeyed;

/// Field for field the store format: do not reorder, append only (and bump the format).
#[derive(Serialize)]
struct StoredRef<'a> {
    users: &'a BTreeMap<String, User>,
    tokens: &'a BTreeMap<[u8; 32], TokenRecord>,
    rooms: &'a BTreeMap<String, Room>,
    conversations: &'a BTreeMap<String, BTreeMap<String, Conversation>>,
    lanes: &'a BTreeMap<String, BTreeMap<String, Lane>>,
    inbound: &'a BTreeMap<String, BTreeSet<String>>,
    queued: &'a BTreeMap<String, usize>,
    queued_total: usize,
    notices: &'a BTreeMap<String, Vec<(String, u64)>>,
    dedup: &'a BTreeMap<u64, Dedup>,
    history_cap: usize,
    dedup_cap: usize,
    last_family: u64,
    signing_keys: &'a Vec<KeyRecord>,
    oidc_logins: &'a BTreeMap<[u8; 32], OidcLogin>,
    revoked_refresh: &'a BTreeMap<[u8; 32], u64>,
    oidc_subjects: &'a BTreeMap<[u8; 32], String>,
    oidc_accounts: &'a BTreeMap<String, [u8; 32]>,
    retry_keys: &'a BTreeMap<[u8; 32], RetryKey>,
    mail_next: &'a BTreeMap<u8, u64>,
    mail_applied: &'a BTreeMap<u8, u64>,
    mail_pending: &'a BTreeMap<(u8, u64), MailedRequest>,
}

/// [`StoredRef`], owned, for reading.
#[derive(Deserialize)]
struct Stored {
    users: BTreeMap<String, User>,
    tokens: BTreeMap<[u8; 32], TokenRecord>,
    rooms: BTreeMap<String, Room>,
    conversations: BTreeMap<String, BTreeMap<String, Conversation>>,
    lanes: BTreeMap<String, BTreeMap<String, Lane>>,
    inbound: BTreeMap<String, BTreeSet<String>>,
    queued: BTreeMap<String, usize>,
    queued_total: usize,
    notices: BTreeMap<String, Vec<(String, u64)>>,
    dedup: BTreeMap<u64, Dedup>,
    history_cap: usize,
    dedup_cap: usize,
    last_family: u64,
    signing_keys: Vec<KeyRecord>,
    oidc_logins: BTreeMap<[u8; 32], OidcLogin>,
    revoked_refresh: BTreeMap<[u8; 32], u64>,
    oidc_subjects: BTreeMap<[u8; 32], String>,
    oidc_accounts: BTreeMap<String, [u8; 32]>,
    retry_keys: BTreeMap<[u8; 32], RetryKey>,
    mail_next: BTreeMap<u8, u64>,
    mail_applied: BTreeMap<u8, u64>,
    mail_pending: BTreeMap<(u8, u64), MailedRequest>,
}

impl Serialize for State {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (a, r, l) = (&self.accounts, &self.rooms, &self.lanes);
        StoredRef {
            users: &a.users,
            tokens: &a.tokens,
            rooms: &r.rooms,
            conversations: &l.conversations,
            lanes: &l.lanes,
            inbound: &l.inbound,
            queued: &l.queued,
            queued_total: l.queued_total,
            notices: &l.notices,
            dedup: &a.dedup,
            history_cap: r.history_cap,
            dedup_cap: a.dedup_cap,
            last_family: a.last_family,
            signing_keys: &a.signing_keys,
            oidc_logins: &a.oidc_logins,
            revoked_refresh: &a.revoked_refresh,
            oidc_subjects: &a.oidc_subjects,
            oidc_accounts: &a.oidc_accounts,
            retry_keys: &a.retry_keys,
            mail_next: &self.mail.next,
            mail_applied: &self.mail.applied,
            mail_pending: &self.mail.pending,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for State {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<State, D::Error> {
        let s = Stored::deserialize(deserializer)?;
        Ok(State {
            accounts: AccountBook {
                users: s.users,
                tokens: s.tokens,
                dedup: s.dedup,
                dedup_cap: s.dedup_cap,
                last_family: s.last_family,
                signing_keys: s.signing_keys,
                oidc_logins: s.oidc_logins,
                revoked_refresh: s.revoked_refresh,
                oidc_subjects: s.oidc_subjects,
                oidc_accounts: s.oidc_accounts,
                retry_keys: s.retry_keys,
                hasher: IntKeyed::default(),
            },
            rooms: RoomBook { rooms: s.rooms, history_cap: s.history_cap },
            lanes: LaneBook {
                conversations: s.conversations,
                lanes: s.lanes,
                inbound: s.inbound,
                queued: s.queued,
                queued_total: s.queued_total,
                notices: s.notices,
            },
            mail: {
                let mut mail = MailBook {
                    next: s.mail_next,
                    applied: s.mail_applied,
                    pending: s.mail_pending,
                    by_request: BTreeMap::new(),
                };
                mail.reindex();
                mail
            },
        })
    }
}
