//! The opcode catalog. Numbers are part of the wire format (seed 001's table,
//! extended in the same ranges): requests are `1000xx`, server events `100xx`.

macro_rules! opcodes {
    ($( $(#[$meta:meta])* $variant:ident = $num:literal, $name:literal; )*) => {
        /// Every opcode of the protocol.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
        #[repr(u32)]
        pub enum Opcode {
            $( $(#[$meta])* $variant = $num, )*
        }

        impl Opcode {
            /// Every opcode, requests first, in numeric order within each range.
            pub const ALL: &'static [Opcode] = &[$(Opcode::$variant,)*];

            /// The opcode with this number, if any.
            #[must_use]
            pub fn from_u32(n: u32) -> Option<Opcode> {
                match n {
                    $( $num => Some(Opcode::$variant), )*
                    _ => None,
                }
            }

            /// The snake_case name used in docs, transcripts and `confab inspect`.
            #[must_use]
            pub fn name(self) -> &'static str {
                match self {
                    $( Opcode::$variant => $name, )*
                }
            }
        }
    };
}

opcodes! {
    /// Create an account (seed 001 `crea`).
    Register = 100001, "register";
    /// Login step one: username and password (seed 001 `auth`).
    Login = 100002, "login";
    /// Login step two: the passphrase (seed 001 `pass`).
    Passphrase = 100003, "passphrase";
    /// Create a room (seed 001 `crms`).
    CreateRoom = 100004, "create_room";
    /// Join a room (seed 001 `jrms`).
    JoinRoom = 100005, "join_room";
    /// Send a sealed message to a room (seed 001 `srms`).
    SendRoom = 100006, "send_room";
    /// Ask another user for a private conversation (seed 001 `jmpu`).
    RequestMp = 100007, "request_mp";
    /// Accept a private conversation (seed 001 `ampu`).
    AcceptMp = 100008, "accept_mp";
    /// Send a sealed private message (seed 001 `smpu`).
    SendMp = 100009, "send_mp";
    /// Exchange a refresh token for a new token pair.
    Refresh = 100010, "refresh";
    /// Revoke this session's tokens.
    Logout = 100011, "logout";
    /// Leave a room.
    LeaveRoom = 100012, "leave_room";
    /// Fetch a room's retained sealed history.
    RoomHistory = 100013, "room_history";
    /// End a private conversation.
    CloseMp = 100014, "close_mp";
    /// Fetch a user's identity public key.
    FetchKey = 100015, "fetch_key";
    /// Acknowledge private messages up to a sequence number.
    DeliveryAck = 100016, "delivery_ack";
    /// Issue a single-use code for a third-party audience.
    IssueCode = 100017, "issue_code";
    /// Verify a code (third-party servers).
    VerifyCode = 100018, "verify_code";
    /// Translate an opaque token into a signed JWT (trusted backends).
    Introspect = 100019, "introspect";
    /// Fetch the server's public JWK Set.
    Jwks = 100020, "jwks";
    /// Delete a room (owner only).
    DeleteRoom = 100021, "delete_room";
    /// Register an identity key for an account that has none (first OIDC login).
    SetIdentityKey = 100022, "set_identity_key";
    /// Fetch a room's public descriptor (room id, key-derivation costs) before joining.
    RoomInfo = 100023, "room_info";
    /// Exchange a refresh token for a new token pair, with a retry key.
    RefreshKeyed = 100024, "refresh_keyed";

    /// Login completed (seed 001 `cnnt`).
    Connected = 10001, "connected";
    /// A private message for this user (seed 001 `rvum`).
    UserMessage = 10002, "user_message";
    /// A room message (seed 001 `rvrm`).
    RoomMessage = 10003, "room_message";
    /// Someone asks this user for a private conversation.
    MpRequest = 10004, "mp_request";
    /// A private conversation this user asked for was accepted.
    MpAccepted = 10005, "mp_accepted";
    /// A private conversation was closed by the peer.
    MpClosed = 10006, "mp_closed";
    /// A conversation peer disconnected.
    PeerGone = 10007, "peer_gone";
    /// An error not tied to a request (for example an undecodable frame).
    Error = 10008, "error";
    /// A private message was dropped undelivered after the retention period.
    MpExpired = 10009, "mp_expired";
}

impl Opcode {
    /// The number on the wire.
    #[must_use]
    pub fn as_u32(self) -> u32 {
        self as u32
    }

    /// Whether this is a client request opcode (`1000xx`); otherwise it is a server event.
    #[must_use]
    pub fn is_request(self) -> bool {
        self.as_u32() >= 100_000
    }

    /// Whether a request with this opcode is made with an empty auth part
    /// (`docs/PROTOCOL.md`, "Authentication"): logging in, exchanging a
    /// refresh token, and what third parties ask (`introspect` carries a
    /// service credential instead of a user's token, so it is not one).
    #[must_use]
    pub fn has_empty_auth(self) -> bool {
        matches!(
            self,
            Opcode::Register
                | Opcode::Login
                | Opcode::Passphrase
                | Opcode::Refresh
                | Opcode::RefreshKeyed
                | Opcode::VerifyCode
                | Opcode::Jwks
        )
    }

    /// `name(number)`, the form used in transcripts and logs.
    #[must_use]
    pub fn label(self) -> String {
        format!("{}({})", self.name(), self.as_u32())
    }
}

impl std::fmt::Display for Opcode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}({})", self.name(), self.as_u32())
    }
}
