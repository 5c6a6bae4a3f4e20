//! rkvd's gRPC methods by path, for `rkv-grpc`'s server: `rkvpb.RKV` (relab's rkv) and
//! `rkv.v1.Kv`, each path calling the method of the tonic-generated service trait that
//! [`RkvService`] or [`ForwardingKv`] implements.

use std::sync::Arc;

use rkv_grpc::Router;
use rkv_wire::rkvpb::rkv_server::Rkv;
use rkv_wire::v1::kv_server::Kv;

use crate::forward::ForwardingKv;
use crate::rkvpb_service::RkvService;

/// Adds the method `$method` of `$service` (an `Arc`) under `$path`.
macro_rules! route {
    ($router:ident . $kind:ident, $service:expr, $trait:ident, $path:literal, $method:ident) => {{
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
    let router = route!(router.unary, rkv, Rkv, "/rkvpb.RKV/Register", register);
    let router = route!(router.unary, rkv, Rkv, "/rkvpb.RKV/Insert", insert);
    let router = route!(router.unary, rkv, Rkv, "/rkvpb.RKV/Lookup", lookup);
    let router = route!(router.unary, rkv, Rkv, "/rkvpb.RKV/Reconf", reconf);
    let router = route!(
        router.unary,
        rkv,
        Rkv,
        "/rkvpb.RKV/ReconfOnBecome",
        reconf_on_become
    );
    let router = route!(router.unary, kv, Kv, "/rkv.v1.Kv/Get", get);
    let router = route!(router.unary, kv, Kv, "/rkv.v1.Kv/Put", put);
    let router = route!(router.unary, kv, Kv, "/rkv.v1.Kv/Delete", delete);
    let router = route!(
        router.unary,
        kv,
        Kv,
        "/rkv.v1.Kv/CompareAndSwap",
        compare_and_swap
    );
    let router = route!(router.unary, kv, Kv, "/rkv.v1.Kv/Scan", scan);
    let router = route!(router.server_streaming, kv, Kv, "/rkv.v1.Kv/Watch", watch);
    let router = route!(router.unary, kv, Kv, "/rkv.v1.Kv/OpenSession", open_session);
    let router = route!(router.unary, kv, Kv, "/rkv.v1.Kv/MemberList", member_list);
    let router = route!(router.unary, kv, Kv, "/rkv.v1.Kv/MemberAdd", member_add);
    let router = route!(
        router.unary,
        kv,
        Kv,
        "/rkv.v1.Kv/MemberRemove",
        member_remove
    );
    let router = route!(
        router.unary,
        kv,
        Kv,
        "/rkv.v1.Kv/MemberPromote",
        member_promote
    );
    let router = route!(
        router.unary,
        kv,
        Kv,
        "/rkv.v1.Kv/TransferLeader",
        transfer_leader
    );
    route!(router.unary, kv, Kv, "/rkv.v1.Kv/Status", status)
}
