//! The operator dashboard: a static web page every metadata node serves on
//! [`DASHBOARD_PATH`], with its script and style sheet.
//!
//! The page holds no data: it asks for the cluster secret (a login form,
//! or `#secret=...` in the URL fragment, which browsers never send to the
//! server; the page moves it into `sessionStorage` and drops it from the
//! address bar), then polls the same admin API `cairn admin status` uses,
//! every 2 s, with the secret in `x-cairn-secret`: `/v1/status` (this
//! node's Raft view), `/v1/admin/cluster` (the leader's `ClusterStatus`;
//! a follower answers 421 with the leader's address, and the page links
//! to the leader's dashboard: a cross-origin call would need CORS, which
//! the API does not do) and `/v1/admin/workers`. Those keep requiring the
//! secret; only the three static files below are served without it, the
//! way `/metrics` is (exact paths, GET or HEAD).
//!
//! Events ("chunkserver 3 down", corrupt shards found by scrub, repairs
//! dispatched and committed, leader changes) are derived in the page from
//! the differences between polls and from what the status already reports
//! (`recent_repairs`, per-chunkserver `bad_found`); they are kept in the
//! tab's `sessionStorage`, bounded, so the node keeps no event log.
//!
//! The assets are embedded with `include_str!` (plain HTML, JS and CSS, no
//! build step, no external URL) and served with a `default-src 'self'`
//! content security policy, `nosniff`, and `no-store` caching.

use http::{header, HeaderValue, Method, Request, Response, StatusCode};

use crate::net::{self, Body};

/// The dashboard page.
pub const DASHBOARD_PATH: &str = "/dashboard";

/// The content security policy of every dashboard reply: scripts, styles
/// and API calls from this origin only, no inline code, no framing.
pub const CSP: &str =
    "default-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One embedded file: path, content type, bytes.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

/// Every file the dashboard serves.
const ASSETS: &[Asset] = &[
    Asset {
        path: "/dashboard",
        content_type: "text/html; charset=utf-8",
        body: include_str!("dashboard/index.html"),
    },
    Asset {
        path: "/dashboard/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("dashboard/app.js"),
    },
    Asset {
        path: "/dashboard/style.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("dashboard/style.css"),
    },
];

/// The reply to `req` when it asks for the dashboard (GET or HEAD of
/// `/dashboard`, `/dashboard/` or a path under it; a query is ignored):
/// the file, or 404 for an unknown one. `None` for anything else, which is
/// the node's API and needs the secret.
pub fn serve<B>(req: &Request<B>) -> Option<Response<Body>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return None;
    }
    let path = req.uri().path();
    if path != DASHBOARD_PATH && !path.starts_with("/dashboard/") {
        return None;
    }
    let path = if path == "/dashboard/" {
        DASHBOARD_PATH
    } else {
        path
    };
    let mut r = match ASSETS.iter().find(|a| a.path == path) {
        Some(a) => {
            let mut r = Response::new(net::full(a.body));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(a.content_type),
            );
            r
        }
        None => net::error_response(StatusCode::NOT_FOUND, "NotFound", "no such dashboard file"),
    };
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(m: Method, uri: &str) -> Option<Response<Body>> {
        serve(&Request::builder().method(m).uri(uri).body(()).unwrap())
    }

    fn header<'a>(r: &'a Response<Body>, name: &str) -> &'a str {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    async fn body(r: Response<Body>) -> String {
        let b = net::read_body(r.into_body(), 1 << 20).await.unwrap();
        String::from_utf8(b.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn static_files_have_their_types_and_headers() {
        for (uri, ty) in [
            ("/dashboard", "text/html; charset=utf-8"),
            ("/dashboard/", "text/html; charset=utf-8"),
            ("/dashboard?x=1", "text/html; charset=utf-8"),
            ("/dashboard/app.js", "text/javascript; charset=utf-8"),
            ("/dashboard/style.css", "text/css; charset=utf-8"),
        ] {
            let r = get(Method::GET, uri).unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{uri}");
            assert_eq!(header(&r, "content-type"), ty, "{uri}");
            assert_eq!(header(&r, "content-security-policy"), CSP, "{uri}");
            assert!(CSP.starts_with("default-src 'self'"));
            assert_eq!(header(&r, "x-content-type-options"), "nosniff", "{uri}");
            assert_eq!(header(&r, "cache-control"), "no-store", "{uri}");
            assert!(!body(r).await.is_empty(), "{uri}");
        }
        let r = get(Method::HEAD, "/dashboard/app.js").unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn the_page_loads_only_its_own_files() {
        let html = body(get(Method::GET, "/dashboard").unwrap()).await;
        assert!(html.contains(r#"src="/dashboard/app.js""#), "{html}");
        assert!(html.contains(r#"href="/dashboard/style.css""#), "{html}");
        assert!(html.contains(r#"id="redundancy""#), "{html}");
        for text in [
            html,
            body(get(Method::GET, "/dashboard/app.js").unwrap()).await,
            body(get(Method::GET, "/dashboard/style.css").unwrap()).await,
        ] {
            assert!(!text.contains("http://") && !text.contains("https://"));
            assert!(!text.contains("<script>") && !text.contains("style=\""));
        }
    }

    #[tokio::test]
    async fn unknown_files_are_404_with_the_same_headers() {
        for uri in [
            "/dashboard/x.js",
            "/dashboard/../v1/status",
            "/dashboard/app.js/",
        ] {
            let r = get(Method::GET, uri).unwrap();
            assert_eq!(r.status(), StatusCode::NOT_FOUND, "{uri}");
            assert_eq!(header(&r, "x-content-type-options"), "nosniff");
            assert_eq!(header(&r, "content-security-policy"), CSP);
        }
    }

    #[test]
    fn data_endpoints_are_not_served_here() {
        // Everything else falls through to the API, which checks the secret.
        for (m, uri) in [
            (Method::POST, "/v1/admin/cluster"),
            (Method::GET, "/v1/admin/cluster"),
            (Method::POST, "/v1/status"),
            (Method::POST, "/dashboard"),
            (Method::PUT, "/dashboard/app.js"),
            (Method::GET, "/dashboardx"),
            (Method::GET, "/"),
        ] {
            assert!(get(m.clone(), uri).is_none(), "{m} {uri}");
        }
    }
}
