//! rkvd's gRPC methods by path, for `rkv-grpc`'s server: `rkvpb.RKV` (relab's rkv) and
//! `rkv.v1.Kv`, each path calling the method of the tonic-generated service trait that
//! [`RkvService`] or [`ForwardingKv`] implements.

use std::sync::Arc;

use rkv_grpc::Router;
use rkv_wire::paths;
use rkv_wire::rkvpb::rkv_server::Rkv;
use rkv_wire::v1::kv_server::Kv;

use crate::forward::ForwardingKv;
use crate::rkvpb_service::RkvService;

/// Adds the method `$method` of `$service` (an `Arc`) under `$path`.
macro_rules! route {
    ($router:ident . $kind:ident, $service:expr, $trait:ident, $path:expr, $method:ident) => {{
        let service = $service.clone();
        $router.$kind($path, move |request| {
            let service = service.clone();
            async move { $trait::$method(&*service, request).await }
        })
    }};
}

/// Every method rkvd serves; messages larger than `max_message_bytes` (`-maxgrpc`) are
/// refused either way.
pub fn router(rkv: RkvService, kv: ForwardingKv, max_message_bytes: usize) -> Router {
    let (rkv, kv) = (Arc::new(rkv), Arc::new(kv));
    let router = Router::new(max_message_bytes);
    let router = route!(router.unary, rkv, Rkv, paths::rkvpb::REGISTER, register);
    let router = route!(router.unary, rkv, Rkv, paths::rkvpb::INSERT, insert);
    let router = route!(router.unary, rkv, Rkv, paths::rkvpb::LOOKUP, lookup);
    let router = route!(router.unary, rkv, Rkv, paths::rkvpb::RECONF, reconf);
    let router = route!(
        router.unary,
        rkv,
        Rkv,
        paths::rkvpb::RECONF_ON_BECOME,
        reconf_on_become
    );
    let router = route!(router.unary, kv, Kv, paths::v1::GET, get);
    let router = route!(router.unary, kv, Kv, paths::v1::PUT, put);
    let router = route!(router.unary, kv, Kv, paths::v1::DELETE, delete);
    let router = route!(
        router.unary,
        kv,
        Kv,
        paths::v1::COMPARE_AND_SWAP,
        compare_and_swap
    );
    let router = route!(router.unary, kv, Kv, paths::v1::SCAN, scan);
    let router = route!(router.server_streaming, kv, Kv, paths::v1::WATCH, watch);
    let router = route!(router.unary, kv, Kv, paths::v1::OPEN_SESSION, open_session);
    let router = route!(router.unary, kv, Kv, paths::v1::MEMBER_LIST, member_list);
    let router = route!(router.unary, kv, Kv, paths::v1::MEMBER_ADD, member_add);
    let router = route!(
        router.unary,
        kv,
        Kv,
        paths::v1::MEMBER_REMOVE,
        member_remove
    );
    let router = route!(
        router.unary,
        kv,
        Kv,
        paths::v1::MEMBER_PROMOTE,
        member_promote
    );
    let router = route!(
        router.unary,
        kv,
        Kv,
        paths::v1::TRANSFER_LEADER,
        transfer_leader
    );
    route!(router.unary, kv, Kv, paths::v1::STATUS, status)
}
