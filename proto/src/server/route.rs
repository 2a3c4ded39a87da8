//! Requests split by what they need, once, where they are decoded:
//! [`Anonymous`] ones are served without an access token, [`Authenticated`]
//! ones only for the user the token names.

use crate::wire::{
    AcceptMp, CloseMp, CreateRoom, DeleteRoom, DeliveryAck, FetchKey, Introspect, IssueCode, JoinRoom, Jwks, LeaveRoom,
    Login, Logout, Opcode, Passphrase, Refresh, RefreshKeyed, Register, RequestBody, RequestMp, RoomHistory, RoomInfo,
    SendMp, SendRoom, SetIdentityKey, VerifyCode,
};

/// A decoded request body, by the authentication it needs.
#[derive(Debug)]
pub(crate) enum Route {
    /// Served without an access token.
    Anonymous(Anonymous),
    /// Served for the user the access token names.
    Authenticated(Authenticated),
}

/// Requests that need no access token (logins, and what third parties ask).
#[derive(Debug)]
pub(crate) enum Anonymous {
    Register(Register),
    Login(Login),
    Passphrase(Passphrase),
    Refresh(Refresh),
    RefreshKeyed(RefreshKeyed),
    Jwks(Jwks),
    Introspect(Introspect),
    VerifyCode(VerifyCode),
}

/// Requests made for a user, with its access token.
#[derive(Debug)]
pub(crate) enum Authenticated {
    Logout(Logout),
    FetchKey(FetchKey),
    SetIdentityKey(SetIdentityKey),
    CreateRoom(CreateRoom),
    JoinRoom(JoinRoom),
    SendRoom(SendRoom),
    LeaveRoom(LeaveRoom),
    RoomHistory(RoomHistory),
    DeleteRoom(DeleteRoom),
    RoomInfo(RoomInfo),
    RequestMp(RequestMp),
    AcceptMp(AcceptMp),
    SendMp(SendMp),
    CloseMp(CloseMp),
    DeliveryAck(DeliveryAck),
    IssueCode(IssueCode),
}

impl From<RequestBody> for Route {
    fn from(body: RequestBody) -> Route {
        use Anonymous as An;
        use Authenticated as Au;
        match body {
            RequestBody::Register(b) => Route::Anonymous(An::Register(b)),
            RequestBody::Login(b) => Route::Anonymous(An::Login(b)),
            RequestBody::Passphrase(b) => Route::Anonymous(An::Passphrase(b)),
            RequestBody::Refresh(b) => Route::Anonymous(An::Refresh(b)),
            RequestBody::RefreshKeyed(b) => Route::Anonymous(An::RefreshKeyed(b)),
            RequestBody::Jwks(b) => Route::Anonymous(An::Jwks(b)),
            RequestBody::Introspect(b) => Route::Anonymous(An::Introspect(b)),
            RequestBody::VerifyCode(b) => Route::Anonymous(An::VerifyCode(b)),
            RequestBody::Logout(b) => Route::Authenticated(Au::Logout(b)),
            RequestBody::FetchKey(b) => Route::Authenticated(Au::FetchKey(b)),
            RequestBody::SetIdentityKey(b) => Route::Authenticated(Au::SetIdentityKey(b)),
            RequestBody::CreateRoom(b) => Route::Authenticated(Au::CreateRoom(b)),
            RequestBody::JoinRoom(b) => Route::Authenticated(Au::JoinRoom(b)),
            RequestBody::SendRoom(b) => Route::Authenticated(Au::SendRoom(b)),
            RequestBody::LeaveRoom(b) => Route::Authenticated(Au::LeaveRoom(b)),
            RequestBody::RoomHistory(b) => Route::Authenticated(Au::RoomHistory(b)),
            RequestBody::DeleteRoom(b) => Route::Authenticated(Au::DeleteRoom(b)),
            RequestBody::RoomInfo(b) => Route::Authenticated(Au::RoomInfo(b)),
            RequestBody::RequestMp(b) => Route::Authenticated(Au::RequestMp(b)),
            RequestBody::AcceptMp(b) => Route::Authenticated(Au::AcceptMp(b)),
            RequestBody::SendMp(b) => Route::Authenticated(Au::SendMp(b)),
            RequestBody::CloseMp(b) => Route::Authenticated(Au::CloseMp(b)),
            RequestBody::DeliveryAck(b) => Route::Authenticated(Au::DeliveryAck(b)),
            RequestBody::IssueCode(b) => Route::Authenticated(Au::IssueCode(b)),
        }
    }
}

impl Authenticated {
    /// The request's opcode.
    pub(crate) fn opcode(&self) -> Opcode {
        match self {
            Authenticated::Logout(_) => Opcode::Logout,
            Authenticated::FetchKey(_) => Opcode::FetchKey,
            Authenticated::SetIdentityKey(_) => Opcode::SetIdentityKey,
            Authenticated::CreateRoom(_) => Opcode::CreateRoom,
            Authenticated::JoinRoom(_) => Opcode::JoinRoom,
            Authenticated::SendRoom(_) => Opcode::SendRoom,
            Authenticated::LeaveRoom(_) => Opcode::LeaveRoom,
            Authenticated::RoomHistory(_) => Opcode::RoomHistory,
            Authenticated::DeleteRoom(_) => Opcode::DeleteRoom,
            Authenticated::RoomInfo(_) => Opcode::RoomInfo,
            Authenticated::RequestMp(_) => Opcode::RequestMp,
            Authenticated::AcceptMp(_) => Opcode::AcceptMp,
            Authenticated::SendMp(_) => Opcode::SendMp,
            Authenticated::CloseMp(_) => Opcode::CloseMp,
            Authenticated::DeliveryAck(_) => Opcode::DeliveryAck,
            Authenticated::IssueCode(_) => Opcode::IssueCode,
        }
    }

    /// The room a room request names (its home decides it).
    pub(crate) fn room(&self) -> Option<&str> {
        match self {
            Authenticated::CreateRoom(b) => Some(&b.room),
            Authenticated::JoinRoom(b) => Some(&b.room),
            Authenticated::SendRoom(b) => Some(&b.room),
            Authenticated::LeaveRoom(b) => Some(&b.room),
            Authenticated::RoomHistory(b) => Some(&b.room),
            Authenticated::DeleteRoom(b) => Some(&b.room),
            Authenticated::RoomInfo(b) => Some(&b.room),
            _ => None,
        }
    }

    /// The request body again (to mail it to another partition).
    pub(crate) fn into_body(self) -> RequestBody {
        match self {
            Authenticated::Logout(b) => b.into(),
            Authenticated::FetchKey(b) => b.into(),
            Authenticated::SetIdentityKey(b) => b.into(),
            Authenticated::CreateRoom(b) => b.into(),
            Authenticated::JoinRoom(b) => b.into(),
            Authenticated::SendRoom(b) => b.into(),
            Authenticated::LeaveRoom(b) => b.into(),
            Authenticated::RoomHistory(b) => b.into(),
            Authenticated::DeleteRoom(b) => b.into(),
            Authenticated::RoomInfo(b) => b.into(),
            Authenticated::RequestMp(b) => b.into(),
            Authenticated::AcceptMp(b) => b.into(),
            Authenticated::SendMp(b) => b.into(),
            Authenticated::CloseMp(b) => b.into(),
            Authenticated::DeliveryAck(b) => b.into(),
            Authenticated::IssueCode(b) => b.into(),
        }
    }

    /// The other user of a private-message request that another home may
    /// have to decide (`delivery_ack` never crosses: the lanes to a user
    /// are at its home).
    pub(crate) fn mp_peer(&self) -> Option<&str> {
        match self {
            Authenticated::RequestMp(b) => Some(&b.peer),
            Authenticated::AcceptMp(b) => Some(&b.peer),
            Authenticated::SendMp(b) => Some(&b.peer),
            Authenticated::CloseMp(b) => Some(&b.peer),
            _ => None,
        }
    }

    /// Whether its answer (success or refusal) is remembered so that a retry is not performed
    /// twice, nor performed after it was refused.
    pub(crate) fn is_recorded(&self) -> bool {
        matches!(
            self,
            Authenticated::SendMp(_)
                | Authenticated::SendRoom(_)
                | Authenticated::RequestMp(_)
                | Authenticated::AcceptMp(_)
                | Authenticated::CloseMp(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_is_routed_once_with_its_opcode() {
        use proptest::strategy::{Strategy, ValueTree};
        use proptest::test_runner::TestRunner;
        let mut runner = TestRunner::deterministic();
        let mut anonymous = std::collections::BTreeSet::new();
        for _ in 0..2000 {
            let body = RequestBody::strategy().new_tree(&mut runner).unwrap().current();
            let opcode = body.opcode();
            match Route::from(body.clone()) {
                Route::Authenticated(a) => {
                    assert_eq!(a.opcode(), opcode);
                    assert_eq!(a.into_body(), body, "the body again, as it was");
                }
                Route::Anonymous(_) => {
                    anonymous.insert(opcode as u32);
                }
            }
        }
        let expected = [
            Opcode::Register,
            Opcode::Login,
            Opcode::Passphrase,
            Opcode::Refresh,
            Opcode::RefreshKeyed,
            Opcode::Jwks,
            Opcode::Introspect,
            Opcode::VerifyCode,
        ];
        assert_eq!(anonymous, expected.iter().map(|o| *o as u32).collect());
    }
}
