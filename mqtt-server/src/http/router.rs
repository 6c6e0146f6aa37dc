//! Which handler answers a request: the method and path, after the token check. The event
//! stream is not a [`Response`] (it takes the connection over): it is [`Route::Events`].

use super::response::Response;
use super::{HttpShared, api, auth, metrics};

/// The web map, served as is.
pub const INDEX_HTML: &str = include_str!("../../web/index.html");

/// What to do with a request.
pub enum Route {
    Respond(Response),
    Events,
}

fn method_not_allowed(allow: &'static str) -> Route {
    Route::Respond(Response::error(405, &format!("use {allow}"), None).with_header("Allow", allow))
}

/// Routes `req`.
pub fn route(req: &super::request::Request, ctx: &HttpShared) -> Route {
    if !auth::authorized(ctx.token.as_deref(), req.header("authorization")) {
        return Route::Respond(
            Response::error(401, "missing or wrong bearer token", None)
                .with_header("WWW-Authenticate", "Bearer"),
        );
    }
    let parts: Vec<&str> = req.path.split('/').skip(1).collect();
    let get = req.method == "GET" || req.method == "HEAD";
    let post = req.method == "POST";
    let h = &ctx.handle;
    let r = match parts.as_slice() {
        [""] if get => Response {
            status: 200,
            content_type: "text/html; charset=utf-8",
            headers: vec![],
            body: INDEX_HTML.as_bytes().to_vec(),
        },
        ["metrics"] if get => match h.stats() {
            Some(s) => Response {
                status: 200,
                content_type: metrics::CONTENT_TYPE,
                headers: vec![],
                body: metrics::render(&s, ctx).into_bytes(),
            },
            None => Response::error(503, "server shutting down", None),
        },
        ["api", "fleet"] if get => api::fleet(h),
        // Headers only: a HEAD must not open a stream that never ends.
        ["api", "events"] if req.method == "HEAD" => Response {
            status: 200,
            content_type: "text/event-stream",
            headers: vec![],
            body: vec![],
        },
        ["api", "leader"] if get => api::leader(h),
        ["api", "events"] if get => return Route::Events,
        ["api", "pis", id] if get => api::pi(h, id),
        ["api", "segments", id] if get => api::segment(h, id),
        ["api", "pis", id, "entities", entity, "segments"] if post => {
            api::post_segment(h, id, entity, &req.body)
        }
        ["api", "pis", id, "entities", entity, "actions"] if post => {
            api::post_action(h, id, Some(entity), &req.body)
        }
        ["api", "pis", id, "actions"] if post => api::post_action(h, id, None, &req.body),
        ["api", "actions"] if post => api::post_fleet_action(h, &req.body),
        ["api", "actions", id] if get => api::action(h, id),
        [""]
        | ["metrics"]
        | ["api", "fleet"]
        | ["api", "leader"]
        | ["api", "events"]
        | ["api", "pis", _]
        | ["api", "segments", _]
        | ["api", "actions", _] => return method_not_allowed("GET"),
        ["api", "pis", _, "entities", _, "segments" | "actions"]
        | ["api", "pis", _, "actions"]
        | ["api", "actions"] => return method_not_allowed("POST"),
        _ => Response::error(404, &format!("no route {}", req.path), None),
    };
    Route::Respond(r)
}
