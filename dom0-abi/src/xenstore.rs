//! Xenstore's wire protocol (`io/xs_wire.h`) and the store ring a domU
//! shares with the xenstore server (`start_info.store_mfn`,
//! `start_info.store_evtchn`).
//!
//! Xenstore is not a hypercall: it is a protocol between a guest and the
//! xenstore server (xenstored, here dom0), carried by the ring page
//! [`XenstoreDomainInterface`] and an interdomain event channel. Each
//! message is an [`XsdSockmsg`] header followed by `len` payload bytes.

numbered_enum! {
    /// `XS_*`: the `type` of a message. A type this list lacks (20, or 23
    /// and above) is answered with the error `ENOSYS`.
    XsType {
        /// `cmd\0args…\0`: server-specific commands. Privileged only
        /// (`EACCES` otherwise).
        Control = 0, "CONTROL";
        /// `path\0` → each child's name followed by a NUL.
        Directory = 1, "DIRECTORY";
        /// `path\0` → the value, without a trailing NUL.
        Read = 2, "READ";
        /// `path\0` → `perm\0perm\0…`.
        GetPerms = 3, "GET_PERMS";
        /// `path\0token\0` → `OK\0`, then a [`XsType::WatchEvent`] for
        /// `path` straight away.
        Watch = 4, "WATCH";
        /// `path\0token\0` → `OK\0`.
        Unwatch = 5, "UNWATCH";
        /// `\0` → the new transaction's id in decimal, NUL-terminated.
        TransactionStart = 6, "TRANSACTION_START";
        /// `T\0` commits, `F\0` aborts → `OK\0` (`EAGAIN`: the commit
        /// conflicts with a change made since the transaction started).
        TransactionEnd = 7, "TRANSACTION_END";
        /// `domid\0mfn\0port\0` → `OK\0`. Privileged only.
        Introduce = 8, "INTRODUCE";
        /// `domid\0` → `OK\0`. Privileged only.
        Release = 9, "RELEASE";
        /// `domid\0` → `/local/domain/<domid>\0`.
        GetDomainPath = 10, "GET_DOMAIN_PATH";
        /// `path\0value` (the value is the rest of the payload) → `OK\0`.
        Write = 11, "WRITE";
        /// `path\0` → `OK\0`.
        Mkdir = 12, "MKDIR";
        /// `path\0` → `OK\0`.
        Rm = 13, "RM";
        /// `path\0perm\0perm\0…` → `OK\0`.
        SetPerms = 14, "SET_PERMS";
        /// Server to client only: `path\0token\0`.
        WatchEvent = 15, "WATCH_EVENT";
        /// Reply only: an error name ([`XSD_ERRORS`]) and a NUL.
        Error = 16, "ERROR";
        /// `domid\0` → `T\0` or `F\0`. Privileged only.
        IsDomainIntroduced = 17, "IS_DOMAIN_INTRODUCED";
        /// `domid\0` → `OK\0`. Privileged only.
        Resume = 18, "RESUME";
        /// `domid\0tdomid\0` → `OK\0`. Privileged only.
        SetTarget = 19, "SET_TARGET";
        /// `\0` → `OK\0`: drops every watch and transaction of the caller.
        ResetWatches = 21, "RESET_WATCHES";
        /// `path\0offset\0` → `generation\0` then the children list from
        /// byte `offset`, an empty string marking its end.
        DirectoryPart = 22, "DIRECTORY_PART";
    }
}

/// Error names a server sends in an [`XsType::Error`] reply (`xsd_errors[]`,
/// in Xen's table order).
pub const XSD_ERRORS: [&str; 16] = [
    "EINVAL",
    "EACCES",
    "EEXIST",
    "EISDIR",
    "ENOENT",
    "ENOMEM",
    "ENOSPC",
    "EIO",
    "ENOTEMPTY",
    "ENOSYS",
    "EROFS",
    "EBUSY",
    "EAGAIN",
    "EISCONN",
    "E2BIG",
    "EPERM",
];

/// Largest payload of one message (`XENSTORE_PAYLOAD_MAX`). A client that
/// sends more has its connection closed.
pub const XENSTORE_PAYLOAD_MAX: usize = 4096;
/// Longest absolute path (`XENSTORE_ABS_PATH_MAX`).
pub const XENSTORE_ABS_PATH_MAX: usize = 3072;
/// Longest relative path (`XENSTORE_REL_PATH_MAX`).
pub const XENSTORE_REL_PATH_MAX: usize = 2048;
/// Size of each of the two byte rings (`XENSTORE_RING_SIZE`).
pub const XENSTORE_RING_SIZE: usize = 1024;

/// `struct xsd_sockmsg` (16 bytes): the header of every message.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XsdSockmsg {
    /// An [`XsType`].
    pub ty: u32,
    /// Chosen by the client, echoed in the reply; 0 in a watch event.
    pub req_id: u32,
    /// Transaction id, 0 outside a transaction; echoed in the reply.
    pub tx_id: u32,
    /// Payload bytes that follow (at most [`XENSTORE_PAYLOAD_MAX`]).
    pub len: u32,
}

crate::assert_layout!(XsdSockmsg, 16, { ty: 0, req_id: 4, tx_id: 8, len: 12 });

/// `struct xenstore_domain_interface` (2076 bytes), at the start of the
/// page named by `start_info.store_mfn`.
///
/// Two byte rings: the guest writes requests into `req` and publishes
/// `req_prod`, the server consumes them and advances `req_cons`; the server
/// writes replies and watch events into `rsp` and publishes `rsp_prod`, the
/// guest advances `rsp_cons`. Indices (`XENSTORE_RING_IDX`) run freely and
/// wrap; index `i` is byte `i % 1024`. Messages may straddle the wrap and
/// are not aligned. Each side notifies the store event channel after
/// publishing.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XenstoreDomainInterface {
    /// `[GUEST]` Request bytes.
    pub req: [u8; XENSTORE_RING_SIZE],
    /// `[BACKEND]` Reply and watch event bytes.
    pub rsp: [u8; XENSTORE_RING_SIZE],
    /// `[BACKEND]` Request consumer index.
    pub req_cons: u32,
    /// `[GUEST]` Request producer index.
    pub req_prod: u32,
    /// `[GUEST]` Reply consumer index.
    pub rsp_cons: u32,
    /// `[BACKEND]` Reply producer index.
    pub rsp_prod: u32,
    /// `[BACKEND]` Features the server offers (`XENSTORE_SERVER_FEATURE_*`);
    /// Xen 4.17's xenstored and this one leave it 0.
    pub server_features: u32,
    /// `XENSTORE_CONNECTED` (0) or `XENSTORE_RECONNECT` (1).
    pub connection: u32,
    /// `[BACKEND]` `XENSTORE_ERROR_*`, meaningful only with the error
    /// feature (not offered).
    pub error: u32,
}

crate::assert_layout!(XenstoreDomainInterface, 2076, {
    req: 0, rsp: 1024, req_cons: 2048, req_prod: 2052, rsp_cons: 2056, rsp_prod: 2060,
    server_features: 2064, connection: 2068, error: 2072,
});

numbered_enum! {
    /// `XenbusState*`: the values a front or back end writes, in decimal,
    /// to its `state` node.
    XenbusState {
        /// Not yet set.
        Unknown = 0, "Unknown";
        /// Setting up.
        Initialising = 1, "Initialising";
        /// Waiting for the other end's details (a back end, after
        /// publishing its own).
        InitWait = 2, "InitWait";
        /// Details published, waiting to connect (a front end).
        Initialised = 3, "Initialised";
        /// Running.
        Connected = 4, "Connected";
        /// Shutting down.
        Closing = 5, "Closing";
        /// Gone.
        Closed = 6, "Closed";
        /// Reconfiguring.
        Reconfiguring = 7, "Reconfiguring";
        /// Reconfigured.
        Reconfigured = 8, "Reconfigured";
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Wire;

    #[test]
    fn header_round_trips_little_endian() {
        let msg = XsdSockmsg {
            ty: XsType::Write as u32,
            req_id: 7,
            tx_id: 3,
            len: 0x102,
        };
        let mut bytes = [0u8; 16];
        msg.to_wire(&mut bytes).unwrap();
        assert_eq!(bytes, [11, 0, 0, 0, 7, 0, 0, 0, 3, 0, 0, 0, 2, 1, 0, 0]);
        assert_eq!(XsdSockmsg::from_wire(&bytes), Some(msg));
    }

    #[test]
    fn type_20_is_unassigned() {
        assert_eq!(XsType::from_number(20), None);
        assert_eq!(XsType::from_number(22), Some(XsType::DirectoryPart));
        assert_eq!(XsType::from_number(23), None);
        assert_eq!(XSD_ERRORS[12], "EAGAIN");
    }
}
