//! The gRPC path (`/package.Service/Method`) of every method of rkv's services, for the
//! server's route table and the client's calls, which are not tonic's generated code
//! (see `rkv-grpc`). Checked against the generated service names in this module's tests.

/// `rkvpb.RKV` (relab's rkv).
pub mod rkvpb {
    /// `Register`.
    pub const REGISTER: &str = "/rkvpb.RKV/Register";
    /// `Insert`.
    pub const INSERT: &str = "/rkvpb.RKV/Insert";
    /// `Lookup`.
    pub const LOOKUP: &str = "/rkvpb.RKV/Lookup";
    /// `Reconf`.
    pub const RECONF: &str = "/rkvpb.RKV/Reconf";
    /// `ReconfOnBecome`.
    pub const RECONF_ON_BECOME: &str = "/rkvpb.RKV/ReconfOnBecome";
    /// Every method above.
    pub const ALL: [&str; 5] = [REGISTER, INSERT, LOOKUP, RECONF, RECONF_ON_BECOME];
}

/// `rkv.v1.Kv`.
pub mod v1 {
    /// `Get`.
    pub const GET: &str = "/rkv.v1.Kv/Get";
    /// `Put`.
    pub const PUT: &str = "/rkv.v1.Kv/Put";
    /// `Delete`.
    pub const DELETE: &str = "/rkv.v1.Kv/Delete";
    /// `CompareAndSwap`.
    pub const COMPARE_AND_SWAP: &str = "/rkv.v1.Kv/CompareAndSwap";
    /// `Scan`.
    pub const SCAN: &str = "/rkv.v1.Kv/Scan";
    /// `Watch` (server streaming).
    pub const WATCH: &str = "/rkv.v1.Kv/Watch";
    /// `OpenSession`.
    pub const OPEN_SESSION: &str = "/rkv.v1.Kv/OpenSession";
    /// `MemberList`.
    pub const MEMBER_LIST: &str = "/rkv.v1.Kv/MemberList";
    /// `MemberAdd`.
    pub const MEMBER_ADD: &str = "/rkv.v1.Kv/MemberAdd";
    /// `MemberRemove`.
    pub const MEMBER_REMOVE: &str = "/rkv.v1.Kv/MemberRemove";
    /// `MemberPromote`.
    pub const MEMBER_PROMOTE: &str = "/rkv.v1.Kv/MemberPromote";
    /// `TransferLeader`.
    pub const TRANSFER_LEADER: &str = "/rkv.v1.Kv/TransferLeader";
    /// `Status`.
    pub const STATUS: &str = "/rkv.v1.Kv/Status";
    /// Every method above.
    pub const ALL: [&str; 13] = [
        GET,
        PUT,
        DELETE,
        COMPARE_AND_SWAP,
        SCAN,
        WATCH,
        OPEN_SESSION,
        MEMBER_LIST,
        MEMBER_ADD,
        MEMBER_REMOVE,
        MEMBER_PROMOTE,
        TRANSFER_LEADER,
        STATUS,
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The services' names as tonic generated them from the .proto files, and every
    /// method of the .proto files, by name.
    #[test]
    fn the_paths_are_the_protos_methods() {
        let check = |service: &str, paths: &[&str], proto: &str| {
            let methods: Vec<String> = proto
                .lines()
                .filter_map(|line| line.trim().strip_prefix("rpc "))
                .filter_map(|rest| rest.split('(').next())
                .map(|name| format!("/{service}/{}", name.trim()))
                .collect();
            let mut listed: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
            let mut expected = methods.clone();
            listed.sort();
            expected.sort();
            assert_eq!(listed, expected, "{service}");
        };
        check(
            crate::rkvpb::rkv_server::SERVICE_NAME,
            &rkvpb::ALL,
            include_str!("../proto/rkvpb/rkv.proto"),
        );
        check(
            crate::v1::kv_server::SERVICE_NAME,
            &v1::ALL,
            include_str!("../proto/rkv/v1/rkv.proto"),
        );
    }
}
