//! The web console, embedded in the binary: `/` is `index.html`, everything else is under
//! `/assets/`. No CDN and no front-end build: these files are served as they are in the repo.

use axum::extract::Path;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

/// `(path under /assets/, content type, bytes)`.
const ASSETS: &[(&str, &str, &[u8])] = &[
    ("console.js", "text/javascript; charset=utf-8", include_bytes!("../../assets/console.js")),
    ("console.css", "text/css; charset=utf-8", include_bytes!("../../assets/console.css")),
    (
        "vendor/dagre.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/vendor/dagre.min.js"),
    ),
    (
        "vendor/dagre.LICENSE",
        "text/plain; charset=utf-8",
        include_bytes!("../../assets/vendor/dagre.LICENSE"),
    ),
    ("vendor/README", "text/plain; charset=utf-8", include_bytes!("../../assets/vendor/README")),
];

const INDEX: &str = include_str!("../../assets/index.html");

/// `GET /`: the console page. Not cached, so a new binary's page is picked up at once; the
/// assets it names are revalidated (`no-cache`) for the same reason — they are small and the
/// console is used by a handful of operators, so freshness beats fingerprinting.
pub(crate) async fn index() -> Response {
    ([(CONTENT_TYPE, "text/html; charset=utf-8"), (CACHE_CONTROL, "no-cache")], INDEX)
        .into_response()
}

/// `GET /assets/{*path}`.
pub(crate) async fn asset(Path(path): Path<String>) -> Response {
    match ASSETS.iter().find(|(p, _, _)| *p == path) {
        Some((_, ty, bytes)) => {
            ([(CONTENT_TYPE, *ty), (CACHE_CONTROL, "no-cache")], *bytes).into_response()
        }
        None => ApiError::not_found(format!("no asset `{path}`")).into_response(),
    }
}
