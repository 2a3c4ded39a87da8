//! The structured log lines of the core's events.

use confab_proto::ServerLog;
use tracing::{info, warn};

/// One structured log line per core event. Events never carry content or
/// secrets (the core's contract); reasons are the texts sent to peers.
pub(super) fn log_event(e: &ServerLog) {
    match e {
        ServerLog::Registered { username } => info!(user = %username, "account registered"),
        ServerLog::LoggedIn { session, username } => info!(session = session.0, user = %username, "logged in"),
        ServerLog::Rejected { session, opcode, code, reason } => {
            info!(session = session.0, ?opcode, code, %reason, "request refused");
        }
        ServerLog::BadFrame { session, error } => warn!(session = session.0, %error, "bad frame"),
        ServerLog::SessionClosed { session, code, reason } => {
            info!(session = session.0, code, %reason, "session closed");
        }
        ServerLog::MessageExpired { from, to, seq } => {
            info!(from = %from, to = %to, seq, "undelivered private message expired");
        }
    }
}
