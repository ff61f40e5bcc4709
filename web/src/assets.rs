//! The page and its scripts, embedded in the binary: the page works with
//! no network and loads nothing from anywhere but this server.
//! `assets/vendor/README.md` says where the vendored files come from.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    pub name: &'static str,
    pub content_type: &'static str,
    pub bytes: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $path:literal, $type:expr) => {
        Asset { name: $name, content_type: $type, bytes: include_bytes!(concat!("../assets/", $path)) }
    };
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// Everything under `/assets/`.
pub static ASSETS: &[Asset] = &[
    asset!("app.js", "app.js", JS),
    asset!("app.css", "app.css", CSS),
    asset!("uPlot.iife.min.js", "vendor/uPlot.iife.min.js", JS),
    asset!("uPlot.min.css", "vendor/uPlot.min.css", CSS),
    asset!("d3-dispatch.min.js", "vendor/d3-dispatch.min.js", JS),
    asset!("d3-quadtree.min.js", "vendor/d3-quadtree.min.js", JS),
    asset!("d3-timer.min.js", "vendor/d3-timer.min.js", JS),
    asset!("d3-force.min.js", "vendor/d3-force.min.js", JS),
    asset!("favicon.svg", "favicon.svg", SVG),
];

/// The page itself.
pub static INDEX: &[u8] = include_bytes!("../assets/index.html");

pub async fn index() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX).into_response()
}

pub async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(asset) => ([(header::CONTENT_TYPE, asset.content_type)], asset.bytes).into_response(),
        None => (StatusCode::NOT_FOUND, "no such file\n").into_response(),
    }
}

/// Bytes of everything the page loads.
pub fn total_bytes() -> usize {
    INDEX.len() + ASSETS.iter().map(|a| a.bytes.len()).sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_embedded_is_under_one_megabyte() {
        assert!(total_bytes() < 1 << 20, "{} bytes", total_bytes());
    }

    #[test]
    fn types_are_declared() {
        for asset in ASSETS {
            let expected = match asset.name.rsplit('.').next() {
                Some("js") => JS,
                Some("css") => CSS,
                _ => SVG,
            };
            assert_eq!(asset.content_type, expected, "{}", asset.name);
        }
    }

    #[test]
    fn the_page_loads_only_embedded_files_and_writes_no_markup_from_data() {
        let page = std::str::from_utf8(INDEX).expect("utf-8");
        for reference in page.split(['"', '\'']).filter(|s| s.starts_with("/assets/")) {
            let name = &reference["/assets/".len()..];
            assert!(ASSETS.iter().any(|a| a.name == name), "{reference} is not embedded");
        }
        assert!(!page.contains("http://") && !page.contains("https://") && !page.contains("//cdn"));
        let app = std::str::from_utf8(ASSETS[0].bytes).expect("utf-8");
        for sink in
            ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"]
        {
            assert!(!app.contains(sink), "app.js uses {sink}: write text with textContent");
        }
    }
}
